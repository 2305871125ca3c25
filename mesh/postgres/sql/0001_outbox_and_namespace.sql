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
