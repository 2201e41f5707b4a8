-- Device profiles, fleets of them, and fleet plans; jobs gain the 'fleet' kind.

CREATE TABLE devices (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    spec       TEXT NOT NULL,               -- JSON: the device document (profile, budgets, bits, high-bit layers)
    created_at INTEGER NOT NULL
);

CREATE TABLE fleets (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE fleet_devices (
    fleet_id  TEXT NOT NULL REFERENCES fleets(id) ON DELETE CASCADE,
    position  INTEGER NOT NULL,
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE RESTRICT,
    PRIMARY KEY (fleet_id, position)
);
CREATE INDEX fleet_devices_device ON fleet_devices (device_id);

CREATE TABLE fleet_plans (
    id          TEXT PRIMARY KEY,
    supernet_id TEXT NOT NULL REFERENCES supernets(id) ON DELETE CASCADE,
    fleet_id    TEXT NOT NULL,                 -- the fleet it was made for (it may be deleted since)
    fleet       TEXT NOT NULL,                 -- JSON: the fleet as it was (name and device documents)
    options     TEXT NOT NULL,                 -- JSON: the request
    status      TEXT NOT NULL CHECK (status IN ('pending', 'running', 'ready', 'failed', 'cancelled')),
    job_id      TEXT,
    result      TEXT,                          -- JSON: one row per device
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX fleet_plans_supernet ON fleet_plans (supernet_id, created_at);

-- SQLite cannot change a CHECK constraint in place: rebuild jobs with the new kind.
CREATE TABLE jobs_new (
    id               TEXT PRIMARY KEY,
    kind             TEXT NOT NULL CHECK (kind IN ('plan', 'evaluate', 'fleet')),
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
