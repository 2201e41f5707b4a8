//! Group commit for plans solved at once (the hot path: CI pipelines and dashboards asking for
//! single solves). They queue here; one task writes whatever is waiting in one transaction,
//! with one multi-row INSERT for the plans and one for their candidates. Under load a commit
//! carries tens of plans, so the single writer connection is not a bottleneck; alone, a plan is
//! written as soon as it arrives. If a batch fails, its plans are retried one by one so that one
//! bad plan (say, its supernet deleted meanwhile) fails alone.

use super::candidates::{insert_candidates, CandidateFields};
use super::{Db, PlanStatus, StoreError};
use tokio::sync::{mpsc, oneshot};

/// Plans one INSERT statement carries.
const PLAN_ROWS: usize = super::rows_per_statement(7);

/// A solved plan to store.
#[derive(Debug)]
pub struct NewPlan {
    pub id: String,
    pub supernet_id: String,
    pub request: String,
    pub status: PlanStatus,
    pub result: String,
    pub created_at: i64,
    pub candidates: Vec<CandidateFields>,
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

    /// Stores the plan and its candidates; returns the plan once committed. A supernet deleted
    /// meanwhile is not found.
    pub async fn write(&self, plan: NewPlan) -> Result<NewPlan, StoreError> {
        let (reply, answer) = oneshot::channel();
        let closed = || StoreError::Database(sqlx::Error::PoolClosed);
        self.queue.send((plan, reply)).await.map_err(|_| closed())?;
        let (plan, result) = answer.await.map_err(|_| closed())?;
        match result {
            Ok(()) => Ok(plan),
            Err(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => {
                Err(super::not_found("supernet", &plan.supernet_id))
            }
            Err(e) => Err(e.into()),
        }
    }
}

async fn write(db: &Db, plans: &[&NewPlan]) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    for chunk in plans.chunks(PLAN_ROWS) {
        let mut sql = String::from(
            "INSERT INTO plans (id, supernet_id, request, status, result, created_at, updated_at) VALUES ",
        );
        super::push_rows(&mut sql, chunk.len(), 7);
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for p in chunk {
            q = q
                .bind(&p.id)
                .bind(&p.supernet_id)
                .bind(&p.request)
                .bind(p.status.as_str())
                .bind(&p.result)
                .bind(p.created_at)
                .bind(p.created_at);
        }
        q.execute(&mut *tx).await?;
    }
    let rows: Vec<(&str, &str, &CandidateFields)> = plans
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
