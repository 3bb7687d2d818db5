-- Data owned by retraining_api: retrain jobs, their log lines and search trials, triggers.

-- One row per retrain job. A runner (any retraining_api replica) claims a queued job with
-- SELECT ... FOR UPDATE SKIP LOCKED, then keeps heartbeat_at fresh while it runs; a
-- 'running' job whose heartbeat went stale was interrupted and is marked failed.
CREATE TABLE IF NOT EXISTS retrain_jobs (
    id               bigserial PRIMARY KEY,
    model_name       text NOT NULL,
    service          text,
    family           text NOT NULL,
    spec             jsonb NOT NULL,           -- the request, dataset refs resolved to ids
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    progress         real NOT NULL DEFAULT 0,  -- 0..1
    cancel_requested boolean NOT NULL DEFAULT false,
    runner_id        text,
    trigger_id       integer,
    error            text,
    result           jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    heartbeat_at     timestamptz,
    finished_at      timestamptz
);
CREATE INDEX IF NOT EXISTS retrain_jobs_queued ON retrain_jobs (created_at, id)
    WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS retrain_jobs_model ON retrain_jobs (model_name, created_at DESC);

CREATE TABLE IF NOT EXISTS retrain_job_logs (
    id      bigserial PRIMARY KEY,
    job_id  bigint NOT NULL REFERENCES retrain_jobs(id) ON DELETE CASCADE,
    at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    level   text NOT NULL DEFAULT 'info',
    message text NOT NULL
);
CREATE INDEX IF NOT EXISTS retrain_job_logs_job ON retrain_job_logs (job_id, id);

-- Hyperparameter-search trials: the child runs of a job.
CREATE TABLE IF NOT EXISTS retrain_trials (
    job_id      bigint NOT NULL REFERENCES retrain_jobs(id) ON DELETE CASCADE,
    number      integer NOT NULL,
    state       text NOT NULL,                 -- complete | fail | pruned
    params      jsonb NOT NULL DEFAULT '{}',
    value       double precision,              -- validation ROC-AUC
    metrics     jsonb NOT NULL DEFAULT '{}',
    duration_s  double precision,
    finished_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, number)
);

-- Retraining triggers: a schedule (every_s) or labelled-data growth (min_new_labels).
CREATE TABLE IF NOT EXISTS retrain_triggers (
    id             serial PRIMARY KEY,
    model_name     text NOT NULL,
    service        text,
    kind           text NOT NULL CHECK (kind IN ('schedule', 'growth')),
    every_s        double precision CHECK (every_s > 0),
    min_new_labels integer CHECK (min_new_labels > 0),
    template       jsonb NOT NULL,              -- the job request each firing enqueues
    snapshot_name  text,                        -- growth: fresh training snapshot's name
    enabled        boolean NOT NULL DEFAULT true,
    last_fired_at  timestamptz,
    last_job_id    bigint,
    last_error     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'schedule' AND every_s IS NOT NULL)
        OR (kind = 'growth' AND min_new_labels IS NOT NULL))
);
