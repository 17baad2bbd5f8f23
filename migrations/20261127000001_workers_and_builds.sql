-- Workers (the volunteers' Macs and other build hosts) and builds.
-- Postgres is the source of truth for who owns a build; JetStream only delivers jobs.

CREATE TABLE workers (
    id                     TEXT PRIMARY KEY,
    name                   TEXT NOT NULL,
    -- idle | building | offline, the values every client generation knows.
    status                 TEXT NOT NULL DEFAULT 'idle'
                           CHECK (status IN ('idle', 'building', 'offline')),
    capabilities           JSONB NOT NULL DEFAULT '{}'::jsonb,
    -- Platforms this worker accepts jobs for, derived from its capabilities.
    platforms              TEXT[] NOT NULL DEFAULT '{}',
    -- Leases this worker may hold at once (capabilities.maxConcurrentBuilds).
    max_concurrent         INTEGER NOT NULL DEFAULT 1 CHECK (max_concurrent >= 1),
    -- SHA-256 (hex) of the current worker token; the token itself is never stored.
    token_hash             TEXT UNIQUE,
    -- The token replaced at the last re-registration stays valid until this instant,
    -- so a worker that lost the register response is not stranded.
    prev_token_hash        TEXT,
    prev_token_expires_at  TIMESTAMPTZ,
    registered_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    builds_completed       BIGINT NOT NULL DEFAULT 0,
    builds_failed          BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX workers_prev_token ON workers (prev_token_hash) WHERE prev_token_hash IS NOT NULL;

CREATE TABLE builds (
    id                  TEXT PRIMARY KEY,
    platform            TEXT NOT NULL CHECK (platform IN ('ios', 'android')),
    -- 'cancelled' is stored as such and shown to clients as 'failed'.
    status              TEXT NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'assigned', 'building', 'completed', 'failed', 'cancelled')),
    -- SHA-256 (hex) of the submitter's build token.
    token_hash          TEXT NOT NULL,
    source_bytes        BIGINT NOT NULL,
    certs_bytes         BIGINT,
    worker_id           TEXT REFERENCES workers (id) ON DELETE SET NULL,
    -- Number of leases granted so far; the result blob key includes it.
    attempt             INTEGER NOT NULL DEFAULT 0,
    -- Stream sequence of the job message once its publish was acknowledged.
    -- NULL on a pending build means "not yet published": the republisher picks it up.
    queue_seq           BIGINT,
    -- The live lease: JetStream reply subject, delivery count and our own deadline.
    lease_reply         TEXT,
    lease_delivery      BIGINT,
    lease_expires_at    TIMESTAMPTZ,
    -- When JetStream's ack deadline was last reset (delivery or +WPI); our deadline
    -- is always set a little before JetStream's so Postgres decides first.
    lease_renewed_at    TIMESTAMPTZ,
    -- Job-scoped VM credentials (hashed).
    otp_hash            TEXT,
    otp_expires_at      TIMESTAMPTZ,
    -- The VM's token (from /authenticate) and the one handed to the assigned
    -- worker by /vm-status; both bound to this attempt and its expiry.
    vm_token_hash       TEXT,
    vm_status_token_hash TEXT,
    vm_token_expires_at TIMESTAMPTZ,
    vm_ready_at         TIMESTAMPTZ,
    result_key          TEXT,
    result_bytes        BIGINT,
    error_message       TEXT,
    retry_of            TEXT REFERENCES builds (id) ON DELETE SET NULL,
    submitted_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- When the current lease was granted (shown as `started_at` on the wire).
    assigned_at         TIMESTAMPTZ,
    -- First activity of the assigned worker or its VM (assigned -> building).
    started_at          TIMESTAMPTZ,
    completed_at        TIMESTAMPTZ,
    last_heartbeat_at   TIMESTAMPTZ,
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX builds_status_submitted ON builds (status, submitted_at);
CREATE INDEX builds_submitted_desc ON builds (submitted_at DESC);
CREATE INDEX builds_worker ON builds (worker_id) WHERE worker_id IS NOT NULL;
-- The republisher's work list stays tiny: only pending builds whose publish was not acked.
CREATE INDEX builds_leased ON builds (lease_expires_at) WHERE status IN ('assigned', 'building');
CREATE INDEX builds_unpublished ON builds (submitted_at) WHERE status = 'pending' AND queue_seq IS NULL;
