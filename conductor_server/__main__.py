"""Entry point and composition root of the PipelineConductor: ``python -m conductor_server``."""

from __future__ import annotations

import argparse
import os
import sys

from conductor_server.settings import ConductorSettings, help_text
from mesh.runtime import configure_logging, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conductor_server",
        description="PipelineConductor: resolves batch pipelines and counts step outcomes "
        "(gRPC huleedu.conductor.v1.PipelineConductorService). Embedded mode (in-memory "
        "backends) unless REDIS_URL, DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS are set.",
        epilog=help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    settings = ConductorSettings.from_env(os.environ)
    configure_logging(settings.server.log_level)
    from conductor_server.app import serve

    return run(lambda stop: serve(settings, stop), settings.server)


if __name__ == "__main__":
    sys.exit(main())
