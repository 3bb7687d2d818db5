-- Monitoring (monitoring_api): drift time series, drift references, alert rules and alerts.

-- One row per evaluation and test: scope 'feature' (<channel>:<band>), 'channel' or
-- 'overall' (name 'share' = share of drifted features, 'mmd' = multivariate score).
-- "time" is the end of the current window (data time), so replays line up with live runs.
CREATE TABLE IF NOT EXISTS drift_metrics (
    time         timestamptz NOT NULL,
    service      text NOT NULL,
    scope        text NOT NULL CHECK (scope IN ('feature', 'channel', 'overall')),
    name         text NOT NULL,
    method       text NOT NULL DEFAULT 'ks',
    statistic    double precision,
    p_value      double precision,
    drifted      boolean NOT NULL DEFAULT false,
    share        double precision,
    n_reference  integer,
    n_current    integer,
    evaluated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS drift_metrics_service_time ON drift_metrics (service, time DESC);
CREATE INDEX IF NOT EXISTS drift_metrics_series ON drift_metrics (service, scope, name, time DESC);
-- The session of the newest window evaluated, so alerts and dashboards follow the session
-- in progress (NULL on rows written before the column existed).
ALTER TABLE drift_metrics ADD COLUMN IF NOT EXISTS session_id text;
-- One row per test of one evaluation: re-evaluating a window (the loop and the on-demand
-- endpoint, or two API replicas) updates it instead of adding a copy. Databases written
-- before the key existed held such copies: keep the newest of each, then add the key, once.
-- The key holds "time", as a unique key on a TimescaleDB hypertable must.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'drift_metrics_evaluation') THEN
        DELETE FROM drift_metrics a USING drift_metrics b
        WHERE a.service = b.service AND a.scope = b.scope AND a.name = b.name
          AND a.method = b.method AND a.time = b.time
          AND (a.evaluated_at, a.ctid) < (b.evaluated_at, b.ctid);
        ALTER TABLE drift_metrics ADD CONSTRAINT drift_metrics_evaluation
            UNIQUE (service, scope, name, method, time);
    END IF;
END $$;

-- What a service's current windows are compared with: a dataset snapshot or a time range
-- of its archived windows. Without a row, the first seconds of the latest session are used.
CREATE TABLE IF NOT EXISTS drift_references (
    service     text PRIMARY KEY,
    dataset_id  integer REFERENCES datasets(id) ON DELETE CASCADE,
    range_start timestamptz,
    range_end   timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((dataset_id IS NOT NULL) <> (range_start IS NOT NULL AND range_end IS NOT NULL))
);

CREATE TABLE IF NOT EXISTS alert_rules (
    id          serial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    service     text NOT NULL,
    metric      text NOT NULL,
    comparison  text NOT NULL CHECK (comparison IN ('>', '>=', '<', '<=')),
    threshold   double precision NOT NULL,
    window_s    double precision NOT NULL CHECK (window_s > 0),
    webhook_url text,
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per firing episode; cleared_at is set when the condition stops holding.
CREATE TABLE IF NOT EXISTS alerts (
    id             bigserial PRIMARY KEY,
    rule_id        integer NOT NULL REFERENCES alert_rules(id) ON DELETE CASCADE,
    rule_name      text NOT NULL,
    service        text NOT NULL,
    metric         text NOT NULL,
    comparison     text NOT NULL,
    threshold      double precision NOT NULL,
    value          double precision NOT NULL,
    state          text NOT NULL CHECK (state IN ('firing', 'cleared')),
    fired_at       timestamptz NOT NULL DEFAULT now(),
    cleared_at     timestamptz,
    cleared_value  double precision,
    webhook_status text
);
CREATE INDEX IF NOT EXISTS alerts_rule_state ON alerts (rule_id, state);
CREATE INDEX IF NOT EXISTS alerts_fired ON alerts (fired_at DESC);
