//! Searches: measured, stored, reused, listed and deleted.

use super::*;

/// A search runs as a job on the supernet's model: it stores each measurement as an evaluation,
/// its result's front is what was measured (cheapest first, each point better than every
/// cheaper one), and a second search reuses every stored measurement instead of measuring it
/// again. Bad requests are 422 naming the field; a supernet without a model is 409.
#[tokio::test]
async fn a_search_measures_stores_and_is_reused_by_the_next() {
    let svc = Svc::new(|_| {}, true).await;
    let sn = svc.digits().await;
    let searches = format!("/v1/supernets/{sn}/searches");
    for (body, field) in [
        (
            json!({"pareto": "avg_bits", "evaluations": 0}),
            "evaluations",
        ),
        (json!({"pareto": "latency", "evaluations": 4}), "pareto"),
        (
            json!({"pareto": "size", "evaluations": 4, "budgets": {"max_avg_bits": -1}}),
            "budgets.max_avg_bits",
        ),
    ] {
        let r = svc.call("POST", &searches, Some(body)).await;
        assert_eq!(first_field(&r), (422, field.into()), "{}", r.json());
    }
    let body = json!({"pareto": "avg_bits", "evaluations": 8, "budgets": {"max_avg_bits": 7}});
    let r = svc.call("POST", &searches, Some(body.clone())).await;
    assert_eq!(r.status, 202, "{}", r.json());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let job = svc.wait_job(r.json()["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let first_job = job["id"].as_str().unwrap().to_string();
    let search = svc
        .call("GET", &format!("/v1/searches/{id}"), None)
        .await
        .json();
    assert_eq!(search["status"], "ready", "{search}");
    let result = &search["result"];
    let made = result["evaluations"].as_u64().unwrap();
    assert!((2..=8).contains(&made), "{result}");
    let stored: Vec<(String, f64)> = sqlx::query_as("SELECT bits, kl_fp32 FROM evaluations")
        .fetch_all(&svc.oracle().await)
        .await
        .unwrap();
    assert_eq!(stored.len() as u64, made, "each measurement stored once");
    let front = result["front"].as_array().unwrap();
    assert!(!front.is_empty());
    let mut last = (f64::NEG_INFINITY, f64::INFINITY);
    for p in front {
        let (cost, loss) = (
            p["avg_bits"].as_f64().unwrap(),
            p["measured"]["loss"].as_f64().unwrap(),
        );
        assert!(cost <= 7.0 + 1e-9 && cost >= last.0 && loss < last.1, "{p}");
        last = (cost, loss);
        // The loss is the stored KL of that configuration.
        let order = ["conv1", "conv2", "fc1", "fc2"];
        let bits: Vec<u64> = order
            .iter()
            .map(|l| p["bits"][l].as_u64().unwrap())
            .collect();
        let key = serde_json::to_string(&bits).unwrap();
        let kl = stored.iter().find(|(b, _)| *b == key).expect("stored").1;
        assert_eq!(kl, loss, "{p}");
    }
    // The list leaves out what grows with the measurements.
    let listed = svc.call("GET", &searches, None).await.json();
    assert_eq!(listed["searches"][0]["id"], id.as_str());
    let summary = &listed["searches"][0]["result"];
    assert_eq!(summary["front"], result["front"]);
    assert!(summary.get("points").is_none() && summary.get("predicted_front").is_none());

    // Its points and its predicted front are one plan's candidates, each named by its point.
    let plan_id = result["plan_id"].as_str().expect("plan_id");
    let plan = svc
        .call("GET", &format!("/v1/plans/{plan_id}"), None)
        .await
        .json();
    assert_eq!(plan["request"]["search_id"], id.as_str());
    assert_eq!(plan["result"]["engine"], "search");
    let candidates = svc
        .call(
            "GET",
            &format!("/v1/plans/{plan_id}/candidates?limit=10000&bits=list"),
            None,
        )
        .await
        .json()["candidates"]
        .as_array()
        .unwrap()
        .clone();
    let points = result["points"].as_array().unwrap();
    let predicted = result["predicted_front"].as_array().unwrap();
    assert_eq!(points.len() as u64, made, "{result}");
    assert!(!predicted.is_empty());
    let bits_of = |p: &Value| -> Value {
        json!(["conv1", "conv2", "fc1", "fc2"].map(|l| p["bits"][l].clone()))
    };
    let distinct: std::collections::HashSet<String> = points
        .iter()
        .chain(predicted)
        .map(|p| bits_of(p).to_string())
        .collect();
    assert_eq!(candidates.len(), distinct.len());
    let candidate = |p: &Value| {
        let id = p["candidate_id"].as_str().expect("candidate_id");
        let c = candidates
            .iter()
            .find(|c| c["id"] == id)
            .expect("a candidate");
        assert_eq!(c["bits"], bits_of(p), "{p}");
        c.clone()
    };
    for p in points {
        assert_eq!(candidate(p)["metrics"]["kl_fp32"], p["loss"], "{p}");
    }
    let measured = candidates
        .iter()
        .filter(|c| !c["metrics"].is_null())
        .count();
    assert_eq!(measured, points.len());
    let mut last = (f64::NEG_INFINITY, f64::INFINITY);
    for p in predicted {
        let c = candidate(p);
        let (cost, loss) = (
            p["avg_bits"].as_f64().unwrap(),
            p["predicted"].as_f64().unwrap(),
        );
        assert!(cost <= 7.0 + 1e-9 && cost > last.0 && loss < last.1, "{p}");
        assert_eq!(
            c["omega"].as_f64().unwrap(),
            loss,
            "Omega is the prediction"
        );
        assert!(c["sources"]
            .as_array()
            .unwrap()
            .contains(&json!("predicted")));
        last = (cost, loss);
    }
    for p in front {
        candidate(p);
    }
    // Its job run again (as after a worker lost between storing the result and ending the job)
    // stores no second plan and keeps the result.
    let rerun = svc.run_again(job["id"].as_str().unwrap()).await;
    assert_eq!(rerun["status"], "succeeded", "{rerun}");
    let plans: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM plans WHERE request LIKE '%search_id%'")
            .fetch_one(&svc.oracle().await)
            .await
            .unwrap();
    assert_eq!(plans, 1);
    let after = svc
        .call("GET", &format!("/v1/searches/{id}"), None)
        .await
        .json();
    assert_eq!(after["result"], search["result"]);

    let r = svc.call("POST", &searches, Some(body)).await;
    let job = svc.wait_job(r.json()["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let again = svc
        .call(
            "GET",
            &format!("/v1/searches/{}", r.json()["id"].as_str().unwrap()),
            None,
        )
        .await
        .json();
    assert_eq!(again["result"]["reused"].as_u64().unwrap(), made, "{again}");
    let now: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM evaluations")
        .fetch_one(&svc.oracle().await)
        .await
        .unwrap();
    assert_eq!(
        now as u64,
        made + again["result"]["evaluations"].as_u64().unwrap()
    );

    let bare = svc.supernet("examples/digits-cnn.manifest.json").await;
    let r = svc
        .call(
            "POST",
            &format!("/v1/supernets/{bare}/searches"),
            Some(json!({"pareto": "size", "evaluations": 4})),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.json());

    // Its plan goes only with it (a link to a deleted plan would dangle); its measurements stay.
    let r = svc
        .call("DELETE", &format!("/v1/plans/{plan_id}"), None)
        .await;
    assert_eq!(r.status, 409, "{}", r.json());
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("DELETE /v1/searches/{id}")),
        "{}",
        r.json()
    );
    let r = svc
        .call("DELETE", &format!("/v1/searches/{id}"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["with"]["plan"], plan_id);
    assert_eq!(r.json()["with"]["candidates"], candidates.len());
    assert_eq!(r.json()["with"]["jobs_cancelled"], 0);
    let a_candidate = format!("/v1/candidates/{}", candidates[0]["id"].as_str().unwrap());
    for gone in [
        format!("/v1/searches/{id}"),
        format!("/v1/plans/{plan_id}"),
        a_candidate,
    ] {
        assert_eq!(svc.call("GET", &gone, None).await.status, 404, "{gone}");
    }
    // The other search stays, with its plan; the list no longer names the deleted one.
    let listed = svc.call("GET", &searches, None).await.json();
    let other = again["id"].as_str().unwrap();
    assert_eq!(
        listed["searches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].clone())
            .collect::<Vec<_>>(),
        vec![json!(other)]
    );
    let other_plan = again["result"]["plan_id"].as_str().unwrap();
    assert_eq!(
        svc.call("GET", &format!("/v1/plans/{other_plan}"), None)
            .await
            .status,
        200
    );
    // Its job run again (a worker that had claimed it before the deletion) writes nothing.
    let rerun = svc.run_again(&first_job).await;
    assert_eq!(rerun["status"], "cancelled", "{rerun}");
    let plans: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM plans WHERE request LIKE '%search_id%'")
            .fetch_one(&svc.oracle().await)
            .await
            .unwrap();
    assert_eq!(plans, 1, "only the other search's plan");
    let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM evaluations")
        .fetch_one(&svc.oracle().await)
        .await
        .unwrap();
    assert_eq!(kept, now);
    let r = svc
        .call("DELETE", &format!("/v1/searches/{id}"), None)
        .await;
    assert_eq!(r.status, 404, "{}", r.json());
}

/// A database fault while a search stores a measurement is a server-side fault like any other in
/// a job: the attempt fails with the database's reason and the job is tried again, resuming
/// within its budget once the store takes writes again.
#[tokio::test]
async fn a_store_fault_during_a_search_is_retried() {
    let svc = Svc::new(|c| c.retry_base = Duration::from_millis(1500), true).await;
    let sn = svc.digits().await;
    let db = svc.writer().await;
    let (fault, heal): (&[&'static str], &[&'static str]) = if on_postgres() {
        (
            &[
                "CREATE FUNCTION store_fault() RETURNS trigger AS $$ BEGIN \
                 RAISE EXCEPTION 'injected store fault'; END $$ LANGUAGE plpgsql",
                "CREATE TRIGGER store_fault BEFORE INSERT ON evaluations \
                 FOR EACH ROW EXECUTE FUNCTION store_fault()",
            ],
            &[
                "DROP TRIGGER store_fault ON evaluations",
                "DROP FUNCTION store_fault()",
            ],
        )
    } else {
        (
            &["CREATE TRIGGER store_fault BEFORE INSERT ON evaluations \
               BEGIN SELECT RAISE(ABORT, 'injected store fault'); END"],
            &["DROP TRIGGER store_fault"],
        )
    };
    for &q in fault {
        sqlx::query(q).execute(&db).await.unwrap();
    }
    let r = svc
        .call(
            "POST",
            &format!("/v1/supernets/{sn}/searches"),
            Some(json!({"pareto": "avg_bits", "evaluations": 6})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let (id, job_id) = (
        r.json()["id"].as_str().unwrap().to_string(),
        r.json()["job"]["id"].as_str().unwrap().to_string(),
    );
    // The first attempt fails on the fault and waits for its retry.
    let mut waited = 0;
    let failed = loop {
        let j = svc.job(&job_id).await;
        assert_ne!(j["status"], "failed", "a store fault is retried: {j}");
        if j["error"].is_string() {
            break j;
        }
        waited += 1;
        assert!(waited < 3000, "{j}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(failed["status"], "queued", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("injected store fault"),
        "{failed}"
    );
    for &q in heal {
        sqlx::query(q).execute(&db).await.unwrap();
    }
    let job = svc.wait_job(&job_id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 2, "{job}");
    let search = svc
        .call("GET", &format!("/v1/searches/{id}"), None)
        .await
        .json();
    let made = search["result"]["evaluations"].as_u64().unwrap();
    assert!((1..=6).contains(&made), "{search}");
    let stored: Vec<(String,)> = sqlx::query_as("SELECT bits FROM evaluations")
        .fetch_all(&svc.oracle().await)
        .await
        .unwrap();
    assert_eq!(stored.len() as u64, made, "{search}");
}
