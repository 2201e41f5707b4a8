//! SQLite storage: one writer connection (writes queue in-process instead of contending for
//! the file lock, so requests never see SQLITE_BUSY), a pool of readers (WAL lets them read
//! while the writer writes), migrations from `migrations/`.

use crate::error::ApiError;
use serde_json::{json, Value};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// The database: a single-connection writer pool and a bounded reader pool.
#[derive(Debug, Clone)]
pub struct Db {
    pub write: SqlitePool,
    pub read: SqlitePool,
}

impl Db {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub async fn open(path: &Path, readers: u32) -> anyhow::Result<Db> {
        let url = format!("sqlite://{}", path.display());
        // WAL: readers never block the writer. synchronous=NORMAL in WAL mode loses nothing
        // when the process is killed (commits are in the OS's file cache), only on power loss.
        let options = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("../migrations").run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(readers.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.read_only(true))
            .await?;
        Ok(Db { write, read })
    }

    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `2026-11-27T18:14:44.123Z` from Unix milliseconds (proleptic Gregorian, UTC).
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A new identifier: a kind prefix and a time-ordered UUID (v7), e.g. `plan_0193…`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Parses a JSON column written by this program.
pub fn json_column(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

// ---------------------------------------------------------------------------------------------
// Supernets

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SupernetRow {
    pub id: String,
    pub name: String,
    pub manifest: String,
    pub layers: i64,
    pub params: i64,
    pub model_hash: Option<String>,
    pub model_bytes: Option<i64>,
    pub data_hash: Option<String>,
    pub data_bytes: Option<i64>,
    pub data_samples: Option<i64>,
    pub created_at: i64,
    pub plans: i64,
}

const SUPERNET_SELECT: &str = "SELECT s.id, s.name, s.manifest, s.layers, s.params, s.model_hash, \
     m.bytes AS model_bytes, s.data_hash, d.bytes AS data_bytes, s.data_samples, s.created_at, \
     (SELECT COUNT(*) FROM plans p WHERE p.supernet_id = s.id) AS plans \
     FROM supernets s LEFT JOIN blobs m ON m.hash = s.model_hash LEFT JOIN blobs d ON d.hash = s.data_hash";

pub async fn supernet(db: &Db, id: &str) -> Result<SupernetRow, ApiError> {
    sqlx::query_as::<_, SupernetRow>(sqlx::AssertSqlSafe(format!(
        "{SUPERNET_SELECT} WHERE s.id = ?"
    )))
    .bind(id)
    .fetch_optional(&db.read)
    .await?
    .ok_or_else(|| ApiError::not_found("supernet", id))
}

pub async fn supernets(db: &Db) -> Result<Vec<SupernetRow>, ApiError> {
    Ok(
        sqlx::query_as::<_, SupernetRow>(sqlx::AssertSqlSafe(format!(
            "{SUPERNET_SELECT} ORDER BY s.created_at DESC, s.id DESC"
        )))
        .fetch_all(&db.read)
        .await?,
    )
}

impl SupernetRow {
    /// The API body; `detail` adds the manifest.
    pub fn to_json(&self, detail: bool) -> Value {
        let blob = |hash: &Option<String>, bytes: Option<i64>| {
            hash.as_ref()
                .map(|h| json!({"sha256": h, "bytes": bytes.unwrap_or(0)}))
        };
        let mut v = json!({
            "id": self.id,
            "name": self.name,
            "layers": self.layers,
            "params": self.params,
            "model": blob(&self.model_hash, self.model_bytes),
            "validation": blob(&self.data_hash, self.data_bytes).map(|mut b| {
                b["samples"] = json!(self.data_samples);
                b
            }),
            "plans": self.plans,
            "created_at": rfc3339(self.created_at),
        });
        if detail {
            v["manifest"] = json_column(&self.manifest);
        }
        v
    }
}

// ---------------------------------------------------------------------------------------------
// Jobs

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: String,
    pub kind: String,
    pub supernet_id: Option<String>,
    pub plan_id: Option<String>,
    pub payload: String,
    pub status: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub run_after: i64,
    pub cancel_requested: i64,
    pub progress_done: i64,
    pub progress_total: i64,
    pub message: String,
    pub error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub updated_at: i64,
}

pub const JOB_COLUMNS: &str = "id, kind, supernet_id, plan_id, payload, status, attempts, \
     max_attempts, run_after, cancel_requested, progress_done, progress_total, message, error, \
     created_at, started_at, finished_at, updated_at";

impl JobRow {
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "failed" | "cancelled")
    }

    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "supernet_id": self.supernet_id,
            "plan_id": self.plan_id,
            "progress": {"done": self.progress_done, "total": self.progress_total, "message": self.message},
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "cancel_requested": self.cancel_requested != 0,
            "error": self.error,
            "created_at": rfc3339(self.created_at),
            "started_at": self.started_at.map(rfc3339),
            "finished_at": self.finished_at.map(rfc3339),
            "updated_at": rfc3339(self.updated_at),
        })
    }
}

