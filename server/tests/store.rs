//! The job queue of the store, on both databases: every test runs once on the embedded SQLite
//! and once on PostgreSQL (a database of its own on the server `scripts/test` started, or on one
//! the test starts). Leases, crashes counted as attempts, writes under a lost lease, deadlines,
//! cancellation and concurrent claims, against the same store code the service runs.

#[path = "../../tests/e2e/pg.rs"]
mod pg;

use bitplan::store::{
    Db, Ending, EvaluateWork, Held, JobStatus, Lease, NewPlan, PlanStatus, StoreError, Work,
};
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);

/// A store and what keeps it alive (its folder, or its Postgres database).
struct Store {
    db: Db,
    _dir: tempfile::TempDir,
    _pg: Option<pg::TestDb>,
}

async fn sqlite() -> Store {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&Db::sqlite_url(&dir.path().join("bitplan.db")), 4)
        .await
        .unwrap();
    Store {
        db,
        _dir: dir,
        _pg: None,
    }
}

async fn postgres() -> Store {
    let pg = tokio::task::spawn_blocking(pg::TestDb::new).await.unwrap();
    let db = Db::open(&pg.url, 4).await.unwrap();
    Store {
        db,
        _dir: tempfile::tempdir().unwrap(),
        _pg: Some(pg),
    }
}

/// Runs `check` on a fresh SQLite store and on a fresh Postgres store.
macro_rules! on_both {
    ($check:ident) => {
        mod $check {
            #[tokio::test]
            async fn sqlite() {
                let s = super::sqlite().await;
                super::$check(&s.db).await;
            }

            #[tokio::test]
            async fn postgres() {
                let s = super::postgres().await;
                super::$check(&s.db).await;
            }
        }
    };
}

async fn supernet(db: &Db) -> String {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/digits-cnn.manifest.json"),
    )
    .unwrap();
    db.insert_supernet(&planner::Manifest::from_json(&text).unwrap())
        .await
        .unwrap()
}

fn evaluate(bits: &str) -> Work {
    Work::Evaluate(EvaluateWork {
        bits: vec![bits.into()],
        quantize_activations: false,
        batch_size: 128,
    })
}

fn held<'a>(id: &'a str, owner: &'a str) -> Held<'a> {
    Held { id, owner }
}

async fn a_lost_lease_writes_nothing_and_the_crash_counts(db: &Db) {
    let sn = supernet(db).await;
    let id = db
        .queue_job(&sn, None, &evaluate("[8,8,8,8]"), 1)
        .await
        .unwrap()
        .id;
    let a = db.claim("A", true, HOUR).await.unwrap().unwrap();
    assert_eq!(
        (a.id.as_str(), a.attempts, a.status),
        (id.as_str(), 1, JobStatus::Running)
    );
    assert_eq!(a.lease_owner.as_deref(), Some("A"));
    assert_eq!(
        db.renew(&id, "A").await.unwrap(),
        Lease::Held { cancel: false }
    );
    assert_eq!(db.renew(&id, "B").await.unwrap(), Lease::Lost);
    assert!(matches!(
        db.progress(held(&id, "B"), 1, "not mine").await,
        Err(StoreError::LeaseLost(_))
    ));
    db.progress(held(&id, "A"), 0, "measuring").await.unwrap();

    // A's supervisor saw it die: the job is queued again and the run counts.
    let released = db
        .release_crashed(Some("A"), "signal 9 (SIGKILL)")
        .await
        .unwrap();
    assert_eq!(released, vec![(id.clone(), JobStatus::Queued)]);
    let j = db.job(&id).await.unwrap();
    assert_eq!((j.status, j.attempts, j.crashes), (JobStatus::Queued, 1, 1));
    assert_eq!(j.error.as_deref(), Some("worker died: signal 9 (SIGKILL)"));
    assert_eq!(j.lease_owner, None);
    // A, alive after all, can no longer touch it.
    assert_eq!(db.renew(&id, "A").await.unwrap(), Lease::Lost);
    assert!(matches!(
        db.progress(held(&id, "A"), 1, "late").await,
        Err(StoreError::LeaseLost(_))
    ));
    let late = db.finish(&a, "A", Ending::Succeeded("late".into())).await;
    assert_eq!(late.unwrap(), None);

    let b = db.claim("B", true, HOUR).await.unwrap().unwrap();
    assert_eq!((b.id.as_str(), b.attempts), (id.as_str(), 2));
    let done = db.finish(&b, "B", Ending::Succeeded("1 of 1".into())).await;
    assert_eq!(done.unwrap(), Some(JobStatus::Succeeded));
    let j = db.job(&id).await.unwrap();
    assert_eq!(
        (j.status, j.attempts, j.crashes),
        (JobStatus::Succeeded, 2, 1)
    );
    assert_eq!((j.error, j.message.as_str()), (None, "1 of 1"));
    assert!(j.finished_at.is_some());
    assert!(db.claim("C", true, HOUR).await.unwrap().is_none());
}
on_both!(a_lost_lease_writes_nothing_and_the_crash_counts);

