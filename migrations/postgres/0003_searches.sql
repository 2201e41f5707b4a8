-- Searches: a measured Pareto front within an evaluation budget (plan, measure, refit, re-plan),
-- run by a job whose measurements go to `evaluations` like any other, so that a search resumed
-- after a crash, or any later plan, reuses them.

CREATE TABLE searches (
    id          TEXT PRIMARY KEY,
    supernet_id TEXT NOT NULL REFERENCES supernets(id) ON DELETE CASCADE,
    request     TEXT NOT NULL,                 -- JSON: the request
    status      TEXT NOT NULL CHECK (status IN ('pending', 'running', 'ready', 'failed', 'cancelled')),
    job_id      TEXT,
    result      TEXT,                          -- JSON: the rounds and the measured front
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX searches_supernet ON searches (supernet_id, created_at);
