-- API keys and mTLS principals of servers that read them from PostgreSQL
-- (AUTH_KEYS_FROM_DATABASE=true): one row per credential, the fields of a line of a key file
-- (mesh.security.keys). A key is stored only as its SHA-256; `huleedu keys new --database`
-- adds one. Servers re-read the table every AUTH_RELOAD_SECONDS.
CREATE TABLE api_keys (
    id          BIGSERIAL   PRIMARY KEY,
    principal   TEXT        NOT NULL,
    sha256      TEXT        UNIQUE CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    san         TEXT        UNIQUE,
    scopes      TEXT[]      NOT NULL,
    expires_at  TIMESTAMPTZ,
    rate_limits JSONB,
    max_streams INTEGER,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((sha256 IS NULL) <> (san IS NULL))
);
