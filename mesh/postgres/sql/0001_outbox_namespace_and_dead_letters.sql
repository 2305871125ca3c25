-- Transactional outbox: a state change and the events it causes commit together; the relay
-- (mesh.outbox) publishes unpublished rows with their stored event id and marks them sent.
CREATE TABLE event_outbox (
    id           BIGSERIAL PRIMARY KEY,
    event_id     TEXT        NOT NULL UNIQUE,   -- deterministic where an event can be emitted twice
    topic_kind   TEXT        NOT NULL,          -- mesh.topics.EventKind value; the relay adds the namespace
    message_key  BYTEA,                         -- Kafka key (the batch id)
    payload      BYTEA       NOT NULL,          -- serialized huleedu.events.v1.EventEnvelope
    headers      JSONB       NOT NULL DEFAULT '{}'::jsonb,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ
);
CREATE INDEX event_outbox_unpublished ON event_outbox (id) WHERE published_at IS NULL;

-- The namespace (KAFKA_NAMESPACE) of the deployment this database belongs to, claimed by the
-- first server that starts on it: a server of another namespace refuses to start here, so two
-- deployments never relay each other's outbox rows into their own topics.
CREATE TABLE mesh_deployment (
    singleton  BOOLEAN     PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    namespace  TEXT        NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The original value of a record whose dead letter would not fit in the dead-letter topic: the
-- dead letter carries its size and SHA-256, and `huleedu dlq show` / `replay` read it here.
CREATE TABLE dead_letter_payloads (
    sha256          TEXT        PRIMARY KEY,
    payload         BYTEA       NOT NULL,
    original_topic  TEXT        NOT NULL,
    original_offset BIGINT      NOT NULL,
    partition       INTEGER     NOT NULL,
    consumer_group  TEXT        NOT NULL,
    kept_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);