pub async fn job(db: &Db, id: &str) -> Result<JobRow, ApiError> {
    job_on(&db.read, id).await
}

/// A job as `executor` sees it (a transaction sees its own uncommitted rows).
pub async fn job_on<'e>(
    executor: impl sqlx::SqliteExecutor<'e>,
    id: &str,
) -> Result<JobRow, ApiError> {
    sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"
    )))
    .bind(id)
    .fetch_optional(executor)
    .await?
    .ok_or_else(|| ApiError::not_found("job", id))
}

/// Queues a job inside the caller's transaction.
pub async fn insert_job(
    tx: &mut sqlx::SqliteConnection,
    id: &str,
    kind: &str,
    supernet_id: &str,
    plan_id: Option<&str>,
    payload: &Value,
    total: i64,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO jobs (id, kind, supernet_id, plan_id, payload, status, run_after, \
         progress_total, message, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, 'queued', ?, ?)",
    )
    .bind(id)
    .bind(kind)
    .bind(supernet_id)
    .bind(plan_id)
    .bind(payload.to_string())
    .bind(now)
    .bind(total)
    .bind(now)
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Plans and candidates

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PlanRow {
    pub id: String,
    pub supernet_id: String,
    pub request: String,
    pub status: String,
    pub job_id: Option<String>,
    pub result: Option<String>,
    pub chosen_candidate_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub candidates: i64,
}

const PLAN_SELECT: &str = "SELECT p.id, p.supernet_id, p.request, p.status, p.job_id, p.result, \
     p.chosen_candidate_id, p.created_at, p.updated_at, \
     (SELECT COUNT(*) FROM candidates c WHERE c.plan_id = p.id) AS candidates FROM plans p";

impl PlanRow {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "supernet_id": self.supernet_id,
            "status": self.status,
            "request": json_column(&self.request),
            "job_id": self.job_id,
            "candidate_count": self.candidates,
            "chosen_candidate_id": self.chosen_candidate_id,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        });
        // The solver's summary: status, timings, engine, warnings, infeasibility.
        let result = self.result.as_deref().map(json_column);
        v["result"] = result.unwrap_or(Value::Null);
        v
    }
}

pub async fn plan(db: &Db, id: &str) -> Result<PlanRow, ApiError> {
    plan_on(&db.read, id).await
}

/// A plan as `executor` sees it (a transaction sees its own uncommitted rows).
pub async fn plan_on<'e>(
    executor: impl sqlx::SqliteExecutor<'e>,
    id: &str,
) -> Result<PlanRow, ApiError> {
    sqlx::query_as::<_, PlanRow>(sqlx::AssertSqlSafe(format!("{PLAN_SELECT} WHERE p.id = ?")))
        .bind(id)
        .fetch_optional(executor)
        .await?
        .ok_or_else(|| ApiError::not_found("plan", id))
}

pub async fn plans_of(db: &Db, supernet_id: &str) -> Result<Vec<PlanRow>, ApiError> {
    Ok(sqlx::query_as::<_, PlanRow>(sqlx::AssertSqlSafe(format!(
        "{PLAN_SELECT} WHERE p.supernet_id = ? ORDER BY p.created_at DESC, p.id DESC"
    )))
    .bind(supernet_id)
    .fetch_all(&db.read)
    .await?)
}

/// A candidate with its measurement, when one is stored for its bit configuration.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CandidateRow {
    pub id: String,
    pub plan_id: String,
    pub supernet_id: String,
    pub position: i64,
    pub bits: String,
    pub omega: f64,
    pub size_bytes: f64,
    pub bops: f64,
    pub avg_bits: f64,
    pub latency_ms: Option<f64>,
    pub sources: String,
    pub solve: String,
    pub accuracy: Option<f64>,
    pub agreement_fp32: Option<f64>,
    pub kl_fp32: Option<f64>,
    pub agreement_highest: Option<f64>,
    pub kl_highest: Option<f64>,
    pub sqnr_db: Option<f64>,
    pub cosine_mean: Option<f64>,
    pub cosine_min: Option<f64>,
    pub rel_l2: Option<f64>,
    pub eval_latency_ms: Option<f64>,
    pub samples: Option<i64>,
    pub batch_size: Option<i64>,
    pub evaluated_at: Option<i64>,
}

/// Candidates joined with the evaluations of one activation setting (bound as the first `?`).
pub const CANDIDATE_SELECT: &str = "SELECT c.id, c.plan_id, c.supernet_id, c.position, c.bits, \
     c.omega, c.size_bytes, c.bops, c.avg_bits, c.latency_ms, c.sources, c.solve, e.accuracy, \
     e.agreement_fp32, e.kl_fp32, e.agreement_highest, e.kl_highest, e.sqnr_db, e.cosine_mean, \
     e.cosine_min, e.rel_l2, e.latency_ms AS eval_latency_ms, e.samples, e.batch_size, e.created_at AS evaluated_at \
     FROM candidates c LEFT JOIN evaluations e ON e.supernet_id = c.supernet_id AND e.bits = c.bits \
     AND e.quantize_activations = ?";

