//! Supernets: the checked manifest, its revision, and the content-addressed blobs (model and
//! validation set) it refers to; deleting a supernet with what depends on it; blob rows and
//! their garbage collection (the files themselves are `crate::blobs`').

use super::{leases, not_found, now_ms, Conn, Db, StoreResult};
use planner::Manifest;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SupernetRow {
    pub id: String,
    pub name: String,
    pub manifest: String,
    pub revision: i64,
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

impl SupernetRow {
    /// Whether both files a measurement needs are there.
    pub fn measurable(&self) -> bool {
        self.model_hash.is_some() && self.data_hash.is_some()
    }
}

const SUPERNET_SELECT: &str = "SELECT s.id, s.name, s.manifest, s.revision, s.layers, s.params, \
     s.model_hash, m.bytes AS model_bytes, s.data_hash, d.bytes AS data_bytes, s.data_samples, \
     s.created_at, (SELECT COUNT(*) FROM plans p WHERE p.supernet_id = s.id) AS plans \
     FROM supernets s LEFT JOIN blobs m ON m.hash = s.model_hash LEFT JOIN blobs d ON d.hash = s.data_hash";

/// How long an uploaded blob stays pinned at most (its upload is checked and attached well within).
pub const BLOB_PIN: std::time::Duration = std::time::Duration::from_secs(3600);

/// Which file of a supernet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    Model,
    Validation,
}

impl Upload {
    /// The request field the file answers to.
    pub fn field(self) -> &'static str {
        match self {
            Upload::Model => "model",
            Upload::Validation => "validation",
        }
    }
}

/// What depends on a supernet: counts by table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dependents {
    pub plans: i64,
    pub candidates: i64,
    pub evaluations: i64,
    pub fleet_plans: i64,
    pub searches: i64,
    pub jobs: i64,
}

impl Dependents {
    pub fn any(&self) -> bool {
        self.plans
            + self.candidates
            + self.evaluations
            + self.fleet_plans
            + self.searches
            + self.jobs
            > 0
    }
}

/// What deleting a supernet did.
#[derive(Debug)]
pub enum Deleted {
    /// Nothing: it has dependents and no cascade was asked for.
    Refused(Dependents),
    /// Deleted with its dependents; `unfinished_jobs` were queued or running (their workers stop
    /// at their next checkpoint).
    Removed {
        dependents: Dependents,
        unfinished_jobs: Vec<String>,
    },
}

impl Db {
    pub async fn supernet(&self, id: &str) -> StoreResult<SupernetRow> {
        sqlx::query_as::<_, SupernetRow>(sqlx::AssertSqlSafe(format!(
            "{SUPERNET_SELECT} WHERE s.id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| not_found("supernet", id))
    }

    pub async fn supernets(&self) -> StoreResult<Vec<SupernetRow>> {
        Ok(
            sqlx::query_as::<_, SupernetRow>(sqlx::AssertSqlSafe(format!(
                "{SUPERNET_SELECT} ORDER BY s.created_at DESC, s.id DESC"
            )))
            .fetch_all(&self.read)
            .await?,
        )
    }

    /// The oldest supernet named `name`, if any.
    pub async fn supernet_named(&self, name: &str) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM supernets WHERE name = $1 ORDER BY created_at, id LIMIT 1",
        )
        .bind(name)
        .fetch_optional(&self.read)
        .await?)
    }

