-- Decisions of trial-based paradigms (workers/decider.py) and the truth of each trial
-- (ml_data_api/collector.py). Small tables (one row per trial and rule): no hypertables.

-- One row per trial and stopping rule, keyed so a redelivered prediction that fires the
-- same rule again is a no-op. ``codes``: the chosen symbol's stimulus codes (row, column);
-- ``evidence``: the summed log-likelihood ratio per stimulus code; ``last_event_at`` and
-- ``last_sample_at``: the last flash used and its epoch's last sample (wall time), so
-- acquisition-to-decision time is ``decided_at - last_sample_at``. Whether a decision was
-- right is read by joining ``trials`` (the truth may come after the decision).
CREATE TABLE IF NOT EXISTS decisions (
    session_id        text NOT NULL,
    trial             integer NOT NULL,
    rule              text NOT NULL,
    service           text NOT NULL,
    symbol_index      integer NOT NULL,
    symbol            text NOT NULL,
    codes             integer[] NOT NULL,
    posterior         real NOT NULL,
    repetitions       integer NOT NULL,
    epochs            integer NOT NULL,
    model_version_ids integer[] NOT NULL,
    evidence          jsonb NOT NULL,
    last_event_at     timestamptz,
    last_sample_at    timestamptz,
    decided_at        timestamptz NOT NULL,
    worker_id         text NOT NULL,
    PRIMARY KEY (session_id, trial, rule)
);
CREATE INDEX IF NOT EXISTS decisions_service_time ON decisions (service, decided_at DESC);

-- The truth of one trial: the stimulus codes that were targets (a speller's row and
-- column) and the symbol. Upserted on (session_id, trial): a correction replaces it.
CREATE TABLE IF NOT EXISTS trials (
    session_id text NOT NULL,
    trial      integer NOT NULL,
    targets    integer[] NOT NULL,
    symbol     text,
    source     text NOT NULL DEFAULT 'paradigm',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, trial)
);

-- A decider meeting a trial for the first time (a restart, a take-over) replays the trial's
-- serving predictions; only trial-based paradigms' rows are indexed.
CREATE INDEX IF NOT EXISTS predictions_session_trial ON predictions (session_id, trial, seq)
    WHERE trial IS NOT NULL;
