//! The service's shared state and configuration.
//!
//! It owns `Config` (what `bitplan serve` was told, with its defaults) and `AppState` (the
//! database, blobs, metrics, caches and the job runner's handles); it handles no request.

use crate::blobs::Blobs;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::store::{Db, PlanWriter, StoreError, StoreResult};
use planner::{CostKind, FrontIndex, Halt, Manifest, Problem};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch, Notify, OwnedSemaphorePermit, Semaphore};

/// What `bitplan serve` was told (flags and environment).
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// The store: `postgres://…`, or (when `None`) SQLite in `data_dir/bitplan.db`.
    pub database_url: Option<String>,
    /// Where blobs live (default `data_dir/blobs`): a folder every worker can reach.
    pub blob_dir: Option<PathBuf>,
    /// When set, writes need `Authorization: Bearer <token>`.
    pub api_token: Option<String>,
    /// Reads need the token too.
    pub protect_reads: bool,
    /// Host names requests may name besides loopback ones (`--allowed-hosts`); `*` allows any.
    pub allowed_hosts: Vec<String>,
    /// Only loopback host names (and `allowed_hosts`) are answered: the service listens on a
    /// loopback address, where a web page whose name resolves to 127.0.0.1 must not reach it.
    pub loopback_hosts_only: bool,
    pub max_json_bytes: usize,
    pub max_upload_bytes: u64,
    /// Most bytes a validation set's arrays may take, decompressed and in memory.
    pub max_npz_bytes: u64,
    pub request_timeout: Duration,
    /// Uploads received at once; more are 503.
    pub max_uploads: usize,
    /// Model exports built at once; more are 503.
    pub max_exports: usize,
    /// Plans solved inside their request, off the async threads, at once; more are 503.
    pub max_inline_solves: usize,
    /// Jobs waiting in the queue; a request that would queue another is 503.
    pub max_queued_jobs: usize,
    /// Upper bound on a plan request's `time_limit_s`.
    pub max_solve_time_s: f64,
    /// Layers a posted manifest may hold (at most the planner's [`planner::MAX_LAYERS`]).
    pub max_layers: usize,
    /// Solves one posted plan may need (at most the planner's [`planner::MAX_SOLVES`]).
    pub max_plan_solves: usize,
    /// Devices a posted fleet may hold (at most the planner's `MAX_DEVICES`).
    pub max_fleet_devices: usize,
    /// Jobs run at once.
    pub job_workers: usize,
    /// Evaluation jobs run at once (each holds ONNX Runtime sessions).
    pub eval_concurrency: usize,
    /// Intra-op threads of each ONNX Runtime session.
    pub eval_threads: usize,
    pub ort_lib: Option<PathBuf>,
    /// First retry delay of a failed job; doubles with each attempt.
    pub retry_base: Duration,
    /// How long a job may run, from its first claim, before it is stopped and failed.
    pub job_deadline: Duration,
    /// Pause after each evaluated candidate or sensitivity measurement, for tests that must
    /// catch a job mid-way; only in builds with the `test-hooks` feature (see [`Config::eval_pause`]).
    #[cfg(feature = "test-hooks")]
    pub eval_pause: Duration,
    /// A supernet name whose measurement aborts the process, for tests of workers that die; only
    /// in builds with the `test-hooks` feature (see [`Config::crash_point`]).
    #[cfg(feature = "test-hooks")]
    pub crash_on: Option<String>,
}

impl Config {
    /// The defaults of `bitplan serve`'s flags, and of [`Config::new`].
    pub const MAX_JSON_BYTES: usize = 8 << 20;
    pub const MAX_UPLOAD_BYTES: u64 = 2 << 30;
    pub const REQUEST_TIMEOUT_S: f64 = 60.0;
    pub const MAX_SOLVE_TIME_S: f64 = 60.0;
    pub const JOB_WORKERS: usize = 2;
    pub const EVAL_CONCURRENCY: usize = 1;
    pub const EVAL_THREADS: usize = 1;
    pub const RETRY_BASE_S: f64 = 2.0;
    pub const JOB_DEADLINE_S: f64 = 24.0 * 3600.0;
    pub const MAX_UPLOADS: usize = 4;
    pub const MAX_EXPORTS: usize = 4;
    pub const MAX_INLINE_SOLVES: usize = 8;
    pub const MAX_QUEUED_JOBS: usize = 10_000;

