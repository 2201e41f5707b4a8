//! Guards and limits: the token, loopback hosts and origins, body sizes, hostile model uploads,
//! concurrency and count flags.

use super::*;

#[tokio::test]
async fn a_token_guards_writes() {
    let svc = Svc::start(|c| c.api_token = Some("s3cret".into()), false).await;
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("examples/digits-cnn.manifest.json")).unwrap(),
    )
    .unwrap();
    let r = svc
        .call("POST", "/v1/supernets", Some(manifest.clone()))
        .await;
    assert_eq!((r.status, error_code(&r).as_str()), (401, "unauthorized"));
    let post = |token: &str| {
        Request::post("/v1/supernets")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::from(manifest.to_string()))
            .unwrap()
    };
    assert_eq!(svc.send(post("s3cre")).await.status, 401);
    assert_eq!(svc.send(post("s3cret")).await.status, 201);
    assert_eq!(
        svc.call("GET", "/v1/supernets", None).await.status,
        200,
        "reads stay open"
    );

    let locked = Svc::start(
        |c| {
            c.api_token = Some("s3cret".into());
            c.protect_reads = true;
        },
        false,
    )
    .await;
    assert_eq!(locked.call("GET", "/v1/supernets", None).await.status, 401);
    assert_eq!(locked.call("GET", "/healthz", None).await.status, 200);
}

#[tokio::test]
async fn a_loopback_service_answers_only_its_hosts_its_origin_and_json_writes() {
    let svc = Svc::start(
        |c| {
            c.loopback_hosts_only = true;
            c.allowed_hosts = vec!["bitplan.internal".into()];
        },
        false,
    )
    .await;
    let get = |host: &str| {
        Request::get("/v1/supernets")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap()
    };
    // DNS rebinding: a page on evil.example whose name resolves to 127.0.0.1.
    let r = svc.send(get("evil.example:8080")).await;
    assert_eq!((r.status, error_code(&r).as_str()), (403, "forbidden_host"));
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--allowed-hosts"));
    assert_eq!(svc.send(get("127.0.0.1.evil.example")).await.status, 403);
    for host in [
        "localhost:8080",
        "127.0.0.1:8080",
        "[::1]:8080",
        "localhost",
        "BITPLAN.internal:443",
    ] {
        assert_eq!(svc.send(get(host)).await.status, 200, "{host}");
    }

    let manifest =
        std::fs::read_to_string(repo().join("examples/digits-cnn.manifest.json")).unwrap();
    let post = |origin: Option<&str>, content_type: Option<&str>| {
        let mut req = Request::post("/v1/supernets").header(header::HOST, "localhost:8080");
        if let Some(o) = origin {
            req = req.header(header::ORIGIN, o);
        }
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        req.body(Body::from(manifest.clone())).unwrap()
    };
    // A page elsewhere posting to the service, and posts that are not JSON (a form, or a
    // `text/plain` body a page can send without asking the browser first).
    let json = Some("application/json");
    let r = svc.send(post(Some("http://evil.example"), json)).await;
    assert_eq!((r.status, error_code(&r).as_str()), (403, "cross_origin"));
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let r = svc.send(post(None, ct)).await;
        assert_eq!(
            (r.status, error_code(&r).as_str()),
            (415, "unsupported_media_type"),
            "{ct:?}"
        );
    }
    assert_eq!(
        svc.send(post(Some("http://localhost:8080"), json))
            .await
            .status,
        201
    );
    assert_eq!(svc.send(post(None, json)).await.status, 201);
    let stored = svc.call("GET", "/v1/supernets", None).await.json();
    assert_eq!(
        stored["supernets"].as_array().unwrap().len(),
        2,
        "refused posts stored nothing"
    );

    // Bound elsewhere than loopback and told nothing: any host (behind a proxy).
    let open = Svc::start(|_| {}, false).await;
    assert_eq!(open.send(get("bitplan.example.com")).await.status, 200);
}

