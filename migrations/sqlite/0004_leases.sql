-- Jobs are run by worker processes, each holding a lease on the job it runs and renewing it while
-- it works: a lease that runs out means its worker died, and that attempt counts (`crashes` counts
-- the attempts that ended so). A job may have a deadline. The kind is no longer a CHECK: the
-- service's typed job enum is the list of kinds, so a new kind needs no table rebuild.
-- A supernet's manifest carries a revision, bumped whenever it changes, so that every process can
-- tell when its cached copy is stale.

CREATE TABLE jobs_new (
    id               TEXT PRIMARY KEY,
    kind             TEXT NOT NULL,
    supernet_id      TEXT REFERENCES supernets(id) ON DELETE CASCADE,
    plan_id          TEXT,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 3,
    run_after        INTEGER NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    progress_done    INTEGER NOT NULL DEFAULT 0,
    progress_total   INTEGER NOT NULL DEFAULT 0,
    message          TEXT NOT NULL DEFAULT '',
    error            TEXT,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    updated_at       INTEGER NOT NULL,
    lease_owner      TEXT,                   -- the worker running it
    lease_expires_at INTEGER,                -- the worker renews it; past it, the worker is gone
    crashes          INTEGER NOT NULL DEFAULT 0,
    deadline_at      INTEGER                 -- not run, and stopped, after this time
);
INSERT INTO jobs_new (id, kind, supernet_id, plan_id, payload, status, attempts, max_attempts,
    run_after, cancel_requested, progress_done, progress_total, message, error, created_at,
    started_at, finished_at, updated_at)
SELECT id, kind, supernet_id, plan_id, payload, status, attempts, max_attempts, run_after,
    cancel_requested, progress_done, progress_total, message, error, created_at, started_at,
    finished_at, updated_at FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
CREATE INDEX jobs_queue ON jobs (status, run_after, created_at);
CREATE INDEX jobs_supernet ON jobs (supernet_id);
CREATE INDEX jobs_plan ON jobs (plan_id);
CREATE INDEX jobs_updated ON jobs (updated_at);

ALTER TABLE supernets ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