async fn a_job_that_keeps_killing_its_worker_fails_with_its_plan(db: &Db) {
    let sn = supernet(db).await;
    let (plan, job) = db
        .queue_plan("plan_poison", &sn, "{}", bitplan::store::now_ms())
        .await
        .unwrap();
    assert_eq!(plan.status, PlanStatus::Pending);
    for attempt in 1..=3 {
        let owner = format!("w{attempt}");
        let claimed = db.claim(&owner, false, HOUR).await.unwrap().unwrap();
        assert_eq!(
            (claimed.id.as_str(), claimed.attempts),
            (job.id.as_str(), attempt)
        );
        assert_eq!(
            db.plan("plan_poison").await.unwrap().status,
            PlanStatus::Running
        );
        let released = db
            .release_crashed(Some(&owner), "signal 6 (SIGABRT)")
            .await
            .unwrap();
        let expected = if attempt < 3 {
            JobStatus::Queued
        } else {
            JobStatus::Failed
        };
        assert_eq!(released, vec![(job.id.clone(), expected)]);
    }
    let j = db.job(&job.id).await.unwrap();
    assert_eq!((j.status, j.attempts, j.crashes), (JobStatus::Failed, 3, 3));
    assert_eq!(
        j.error.as_deref(),
        Some("worker died 3 times: signal 6 (SIGABRT)")
    );
    assert_eq!(
        db.plan("plan_poison").await.unwrap().status,
        PlanStatus::Failed
    );
    assert!(db.claim("w4", true, HOUR).await.unwrap().is_none());
}
on_both!(a_job_that_keeps_killing_its_worker_fails_with_its_plan);

