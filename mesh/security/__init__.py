"""The trust boundary of both servers: who is calling, what they may call, how often.

- ``scopes``: the six scopes, and the check that a server's scope table covers every RPC;
- ``keys``: principals, API keys (stored only as SHA-256 hashes) and mTLS identities, parsed
  from JSON lines; ``keyfile`` and ``keytable`` load them from a file or from PostgreSQL and
  reload them when they change;
- ``limits``: per-principal token buckets per scope, and open-stream counts;
- ``guard``: the checks the one RPC wrapper (``mesh.grpc.interceptor``) runs on every call;
- ``audit``: one log line per refused call;
- ``tls``: server and channel credentials from PEM files;
- ``boundary``: a server's whole configuration of the above, from its settings, including the
  rule that real mode does not start without authentication unless told to.

``docs/security.md`` has the threat model, the scopes table and key rotation.
"""
