-- Per-session canaries (neurostream/canary.py): the queue manager starts one, workers
-- record which arm each session starts on, the monitoring API (or a worker whose canary
-- raised) ends it. Small tables: no hypertables.

-- One row per canary. ``champion_version_id``: what the service served when it started
-- (the version sessions pinned to the champion keep after a promotion). One running
-- canary per service (the partial unique index); a canary ends once, promoted or rolled
-- back, by ``UPDATE ... WHERE status = 'running'``, so replicas racing to end it agree.
CREATE TABLE IF NOT EXISTS canaries (
    id                  serial PRIMARY KEY,
    service             text NOT NULL REFERENCES services(name) ON DELETE CASCADE,
    model_name          text NOT NULL,
    ref                 text NOT NULL,           -- as given: a version number or an alias
    version_id          integer NOT NULL REFERENCES model_versions(id) ON DELETE CASCADE,
    champion_version_id integer NOT NULL,
    share               double precision NOT NULL CHECK (share > 0 AND share < 1),
    rule                jsonb NOT NULL DEFAULT '{}',
    status              text NOT NULL DEFAULT 'running'
                        CHECK (status IN ('running', 'promoted', 'rolled_back')),
    reason              text,
    started_at          timestamptz NOT NULL DEFAULT now(),
    ended_at            timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS canaries_one_running ON canaries (service)
    WHERE status = 'running';
CREATE INDEX IF NOT EXISTS canaries_service ON canaries (service, id DESC);

-- The arm each session started on, recorded the first time any replica saw it during the
-- canary (INSERT ... ON CONFLICT DO NOTHING, then read back), so every replica routes it
-- alike. ``bucket``: its hash in [0, 1). A canary session switched by a rollback records
-- the first seq the champion served (``switch_seq``, the least any replica saw).
CREATE TABLE IF NOT EXISTS canary_sessions (
    canary_id   integer NOT NULL REFERENCES canaries(id) ON DELETE CASCADE,
    session_id  text NOT NULL,
    service     text NOT NULL,
    arm         text NOT NULL CHECK (arm IN ('canary', 'champion')),
    bucket      double precision NOT NULL,
    assigned_at timestamptz NOT NULL DEFAULT now(),
    switch_seq  integer,
    switched_at timestamptz,
    PRIMARY KEY (canary_id, session_id)
);
CREATE INDEX IF NOT EXISTS canary_sessions_service ON canary_sessions (service, session_id);

-- Windows the canary raised on: each is then scored by the champion in the same batch.
CREATE TABLE IF NOT EXISTS canary_failures (
    canary_id  integer NOT NULL REFERENCES canaries(id) ON DELETE CASCADE,
    session_id text NOT NULL,
    seq        integer NOT NULL,
    reason     text NOT NULL,
    worker_id  text NOT NULL,
    failed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (canary_id, session_id, seq)
);
