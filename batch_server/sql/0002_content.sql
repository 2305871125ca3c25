-- Essay texts, when PostgreSQL is the content store (real mode without CONTENT_SERVICE_URL).
CREATE TABLE content_blobs (
    storage_id TEXT        PRIMARY KEY,
    content    TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
