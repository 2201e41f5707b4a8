-- bitplan's store: supernets (manifests + content-addressed blobs), plans and their candidates,
-- measured evaluations keyed by bit configuration, and durable jobs.
-- Times are Unix milliseconds (INTEGER); JSON documents are TEXT.

CREATE TABLE blobs (
    hash       TEXT PRIMARY KEY,            -- sha256 hex of the content; file at blobs/<hash[0..2]>/<hash>
    bytes      INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE supernets (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    manifest    TEXT NOT NULL,              -- the checked manifest as JSON
    layers      INTEGER NOT NULL,
    params      INTEGER NOT NULL,
    model_hash  TEXT REFERENCES blobs(hash),
    data_hash   TEXT REFERENCES blobs(hash),
    data_samples INTEGER,
    created_at  INTEGER NOT NULL
);

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    kind             TEXT NOT NULL CHECK (kind IN ('plan', 'evaluate')),
    supernet_id      TEXT REFERENCES supernets(id) ON DELETE CASCADE,
    plan_id          TEXT,
    payload          TEXT NOT NULL,          -- JSON: what to do
    status           TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 3,
    run_after        INTEGER NOT NULL,      -- not claimed before this time (retry backoff)
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
CREATE INDEX jobs_queue ON jobs (status, run_after, created_at);
CREATE INDEX jobs_supernet ON jobs (supernet_id);

CREATE TABLE plans (
    id                  TEXT PRIMARY KEY,
    supernet_id         TEXT NOT NULL REFERENCES supernets(id) ON DELETE CASCADE,
    request             TEXT NOT NULL,      -- JSON: the accepted plan request (budgets, pools, device)
    status              TEXT NOT NULL CHECK (status IN ('pending', 'running', 'ready', 'infeasible', 'failed', 'cancelled')),
    job_id              TEXT,
    result              TEXT,               -- JSON: solver status, timings, engine, warnings, infeasibility
    chosen_candidate_id TEXT,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);
CREATE INDEX plans_supernet ON plans (supernet_id, created_at);

CREATE TABLE candidates (
    id          TEXT PRIMARY KEY,
    plan_id     TEXT NOT NULL REFERENCES plans(id) ON DELETE CASCADE,
    supernet_id TEXT NOT NULL REFERENCES supernets(id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,           -- order along the plan's sort cost
    bits        TEXT NOT NULL,              -- JSON array of bit-widths in manifest layer order
    omega       REAL NOT NULL,
    size_bytes  REAL NOT NULL,
    bops        REAL NOT NULL,
    avg_bits    REAL NOT NULL,
    latency_ms  REAL,
    sources     TEXT NOT NULL,              -- JSON: which pools produced it
    solve       TEXT NOT NULL               -- JSON: solver status of the solve that found it
);
CREATE INDEX candidates_plan ON candidates (plan_id, position);
CREATE INDEX candidates_bits ON candidates (supernet_id, bits);

-- One measurement per supernet, bit configuration and activation setting: never measured twice.
CREATE TABLE evaluations (
    supernet_id          TEXT NOT NULL REFERENCES supernets(id) ON DELETE CASCADE,
    bits                 TEXT NOT NULL,
    quantize_activations INTEGER NOT NULL,
    accuracy             REAL,
    agreement_fp32       REAL NOT NULL,
    kl_fp32              REAL NOT NULL,
    agreement_highest    REAL NOT NULL,
    kl_highest           REAL NOT NULL,
    sqnr_db              REAL,                  -- NULL when the outputs are identical (infinite SQNR)
    latency_ms           REAL NOT NULL,
    samples              INTEGER NOT NULL,
    batch_size           INTEGER NOT NULL,
    job_id               TEXT,
    created_at           INTEGER NOT NULL,
    PRIMARY KEY (supernet_id, bits, quantize_activations)
);
