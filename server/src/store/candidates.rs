//! Candidates: a plan's bit configurations with their predicted costs, joined with the stored
//! measurement of the same configuration; sorting, filtering and paging them.

use super::{bits_key, not_found, Conn, Db, MetricsRow, StoreResult};
use planner::Plan;
use serde_json::json;

/// What is stored of a candidate: written as it is, read back inside [`CandidateRow`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CandidateFields {
    pub id: String,
    /// Rank along the plan's sort cost.
    pub position: i64,
    /// [`bits_key`] of the bit-widths in manifest layer order.
    pub bits: String,
    pub omega: f64,
    pub size_bytes: f64,
    pub bops: f64,
    pub avg_bits: f64,
    pub latency_ms: Option<f64>,
    /// JSON: which pools produced it.
    pub sources: String,
    /// JSON: the solver status of the solve that found it.
    pub solve: String,
}

impl CandidateFields {
    /// The rows of a solved plan's candidates, in rank order, with fresh ids.
    pub fn of_plan(plan: &Plan) -> Vec<CandidateFields> {
        plan.candidates
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let k = &c.candidate;
                CandidateFields {
                    id: super::new_id("cand"),
                    position: i as i64,
                    bits: bits_key(&k.bits),
                    omega: k.omega,
                    size_bytes: k.size_bytes,
                    bops: k.bops,
                    avg_bits: k.avg_bits,
                    latency_ms: k.latency_ms,
                    sources: json!(c.sources).to_string(),
                    solve: json!(c.solve).to_string(),
                }
            })
            .collect()
    }
}

/// A stored candidate with its measurement, when one is stored for its bit configuration.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CandidateRow {
    pub plan_id: String,
    pub supernet_id: String,
    #[sqlx(flatten)]
    pub fields: CandidateFields,
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
    pub quantize_activations: Option<i64>,
    pub evaluated_at: Option<i64>,
}

impl CandidateRow {
    /// Bit-widths in manifest layer order.
    pub fn bit_list(&self) -> Vec<u8> {
        serde_json::from_str(&self.fields.bits).unwrap_or_default()
    }

    /// The stored measurement of this candidate's configuration, if any.
    pub fn measurement(&self) -> Option<MetricsRow> {
        let created_at = self.evaluated_at?;
        Some(MetricsRow {
            bits: self.fields.bits.clone(),
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
            quantize_activations: self.quantize_activations.unwrap_or(0),
            created_at,
        })
    }
}

/// Candidates joined with the evaluations of one activation setting (bound as `$1`, 0 or 1).
const CANDIDATE_SELECT: &str = "SELECT c.id, c.plan_id, c.supernet_id, c.position, c.bits, \
     c.omega, c.size_bytes, c.bops, c.avg_bits, c.latency_ms, c.sources, c.solve, e.accuracy, \
     e.agreement_fp32, e.kl_fp32, e.agreement_highest, e.kl_highest, e.sqnr_db, e.cosine_mean, \
     e.cosine_min, e.rel_l2, e.latency_ms AS eval_latency_ms, e.samples, e.batch_size, \
     e.quantize_activations, e.created_at AS evaluated_at \
     FROM candidates c LEFT JOIN evaluations e ON e.supernet_id = c.supernet_id AND e.bits = c.bits \
     AND e.quantize_activations = $1";

/// The keys candidates sort by, and their columns.
pub const SORTS: [(&str, &str); 14] = [
    ("rank", "c.position"),
    ("omega", "c.omega"),
    ("size_bytes", "c.size_bytes"),
    ("bops", "c.bops"),
    ("avg_bits", "c.avg_bits"),
    ("latency_ms", "c.latency_ms"),
    ("accuracy", "e.accuracy"),
    ("agreement_fp32", "e.agreement_fp32"),
    ("kl_fp32", "e.kl_fp32"),
    ("sqnr_db", "e.sqnr_db"),
    ("cosine_mean", "e.cosine_mean"),
    ("cosine_min", "e.cosine_min"),
    ("rel_l2", "e.rel_l2"),
    ("measured_latency_ms", "e.latency_ms"),
];

/// Which candidates a page keeps: thresholds on predicted costs and measured metrics (each
/// finite, as the caller checked), and whether a measurement must (not) be stored.
#[derive(Debug, Clone, Default)]
pub struct CandidateFilter {
    pub max_omega: Option<f64>,
    pub max_size_bytes: Option<f64>,
    pub max_bops: Option<f64>,
    pub max_latency_ms: Option<f64>,
    pub max_avg_bits: Option<f64>,
    pub min_accuracy: Option<f64>,
    pub min_agreement_fp32: Option<f64>,
    pub evaluated: Option<bool>,
}

