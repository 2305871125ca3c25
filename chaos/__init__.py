"""``make chaos``: the mesh's fault scenarios, each checked from the backends themselves.

Each scenario runs both servers as processes (``bench.harness.processes``) on the devstack's
real Redis, PostgreSQL and Kafka, in a Kafka namespace and a database of its own, with load:
batches created and pipelines started through the BatchService at a steady pace, their step
commands answered by in-process demo workers (``launcher.workers.DemoWorkers``) whose every
outcome is noted in a ``Ledger``, and RPC probes of both servers. Mid-run it injects its fault
(a server killed, a backend stopped, Redis flushed, poison records, duplicates...), lets the
mesh recover, stops the load and waits for the mesh to settle.

The checker (``chaos.check``) never asks the servers: it compares the ledger with what
PostgreSQL (outcomes, counts, outbox, runs), Redis (the mirror) and Kafka (dead letters,
consumer-group lag, completion events) hold. ``chaos.report`` prints one row per scenario.

Modules: ``profile`` (short and full forms), ``deployment`` (server processes), ``ledger``
(what was sent), ``workers`` (demo workers that note, repeat and spread their outcomes),
``rpc`` (calls without retries, tallied), ``load``, ``poison``, ``watch`` (WatchBatch streams),
``trial`` (one scenario's mesh, load and probes), ``scenarios/``, ``check/``, ``report``.
"""
