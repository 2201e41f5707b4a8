//! Supernets, plans, candidates, uploads, evaluation and exports: the resources' behaviour and
//! their errors.

use super::*;

#[tokio::test]
async fn supernets_plans_and_candidates() {
    let svc = Svc::new(|_| {}, true).await;
    // A manifest with several faults: every one is named by its path.
    let r = svc
        .call(
            "POST",
            "/v1/supernets",
            Some(json!({"name": "bad", "bits": [8, 4], "layers": [
                {"name": "a", "params": 0, "macs": 0, "hessian_trace": 1.0},
                {"name": "a", "params": 3, "macs": 9, "hessian_trace": 1.0, "pin": 3}]})),
        )
        .await;
    assert_eq!(r.status, 422);
    let paths = field_paths(&r);
    assert!(paths.contains(&"layers[0].params".to_string()), "{paths:?}");
    assert!(paths.contains(&"layers[1].name".to_string()), "{paths:?}");
    assert!(paths.contains(&"layers[1].pin".to_string()), "{paths:?}");
    let r = svc
        .send(
            Request::post("/v1/supernets")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{\"name\": "))
                .unwrap(),
        )
        .await;
    assert_eq!((r.status, error_code(&r).as_str()), (400, "malformed_json"));

    let sn = svc.supernet("examples/resnet18.manifest.json").await;
    let r = svc.call("GET", &format!("/v1/supernets/{sn}"), None).await;
    assert_eq!(
        r.json()["manifest"]["layers"].as_array().unwrap().len(),
        r.json()["layers"].as_u64().unwrap() as usize
    );

    // A single solve answers at once, equal to the planner's own answer.
    let manifest = planner::Manifest::from_json(
        &std::fs::read_to_string(repo().join("examples/resnet18.manifest.json")).unwrap(),
    )
    .unwrap();
    let problem = planner::Problem::new(&manifest, None).unwrap();
    let budget = 0.6 * problem.max_cost(planner::CostKind::Size);
    let r = svc
        .call(
            "POST",
            &format!("/v1/supernets/{sn}/plans"),
            Some(json!({"budgets": {"max_size_bytes": budget}})),
        )
        .await;
    assert_eq!(r.status, 201);
    let plan = r.json();
    let request = planner::PlanRequest {
        budgets: planner::Budgets {
            max_size_bytes: Some(budget),
            ..Default::default()
        },
        ..Default::default()
    };
    let want = planner::plan(&problem, &request).unwrap();
    let got = &plan["candidates"][0];
    assert!((got["omega"].as_f64().unwrap() - want.candidates[0].candidate.omega).abs() < 1e-12);
    assert!(got["size_bytes"].as_f64().unwrap() <= budget);
    assert_eq!(plan["result"]["status"], "optimal");

    // Budget errors are located under `budgets.`; infeasible budgets are a 422 with the minimum.
    let r = svc
        .call(
            "POST",
            &format!("/v1/supernets/{sn}/plans"),
            Some(json!({"budgets": {"max_bops": -1}})),
        )
        .await;
    assert_eq!(first_field(&r), (422, "budgets.max_bops".into()));
    for bad in [json!(1.0), json!(-1e-3), json!("tight")] {
        let r = svc
            .call(
                "POST",
                &format!("/v1/supernets/{sn}/plans"),
                Some(json!({"budgets": {"max_avg_bits": 4}, "mip_gap": bad})),
            )
            .await;
        assert_eq!(first_field(&r), (422, "mip_gap".into()), "{bad}");
    }
    let r = svc
        .call(
            "POST",
            &format!("/v1/supernets/{sn}/plans"),
            Some(json!({"budgets": {"max_size_bytes": 10}})),
        )
        .await;
    assert_eq!((r.status, error_code(&r).as_str()), (422, "infeasible"));
    let report = &r.json()["error"]["details"]["infeasible"]["budgets"][0];
    assert_eq!(report["budget"], "max_size_bytes");
    assert!(
        (report["min_achievable"].as_f64().unwrap() - problem.min_cost(planner::CostKind::Size))
            .abs()
            < 1e-6
    );

    // A front: every candidate listed, sorted and filtered on the server.
    let r = svc
        .call(
            "POST",
            &format!("/v1/supernets/{sn}/plans"),
            Some(json!({"pareto": "size"})),
        )
        .await;
    assert_eq!(r.status, 201);
    let front = r.json();
    let pid = front["id"].as_str().unwrap();
    let n = front["candidate_count"].as_u64().unwrap();
    assert!(n > 100, "{n}");
    let r = svc
        .call(
            "GET",
            &format!(
                "/v1/plans/{pid}/candidates?sort=omega&order=desc&limit=5&max_size_bytes={budget}"
            ),
            None,
        )
        .await;
    let page = r.json();
    let omegas: Vec<f64> = page["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["omega"].as_f64().unwrap())
        .collect();
    assert_eq!(omegas.len(), 5);
    assert!(omegas.windows(2).all(|w| w[0] >= w[1]), "{omegas:?}");
    let total = page["total"].as_u64().unwrap();
    assert!(total < n && total > 0);
    assert!(page["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["size_bytes"].as_f64().unwrap() <= budget));
    let r = svc
        .call(
            "GET",
            &format!("/v1/plans/{pid}/candidates?sort=colour"),
            None,
        )
        .await;
    assert_eq!(first_field(&r), (400, "sort".into()));
    let r = svc
        .call(
            "GET",
            &format!("/v1/plans/{pid}/candidates?limit=ten"),
            None,
        )
        .await;
    assert_eq!(first_field(&r), (400, "limit".into()));
    // The same page with `bits` as lists: each the object's values in manifest layer order.
    let r = svc
        .call(
            "GET",
            &format!(
                "/v1/plans/{pid}/candidates?sort=omega&order=desc&limit=5&max_size_bytes={budget}&bits=list"
            ),
            None,
        )
        .await;
    let listed = r.json();
    let supernet = svc
        .call("GET", &format!("/v1/supernets/{sn}"), None)
        .await
        .json();
    let layers: Vec<&str> = supernet["manifest"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    for (a, b) in page["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .zip(listed["candidates"].as_array().unwrap())
    {
        assert_eq!(a["id"], b["id"]);
        let by_name: Vec<&Value> = layers.iter().map(|n| &a["bits"][*n]).collect();
        let list: Vec<&Value> = b["bits"].as_array().unwrap().iter().collect();
        assert_eq!(by_name, list);
    }
    let r = svc
        .call(
            "GET",
            &format!("/v1/plans/{pid}/candidates?bits=string"),
            None,
        )
        .await;
    assert_eq!(first_field(&r), (400, "bits".into()));

    // Choose a candidate; the choice is stored; a foreign candidate is refused.
    let first = page["candidates"][0]["id"].as_str().unwrap().to_string();
    let r = svc
        .call(
            "PUT",
            &format!("/v1/plans/{pid}/choice"),
            Some(json!({"candidate_id": first})),
        )
        .await;
    assert_eq!(r.json()["chosen_candidate_id"], first.as_str());
    let other = plan["candidates"][0]["id"].as_str().unwrap();
    let r = svc
        .call(
            "PUT",
            &format!("/v1/plans/{pid}/choice"),
            Some(json!({"candidate_id": other})),
        )
        .await;
    assert_eq!(first_field(&r), (422, "candidate_id".into()));
    assert_eq!(
        svc.call("GET", &format!("/v1/plans/{pid}"), None)
            .await
            .json()["chosen_candidate_id"],
        first.as_str()
    );

    // `async` runs the same request as a job with the same result.
    let r = svc
        .call(
            "POST",
            &format!("/v1/supernets/{sn}/plans"),
            Some(json!({"pareto": "size", "async": true})),
        )
        .await;
    assert_eq!(r.status, 202);
    let queued = r.json();
    assert_eq!(queued["status"], "pending");
    let job = svc.wait_job(queued["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let done = svc
        .call(
            "GET",
            &format!("/v1/plans/{}", queued["id"].as_str().unwrap()),
            None,
        )
        .await
        .json();
    assert_eq!(done["status"], "ready");
    assert_eq!(done["candidate_count"], n);

    // Deleting the supernet says what would go, then goes with ?cascade=true.
    let r = svc
        .call("DELETE", &format!("/v1/supernets/{sn}"), None)
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["error"]["details"]["would_delete"]["plans"], 3);
    let r = svc
        .call("DELETE", &format!("/v1/supernets/{sn}?cascade=true"), None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["with"]["candidates"].as_u64().unwrap(), 1 + 2 * n);
    assert_eq!(
        svc.call("GET", &format!("/v1/plans/{pid}"), None)
            .await
            .status,
        404
    );
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM candidates")
        .fetch_one(&svc.oracle().await)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn uploads_evaluation_and_exports() {
    let svc = Svc::new(|_| {}, true).await;
    let sn = svc.supernet("examples/digits-cnn.manifest.json").await;
    // Refused uploads name what is wrong and change nothing.
    let r = svc
        .upload(&format!("/v1/supernets/{sn}/model"), b"not onnx".to_vec())
        .await;
    assert_eq!(r.status, 422);
    assert!(
        r.json()["error"]["fields"][0]["path"]
            .as_str()
            .unwrap()
            .starts_with("model"),
        "{}",
        r.json()
    );
    let r = svc
        .upload(&format!("/v1/supernets/{sn}/validation"), Vec::new())
        .await;
    assert_eq!(first_field(&r), (422, "validation".into()));
    let blobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM blobs")
        .fetch_one(&svc.oracle().await)
        .await
        .unwrap();
    assert_eq!(blobs, 0, "a refused upload leaves no blob behind");

    let model = std::fs::read(repo().join("testdata/digits-cnn/digits_cnn.onnx")).unwrap();
    let r = svc
        .upload(&format!("/v1/supernets/{sn}/model"), model.clone())
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["model"]["bytes"], model.len());
    let r = svc
        .call("GET", &format!("/v1/supernets/{sn}/model"), None)
        .await;
    assert_eq!(r.body, model, "the stored model reads back byte for byte");
    assert_eq!(r.headers[header::CONTENT_LENGTH], model.len().to_string());
    let r = svc
        .call("POST", "/v1/supernets/x/plans", Some(json!({})))
        .await;
    assert_eq!(r.status, 404);

    let plan = svc
        .call(
            "POST",
            &format!("/v1/supernets/{sn}/plans"),
            Some(json!({"pareto": "size"})),
        )
        .await
        .json();
    let pid = plan["id"].as_str().unwrap().to_string();
    // Without the validation set, evaluation is refused with the reason.
    let r = svc
        .call(
            "POST",
            &format!("/v1/plans/{pid}/evaluations"),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 409);
    let data = std::fs::read(repo().join("testdata/digits-cnn/digits_val.npz")).unwrap();
    assert_eq!(
        svc.upload(&format!("/v1/supernets/{sn}/validation"), data)
            .await
            .status,
        200
    );

    let r = svc
        .call(
            "POST",
            &format!("/v1/plans/{pid}/evaluations"),
            Some(json!({"candidate_ids": ["nope"]})),
        )
        .await;
    assert_eq!(r.json()["error"]["fields"][0]["path"], "candidate_ids[0]");
    let r = svc
        .call(
            "POST",
            &format!("/v1/plans/{pid}/evaluations"),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 202);
    let job = svc.wait_job(r.json()["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let n = plan["candidate_count"].as_u64().unwrap();
    assert_eq!(job["progress"]["done"], n);

    // Every candidate measured; the all-8-bit one matches the CLI's evaluator on the fixture.
    let page = svc
        .call(
            "GET",
            &format!("/v1/plans/{pid}/candidates?sort=accuracy&order=desc"),
            None,
        )
        .await
        .json();
    let cands = page["candidates"].as_array().unwrap();
    assert!(cands.iter().all(|c| c["metrics"]["samples"] == 540));
    let accs: Vec<f64> = cands
        .iter()
        .map(|c| c["metrics"]["accuracy"].as_f64().unwrap())
        .collect();
    assert!(accs.windows(2).all(|w| w[0] >= w[1]));
    let top = cands
        .iter()
        .find(|c| c["bits"].as_object().unwrap().values().all(|b| b == 8))
        .expect("the all-8 corner");
    let manifest = planner::Manifest::from_json(
        &std::fs::read_to_string(repo().join("examples/digits-cnn.manifest.json")).unwrap(),
    )
    .unwrap();
    let backend = planner::eval::ort_backend::OrtBackend::new(&ort_lib(), 1).unwrap();
    let onnx = planner::eval::onnx::OnnxModel::from_bytes(&model).unwrap();
    let set = planner::eval::npz::ValidationSet::from_npz(
        &std::fs::read(repo().join("testdata/digits-cnn/digits_val.npz")).unwrap(),
    )
    .unwrap();
    let mut ev =
        planner::eval::Evaluator::new(&backend, &onnx, &manifest, set, Default::default()).unwrap();
    let want = ev.evaluate(&vec![8; manifest.layers.len()]).unwrap();
    assert_eq!(top["metrics"]["accuracy"].as_f64(), want.accuracy);

    // Asking again measures nothing new: same rows, same times.
    let before: Vec<(String, i64)> =
        sqlx::query_as("SELECT bits, created_at FROM evaluations ORDER BY bits")
            .fetch_all(&svc.oracle().await)
            .await
            .unwrap();
    let r = svc
        .call(
            "POST",
            &format!("/v1/plans/{pid}/evaluations"),
            Some(json!({})),
        )
        .await;
    let again = svc.wait_job(r.json()["id"].as_str().unwrap()).await;
    assert_eq!(again["status"], "succeeded");
    let after: Vec<(String, i64)> =
        sqlx::query_as("SELECT bits, created_at FROM evaluations ORDER BY bits")
            .fetch_all(&svc.oracle().await)
            .await
            .unwrap();
    assert_eq!(before, after);
    assert_eq!(before.len() as u64, n);
    let r = svc
        .call(
            "GET",
            &format!("/v1/plans/{pid}/candidates?evaluated=false"),
            None,
        )
        .await;
    assert_eq!(r.json()["total"], 0);

    // Exports: the configuration, and a QDQ model that parses as ONNX.
    let cid = top["id"].as_str().unwrap();
    let r = svc
        .call("GET", &format!("/v1/candidates/{cid}/config"), None)
        .await;
    assert_eq!(r.json()["bits"], top["bits"]);
    assert!(r.headers[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .contains("attachment"));
    let r = svc
        .call("GET", &format!("/v1/candidates/{cid}/model.onnx"), None)
        .await;
    assert_eq!(r.status, 200);
    let qdq = planner::eval::onnx::OnnxModel::from_bytes(&r.body).unwrap();
    assert!(qdq
        .graph()
        .node
        .iter()
        .any(|n| n.op_type.as_deref() == Some("DequantizeLinear")));
}

#[tokio::test]
async fn manifests_from_other_tools_warn_and_typos_fail() {
    let svc = Svc::new(|_| {}, false).await;
    let r = svc
        .call(
            "POST",
            "/v1/supernets",
            Some(
                json!({"name": "m", "bits": [8, 4], "exporter": "torch2onnx", "layers": [
                {"name": "a", "params": 4, "macs": 9, "hessian_trace": 1.0,
                 "source": "pyhessian", "op": "Conv"}]}),
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let warnings: Vec<(String, String)> = r.json()["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["path"].as_str().unwrap().into(),
                w["message"].as_str().unwrap().into(),
            )
        })
        .collect();
    let ignored = "unknown field, ignored".to_string();
    assert_eq!(
        warnings,
        [
            ("exporter".to_string(), ignored.clone()),
            ("layers[0].source".to_string(), ignored.clone()),
            ("layers[0].op".to_string(), ignored),
        ]
    );

    let r = svc
        .call(
            "POST",
            "/v1/supernets",
            Some(json!({"name": "m", "bits": [8, 4], "layers": [
                {"name": "a", "params": 4, "macs": 9, "hessian_trace": 1.0, "tei": "x"}]})),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(
        first_field(&r),
        (422, "layers[0].tei".to_string()),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(
        r.json()["error"]["fields"][0]["reason"],
        "unknown field; did you mean tie?"
    );
}