async fn a_job_past_its_deadline_is_never_claimed_and_fails_with_its_plan(db: &Db) {
    let sn = supernet(db).await;
    let (_, job) = db
        .queue_plan("plan_late", &sn, "{}", bitplan::store::now_ms())
        .await
        .unwrap();
    // The first claim sets the deadline 1 ms ahead; the worker dies; the deadline passes.
    db.claim("A", true, Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    db.release_crashed(Some("A"), "signal 9").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(db.claim("B", true, HOUR).await.unwrap().is_none());
    assert_eq!(db.expire_deadlines().await.unwrap(), 1);
    let j = db.job(&job.id).await.unwrap();
    assert_eq!(j.status, JobStatus::Failed);
    assert_eq!(j.error.as_deref(), Some("the job ran past its deadline"));
    assert_eq!(
        db.plan("plan_late").await.unwrap().status,
        PlanStatus::Failed
    );
    assert_eq!(db.expire_deadlines().await.unwrap(), 0);
}
on_both!(a_job_past_its_deadline_is_never_claimed_and_fails_with_its_plan);

async fn cancelling_stops_a_queued_job_at_once_and_a_running_one_at_its_heartbeat(db: &Db) {
    let sn = supernet(db).await;
    let (_, queued) = db
        .queue_plan("plan_q", &sn, "{}", bitplan::store::now_ms())
        .await
        .unwrap();
    let j = db.cancel_job(&queued.id).await.unwrap();
    assert_eq!(j.status, JobStatus::Cancelled);
    assert_eq!(
        db.plan("plan_q").await.unwrap().status,
        PlanStatus::Cancelled
    );

    let (_, running) = db
        .queue_plan("plan_r", &sn, "{}", bitplan::store::now_ms())
        .await
        .unwrap();
    let claimed = db.claim("A", false, HOUR).await.unwrap().unwrap();
    assert_eq!(claimed.id, running.id);
    let j = db.cancel_job(&running.id).await.unwrap();
    assert_eq!((j.status, j.cancel_requested), (JobStatus::Running, true));
    assert_eq!(db.plan("plan_r").await.unwrap().status, PlanStatus::Running);
    assert_eq!(
        db.renew(&running.id, "A").await.unwrap(),
        Lease::Held { cancel: true }
    );
    let ended = db
        .finish(&claimed, "A", Ending::Cancelled("cancelled".into()))
        .await;
    assert_eq!(ended.unwrap(), Some(JobStatus::Cancelled));
    assert_eq!(
        db.plan("plan_r").await.unwrap().status,
        PlanStatus::Cancelled
    );
}
on_both!(cancelling_stops_a_queued_job_at_once_and_a_running_one_at_its_heartbeat);

/// A search deleted while its job runs: the job is asked to stop, and its result, should it
/// still arrive, writes nothing (no plan left behind without its search).
async fn a_search_deleted_while_it_runs_stores_no_plan(db: &Db) {
    let sn = supernet(db).await;
    let (search, job) = db
        .queue_search(&sn, &serde_json::json!({}), 4)
        .await
        .unwrap();
    let claimed = db.claim("A", true, HOUR).await.unwrap().unwrap();
    assert_eq!(claimed.id, job.id);
    let deleted = db.delete_search(&search.id).await.unwrap();
    assert_eq!(
        (deleted.jobs, deleted.plan_id),
        (vec![job.id.clone()], None)
    );
    assert_eq!(
        db.renew(&job.id, "A").await.unwrap(),
        Lease::Held { cancel: true }
    );
    let plan = NewPlan {
        id: "plan_of_search".into(),
        supernet_id: sn.clone(),
        request: "{}".into(),
        status: PlanStatus::Ready,
        result: "{}".into(),
        created_at: bitplan::store::now_ms(),
        candidates: Vec::new(),
    };
    let doc = serde_json::json!({"plan_id": "plan_of_search"});
    let stored = db
        .store_search_result(&search.id, &doc, &plan, held(&job.id, "A"))
        .await;
    assert!(
        matches!(stored, Err(StoreError::NotFound { what: "search", .. })),
        "{stored:?}"
    );
    assert!(matches!(
        db.plan("plan_of_search").await,
        Err(StoreError::NotFound { .. })
    ));

    // Queued: its job is cancelled at once and never claimed.
    let (queued, job) = db
        .queue_search(&sn, &serde_json::json!({}), 4)
        .await
        .unwrap();
    db.delete_search(&queued.id).await.unwrap();
    assert_eq!(db.job(&job.id).await.unwrap().status, JobStatus::Cancelled);
    assert!(db.claim("B", true, HOUR).await.unwrap().is_none());

    // Done: the plan its result names goes with it.
    let (done, job) = db
        .queue_search(&sn, &serde_json::json!({}), 4)
        .await
        .unwrap();
    db.claim("C", true, HOUR).await.unwrap().unwrap();
    db.store_search_result(&done.id, &doc, &plan, held(&job.id, "C"))
        .await
        .unwrap();
    assert!(db.plan("plan_of_search").await.is_ok());
    let deleted = db.delete_search(&done.id).await.unwrap();
    assert_eq!(deleted.plan_id.as_deref(), Some("plan_of_search"));
    // Its worker has not ended the job yet: it is asked to stop.
    assert_eq!(deleted.jobs, vec![job.id.clone()]);
    assert!(matches!(
        db.plan("plan_of_search").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        db.delete_search(&done.id).await,
        Err(StoreError::NotFound { what: "search", .. })
    ));
}
on_both!(a_search_deleted_while_it_runs_stores_no_plan);

async fn concurrent_workers_claim_every_job_exactly_once(db: &Db) {
    let sn = supernet(db).await;
    let mut queued = Vec::new();
    for i in 0..40 {
        let work = evaluate(&format!("[{i},8,8,8]"));
        queued.push(db.queue_job(&sn, None, &work, 1).await.unwrap().id);
    }
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let db = db.clone();
        workers.spawn(async move {
            let mut mine = Vec::new();
            while let Some(job) = db.claim(&format!("w{w}"), true, HOUR).await.unwrap() {
                mine.push(job.id);
            }
            mine
        });
    }
    let mut claimed: Vec<String> = Vec::new();
    while let Some(mine) = workers.join_next().await {
        claimed.extend(mine.unwrap());
    }
    claimed.sort();
    queued.sort();
    assert_eq!(claimed, queued, "every job claimed once, none twice");
}
on_both!(concurrent_workers_claim_every_job_exactly_once);

async fn garbage_collection_leaves_pinned_and_referenced_blobs_alone(db: &Db) {
    let sn = supernet(db).await;
    // An upload in flight: pinned, referred to by nothing yet.
    db.insert_blob("aa11", 10).await.unwrap();
    assert_eq!(db.collect_blob_rows().await.unwrap(), Vec::<String>::new());
    // Refused: unpinned, and collected.
    db.unpin_blob("aa11").await.unwrap();
    assert_eq!(
        db.collect_blob_rows().await.unwrap(),
        vec!["aa11".to_string()]
    );
    // Accepted: attaching unpins it, and the supernet keeps it.
    db.insert_blob("bb22", 10).await.unwrap();
    let model = bitplan::store::Upload::Model;
    assert!(db.attach_blob(&sn, model, "bb22", None).await.unwrap());
    assert_eq!(db.collect_blob_rows().await.unwrap(), Vec::<String>::new());
    // Uploaded again while unreferenced: pinned again.
    db.insert_blob("aa11", 10).await.unwrap();
    assert_eq!(db.collect_blob_rows().await.unwrap(), Vec::<String>::new());
    assert_eq!(db.count(bitplan::store::Table::Blobs).await.unwrap(), 2);
}
on_both!(garbage_collection_leaves_pinned_and_referenced_blobs_alone);
