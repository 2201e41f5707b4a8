//! Group commit for new plans. Plans created at once (the hot path: CI pipelines and dashboards
//! asking for single solves) queue here; one task writes whatever is waiting in one transaction,
//! with one multi-row INSERT for the plans and one for their candidates. Under load a commit
//! carries tens of plans, so the single writer connection is not a bottleneck; alone, a plan is
//! written as soon as it arrives. If a batch fails, its plans are retried one by one so that one
//! bad plan (say, its supernet deleted meanwhile) fails alone.

use crate::store::Db;
use planner::Plan;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

/// A candidate row to insert.
#[derive(Debug, Clone)]
pub struct NewCandidate {
    pub id: String,
    pub position: i64,
    pub bits: String,
    pub omega: f64,
    pub size_bytes: f64,
    pub bops: f64,
    pub avg_bits: f64,
    pub latency_ms: Option<f64>,
    pub sources: String,
    pub solve: String,
}

/// The rows of a solved plan's candidates, in rank order, with fresh ids.
pub fn candidate_rows(plan: &Plan) -> Vec<NewCandidate> {
    plan.candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let k = &c.candidate;
            NewCandidate {
                id: crate::store::new_id("cand"),
                position: i as i64,
                bits: crate::planning::bits_key(&k.bits),
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

/// Rows per INSERT statement, under SQLite's limit of 32,766 bound values.
const CANDIDATE_ROWS: usize = 2000;
const PLAN_ROWS: usize = 2000;

/// Inserts candidates of `(supernet, plan)` pairs with multi-row statements.
pub async fn insert_candidates(
    tx: &mut sqlx::SqliteConnection,
    rows: &[(&str, &str, &NewCandidate)],
) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(CANDIDATE_ROWS) {
        let mut sql = String::from(
            "INSERT INTO candidates (id, plan_id, supernet_id, position, bits, omega, size_bytes, \
             bops, avg_bits, latency_ms, sources, solve) VALUES ",
        );
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 {
                "(?,?,?,?,?,?,?,?,?,?,?,?)"
            } else {
                ",(?,?,?,?,?,?,?,?,?,?,?,?)"
            });
        }
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
        q.execute(&mut *tx).await?;
    }
    Ok(())
}

/// A solved plan to store.
#[derive(Debug)]
pub struct NewPlan {
    pub id: String,
    pub supernet_id: String,
    pub request: String,
    pub status: &'static str,
    pub result: String,
    pub created_at: i64,
    pub candidates: Vec<NewCandidate>,
}

type Reply = oneshot::Sender<(NewPlan, Result<(), sqlx::Error>)>;

/// The handle of the group-commit task.
#[derive(Debug, Clone)]
pub struct PlanWriter {
    queue: mpsc::Sender<(NewPlan, Reply)>,
}

/// Plans one commit carries at most.
const BATCH: usize = 256;

impl PlanWriter {
    pub fn spawn(db: Db) -> PlanWriter {
        let (queue, mut rx) = mpsc::channel::<(NewPlan, Reply)>(4 * BATCH);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(_) => break,
                    }
                }
                let plans: Vec<&NewPlan> = batch.iter().map(|(p, _)| p).collect();
                match write(&db, &plans).await {
                    Ok(()) => {
                        for (plan, reply) in batch {
                            let _ = reply.send((plan, Ok(())));
                        }
                    }
                    Err(e) if batch.len() == 1 => {
                        let (plan, reply) = batch.pop().expect("one");
                        let _ = reply.send((plan, Err(e)));
                    }
                    Err(_) => {
                        for (plan, reply) in batch {
                            let result = write(&db, &[&plan]).await;
                            let _ = reply.send((plan, result));
                        }
                    }
                }
            }
        });
        PlanWriter { queue }
    }

    /// Stores the plan and its candidates; returns the plan once committed.
    pub async fn write(&self, plan: NewPlan) -> Result<NewPlan, sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((plan, reply))
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let (plan, result) = answer.await.map_err(|_| sqlx::Error::PoolClosed)?;
        result.map(|()| plan)
    }
}

async fn write(db: &Db, plans: &[&NewPlan]) -> Result<(), sqlx::Error> {
    let mut tx = db.write.begin().await?;
    for chunk in plans.chunks(PLAN_ROWS) {
        let mut sql = String::from(
            "INSERT INTO plans (id, supernet_id, request, status, result, created_at, updated_at) VALUES ",
        );
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 {
                "(?,?,?,?,?,?,?)"
            } else {
                ",(?,?,?,?,?,?,?)"
            });
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for p in chunk {
            q = q
                .bind(&p.id)
                .bind(&p.supernet_id)
                .bind(&p.request)
                .bind(p.status)
                .bind(&p.result)
                .bind(p.created_at)
                .bind(p.created_at);
        }
        q.execute(&mut *tx).await?;
    }
    let rows: Vec<(&str, &str, &NewCandidate)> = plans
        .iter()
        .flat_map(|p| {
            p.candidates
                .iter()
                .map(|c| (p.supernet_id.as_str(), p.id.as_str(), c))
        })
        .collect();
    insert_candidates(&mut tx, &rows).await?;
    tx.commit().await
}