    /// Defaults for a data directory (tests use this and adjust).
    pub fn new(data_dir: PathBuf) -> Config {
        Config {
            data_dir,
            database_url: None,
            blob_dir: None,
            api_token: None,
            protect_reads: false,
            allowed_hosts: Vec::new(),
            loopback_hosts_only: false,
            max_json_bytes: Self::MAX_JSON_BYTES,
            max_upload_bytes: Self::MAX_UPLOAD_BYTES,
            max_npz_bytes: planner::eval::npz::MAX_NPZ_BYTES,
            request_timeout: Duration::from_secs_f64(Self::REQUEST_TIMEOUT_S),
            max_uploads: Self::MAX_UPLOADS,
            max_exports: Self::MAX_EXPORTS,
            max_inline_solves: Self::MAX_INLINE_SOLVES,
            max_queued_jobs: Self::MAX_QUEUED_JOBS,
            max_solve_time_s: Self::MAX_SOLVE_TIME_S,
            max_layers: planner::MAX_LAYERS,
            max_plan_solves: planner::MAX_SOLVES,
            max_fleet_devices: planner::solve::fleet::MAX_DEVICES,
            job_workers: Self::JOB_WORKERS,
            eval_concurrency: Self::EVAL_CONCURRENCY,
            eval_threads: Self::EVAL_THREADS,
            ort_lib: None,
            retry_base: Duration::from_secs_f64(Self::RETRY_BASE_S),
            job_deadline: Duration::from_secs_f64(Self::JOB_DEADLINE_S),
            #[cfg(feature = "test-hooks")]
            eval_pause: Duration::ZERO,
            #[cfg(feature = "test-hooks")]
            crash_on: None,
        }
    }

    /// Whether a request naming `host` (a Host header: `name` or `name:port`) is answered.
    pub fn host_allowed(&self, host: &str) -> bool {
        let name = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host.rsplit_once(':').map_or(host, |(name, _)| name),
        };
        let name = name.to_ascii_lowercase();
        if self.allowed_hosts.iter().any(|h| h == "*" || *h == name) {
            return true;
        }
        !self.loopback_hosts_only || matches!(name.as_str(), "localhost" | "127.0.0.1" | "::1")
    }

    /// The pause after each evaluated candidate or measurement: always zero unless built with
    /// the `test-hooks` feature, which the test suite enables and the binary built alone does not.
    pub fn eval_pause(&self) -> Duration {
        #[cfg(feature = "test-hooks")]
        return self.eval_pause;
        #[cfg(not(feature = "test-hooks"))]
        Duration::ZERO
    }

    /// Where a job starts measuring supernet `name`: aborts the process when the `test-hooks`
    /// build was told to (a stand-in for a native fault); does nothing otherwise.
    pub fn crash_point(&self, name: &str) {
        #[cfg(feature = "test-hooks")]
        if self.crash_on.as_deref() == Some(name) {
            eprintln!("bitplan: aborting on supernet {name:?} (test hook)");
            std::process::abort();
        }
        #[cfg(not(feature = "test-hooks"))]
        let _ = name;
    }
}

/// Wakes a job runner in this process (tests run one) and carries job changes to event streams.
#[derive(Debug)]
pub struct JobHub {
    pub wake: Notify,
    /// Ids of jobs whose stored state changed.
    pub changed: broadcast::Sender<String>,
    /// Turns true when the process shuts down: runners stop claiming, event streams end.
    pub stopping: watch::Sender<bool>,
}

impl JobHub {
    fn new() -> JobHub {
        JobHub {
            wake: Notify::new(),
            changed: broadcast::channel(1024).0,
            stopping: watch::channel(false).0,
        }
    }

