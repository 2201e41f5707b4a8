-- Jobs gain the 'sensitivity' kind (a supernet's per-layer sensitivity measured on its model and
-- validation set); evaluations gain the output-closeness metrics of non-classifier outputs.

ALTER TABLE evaluations ADD COLUMN cosine_mean REAL;
ALTER TABLE evaluations ADD COLUMN cosine_min REAL;
ALTER TABLE evaluations ADD COLUMN rel_l2 REAL;

-- SQLite cannot change a CHECK constraint in place: rebuild jobs with the new kind.
CREATE TABLE jobs_new (
    id               TEXT PRIMARY KEY,
    kind             TEXT NOT NULL CHECK (kind IN ('plan', 'evaluate', 'fleet', 'sensitivity')),
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
    updated_at       INTEGER NOT NULL
);
INSERT INTO jobs_new SELECT id, kind, supernet_id, plan_id, payload, status, attempts, max_attempts,
    run_after, cancel_requested, progress_done, progress_total, message, error, created_at,
    started_at, finished_at, updated_at FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
CREATE INDEX jobs_queue ON jobs (status, run_after, created_at);
CREATE INDEX jobs_supernet ON jobs (supernet_id);
