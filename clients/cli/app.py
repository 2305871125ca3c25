"""The ``huleedu`` parser and ``main``: one command, its output, and its exit status.

Exit status: 0 done; 1 the command failed (its error on stderr, see ``clients.cli.errors``);
2 bad usage (argparse); 130 interrupted (Ctrl-C); 141 the reader of the output went away.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from clients.cli import batch, conductor, dlq, keys
from clients.cli.errors import CommandError, report
from clients.cli.options import (
    KAFKA_ENV,
    OUTPUT_ENV,
    SERVER_ENV,
    Parser,
    add_connection_options,
    environment,
    pipeline_help,
)
from clients.cli.output import Output
from clients.errors import RpcError

Handler = Callable[[argparse.Namespace, Output], Coroutine[Any, Any, None]]

EXAMPLES = """\
examples:
  huleedu batch create -q --flag prompt_attached "First essay." "Second essay."
  huleedu batch start BATCH_ID comprehensive
  huleedu batch watch BATCH_ID
  huleedu batch cancel BATCH_ID --reason "wrong prompt"
  huleedu batch retry BATCH_ID --step nlp
  huleedu --json batch status BATCH_ID | jq .runs[0].status
  huleedu dlq list huleedu.essay.step.outcome.v1
  huleedu keys new --principal ops-alice --scope batches:read >> keys.jsonl"""

DEBUG_ENV = (("HULEEDU_DEBUG", "set: libraries' logs, and the traceback of a failure"),)


def _server_epilog() -> str:
    return f"{environment(SERVER_ENV, OUTPUT_ENV)}\n\n{pipeline_help()}"


def _top_epilog() -> str:
    everything = environment(SERVER_ENV, KAFKA_ENV, OUTPUT_ENV, DEBUG_ENV)
    return f"{EXAMPLES}\n\n{everything}\n\n{pipeline_help()}"


def _dlq_epilog() -> str:
    return environment(KAFKA_ENV, OUTPUT_ENV)


class _Actions:
    """``add_parser`` of a group's subparsers, giving every command the group's epilog."""

    def __init__(self, actions: Any, epilog_of: Callable[[], str]) -> None:
        self._actions = actions
        self._epilog_of = epilog_of

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self._actions.add_parser(
            name, epilog_of=self._epilog_of, **kwargs
        )
        return parser


def build_parser() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print protobuf JSON (for scripts); errors too, on stderr",
    )
    parser = Parser(
        prog="huleedu",
        description="The operators' command line of the HuleEdu pipeline mesh: every RPC of the "
        "BatchService and the PipelineConductor, dead letters, API keys.",
        epilog_of=_top_epilog,
    )
    add_connection_options(parser)
    parser.add_argument("--json", action="store_true", help="print protobuf JSON (for scripts)")
    groups = parser.add_subparsers(dest="group", required=True, metavar="GROUP")

    for name, module, help_text in (
        ("batch", batch, "BatchService: batches, runs and essays"),
        ("conductor", conductor, "PipelineConductor: definitions, state and outcomes"),
    ):
        group = groups.add_parser(
            name, help=help_text, description=help_text, epilog_of=_server_epilog
        )
        actions = group.add_subparsers(dest="action", required=True, metavar="COMMAND")
        module.add_commands(_Actions(actions, _server_epilog), common)
        group.set_defaults(handler=module.serve)

    dead = groups.add_parser(
        "dlq",
        parents=[common],
        help="dead letters of a topic (needs Kafka)",
        description="List, show or replay the dead letters of a topic.",
        epilog_of=_dlq_epilog,
    )
    dlq.add_arguments(dead)
    dead.set_defaults(handler=dlq.serve)

    keys_group = groups.add_parser("keys", help="API keys for servers' key sources")
    actions = keys_group.add_subparsers(dest="action", required=True, metavar="COMMAND")
    keys.add_commands(actions, common)
    keys_group.set_defaults(handler=keys.serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = bool(os.environ.get("HULEEDU_DEBUG"))
    # Libraries' log lines (aiokafka's connection attempts) are not the command's output.
    logging.basicConfig(level=logging.DEBUG if debug else logging.CRITICAL + 1)
    handler: Handler = args.handler
    try:
        asyncio.run(handler(args, Output(args.json)))
    except (RpcError, CommandError) as exc:
        print(report(exc, args.json), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``huleedu batch watch ID | head``): stop quietly, as other
        # tools do. Point stdout at /dev/null so the interpreter's final flush cannot fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a writer killed by the signal
    except OSError as exc:  # a file named by an option (a key, a CA) that cannot be read
        print(report(CommandError(str(exc)), args.json), file=sys.stderr)
        return 1
    except Exception as exc:
        if debug:
            raise
        shown = CommandError(
            f"unexpected {type(exc).__name__}: {exc} (HULEEDU_DEBUG=1 shows where)"
        )
        print(report(shown, args.json), file=sys.stderr)
        return 1
    return 0