    /// The revision of a supernet's manifest (bumped whenever the manifest changes).
    pub async fn manifest_revision(&self, id: &str) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT revision FROM supernets WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| not_found("supernet", id))
    }

    /// Stores a checked manifest as a new supernet; returns its id.
    pub async fn insert_supernet(&self, manifest: &Manifest) -> StoreResult<String> {
        let id = super::new_id("sn");
        sqlx::query(
            "INSERT INTO supernets (id, name, manifest, layers, params, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(&manifest.name)
        .bind(manifest.to_json().to_string())
        .bind(manifest.layers.len() as i64)
        .bind(manifest.total_params() as i64)
        .bind(now_ms())
        .execute(&self.write)
        .await?;
        Ok(id)
    }

    /// Replaces a supernet's manifest with one measured on its files, with the measuring job's
    /// final progress, in one transaction; only while the supernet still has the model and
    /// validation set that were measured (their hashes). Returns whether it was stored.
    pub async fn store_measured_manifest(
        &self,
        id: &str,
        (model_hash, data_hash): (&str, &str),
        manifest: &Manifest,
        job: super::Held<'_>,
        done: usize,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let updated = sqlx::query(
            "UPDATE supernets SET manifest = $1, revision = revision + 1 \
             WHERE id = $2 AND model_hash = $3 AND data_hash = $4",
        )
        .bind(manifest.to_json().to_string())
        .bind(id)
        .bind(model_hash)
        .bind(data_hash)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }
        leases::set_done(&mut tx, job, done as i64).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Deletes a supernet, or refuses when something depends on it and `cascade` is off; what is
    /// counted is what is deleted (one transaction).
    pub async fn delete_supernet(&self, id: &str, cascade: bool) -> StoreResult<Deleted> {
        let mut tx = self.begin().await?;
        let dependents = dependents(&mut tx, id).await?;
        if dependents.any() && !cascade {
            return Ok(Deleted::Refused(dependents));
        }
        let unfinished_jobs: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE supernet_id = $1 AND status IN ('queued', 'running')",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let deleted = sqlx::query("DELETE FROM supernets WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(not_found("supernet", id));
        }
        tx.commit().await?;
        Ok(Deleted::Removed {
            dependents,
            unfinished_jobs,
        })
    }

    /// Records a blob file as stored (idempotent: blobs are content-addressed), pinned for
    /// `BLOB_PIN` so that garbage collection leaves it alone until a supernet refers to it.
    pub async fn insert_blob(&self, hash: &str, bytes: u64) -> StoreResult<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO blobs (hash, bytes, created_at, pinned_until) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (hash) DO UPDATE SET pinned_until = $4",
        )
        .bind(hash)
        .bind(bytes as i64)
        .bind(now)
        .bind(now + BLOB_PIN.as_millis() as i64)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Unpins a blob whose upload was refused: garbage collection may take it when nothing
    /// refers to it.
    pub async fn unpin_blob(&self, hash: &str) -> StoreResult<()> {
        sqlx::query("UPDATE blobs SET pinned_until = NULL WHERE hash = $1")
            .bind(hash)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Points a supernet at a stored blob, with the validation set's sample count when known (a
    /// model upload keeps the old count when it gives none). Returns whether the supernet exists.
    pub async fn attach_blob(
        &self,
        id: &str,
        what: Upload,
        hash: &str,
        samples: Option<usize>,
    ) -> StoreResult<bool> {
        let sql = match what {
            Upload::Model => {
                "UPDATE supernets SET model_hash = $1, data_samples = COALESCE($2, data_samples) WHERE id = $3"
            }
            Upload::Validation => {
                "UPDATE supernets SET data_hash = $1, data_samples = $2 WHERE id = $3"
            }
        };
        let mut tx = self.begin().await?;
        let updated = sqlx::query(sql)
            .bind(hash)
            .bind(samples.map(|s| s as i64))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE blobs SET pinned_until = NULL WHERE hash = $1")
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(updated.rows_affected() > 0)
    }

    /// Deletes the rows of blobs no supernet refers to and no upload has pinned; returns their
    /// hashes, whose files the caller removes.
    pub async fn collect_blob_rows(&self) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "DELETE FROM blobs WHERE (pinned_until IS NULL OR pinned_until < $1) \
             AND hash NOT IN (SELECT model_hash FROM supernets WHERE model_hash IS NOT NULL \
             UNION SELECT data_hash FROM supernets WHERE data_hash IS NOT NULL) RETURNING hash",
        )
        .bind(now_ms())
        .fetch_all(&self.write)
        .await?)
    }
}

async fn dependents(tx: &mut Conn, id: &str) -> StoreResult<Dependents> {
    let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql).bind(id);
    Ok(Dependents {
        plans: count("SELECT COUNT(*) FROM plans WHERE supernet_id = $1")
            .fetch_one(&mut *tx)
            .await?,
        candidates: count("SELECT COUNT(*) FROM candidates WHERE supernet_id = $1")
            .fetch_one(&mut *tx)
            .await?,
        evaluations: count("SELECT COUNT(*) FROM evaluations WHERE supernet_id = $1")
            .fetch_one(&mut *tx)
            .await?,
        fleet_plans: count("SELECT COUNT(*) FROM fleet_plans WHERE supernet_id = $1")
            .fetch_one(&mut *tx)
            .await?,
        searches: count("SELECT COUNT(*) FROM searches WHERE supernet_id = $1")
            .fetch_one(&mut *tx)
            .await?,
        jobs: count("SELECT COUNT(*) FROM jobs WHERE supernet_id = $1")
            .fetch_one(&mut *tx)
            .await?,
    })
}
