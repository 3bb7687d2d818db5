-- neurostream schema. Idempotent: run at every service start-up under an advisory lock.

CREATE TABLE IF NOT EXISTS models (
    name        text PRIMARY KEY,
    family      text NOT NULL,
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS model_versions (
    id               serial PRIMARY KEY,
    model_name       text NOT NULL REFERENCES models(name) ON DELETE CASCADE,
    version          integer NOT NULL,
    family           text NOT NULL,
    feature_pipeline text NOT NULL,           -- "erp@1"
    feature_params   jsonb NOT NULL DEFAULT '{}',
    model_params     jsonb NOT NULL DEFAULT '{}',
    input_spec       jsonb NOT NULL DEFAULT '{}', -- fs, channels, n_samples, kind
    classes          jsonb NOT NULL DEFAULT '[]',
    metrics          jsonb NOT NULL DEFAULT '{}',
    dataset_hash     text,
    code_version     text,
    sha256           text NOT NULL,
    artifact         bytea NOT NULL,
    artifact_size    integer NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (model_name, version)
);

CREATE TABLE IF NOT EXISTS model_aliases (
    model_name text NOT NULL REFERENCES models(name) ON DELETE CASCADE,
    alias      text NOT NULL,
    version_id integer NOT NULL REFERENCES model_versions(id) ON DELETE CASCADE,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_name, alias)
);

CREATE TABLE IF NOT EXISTS services (
    name        text PRIMARY KEY,
    description text NOT NULL DEFAULT '',
    model_name  text REFERENCES models(name) ON DELETE SET NULL,
    model_ref   text,           -- a version number or an alias, resolved on each change
    shadow_ref  text,           -- optional second ref run in shadow (predictions stored only)
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- The input a service's producer declares it streams (channels, fs, epoch geometry, stream
-- filter; neurostream.models.compat.ServiceInput): an assignment whose model it cannot
-- meet is refused. NULL or a missing key: not declared, nothing refused on it.
ALTER TABLE services ADD COLUMN IF NOT EXISTS input jsonb;

CREATE TABLE IF NOT EXISTS sessions (
    session_id       text PRIMARY KEY,
    service          text NOT NULL,
    board            text NOT NULL,
    fs               double precision NOT NULL,
    channels         jsonb NOT NULL,
    paradigm         jsonb NOT NULL DEFAULT '{}',
    started_at       timestamptz NOT NULL DEFAULT now(),
    ended_at         timestamptz,
    windows_confirmed integer NOT NULL DEFAULT 0
);
-- Where the samples came from beyond the board name (a file's path, format, speed, loop,
-- channels left out), so a session can be traced to its recording.
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS source jsonb NOT NULL DEFAULT '{}';
-- A live stream that was lost mid-session (producer/lsl.py): interrupted, with each gap
-- (last sample before, when it was noticed, first sample after, samples before it).
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS interrupted boolean NOT NULL DEFAULT false;
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS interruptions jsonb NOT NULL DEFAULT '[]';

CREATE TABLE IF NOT EXISTS workers (
    worker_id        text PRIMARY KEY,
    service          text NOT NULL,
    host             text NOT NULL DEFAULT '',
    model_version_id integer,
    shadow_version_id integer,
    processed        bigint NOT NULL DEFAULT 0,
    rejected         bigint NOT NULL DEFAULT 0,
    errors           bigint NOT NULL DEFAULT 0,
    last_error       text,
    status           text NOT NULL DEFAULT 'running',
    started_at       timestamptz NOT NULL DEFAULT now(),
    last_seen        timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE workers ADD COLUMN IF NOT EXISTS gated bigint NOT NULL DEFAULT 0;
-- What a fail-over costs: no-op inserts, deliveries marked redelivered, write retries.
ALTER TABLE workers ADD COLUMN IF NOT EXISTS duplicates bigint NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN IF NOT EXISTS redelivered bigint NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN IF NOT EXISTS write_retries bigint NOT NULL DEFAULT 0;

-- One row per window and model version: the "jobs". The key includes window_ts so the
-- same table can be a TimescaleDB hypertable (unique indexes must hold the time column);
-- window_ts is derived from the window's t0, so it is the same on every redelivery.
CREATE TABLE IF NOT EXISTS predictions (
    session_id       text NOT NULL,
    seq              integer NOT NULL,
    model_version_id integer NOT NULL,
    window_ts        timestamptz NOT NULL,
    service          text NOT NULL,
    role             text NOT NULL DEFAULT 'serving',  -- serving | shadow
    kind             text NOT NULL,
    marker           integer,
    predicted        integer NOT NULL,
    score            real NOT NULL,          -- probability of the positive / predicted class
    proba            real[] NOT NULL,
    sent_at          timestamptz,
    predicted_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    worker_id        text NOT NULL,
    PRIMARY KEY (session_id, seq, model_version_id, window_ts)
);
CREATE INDEX IF NOT EXISTS predictions_service_time ON predictions (service, predicted_at DESC);
-- The trial (a speller's symbol selection) of a trial-based paradigm's epoch; NULL otherwise.
ALTER TABLE predictions ADD COLUMN IF NOT EXISTS trial integer;

-- Epochs the artifact gate of a model version kept from being scored (peak-to-peak, flat
-- channel): one row per window and version, keyed like predictions so a redelivery is a
-- no-op; written in the batch's transaction with its predictions. ``channels``: the
-- channels at fault, named in ``reason``.
CREATE TABLE IF NOT EXISTS gated (
    session_id       text NOT NULL,
    seq              integer NOT NULL,
    model_version_id integer NOT NULL,
    window_ts        timestamptz NOT NULL,
    service          text NOT NULL,
    role             text NOT NULL DEFAULT 'serving',  -- serving | shadow
    kind             text NOT NULL,
    marker           integer,
    reason           text NOT NULL,
    channels         text[] NOT NULL,
    gated_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    worker_id        text NOT NULL,
    PRIMARY KEY (session_id, seq, model_version_id, window_ts)
);
CREATE INDEX IF NOT EXISTS gated_service_time ON gated (service, gated_at DESC);

CREATE TABLE IF NOT EXISTS rejections (
    id          bigserial,
    service     text NOT NULL,
    message_id  text,
    session_id  text,
    seq         integer,
    reason      text NOT NULL,
    worker_id   text NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, rejected_at)
);
CREATE INDEX IF NOT EXISTS rejections_session ON rejections (session_id, seq);
CREATE INDEX IF NOT EXISTS rejections_service_time ON rejections (service, rejected_at DESC);

CREATE TABLE IF NOT EXISTS labels (
    session_id text NOT NULL,
    seq        integer NOT NULL,
    label      integer NOT NULL,
    source     text NOT NULL DEFAULT 'paradigm',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, seq)
);
