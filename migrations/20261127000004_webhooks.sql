-- Webhooks: operators' HTTP endpoints that receive chosen events, signed, retried.

CREATE TABLE webhooks (
    id               UUID PRIMARY KEY,
    url              TEXT NOT NULL,
    -- Event type patterns: "*", "build.*", "build.completed", "worker.offline", ...
    event_types      TEXT[] NOT NULL,
    -- Key of the HMAC-SHA256 signature of every delivery (needed in clear to sign).
    secret           TEXT NOT NULL,
    enabled          BOOLEAN NOT NULL DEFAULT true,
    -- Since when every attempt failed; cleared by a success.
    failing_since    TIMESTAMPTZ,
    disabled_at      TIMESTAMPTZ,
    disabled_reason  TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    id               UUID PRIMARY KEY,
    webhook_id       UUID NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id         UUID NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    -- pending | delivered | failed
    status           TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at     TIMESTAMPTZ,
    UNIQUE (webhook_id, event_id)
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';

-- Every attempt, for operators who need to know what happened.
CREATE TABLE webhook_attempts (
    id            BIGSERIAL PRIMARY KEY,
    delivery_id   UUID NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempted_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    status_code   INTEGER,
    error         TEXT,
    duration_ms   BIGINT NOT NULL
);

CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id);
