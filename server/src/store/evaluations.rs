//! Evaluations: one measurement per supernet, bit configuration and activation setting, never
//! measured twice, stored with the progress of the job that measured it.

use super::{leases, now_ms, Db, StoreResult};
use planner::eval::Metrics;
use std::collections::HashSet;

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
    /// 1 when activations were fake-quantized, else 0.
    pub quantize_activations: i64,
    pub created_at: i64,
}

/// A measurement to store: the configuration (its bits key) and what was measured.
#[derive(Debug)]
pub struct NewEvaluation<'a> {
    pub supernet_id: &'a str,
    pub bits: &'a str,
    pub metrics: &'a Metrics,
}

impl Db {
    /// The stored measurements of a supernet for one activation setting.
    pub async fn measurements(
        &self,
        supernet_id: &str,
        quantize_activations: bool,
    ) -> StoreResult<Vec<MetricsRow>> {
        Ok(sqlx::query_as::<_, MetricsRow>(
            "SELECT bits, accuracy, agreement_fp32, kl_fp32, agreement_highest, kl_highest, sqnr_db, \
             cosine_mean, cosine_min, rel_l2, latency_ms, samples, batch_size, quantize_activations, \
             created_at FROM evaluations WHERE supernet_id = $1 AND quantize_activations = $2",
        )
        .bind(supernet_id)
        .bind(i64::from(quantize_activations))
        .fetch_all(&self.read)
        .await?)
    }

    /// The bits keys of the configurations measured for a supernet and activation setting.
    pub async fn measured(
        &self,
        supernet_id: &str,
        quantize_activations: bool,
    ) -> StoreResult<HashSet<String>> {
        Ok(sqlx::query_scalar(
            "SELECT bits FROM evaluations WHERE supernet_id = $1 AND quantize_activations = $2",
        )
        .bind(supernet_id)
        .bind(i64::from(quantize_activations))
        .fetch_all(&self.read)
        .await?
        .into_iter()
        .collect())
    }

    /// Stores a measurement (unless one is stored already: the first stays) with the measuring
    /// job's progress, in one transaction; only while the job's worker holds it. Not a prepared
    /// statement: sqlx's Any driver types a NULL float as `float4`, and Postgres would then refuse
    /// a later non-NULL `float8` in the same cached statement.
    pub async fn store_evaluation(
        &self,
        e: &NewEvaluation<'_>,
        job: super::Held<'_>,
        done: usize,
        message: &str,
    ) -> StoreResult<()> {
        let now = now_ms();
        let m = e.metrics;
        let finite = |v: f64| v.is_finite().then_some(v);
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO evaluations (supernet_id, bits, quantize_activations, accuracy, \
             agreement_fp32, kl_fp32, agreement_highest, kl_highest, sqnr_db, cosine_mean, cosine_min, \
             rel_l2, latency_ms, samples, batch_size, job_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
             ON CONFLICT DO NOTHING",
        )
        .bind(e.supernet_id)
        .bind(e.bits)
        .bind(i64::from(m.activations_quantized))
        .bind(m.accuracy)
        .bind(m.agreement_fp32)
        .bind(m.kl_fp32)
        .bind(m.agreement_highest)
        .bind(m.kl_highest)
        .bind(finite(m.sqnr_db))
        .bind(finite(m.cosine_mean))
        .bind(finite(m.cosine_min))
        .bind(finite(m.rel_l2))
        .bind(m.latency_ms)
        .bind(m.samples as i64)
        .bind(m.batch_size as i64)
        .bind(job.id)
        .bind(now)
        .persistent(false)
        .execute(&mut *tx)
        .await?;
        leases::set_progress(&mut tx, job, done, message, now).await?;
        tx.commit().await?;
        Ok(())
    }
}
