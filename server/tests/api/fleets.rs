//! Fleet plans: every device planned, measurements shared, the gate on the measured front.

use super::*;

#[tokio::test]
async fn fleet_plans_cover_every_device_and_share_measurements() {
    let svc = Svc::new(|_| {}, true).await;
    // Devices are checked with paths.
    let r = svc.call("POST", "/v1/devices", Some(json!({"name": "x", "roofline": {"peak_gmac_per_s": {"8": 1}}, "weight_bits": [], "budgets": {"max_bops": -2}}))).await;
    assert_eq!(r.status, 422);
    let paths = field_paths(&r);
    for want in ["roofline", "weight_bits", "budgets.max_bops"] {
        assert!(
            paths.iter().any(|p| p.starts_with(want)),
            "{want} not in {paths:?}"
        );
    }
    // A fleet file posts as it is; its devices are stored too.
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("examples/fleets/roofline.fleet.json")).unwrap(),
    )
    .unwrap();
    let r = svc.call("POST", "/v1/fleets", Some(file.clone())).await;
    assert_eq!(r.status, 201);
    let fleet = r.json();
    assert_eq!(fleet["devices"].as_array().unwrap().len(), 5);
    let first_device = fleet["devices"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        svc.call("DELETE", &format!("/v1/devices/{first_device}"), None)
            .await
            .status,
        409
    );

    let sn = svc.digits().await;
    let fid = fleet["id"].as_str().unwrap();
    // Bad options are refused before a job is queued, each named.
    let r = svc
        .call(
            "POST",
            &format!("/v1/supernets/{sn}/fleet-plans"),
            Some(json!({"fleet_id": fid, "step": 1.5, "mip_gap": -0.5})),
        )
        .await;
    let body = r.json();
    let paths: Vec<&str> = body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!((r.status, paths), (422, vec!["step", "mip_gap"]));
    let r = svc
        .call(
            "POST",
            &format!("/v1/supernets/{sn}/fleet-plans"),
            Some(json!({"fleet_id": fid, "min_accuracy": 0.97})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let job = svc.wait_job(r.json()["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let plan = svc
        .call(
            "GET",
            &format!("/v1/fleet-plans/{}", r.json()["id"].as_str().unwrap()),
            None,
        )
        .await
        .json();
    assert_eq!(plan["status"], "ready");
    assert_eq!(plan["passed"], false, "legacy-dsp cannot meet its budget");
    // The same rows as planning the fleet directly.
    let manifest = planner::Manifest::from_json(
        &std::fs::read_to_string(repo().join("examples/digits-cnn.manifest.json")).unwrap(),
    )
    .unwrap();
    let direct = planner::solve::fleet::plan_fleet(
        &manifest,
        &planner::solve::fleet::Fleet::from_value(file).unwrap(),
        &Default::default(),
    )
    .unwrap();
    let rows = plan["result"]["devices"].as_array().unwrap();
    for (row, d) in rows.iter().zip(&direct.devices) {
        assert_eq!(row["device"], d.device.as_str());
        assert_eq!(row["omega"].as_f64(), d.best.as_ref().map(|c| c.omega));
        if row["status"] == "optimal" {
            assert_eq!(
                row["meets_gate"],
                row["metrics"]["accuracy"].as_f64().unwrap() >= 0.97
            );
        }
    }
    let distinct = plan["result"]["evaluated_configs"].as_u64().unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM evaluations")
        .fetch_one(&svc.oracle().await)
        .await
        .unwrap();
    assert_eq!(stored as u64, distinct);
    // Again: nothing is measured twice.
    let before: Vec<(String, i64)> =
        sqlx::query_as("SELECT bits, created_at FROM evaluations ORDER BY bits")
            .fetch_all(&svc.oracle().await)
            .await
            .unwrap();
    let r = svc
        .call(
            "POST",
            &format!("/v1/supernets/{sn}/fleet-plans"),
            Some(json!({"fleet_id": fid, "evaluate": true})),
        )
        .await;
    let again = svc.wait_job(r.json()["job"]["id"].as_str().unwrap()).await;
    assert_eq!(again["status"], "succeeded");
    let after: Vec<(String, i64)> =
        sqlx::query_as("SELECT bits, created_at FROM evaluations ORDER BY bits")
            .fetch_all(&svc.oracle().await)
            .await
            .unwrap();
    assert_eq!(before, after);
    // The table as CSV.
    let r = svc
        .call(
            "GET",
            &format!(
                "/v1/fleet-plans/{}?format=csv",
                r.json()["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    let csv = String::from_utf8(r.body).unwrap();
    assert!(csv.starts_with("device,status,bits,size_bytes,bops,latency_ms,omega,avg_bits,accuracy,agreement_fp32,meets_gate\n"), "{csv}");
    assert_eq!(csv.lines().count(), 6);

    // A lookup table missing a layer is refused up front, naming the device and the layer.
    let mut table = serde_json::Map::new();
    for l in ["conv1", "conv2", "fc1"] {
        table.insert(
            l.into(),
            json!({"8": 0.1, "6": 0.1, "5": 0.1, "4": 0.1, "3": 0.1, "2": 0.1}),
        );
    }
    let r = svc.call("POST", "/v1/fleets", Some(json!({"name": "lut", "devices": [first_device, {"name": "phone", "latency_ms": table}]}))).await;
    assert_eq!(r.status, 201);
    let r = svc
        .call(
            "POST",
            &format!("/v1/supernets/{sn}/fleet-plans"),
            Some(json!({"fleet_id": r.json()["id"]})),
        )
        .await;
    assert_eq!(r.status, 422);
    let f = &r.json()["error"]["fields"][0];
    assert_eq!(f["path"], "fleet.devices[1].latency_ms.fc2");
    assert!(f["reason"].as_str().unwrap().contains("phone"), "{f}");
}

#[tokio::test]
async fn a_fleet_gated_on_the_measured_front_takes_each_devices_best_measurement() {
    // Paused after each measurement, so the job is seen while its search measures.
    let svc = Svc::new(|c| c.eval_pause = Duration::from_millis(30), true).await;
    let sn = svc.digits().await;
    let mut file: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("examples/fleets/roofline.fleet.json")).unwrap(),
    )
    .unwrap();
    // A twin of the first device: two devices, one planned configuration.
    let devices = file["devices"].as_array_mut().unwrap();
    let mut twin = devices[0].clone();
    twin["name"] = json!(format!("{}-twin", twin["name"].as_str().unwrap()));
    devices.push(twin);
    let fleet = svc
        .call("POST", "/v1/fleets", Some(file.clone()))
        .await
        .json();
    let fid = fleet["id"].as_str().unwrap();
    let plans = format!("/v1/supernets/{sn}/fleet-plans");
    let r = svc
        .call(
            "POST",
            &plans,
            Some(json!({"fleet_id": fid, "search": true, "evaluations": 0})),
        )
        .await;
    assert_eq!(first_field(&r), (422, "evaluations".into()));
    let r = svc
        .call(
            "POST",
            &plans,
            Some(json!({"fleet_id": fid, "evaluations": 0})),
        )
        .await;
    assert_eq!(
        first_field(&r),
        (422, "evaluations".into()),
        "checked without search too"
    );
    let r = svc
        .call(
            "POST",
            &plans,
            Some(
                json!({"fleet_id": fid, "search": true, "evaluations": 12, "metric": "agreement"}),
            ),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let job_id = r.json()["job"]["id"].as_str().unwrap().to_string();
    // Steps: the planning, a measurement per device at most, the search's measurements. The
    // search's come after a step per device, however many configurations the devices share
    // (the twins, one): a resumed job counts its budget from there whatever re-planning chooses.
    let mut seen = 0;
    let job = loop {
        let j = svc.job(&job_id).await;
        if ["succeeded", "failed", "cancelled"].contains(&j["status"].as_str().unwrap()) {
            break j;
        }
        let message = j["progress"]["message"].as_str().unwrap_or("");
        if let Some(made) = message.strip_suffix(" of 12 measured") {
            let made: u64 = made.parse().unwrap();
            assert_eq!(j["progress"]["done"], 1 + 6 + made, "{j}");
            seen += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(seen > 0, "the search was seen measuring: {job}");
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["progress"]["total"], 1 + 6 + 12, "{job}");
    let doc = svc
        .call(
            "GET",
            &format!("/v1/fleet-plans/{}", r.json()["id"].as_str().unwrap()),
            None,
        )
        .await
        .json()["result"]
        .clone();
    let search = &doc["search"];
    let made = search["evaluations"].as_u64().unwrap();
    assert!((1..=12).contains(&made), "{search}");
    assert_eq!(search["metric"], "agreement");
    // Every measurement is stored once: the planned choices, then the search's.
    // The loss of each: 1 - agreement with fp32.
    let stored: Vec<(String, f64)> =
        sqlx::query_as("SELECT bits, 1.0 - agreement_fp32 FROM evaluations")
            .fetch_all(&svc.oracle().await)
            .await
            .unwrap();
    let rows = doc["devices"].as_array().unwrap();
    let order = ["conv1", "conv2", "fc1", "fc2"];
    let key =
        |bits: &Value| serde_json::to_string(&order.map(|l| bits[l].as_u64().unwrap())).unwrap();
    let planned: std::collections::HashSet<String> = rows
        .iter()
        .filter(|r| !r["planned_bits"].is_null())
        .map(|r| key(&r["planned_bits"]))
        .collect();
    assert_eq!(stored.len() as u64, planned.len() as u64 + made);
    assert_eq!(search["reused"].as_u64().unwrap(), planned.len() as u64);
    // Each device: the least loss measured among the configurations it runs within its budgets
    // (the planner's brute-force-tested choice over every stored measurement), never worse than
    // its plan's.
    let manifest = planner::Manifest::from_json(
        &std::fs::read_to_string(repo().join("examples/digits-cnn.manifest.json")).unwrap(),
    )
    .unwrap();
    let mut measured: Vec<(Vec<u8>, f64)> = stored
        .iter()
        .map(|(b, loss)| (serde_json::from_str(b).unwrap(), *loss))
        .collect();
    measured.sort_by(|a, b| a.0.cmp(&b.0));
    let best = planner::solve::fleet::best_measured(
        &manifest,
        &planner::solve::fleet::Fleet::from_value(file).unwrap(),
        &measured,
    )
    .unwrap();
    let loss_of = |k: &str| stored.iter().find(|(b, _)| b == k).map(|s| s.1);
    let mut by_search = 0;
    for (row, best) in rows.iter().zip(&best) {
        if row["bits"].is_null() {
            assert!(row["chosen_by"].is_null(), "{row}");
            continue;
        }
        let chosen = key(&row["bits"]);
        let expected = best.as_ref().expect("a measured point fits");
        assert_eq!(
            chosen,
            serde_json::to_string(&expected.candidate.bits).unwrap(),
            "{row}"
        );
        let agreement = row["metrics"]["agreement_fp32"].as_f64().unwrap();
        assert!(
            (1.0 - agreement - loss_of(&chosen).unwrap()).abs() < 1e-12,
            "{row}"
        );
        let planned_loss = loss_of(&key(&row["planned_bits"])).unwrap();
        assert!(loss_of(&chosen).unwrap() <= planned_loss, "{row}");
        let by = row["chosen_by"].as_str().unwrap();
        assert_eq!(by == "plan", chosen == key(&row["planned_bits"]), "{row}");
        by_search += usize::from(by == "search");
    }
    // Its job run again (as after a worker lost between storing the table and ending the job)
    // measures nothing and keeps the table.
    let rerun = svc.run_again(job["id"].as_str().unwrap()).await;
    assert_eq!(rerun["status"], "succeeded", "{rerun}");
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM evaluations")
        .fetch_one(&svc.oracle().await)
        .await
        .unwrap();
    assert_eq!(count as usize, stored.len());
    let again = svc
        .call(
            "GET",
            &format!("/v1/fleet-plans/{}", r.json()["id"].as_str().unwrap()),
            None,
        )
        .await
        .json();
    assert_eq!(again["result"], doc);
    // As with `bitplan fleet --search` on these inputs, the search finds better points for
    // some devices than their plans.
    assert!(by_search >= 1, "{doc}");
}
