-- Transactional outbox: every state change writes its event here in the same
-- transaction; a publisher on every replica drains it to the events stream.

CREATE TABLE outbox (
    -- UUIDv7: time ordered, also the CloudEvents `id` and the `Nats-Msg-Id`.
    id            UUID PRIMARY KEY,
    -- Commit order within one build or worker (transitions of one build hold its
    -- row lock), the cursor of event streams (SSE `Last-Event-ID`).
    seq           BIGSERIAL NOT NULL UNIQUE,
    -- 'build' or 'worker'
    kind          TEXT NOT NULL,
    entity_id     TEXT NOT NULL,
    -- e.g. 'submitted', 'cancelled'
    event_type    TEXT NOT NULL,
    data          JSONB NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at  TIMESTAMPTZ
);

CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

CREATE INDEX outbox_entity ON outbox (kind, entity_id, seq);