    pub fn changed(&self, job_id: &str) {
        let _ = self.changed.send(job_id.to_string());
    }

    pub fn shutdown(&self) {
        let _ = self.stopping.send(true);
    }
}

/// Everything a request handler or the job runner needs; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub blobs: Blobs,
    pub metrics: Arc<Metrics>,
    pub jobs: Arc<JobHub>,
    /// Group commit of plans created at once.
    pub plan_writer: PlanWriter,
    /// How many uploads, exports and inline solves run at once.
    gates: Arc<Gates>,
    /// Held from counting the queue to queueing a job, so that requests at once cannot each
    /// see room for one more (exact within this process; several API processes on one store
    /// may overshoot the limit by one job each).
    queueing: Arc<tokio::sync::Mutex<()>>,
    /// Parsed manifests by supernet id, with the revision they were read at (a manifest changes
    /// when a sensitivity job, in any process, stores its measurements and bumps the revision).
    manifests: Arc<Mutex<HashMap<String, Revision>>>,
    /// Exact fronts by (supernet, device profile, cost, manifest contents), built once on first
    /// use; `None` when the front is too large to enumerate.
    fronts: Arc<Mutex<HashMap<FrontKey, FrontCell>>>,
}

/// Requests that hold a place while they run: past each limit, 503 with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// `PUT …/model` and `PUT …/validation` (a file streamed to disk, then parsed).
    Upload,
    /// `GET /v1/candidates/{id}/model.onnx` (the model read and rewritten).
    Export,
    /// A plan solved inside its request off the async threads.
    Solve,
}

#[derive(Debug)]
struct Gates {
    uploads: Arc<Semaphore>,
    exports: Arc<Semaphore>,
    solves: Arc<Semaphore>,
}

impl Gates {
    fn new(config: &Config) -> Gates {
        let gate = |n: usize| Arc::new(Semaphore::new(n.max(1)));
        Gates {
            uploads: gate(config.max_uploads),
            exports: gate(config.max_exports),
            solves: gate(config.max_inline_solves),
        }
    }
}

/// A manifest and the revision it was read at.
type Revision = (i64, Arc<Manifest>);

/// Supernet, device profile, cost, and a hash of the manifest the front was built from (so a front
/// of an older objective is never served for a newer one).
type FrontKey = (String, String, CostKind, u64);
type FrontCell = Arc<tokio::sync::OnceCell<Option<Arc<FrontIndex>>>>;

/// Fronts kept in memory (a ResNet-50-scale size front is about 2 MB).
const FRONT_CACHE: usize = 16;

const MANIFEST_CACHE: usize = 64;