impl CandidateFilter {
    /// SQL from ` WHERE c.plan_id = $2` on (`$1` is the activation setting of the join), made
    /// of fixed fragments and numbered parameters, and the bound values of its thresholds in
    /// parameter order, from `$3`.
    fn sql(&self) -> (String, Vec<f64>) {
        let mut sql = String::from(" WHERE c.plan_id = $2");
        let mut values = Vec::new();
        for (value, fragment) in [
            (self.max_omega, " AND c.omega <= "),
            (self.max_size_bytes, " AND c.size_bytes <= "),
            (self.max_bops, " AND c.bops <= "),
            (self.max_latency_ms, " AND c.latency_ms <= "),
            (self.max_avg_bits, " AND c.avg_bits <= "),
            (self.min_accuracy, " AND e.accuracy >= "),
            (self.min_agreement_fp32, " AND e.agreement_fp32 >= "),
        ] {
            if let Some(v) = value {
                values.push(v);
                sql.push_str(fragment);
                sql.push_str(&format!("${}", values.len() + 2));
            }
        }
        match self.evaluated {
            Some(true) => sql.push_str(" AND e.created_at IS NOT NULL"),
            Some(false) => sql.push_str(" AND e.created_at IS NULL"),
            None => {}
        }
        (sql, values)
    }
}

/// A page of a plan's candidates: the sort key (one of [`SORTS`]), direction, size, start,
/// filter, and which measurements to join (activations fake-quantized or not).
#[derive(Debug, Clone)]
pub struct CandidatePage {
    pub sort: usize,
    pub descending: bool,
    pub limit: i64,
    pub offset: i64,
    pub filter: CandidateFilter,
    pub activations: bool,
}

/// Rows per INSERT statement.
const CANDIDATE_ROWS: usize = super::rows_per_statement(12);

/// Inserts candidates of `(supernet, plan)` pairs with multi-row statements.
pub(super) async fn insert_candidates(
    tx: &mut Conn,
    rows: &[(&str, &str, &CandidateFields)],
) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(CANDIDATE_ROWS) {
        let mut sql = String::from(
            "INSERT INTO candidates (id, plan_id, supernet_id, position, bits, omega, size_bytes, \
             bops, avg_bits, latency_ms, sources, solve) VALUES ",
        );
        super::push_rows(&mut sql, chunk.len(), 12);
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (supernet_id, plan_id, c) in chunk {
            q = q
                .bind(&c.id)
                .bind(*plan_id)
                .bind(*supernet_id)
                .bind(c.position)
                .bind(&c.bits)
                .bind(c.omega)
                .bind(c.size_bytes)
                .bind(c.bops)
                .bind(c.avg_bits)
                .bind(c.latency_ms)
                .bind(&c.sources)
                .bind(&c.solve);
        }
        // Not prepared: see `store_evaluation` (a NULL `latency_ms` would fix the type as float4).
        q.persistent(false).execute(&mut *tx).await?;
    }
    Ok(())
}

impl Db {
    pub async fn candidate(
        &self,
        id: &str,
        quantize_activations: bool,
    ) -> StoreResult<CandidateRow> {
        sqlx::query_as::<_, CandidateRow>(sqlx::AssertSqlSafe(format!(
            "{CANDIDATE_SELECT} WHERE c.id = $2"
        )))
        .bind(i64::from(quantize_activations))
        .bind(id)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| not_found("candidate", id))
    }

    /// A plan's candidates in rank order.
    pub async fn candidates_of(
        &self,
        plan_id: &str,
        quantize_activations: bool,
    ) -> StoreResult<Vec<CandidateRow>> {
        Ok(
            sqlx::query_as::<_, CandidateRow>(sqlx::AssertSqlSafe(format!(
                "{CANDIDATE_SELECT} WHERE c.plan_id = $2 ORDER BY c.position"
            )))
            .bind(i64::from(quantize_activations))
            .bind(plan_id)
            .fetch_all(&self.read)
            .await?,
        )
    }

    /// The plan a candidate belongs to, if the candidate exists.
    pub async fn candidate_plan(&self, id: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT plan_id FROM candidates WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    /// One page of a plan's candidates and how many the filter keeps in all.
    pub async fn candidate_page(
        &self,
        plan_id: &str,
        page: &CandidatePage,
    ) -> StoreResult<(i64, Vec<CandidateRow>)> {
        let (filters, values) = page.filter.sql();
        let column = SORTS[page.sort.min(SORTS.len() - 1)].1;
        let order = if page.descending { "DESC" } else { "ASC" };
        let (limit, offset) = (values.len() + 3, values.len() + 4);
        let sql = format!(
            "{CANDIDATE_SELECT}{filters} ORDER BY ({column} IS NULL), {column} {order}, c.position \
             LIMIT ${limit} OFFSET ${offset}"
        );
        let mut rows = sqlx::query_as::<_, CandidateRow>(sqlx::AssertSqlSafe(sql))
            .bind(i64::from(page.activations))
            .bind(plan_id);
        for v in &values {
            rows = rows.bind(*v);
        }
        let rows = rows
            .bind(page.limit)
            .bind(page.offset)
            .fetch_all(&self.read)
            .await?;
        let count_sql = format!(
            "SELECT COUNT(*) FROM candidates c LEFT JOIN evaluations e ON e.supernet_id = c.supernet_id \
             AND e.bits = c.bits AND e.quantize_activations = $1{filters}"
        );
        let mut count = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(count_sql))
            .bind(i64::from(page.activations))
            .bind(plan_id);
        for v in &values {
            count = count.bind(*v);
        }
        let total = count.fetch_one(&self.read).await?;
        Ok((total, rows))
    }
}
