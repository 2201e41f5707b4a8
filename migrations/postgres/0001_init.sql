-- bitplan's store on PostgreSQL: the same tables as the SQLite migrations leave (migrations/sqlite/),
-- with BIGINT for every integer (times are Unix milliseconds) and DOUBLE PRECISION for reals.
-- Flags are BIGINT 0/1 as on SQLite, so that the store's SQL and rows are the same on both.

CREATE TABLE blobs (
    hash       TEXT PRIMARY KEY,            -- sha256 hex of the content; file at blobs/<hash[0..2]>/<hash>
    bytes      BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE supernets (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    manifest     TEXT NOT NULL,             -- the checked manifest as JSON
    layers       BIGINT NOT NULL,
    params       BIGINT NOT NULL,
    model_hash   TEXT REFERENCES blobs(hash),
    data_hash    TEXT REFERENCES blobs(hash),
    data_samples BIGINT,
    created_at   BIGINT NOT NULL,
    revision     BIGINT NOT NULL DEFAULT 0  -- bumped whenever the manifest changes
);
CREATE INDEX supernets_name ON supernets (name, created_at);

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    kind             TEXT NOT NULL,
    supernet_id      TEXT REFERENCES supernets(id) ON DELETE CASCADE,
    plan_id          TEXT,
    payload          TEXT NOT NULL,          -- JSON: what to do
    status           TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    max_attempts     BIGINT NOT NULL DEFAULT 3,
    run_after        BIGINT NOT NULL,        -- not claimed before this time (retry backoff)
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    progress_done    BIGINT NOT NULL DEFAULT 0,
    progress_total   BIGINT NOT NULL DEFAULT 0,
    message          TEXT NOT NULL DEFAULT '',
    error            TEXT,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    updated_at       BIGINT NOT NULL,
    lease_owner      TEXT,                   -- the worker running it
    lease_expires_at BIGINT,                 -- the worker renews it; past it, the worker is gone
    crashes          BIGINT NOT NULL DEFAULT 0,
    deadline_at      BIGINT                  -- not run, and stopped, after this time
);
CREATE INDEX jobs_queue ON jobs (status, run_after, created_at);
CREATE INDEX jobs_supernet ON jobs (supernet_id);
CREATE INDEX jobs_plan ON jobs (plan_id);
CREATE INDEX jobs_updated ON jobs (updated_at);

CREATE TABLE plans (
    id                  TEXT PRIMARY KEY,
    supernet_id         TEXT NOT NULL REFERENCES supernets(id) ON DELETE CASCADE,
    request             TEXT NOT NULL,      -- JSON: the accepted plan request
    status              TEXT NOT NULL CHECK (status IN ('pending', 'running', 'ready', 'infeasible', 'failed', 'cancelled')),
    job_id              TEXT,
    result              TEXT,               -- JSON: solver status, timings, engine, warnings, infeasibility
    chosen_candidate_id TEXT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
CREATE INDEX plans_supernet ON plans (supernet_id, created_at);

CREATE TABLE candidates (
    id          TEXT PRIMARY KEY,
    plan_id     TEXT NOT NULL REFERENCES plans(id) ON DELETE CASCADE,
    supernet_id TEXT NOT NULL REFERENCES supernets(id) ON DELETE CASCADE,
    position    BIGINT NOT NULL,            -- order along the plan's sort cost
    bits        TEXT NOT NULL,              -- JSON array of bit-widths in manifest layer order
    omega       DOUBLE PRECISION NOT NULL,
    size_bytes  DOUBLE PRECISION NOT NULL,
    bops        DOUBLE PRECISION NOT NULL,
    avg_bits    DOUBLE PRECISION NOT NULL,
    latency_ms  DOUBLE PRECISION,
    sources     TEXT NOT NULL,              -- JSON: which pools produced it
    solve       TEXT NOT NULL               -- JSON: solver status of the solve that found it
);
CREATE INDEX candidates_plan ON candidates (plan_id, position);
CREATE INDEX candidates_bits ON candidates (supernet_id, bits);

-- One measurement per supernet, bit configuration and activation setting: never measured twice.
CREATE TABLE evaluations (
    supernet_id          TEXT NOT NULL REFERENCES supernets(id) ON DELETE CASCADE,
    bits                 TEXT NOT NULL,
    quantize_activations BIGINT NOT NULL,
    accuracy             DOUBLE PRECISION,
    agreement_fp32       DOUBLE PRECISION NOT NULL,
    kl_fp32              DOUBLE PRECISION NOT NULL,
    agreement_highest    DOUBLE PRECISION NOT NULL,
    kl_highest           DOUBLE PRECISION NOT NULL,
    sqnr_db              DOUBLE PRECISION,      -- NULL when the outputs are identical (infinite SQNR)
    latency_ms           DOUBLE PRECISION NOT NULL,
    samples              BIGINT NOT NULL,
    batch_size           BIGINT NOT NULL,
    job_id               TEXT,
    created_at           BIGINT NOT NULL,
    cosine_mean          DOUBLE PRECISION,
    cosine_min           DOUBLE PRECISION,
    rel_l2               DOUBLE PRECISION,
    PRIMARY KEY (supernet_id, bits, quantize_activations)
);

CREATE TABLE devices (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    spec       TEXT NOT NULL,               -- JSON: the device document
    created_at BIGINT NOT NULL
);

CREATE TABLE fleets (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE fleet_devices (
    fleet_id  TEXT NOT NULL REFERENCES fleets(id) ON DELETE CASCADE,
    position  BIGINT NOT NULL,
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE RESTRICT,
    PRIMARY KEY (fleet_id, position)
);
CREATE INDEX fleet_devices_device ON fleet_devices (device_id);

CREATE TABLE fleet_plans (
    id          TEXT PRIMARY KEY,
    supernet_id TEXT NOT NULL REFERENCES supernets(id) ON DELETE CASCADE,
    fleet_id    TEXT NOT NULL,                 -- the fleet it was made for (it may be deleted since)
    fleet       TEXT NOT NULL,                 -- JSON: the fleet as it was
    options     TEXT NOT NULL,                 -- JSON: the request
    status      TEXT NOT NULL CHECK (status IN ('pending', 'running', 'ready', 'failed', 'cancelled')),
    job_id      TEXT,
    result      TEXT,                          -- JSON: one row per device
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX fleet_plans_supernet ON fleet_plans (supernet_id, created_at);
