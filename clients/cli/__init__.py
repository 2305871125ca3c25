"""``huleedu``: the operators' command line over the SDK (and Kafka, for dead letters).

Every RPC of the BatchService (``huleedu batch ...``) and the PipelineConductor (``huleedu
conductor ...``) is a command. Results read as tables and sentences; ``huleedu batch watch``
shows a live progress bar per step on a terminal and one line per update elsewhere. ``--json``
(before or after the command) prints protobuf JSON instead, for scripts; ``-q`` prints only the
id a command made. Errors are one short shape on stderr (``clients.cli.errors``), never a
traceback. ``huleedu --help`` lists the environment it reads and the pipelines.

    huleedu batch create --flag prompt_attached "First essay." "Second essay."
    huleedu batch start BATCH_ID comprehensive
    huleedu batch watch BATCH_ID
    huleedu dlq list huleedu.essay.step.outcome.v1
    huleedu keys new --principal ops-alice --scope batches:read >> keys.jsonl

Modules: ``app`` (the parser, ``main``), one per command group (``batch``, ``conductor``,
``dlq``, ``keys``), ``watch`` (the live progress), ``views`` (how the BatchService's messages
read), ``output`` (JSON or rich), ``errors`` (what a failure prints), ``options`` (credentials,
the environment, option values).
"""

from clients.cli.app import build_parser, main
from clients.cli.options import credentials

__all__ = ["build_parser", "credentials", "main"]
