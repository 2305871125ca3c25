"""``python -m chaos [--short] [--only NAME ...] [--list]``: the fault scenarios and their report
(``chaos.runner``)."""

from __future__ import annotations

import os
import sys


def main() -> int:
    # Before gRPC is imported. This process starts the servers and devstack's tools while its
    # gRPC threads are busy; gRPC's fork handlers then crashed a child now and then (SIGSEGV
    # before exec: a server that never started, a pg_ctl that failed without a word).
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    from chaos.runner import main as run

    return run()


if __name__ == "__main__":
    sys.exit(main())
