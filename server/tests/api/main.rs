//! The router in-process: the API's behaviour, its errors, and the OpenAPI contract (every
//! documented operation is routed; every response here validates against openapi.yaml).

#[path = "../../../tests/e2e/contract.rs"]
mod contract;
#[path = "../../../tests/e2e/pg.rs"]
mod pg;

mod fleets;
mod jobs;
mod limits;
mod searches;
mod supernets;

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

    /// A writable connection of its own to the service's database, for faults the service
    /// meets from outside (another process, an operator).
    async fn writer(&self) -> sqlx::AnyPool {
        let url = match &self.state.config.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}",
                self.state.config.data_dir.join("bitplan.db").display()
            ),
        };
        sqlx::AnyPool::connect(&url).await.unwrap()
    }

    /// Queues a finished job again, as a worker lost between storing its result and ending the
    /// job leaves it, and waits for its second run.
    async fn run_again(&self, job_id: &str) -> Value {
        sqlx::query(
            "UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL, \
             finished_at = NULL WHERE id = $1",
        )
        .bind(job_id)
        .execute(&self.writer().await)
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

    /// The job as the API shows it now.
    async fn job(&self, id: &str) -> Value {
        let r = self.call("GET", &format!("/v1/jobs/{id}"), None).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    }

    async fn wait_job(&self, id: &str) -> Value {
        for _ in 0..3000 {
            let j = self.job(id).await;
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

/// The 503 of a busy service: code `busy`, the flag named, and `Retry-After`.
fn assert_busy(r: &Resp, flag: &str) {
    assert_eq!(r.status, 503, "{}", r.json());
    assert_eq!(error_code(r), "busy");
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains(flag), "{message}");
    assert_eq!(r.headers[header::RETRY_AFTER], "2");
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
