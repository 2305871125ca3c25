"""Entry point and composition root of the BatchService: ``python -m batch_server``."""

from __future__ import annotations

import argparse
import os
import sys

from batch_server.settings import BatchSettings, help_text
from mesh.runtime import configure_logging, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m batch_server",
        description="BatchService: batches of essays and the pipeline runs over them "
        "(gRPC huleedu.batch.v1.BatchService). Embedded mode (in-memory backends) unless "
        "REDIS_URL, DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS are set.",
        epilog=help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    settings = BatchSettings.from_env(os.environ)
    configure_logging(settings.server.log_level)
    from batch_server.app import serve

    return run(lambda stop: serve(settings, stop), settings.server)


if __name__ == "__main__":
    sys.exit(main())