impl AppState {
    /// Opens the store (SQLite in the data directory unless a database URL is given) and the
    /// blob folder.
    pub async fn open(config: Config) -> anyhow::Result<AppState> {
        std::fs::create_dir_all(&config.data_dir)?;
        let url = config
            .database_url
            .clone()
            .unwrap_or_else(|| Db::sqlite_url(&config.data_dir.join("bitplan.db")));
        let db = Db::open(&url, 8).await?;
        let blobs = Blobs::open(
            config
                .blob_dir
                .clone()
                .unwrap_or_else(|| config.data_dir.join("blobs")),
        )?;
        Ok(AppState {
            gates: Arc::new(Gates::new(&config)),
            queueing: Arc::default(),
            config: Arc::new(config),
            db: db.clone(),
            blobs,
            metrics: Arc::new(Metrics::default()),
            jobs: Arc::new(JobHub::new()),
            plan_writer: PlanWriter::spawn(db.clone()),
            manifests: Arc::new(Mutex::new(HashMap::new())),
            fronts: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// A place among the `gate`'s requests running at once, held until dropped; 503 with
    /// `Retry-After` when every place is taken.
    pub fn admit(&self, gate: Gate) -> Result<OwnedSemaphorePermit, ApiError> {
        let (semaphore, limit, what, flag) = match gate {
            Gate::Upload => (
                &self.gates.uploads,
                self.config.max_uploads,
                "uploads",
                "--max-uploads",
            ),
            Gate::Export => (
                &self.gates.exports,
                self.config.max_exports,
                "exports",
                "--max-exports",
            ),
            Gate::Solve => (
                &self.gates.solves,
                self.config.max_inline_solves,
                "plan solves",
                "--max-inline-solves",
            ),
        };
        semaphore
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::busy(what, limit, flag))
    }

    /// Room for one more queued job: 503 with `Retry-After` when the queue already holds
    /// `--max-queued-jobs` jobs. Hold what it returns until the job is queued.
    pub async fn admit_job(&self) -> Result<tokio::sync::OwnedMutexGuard<()>, ApiError> {
        let queueing = self.queueing.clone().lock_owned().await;
        let limit = self.config.max_queued_jobs;
        if self.db.queued_jobs().await? >= limit as i64 {
            return Err(ApiError::busy("queued jobs", limit, "--max-queued-jobs"));
        }
        Ok(queueing)
    }

    /// A supernet's checked manifest, at its current revision (cached).
    pub async fn manifest(&self, supernet_id: &str) -> StoreResult<Arc<Manifest>> {
        let revision = self.db.manifest_revision(supernet_id).await?;
        if let Some((r, m)) = self.manifests.lock().expect("lock").get(supernet_id) {
            if *r == revision {
                return Ok(m.clone());
            }
        }
        let row = self.db.supernet(supernet_id).await?;
        let manifest =
            Arc::new(Manifest::from_json(&row.manifest).map_err(|e| {
                StoreError::Corrupt(format!("supernet {supernet_id}'s manifest: {e}"))
            })?);
        let mut cache = self.manifests.lock().expect("lock");
        if cache.len() >= MANIFEST_CACHE {
            cache.clear();
        }
        cache.insert(supernet_id.to_string(), (row.revision, manifest.clone()));
        Ok(manifest)
    }

    /// Drops a deleted supernet's cached manifest and fronts.
    pub fn forget_supernet(&self, supernet_id: &str) {
        self.manifests.lock().expect("lock").remove(supernet_id);
        self.fronts
            .lock()
            .expect("lock")
            .retain(|(id, _, _, _), _| id != supernet_id);
    }

    /// The exact front of `problem` on `axis`, built once per supernet, device and cost (off the
    /// async threads; concurrent first requests wait for the one build). A build holds a place
    /// of `gate` when given, and stops when `halt` says so (then the next request builds it
    /// again); a front too large to enumerate is remembered as `None`, to be solved without.
    pub async fn front_index(
        &self,
        supernet_id: &str,
        device: Option<&serde_json::Value>,
        axis: CostKind,
        problem: &Problem,
        gate: Option<Gate>,
        halt: &Halt,
    ) -> Result<Option<Arc<FrontIndex>>, ApiError> {
        let contents = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            problem.manifest.to_json().to_string().hash(&mut h);
            h.finish()
        };
        let key = (
            supernet_id.to_string(),
            device.map(|d| d.to_string()).unwrap_or_default(),
            axis,
            contents,
        );
        let cell = {
            let mut fronts = self.fronts.lock().expect("lock");
            if fronts.len() >= FRONT_CACHE && !fronts.contains_key(&key) {
                fronts.clear();
            }
            fronts.entry(key).or_default().clone()
        };
        if let Some(index) = cell.get() {
            return Ok(index.clone());
        }
        // Only the request that builds takes a place; those waiting for its build hold none.
        let built = cell.get_or_try_init(|| {
            let (problem, halt) = (problem.clone(), halt.clone());
            async move {
                let place = gate.map(|g| self.admit(g)).transpose()?;
                tokio::task::spawn_blocking(move || {
                    let _place = place;
                    match FrontIndex::build(&problem, axis, &halt) {
                        Ok(index) => Ok(Some(Arc::new(index))),
                        Err(e @ planner::Error::Stopped(_)) => Err(ApiError::from(e)),
                        Err(_) => Ok(None),
                    }
                })
                .await
                .map_err(|e| ApiError::internal("front index", e))?
            }
        });
        Ok(built.await?.clone())
    }
}
