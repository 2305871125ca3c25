"""Entry point of the PipelineConductor: ``python -m conductor_server``."""

from __future__ import annotations

import sys

from conductor_server.app import serve
from conductor_server.settings import ConductorSettings
from mesh.runtime import run_service


def main(argv: list[str] | None = None) -> int:
    return run_service(
        argv,
        prog="python -m conductor_server",
        description="PipelineConductor: resolves batch pipelines and counts step outcomes "
        "(gRPC huleedu.conductor.v1.PipelineConductorService). Embedded mode (in-memory "
        "backends) unless REDIS_URL, DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS are set.",
        settings_type=ConductorSettings,
        serve=serve,
    )


if __name__ == "__main__":
    sys.exit(main())
