//! Jobs: retries, cancellation, progress events, the solve gate and the metrics.

use super::*;

#[tokio::test]
async fn failing_jobs_retry_with_backoff_then_fail() {
    let svc = Svc::new(|_| {}, true).await;
    let sn = svc.digits().await;
    let plan = svc
        .call(
            "POST",
            &format!("/v1/supernets/{sn}/plans"),
            Some(json!({"budgets": {"max_avg_bits": 4}})),
        )
        .await
        .json();
    // The model file vanishes from disk: a server-side fault, worth retrying.
    let hash: String = sqlx::query_scalar("SELECT model_hash FROM supernets")
        .fetch_one(&svc.oracle().await)
        .await
        .unwrap();
    std::fs::remove_file(svc.state.blobs.path(&hash)).unwrap();
    let r = svc
        .call(
            "POST",
            &format!("/v1/plans/{}/evaluations", plan["id"].as_str().unwrap()),
            Some(json!({})),
        )
        .await;
    let job = svc.wait_job(r.json()["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["attempts"], 3);
    assert!(job["error"].as_str().unwrap().contains("internal"), "{job}");
    let started = job["started_at"].as_str().unwrap().to_string();
    let finished = job["finished_at"].as_str().unwrap().to_string();
    assert!(finished > started);
}

#[tokio::test]
async fn cancelling_a_queued_job_cancels_its_plan() {
    // No runner: the job stays queued until cancelled.
    let svc = Svc::new(|_| {}, false).await;
    let sn = svc.supernet("examples/resnet18.manifest.json").await;
    let r = svc
        .call(
            "POST",
            &format!("/v1/supernets/{sn}/plans"),
            Some(json!({"pareto": "bops", "async": true})),
        )
        .await;
    let job = r.json()["job"]["id"].as_str().unwrap().to_string();
    let r = svc
        .call("POST", &format!("/v1/jobs/{job}/cancel"), None)
        .await;
    assert_eq!(r.json()["status"], "cancelled");
    let plan = svc
        .call(
            "GET",
            &format!("/v1/plans/{}", r.json()["plan_id"].as_str().unwrap()),
            None,
        )
        .await
        .json();
    assert_eq!(plan["status"], "cancelled");
    // Idempotent.
    assert_eq!(
        svc.call("POST", &format!("/v1/jobs/{job}/cancel"), None)
            .await
            .json()["status"],
        "cancelled"
    );
    let r = svc.call("GET", "/v1/jobs?status=cancelled", None).await;
    assert_eq!(r.json()["jobs"].as_array().unwrap().len(), 1);
    let r = svc.call("GET", "/v1/jobs?status=sleeping", None).await;
    assert_eq!(r.status, 400);
}

/// A supernet's exact front, from which single-budget plans are answered, is built inside a
/// place of `--max-inline-solves`; once built, answers from it need no place.
#[tokio::test]
async fn the_first_front_of_a_supernet_is_built_within_the_solve_gate() {
    let svc = Svc::new(|c| c.max_inline_solves = 1, false).await;
    let sn = svc.digits().await;
    let plans = format!("/v1/supernets/{sn}/plans");
    let body = json!({"budgets": {"max_avg_bits": 5}});
    let held = svc.state.admit(Gate::Solve).unwrap();
    let r = svc.call("POST", &plans, Some(body.clone())).await;
    assert_busy(&r, "--max-inline-solves");
    drop(held);
    let r = svc.call("POST", &plans, Some(body.clone())).await;
    assert_eq!(r.status, 201, "{}", r.json());
    let held = svc.state.admit(Gate::Solve).unwrap();
    let r = svc
        .call(
            "POST",
            &plans,
            Some(json!({"budgets": {"max_avg_bits": 4}})),
        )
        .await;
    assert_eq!(r.status, 201, "answered from the built front: {}", r.json());
    drop(held);
}

#[tokio::test]
async fn metrics_count_requests_and_solves() {
    let svc = Svc::new(|_| {}, false).await;
    let sn = svc.supernet("examples/digits-cnn.manifest.json").await;
    for _ in 0..3 {
        svc.call(
            "POST",
            &format!("/v1/supernets/{sn}/plans"),
            Some(json!({"budgets": {"max_avg_bits": 5}})),
        )
        .await;
    }
    let r = svc.call("GET", "/metrics", None).await;
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.contains("bitplan_http_requests_total{method=\"POST\",route=\"/v1/supernets/{id}/plans\",status=\"201\"} 3"), "{text}");
    assert!(
        text.contains("bitplan_solve_duration_seconds_count 3"),
        "{text}"
    );
    assert!(text.contains("bitplan_job_queue_depth 0"));
}

#[tokio::test]
async fn a_running_evaluation_stops_when_cancelled_and_keeps_what_it_measured() {
    let svc = Svc::new(|c| c.eval_pause = Duration::from_millis(40), true).await;
    let sn = svc.digits().await;
    let plan = svc
        .call(
            "POST",
            &format!("/v1/supernets/{sn}/plans"),
            Some(json!({"pareto": "size"})),
        )
        .await
        .json();
    let total = plan["candidate_count"].as_u64().unwrap();
    let r = svc
        .call(
            "POST",
            &format!("/v1/plans/{}/evaluations", plan["id"].as_str().unwrap()),
            Some(json!({})),
        )
        .await;
    let job = r.json()["id"].as_str().unwrap().to_string();
    loop {
        let j = svc
            .call("GET", &format!("/v1/jobs/{job}"), None)
            .await
            .json();
        if j["progress"]["done"].as_u64().unwrap() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let r = svc
        .call("POST", &format!("/v1/jobs/{job}/cancel"), None)
        .await;
    assert_eq!(r.json()["cancel_requested"], true);
    let j = svc.wait_job(&job).await;
    assert_eq!(j["status"], "cancelled", "{j}");
    let done = j["progress"]["done"].as_u64().unwrap();
    assert!(done >= 3 && done < total, "{done} of {total}");
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM evaluations")
        .fetch_one(&svc.oracle().await)
        .await
        .unwrap();
    assert_eq!(
        stored as u64, done,
        "every measured candidate is kept, nothing after the cancel"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    let later: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM evaluations")
        .fetch_one(&svc.oracle().await)
        .await
        .unwrap();
    assert_eq!(later, stored);
}

#[tokio::test]
async fn job_events_stream_progress_then_done() {
    let svc = Svc::new(|c| c.eval_pause = Duration::from_millis(30), true).await;
    let sn = svc.digits().await;
    let plan = svc
        .call(
            "POST",
            &format!("/v1/supernets/{sn}/plans"),
            Some(json!({"pareto": "size", "points": 6})),
        )
        .await
        .json();
    let r = svc
        .call(
            "POST",
            &format!("/v1/plans/{}/evaluations", plan["id"].as_str().unwrap()),
            Some(json!({})),
        )
        .await;
    let job = r.json()["id"].as_str().unwrap().to_string();
    let resp = svc
        .app
        .clone()
        .oneshot(
            Request::get(format!("/v1/jobs/{job}/events"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    // The stream ends by itself after the `done` event.
    let body = tokio::time::timeout(Duration::from_secs(30), resp.into_body().collect())
        .await
        .expect("the stream ends")
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let events: Vec<(&str, Value)> = text
        .split("\n\n")
        .filter_map(|block| {
            let kind = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((kind, serde_json::from_str(data).unwrap()))
        })
        .collect();
    let (last_kind, last) = events.last().unwrap();
    assert_eq!(
        (*last_kind, last["status"].as_str()),
        ("done", Some("succeeded"))
    );
    assert_eq!(last["progress"]["done"], 6);
    let dones: Vec<u64> = events
        .iter()
        .map(|(_, j)| j["progress"]["done"].as_u64().unwrap())
        .collect();
    assert!(dones.windows(2).all(|w| w[0] <= w[1]), "{dones:?}");
    assert!(events.len() >= 3, "progress events before the end: {text}");
}
