//! The router in-process: the API's behaviour, its errors, and the OpenAPI contract (every
//! documented operation is routed; every response here validates against openapi.yaml).

#[path = "../../tests/e2e/contract.rs"]
mod contract;
#[path = "../../tests/e2e/pg.rs"]
mod pg;

use axum::body::Body;
use axum::http::{header, Request};
use bitplan::app::{AppState, Config, Gate};
use contract::Contract;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;
use tower::ServiceExt;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn contract() -> &'static Contract {
    static C: OnceLock<Contract> = OnceLock::new();
    C.get_or_init(Contract::load)
}

fn ort_lib() -> PathBuf {
    let path = std::env::var_os("BITPLAN_ORT_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".cache/onnxruntime-1.32.0/libonnxruntime.so"));
    assert!(
        path.exists(),
        "ONNX Runtime not found at {}: run scripts/test",
        path.display()
    );
    path
}

/// A service on a fresh data directory; `runner` starts the job runner too.
struct Svc {
    state: AppState,
    app: axum::Router,
    _dir: tempfile::TempDir,
    /// The Postgres database, when the suite runs on Postgres (`BITPLAN_TEST_STORE=postgres`).
    _pg: Option<pg::TestDb>,
}

/// Whether this run of the suite is on Postgres rather than the embedded SQLite.
fn on_postgres() -> bool {
    std::env::var("BITPLAN_TEST_STORE").is_ok_and(|s| s == "postgres")
}

struct Resp {
    status: u16,
    body: Vec<u8>,
    headers: axum::http::HeaderMap,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl Svc {
    /// The service with ONNX Runtime, for evaluations and sensitivity jobs.
    async fn new(tweak: impl FnOnce(&mut Config), runner: bool) -> Svc {
        Svc::start(
            |c| {
                c.ort_lib = Some(ort_lib());
                tweak(c)
            },
            runner,
        )
        .await
    }

    /// The service as configured by `tweak` alone: what needs no model runs needs no ONNX Runtime.
    async fn start(tweak: impl FnOnce(&mut Config), runner: bool) -> Svc {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new(dir.path().join("data"));
        config.retry_base = Duration::from_millis(20);
        let pg = on_postgres().then(pg::TestDb::new);
        config.database_url = pg.as_ref().map(|p| p.url.clone());
        tweak(&mut config);
        let state = AppState::open(config).await.unwrap();
        if runner {
            tokio::spawn(bitplan::jobs::run(
                state.clone(),
                "serve-test".into(),
                state.jobs.stopping.subscribe(),
            ));
        }
        Svc {
            app: bitplan::api::router(state.clone()),
            state,
            _dir: dir,
            _pg: pg,
        }
    }

    /// A connection of its own to the service's database: the tests' oracle of what is stored,
    /// independent of the store module.
    async fn oracle(&self) -> sqlx::AnyPool {
        let url = match &self.state.config.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=ro",
                self.state.config.data_dir.join("bitplan.db").display()
            ),
        };
        sqlx::AnyPool::connect(&url).await.unwrap()
    }

    /// Queues a finished job again, as a worker lost between storing its result and ending the
    /// job leaves it, and waits for its second run.
    async fn run_again(&self, job_id: &str) -> Value {
        let url = match &self.state.config.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}",
                self.state.config.data_dir.join("bitplan.db").display()
            ),
        };
        sqlx::query(
            "UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL, \
             finished_at = NULL WHERE id = $1",
        )
        .bind(job_id)
        .execute(&sqlx::AnyPool::connect(&url).await.unwrap())
        .await
        .unwrap();
        self.wait_job(job_id).await
    }

    async fn send(&self, req: Request<Body>) -> Resp {
        let method = req.method().to_string();
        let path = req.uri().to_string();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        contract().check(&method, &path, status, &ct, &body);
        Resp {
            status,
            body,
            headers,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let mut req = Request::builder().method(method).uri(path);
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.send(req.body(body).unwrap()).await
    }

    async fn upload(&self, path: &str, bytes: Vec<u8>) -> Resp {
        let req = Request::builder()
            .method("PUT")
            .uri(path)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Body::from(bytes))
            .unwrap();
        self.send(req).await
    }

    async fn supernet(&self, manifest: &str) -> String {
        let text = std::fs::read_to_string(repo().join(manifest)).unwrap();
        let r = self
            .call(
                "POST",
                "/v1/supernets",
                Some(serde_json::from_str(&text).unwrap()),
            )
            .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        r.json()["id"].as_str().unwrap().to_string()
    }

    async fn digits(&self) -> String {
        let id = self.supernet("examples/digits-cnn.manifest.json").await;
        let model = std::fs::read(repo().join("testdata/digits-cnn/digits_cnn.onnx")).unwrap();
        let data = std::fs::read(repo().join("testdata/digits-cnn/digits_val.npz")).unwrap();
        assert_eq!(
            self.upload(&format!("/v1/supernets/{id}/model"), model)
                .await
                .status,
            200
        );
        assert_eq!(
            self.upload(&format!("/v1/supernets/{id}/validation"), data)
                .await
                .status,
            200
        );
        id
    }

    async fn wait_job(&self, id: &str) -> Value {
        for _ in 0..3000 {
            let r = self.call("GET", &format!("/v1/jobs/{id}"), None).await;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            let j = r.json();
            if ["succeeded", "failed", "cancelled"].contains(&j["status"].as_str().unwrap()) {
                return j;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("job {id} did not finish");
    }
}

fn error_code(r: &Resp) -> String {
    r.json()["error"]["code"].as_str().unwrap_or("").to_string()
}

/// The path of every field an error response names.
fn field_paths(r: &Resp) -> Vec<String> {
    r.json()["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect()
}

/// An error response's status and the path of the first field it names.
fn first_field(r: &Resp) -> (u16, String) {
    let path = r.json()["error"]["fields"][0]["path"]
        .as_str()
        .unwrap_or("")
        .to_string();
    (r.status, path)
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let svc = Svc::new(|_| {}, false).await;
    let ops = contract().operations();
    assert!(ops.len() >= 20, "{ops:?}");
    for (method, template) in ops {
        let path = template.replace("{id}", "missing");
        let body = matches!(method.as_str(), "POST" | "PUT").then(|| json!({}));
        let r = svc.call(&method, &path, body).await;
        let code = error_code(&r);
        assert!(
            code != "route_not_found" && code != "method_not_allowed",
            "{method} {template} is documented but not routed ({code})"
        );
    }
    // And the fallback answers in the one error shape (an undocumented path: not checked
    // against the contract).
    let resp = svc
        .app
        .clone()
        .oneshot(
            Request::get("/v1/nothing-here")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "route_not_found");
}

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

/// The 503 of a busy service: code `busy`, the flag named, and `Retry-After`.
fn assert_busy(r: &Resp, flag: &str) {
    assert_eq!(r.status, 503, "{}", r.json());
    assert_eq!(error_code(r), "busy");
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains(flag), "{message}");
    assert_eq!(r.headers[header::RETRY_AFTER], "2");
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
    let r = svc.call("DELETE", &format!("/v1/plans/{plan_id}"), None).await;
    assert_eq!(r.status, 409, "{}", r.json());
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("DELETE /v1/searches/{id}")),
        "{}",
        r.json()
    );
    let r = svc.call("DELETE", &format!("/v1/searches/{id}"), None).await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["with"]["plan"], plan_id);
    assert_eq!(r.json()["with"]["candidates"], candidates.len());
    for gone in [format!("/v1/searches/{id}"), format!("/v1/plans/{plan_id}")] {
        assert_eq!(svc.call("GET", &gone, None).await.status, 404, "{gone}");
    }
    let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM evaluations")
        .fetch_one(&svc.oracle().await)
        .await
        .unwrap();
    assert_eq!(kept, now);
    let r = svc.call("DELETE", &format!("/v1/searches/{id}"), None).await;
    assert_eq!(r.status, 404, "{}", r.json());
}

#[tokio::test]
async fn a_fleet_gated_on_the_measured_front_takes_each_devices_best_measurement() {
    let svc = Svc::new(|_| {}, true).await;
    let sn = svc.digits().await;
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("examples/fleets/roofline.fleet.json")).unwrap(),
    )
    .unwrap();
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
    let job = svc.wait_job(r.json()["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    // Steps: the planning, a measurement per device at most, the search's measurements.
    assert_eq!(job["progress"]["total"], 1 + 5 + 12, "{job}");
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