impl CandidateRow {
    /// Bit-widths in manifest layer order.
    pub fn bit_list(&self) -> Vec<u8> {
        serde_json::from_str(&self.bits).unwrap_or_default()
    }

    /// The API body: `bits` maps layer names to bit-widths (given the manifest's layer names).
    pub fn to_json(&self, layer_names: &[String], quantize_activations: bool) -> Value {
        let bits = planner::bits_json(layer_names.iter().map(String::as_str), &self.bit_list());
        let metrics = self.evaluated_at.map(|at| {
            MetricsRow {
                bits: String::new(),
                accuracy: self.accuracy,
                agreement_fp32: self.agreement_fp32.unwrap_or(f64::NAN),
                kl_fp32: self.kl_fp32.unwrap_or(f64::NAN),
                agreement_highest: self.agreement_highest.unwrap_or(f64::NAN),
                kl_highest: self.kl_highest.unwrap_or(f64::NAN),
                sqnr_db: self.sqnr_db,
                cosine_mean: self.cosine_mean,
                cosine_min: self.cosine_min,
                rel_l2: self.rel_l2,
                latency_ms: self.eval_latency_ms.unwrap_or(f64::NAN),
                samples: self.samples.unwrap_or(0),
                batch_size: self.batch_size.unwrap_or(0),
                quantize_activations,
                created_at: at,
            }
            .to_json()
        });
        json!({
            "id": self.id,
            "plan_id": self.plan_id,
            "supernet_id": self.supernet_id,
            "rank": self.position,
            "bits": bits,
            "omega": self.omega,
            "size_bytes": self.size_bytes,
            "bops": self.bops,
            "avg_bits": self.avg_bits,
            "latency_ms": self.latency_ms,
            "sources": json_column(&self.sources),
            "solve": json_column(&self.solve),
            "metrics": metrics,
        })
    }
}

/// One stored measurement.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MetricsRow {
    pub bits: String,
    pub accuracy: Option<f64>,
    pub agreement_fp32: f64,
    pub kl_fp32: f64,
    pub agreement_highest: f64,
    pub kl_highest: f64,
    pub sqnr_db: Option<f64>,
    /// Output closeness to fp32 (absent on rows measured before it was stored).
    pub cosine_mean: Option<f64>,
    pub cosine_min: Option<f64>,
    pub rel_l2: Option<f64>,
    pub latency_ms: f64,
    pub samples: i64,
    pub batch_size: i64,
    pub quantize_activations: bool,
    pub created_at: i64,
}

impl MetricsRow {
    /// The API's `Metrics` object.
    pub fn to_json(&self) -> Value {
        json!({
            "accuracy": self.accuracy,
            "agreement_fp32": self.agreement_fp32,
            "kl_fp32": self.kl_fp32,
            "agreement_highest": self.agreement_highest,
            "kl_highest": self.kl_highest,
            "sqnr_db": self.sqnr_db,
            "cosine_mean": self.cosine_mean,
            "cosine_min": self.cosine_min,
            "rel_l2": self.rel_l2,
            "latency_ms": self.latency_ms,
            "samples": self.samples,
            "batch_size": self.batch_size,
            "quantize_activations": self.quantize_activations,
            "evaluated_at": rfc3339(self.created_at),
        })
    }
}

/// The stored measurements of a supernet for one activation setting.
pub async fn measurements(
    db: &Db,
    supernet_id: &str,
    quantize_activations: bool,
) -> Result<Vec<MetricsRow>, sqlx::Error> {
    sqlx::query_as::<_, MetricsRow>(
        "SELECT bits, accuracy, agreement_fp32, kl_fp32, agreement_highest, kl_highest, sqnr_db, \
         cosine_mean, cosine_min, rel_l2, latency_ms, samples, batch_size, quantize_activations, created_at FROM evaluations \
         WHERE supernet_id = ? AND quantize_activations = ?",
    )
    .bind(supernet_id)
    .bind(quantize_activations)
    .fetch_all(&db.read)
    .await
}

pub async fn candidate(
    db: &Db,
    id: &str,
    quantize_activations: bool,
) -> Result<CandidateRow, ApiError> {
    sqlx::query_as::<_, CandidateRow>(sqlx::AssertSqlSafe(format!(
        "{CANDIDATE_SELECT} WHERE c.id = ?"
    )))
    .bind(quantize_activations)
    .bind(id)
    .fetch_optional(&db.read)
    .await?
    .ok_or_else(|| ApiError::not_found("candidate", id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_804_484_123), "2026-11-27T18:34:44.123Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }
}
