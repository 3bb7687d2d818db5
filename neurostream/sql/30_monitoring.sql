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
