"""Entry point of the BatchService: ``python -m batch_server``."""

from __future__ import annotations

import sys

from batch_server.app import serve
from batch_server.settings import BatchSettings
from mesh.runtime import run_service


def main(argv: list[str] | None = None) -> int:
    return run_service(
        argv,
        prog="python -m batch_server",
        description="BatchService: batches of essays and the pipeline runs over them "
        "(gRPC huleedu.batch.v1.BatchService). Embedded mode (in-memory backends) unless "
        "REDIS_URL, DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS are set.",
        settings_type=BatchSettings,
        serve=serve,
    )


if __name__ == "__main__":
    sys.exit(main())
