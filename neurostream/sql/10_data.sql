-- Data owned by ml_data_api: archived raw windows and dataset snapshots.

-- Raw windows of every session, archived by ml_data_api's window archiver (queue
-- data.windows bound to eeg.windows with '#'), so datasets can be built from sessions.
CREATE TABLE IF NOT EXISTS windows (
    session_id text NOT NULL,
    seq        integer NOT NULL,
    window_ts  timestamptz NOT NULL,          -- to_timestamp(t0), as in predictions
    service    text NOT NULL,
    kind       text NOT NULL,
    marker     integer,
    fs         double precision NOT NULL,
    n_channels integer NOT NULL,
    n_samples  integer NOT NULL,
    data       bytea NOT NULL,                -- little-endian float32 [n_channels, n_samples]
    stored_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, seq, window_ts)
);
CREATE INDEX IF NOT EXISTS windows_service_time ON windows (service, window_ts DESC);
-- Channel names as sent in the window header, so snapshots can name their channels even for
-- sessions the producer never registered.
ALTER TABLE windows ADD COLUMN IF NOT EXISTS channels jsonb;
CREATE INDEX IF NOT EXISTS windows_session_seq ON windows (session_id, seq);

-- Immutable dataset snapshots: (name, version); content_hash = sha256 over the rows.
CREATE TABLE IF NOT EXISTS datasets (
    id           serial PRIMARY KEY,
    name         text NOT NULL,
    version      integer NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('training', 'testing')),
    description  text NOT NULL DEFAULT '',
    source       jsonb NOT NULL DEFAULT '{}',  -- sessions / upload the rows came from
    n_rows       integer NOT NULL,
    fs           double precision NOT NULL,
    n_channels   integer NOT NULL,
    n_samples    integer NOT NULL,
    channels     jsonb NOT NULL DEFAULT '[]',
    label_counts jsonb NOT NULL DEFAULT '{}',
    content_hash text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (name, version)
);

CREATE TABLE IF NOT EXISTS dataset_rows (
    dataset_id integer NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    idx        integer NOT NULL,
    session_id text,
    seq        integer,
    label      integer NOT NULL,
    data       bytea NOT NULL,                -- float32 [n_channels, n_samples]
    PRIMARY KEY (dataset_id, idx)
);

CREATE INDEX IF NOT EXISTS labels_created ON labels (created_at DESC);