#[tokio::test]
async fn bodies_over_their_limits_are_refused() {
    let svc = Svc::start(
        |c| {
            c.max_json_bytes = 1000;
            c.max_upload_bytes = 5000;
        },
        false,
    )
    .await;
    let big = json!({"name": "x".repeat(2000), "bits": [8], "layers": []});
    let r = svc.call("POST", "/v1/supernets", Some(big)).await;
    assert_eq!((r.status, error_code(&r).as_str()), (413, "too_large"));
    let sn = {
        let m = json!({"name": "tiny", "bits": [8, 4], "layers": [{"name": "a", "params": 4, "macs": 16, "hessian_trace": 1.0}]});
        svc.call("POST", "/v1/supernets", Some(m)).await.json()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let r = svc
        .upload(&format!("/v1/supernets/{sn}/model"), vec![0u8; 6000])
        .await;
    assert_eq!((r.status, error_code(&r).as_str()), (413, "too_large"));
    let tmp = std::fs::read_dir(svc.state.config.data_dir.join("blobs/tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp, 0, "the partial upload is removed");
}

/// A model whose weights are in a file beside it cannot come as one upload: refused, naming each
/// such tensor, before anything is stored or run.
#[tokio::test]
async fn a_model_upload_with_external_data_is_refused_naming_its_tensors() {
    let svc = Svc::start(|_| {}, false).await;
    let sn = svc.supernet("examples/digits-cnn.manifest.json").await;
    let mut model = planner::eval::onnx::OnnxModel::from_path(
        &repo().join("testdata/digits-cnn/digits_cnn.onnx"),
    )
    .unwrap();
    planner::eval::external::externalize(&mut model.proto, "digits.weights");
    let r = svc
        .upload(&format!("/v1/supernets/{sn}/model"), model.to_bytes())
        .await;
    assert_eq!(r.status, 422, "{}", r.json());
    let paths = field_paths(&r);
    assert!(
        paths.contains(&"model.conv2.weight.external_data".to_string()),
        "{paths:?}"
    );
    let r = svc.call("GET", &format!("/v1/supernets/{sn}"), None).await;
    assert_eq!(r.json()["model"], Value::Null, "{}", r.json());
}

/// A weight declaring 2^40 output channels and no values (per-channel arrays would be sized from
/// its dims) is refused at upload, naming its node, and nothing is stored.
#[tokio::test]
async fn a_model_upload_with_a_weight_shape_of_no_values_is_refused() {
    let svc = Svc::start(|_| {}, false).await;
    let sn = svc.supernet("examples/digits-cnn.manifest.json").await;
    let mut model = planner::eval::onnx::OnnxModel::from_path(
        &repo().join("testdata/digits-cnn/digits_cnn.onnx"),
    )
    .unwrap();
    let g = model.proto.graph.as_mut().unwrap();
    let w = g
        .initializer
        .iter_mut()
        .find(|t| t.name.as_deref() == Some("conv2.weight"))
        .unwrap();
    w.dims = vec![1 << 40, 0, 1, 1];
    w.raw_data = Some(Vec::new());
    w.float_data.clear();
    let r = svc
        .upload(&format!("/v1/supernets/{sn}/model"), model.to_bytes())
        .await;
    assert_eq!(r.status, 422, "{}", r.json());
    let body = r.json();
    let field = &body["error"]["fields"][0];
    assert!(
        field["path"]
            .as_str()
            .unwrap()
            .starts_with("model.graph.node[")
            && field["reason"]
                .as_str()
                .unwrap()
                .contains("at least one value"),
        "{body}"
    );
    let r = svc.call("GET", &format!("/v1/supernets/{sn}"), None).await;
    assert_eq!(r.json()["model"], Value::Null, "{}", r.json());
}

/// Uploads, exports and solves inside requests hold a place while they run, and the queue holds
/// at most `--max-queued-jobs`: past each limit a 503 says so, and a freed place is taken again.
#[tokio::test]
async fn requests_past_their_concurrency_limits_are_busy() {
    // No runner: queued jobs stay queued.
    let svc = Svc::new(|c| c.max_queued_jobs = 2, false).await;
    let sn = svc.digits().await;
    let plans = format!("/v1/supernets/{sn}/plans");
    let plan = |body: Value| svc.call("POST", &plans, Some(body));
    for _ in 0..2 {
        assert_eq!(
            plan(json!({"pareto": "size", "async": true})).await.status,
            202
        );
    }
    let r = plan(json!({"pareto": "size", "async": true})).await;
    assert_busy(&r, "--max-queued-jobs");
    let job = svc.call("GET", "/v1/jobs?status=queued", None).await.json()["jobs"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    svc.call("POST", &format!("/v1/jobs/{job}/cancel"), None)
        .await;
    assert_eq!(
        plan(json!({"pareto": "size", "async": true})).await.status,
        202
    );
    // Requests at once: each counts the queue only after the one before has queued its job.
    let svc = Svc::new(|c| c.max_queued_jobs = 2, false).await;
    let sn = svc.digits().await;
    let plans = format!("/v1/supernets/{sn}/plans");
    let at_once = (0..8).map(|_| {
        svc.call(
            "POST",
            &plans,
            Some(json!({"pareto": "size", "async": true})),
        )
    });
    let mut statuses: Vec<u16> = futures_util::future::join_all(at_once)
        .await
        .iter()
        .map(|r| r.status)
        .collect();
    statuses.sort();
    assert_eq!(statuses, [202, 202, 503, 503, 503, 503, 503, 503]);

    // Every place of a gate taken (the limit is 1 here, the default larger).
    let svc = Svc::new(
        |c| {
            c.max_uploads = 1;
            c.max_exports = 1;
            c.max_inline_solves = 1;
        },
        false,
    )
    .await;
    let sn = svc.digits().await;
    let r = svc
        .call(
            "POST",
            &format!("/v1/supernets/{sn}/plans"),
            Some(json!({"paper_pool": true, "budgets": {"max_avg_bits": 5}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let candidate = r.json()["candidates"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let held = svc.state.admit(Gate::Solve).unwrap();
    let r = svc
        .call(
            "POST",
            &format!("/v1/supernets/{sn}/plans"),
            Some(json!({"paper_pool": true, "budgets": {"max_avg_bits": 5}})),
        )
        .await;
    assert_busy(&r, "--max-inline-solves");
    drop(held);
    let held = svc.state.admit(Gate::Export).unwrap();
    let r = svc
        .call(
            "GET",
            &format!("/v1/candidates/{candidate}/model.onnx"),
            None,
        )
        .await;
    assert_busy(&r, "--max-exports");
    drop(held);
    let r = svc
        .call(
            "GET",
            &format!("/v1/candidates/{candidate}/model.onnx"),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let held = svc.state.admit(Gate::Upload).unwrap();
    let model = std::fs::read(repo().join("testdata/digits-cnn/digits_cnn.onnx")).unwrap();
    let r = svc
        .upload(&format!("/v1/supernets/{sn}/model"), model.clone())
        .await;
    assert_busy(&r, "--max-uploads");
    drop(held);
    let r = svc
        .upload(&format!("/v1/supernets/{sn}/model"), model)
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
}

/// `--max-layers`, `--max-plan-solves` and `--max-fleet-devices` lower the planner's own bounds:
/// past them a 422 names the field and the flag, and work within them is taken.
#[tokio::test]
async fn posted_work_past_the_servers_count_flags_is_refused() {
    let svc = Svc::new(
        |c| {
            c.max_layers = 4;
            c.max_plan_solves = 10;
            c.max_fleet_devices = 4;
        },
        false,
    )
    .await;
    let mut manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("examples/digits-cnn.manifest.json")).unwrap(),
    )
    .unwrap();
    let r = svc
        .call("POST", "/v1/supernets", Some(manifest.clone()))
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let sn = r.json()["id"].as_str().unwrap().to_string();
    let mut fifth = manifest["layers"][0].clone();
    fifth["name"] = json!("conv0");
    manifest["layers"].as_array_mut().unwrap().push(fifth);
    let r = svc.call("POST", "/v1/supernets", Some(manifest)).await;
    assert_eq!(first_field(&r), (422, "layers".into()));
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("5 layers") && message.contains("--max-layers"),
        "{message}"
    );

    let plans = format!("/v1/supernets/{sn}/plans");
    let sweep = |points: usize| json!({"sweep": {"cost": "size", "points": points}});
    let r = svc.call("POST", &plans, Some(sweep(9))).await;
    assert_eq!(
        r.status,
        201,
        "the optimum and 9 points are 10 solves: {}",
        r.json()
    );
    let r = svc.call("POST", &plans, Some(sweep(10))).await;
    assert_eq!(first_field(&r), (422, "sweep.points".into()));
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("11 solves") && message.contains("--max-plan-solves"),
        "{message}"
    );

    let mut fleet: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("examples/fleets/roofline.fleet.json")).unwrap(),
    )
    .unwrap();
    let r = svc.call("POST", "/v1/fleets", Some(fleet.clone())).await;
    assert_eq!(first_field(&r), (422, "devices".into()));
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("5 devices") && message.contains("--max-fleet-devices"),
        "{message}"
    );
    fleet["devices"].as_array_mut().unwrap().truncate(4);
    let r = svc.call("POST", "/v1/fleets", Some(fleet)).await;
    assert_eq!(r.status, 201, "{}", r.json());
}
