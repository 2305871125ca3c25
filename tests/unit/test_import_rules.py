"""Imports point inward: domain modules import nothing that does I/O (STYLE rule 2).

Every module under a domain package is parsed with ``ast``; an import of a banned package, or of
a first-party module outside the domain packages, fails the test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOMAIN_PACKAGES = ("conductor_server.domain", "batch_server.domain")
BANNED = (
    "grpc",
    "google.protobuf",
    "google.rpc",
    "generated",
    "redis",
    "asyncpg",
    "aiokafka",
    "kafka",
    "prometheus_client",
    "uvloop",
    "socket",
    "ssl",
    "http",
    "urllib",
    "subprocess",
)
FIRST_PARTY = ("mesh", "conductor_server", "batch_server", "clients", "generated", "pipelines")


def _modules() -> list[tuple[str, Path]]:
    found = []
    for package in DOMAIN_PACKAGES:
        folder = ROOT.joinpath(*package.split("."))
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found.append((name, path))
    return found


def _imports(module: str, tree: ast.AST, is_package: bool) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                package = module.split(".")
                base = package[: len(package) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base)
                names.append(f"{prefix}.{node.module}" if node.module else prefix)
            else:
                names.append(node.module or "")
    return names


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _allowed(name: str) -> bool:
    if any(_within(name, banned) for banned in BANNED):
        return False
    if any(_within(name, domain) for domain in DOMAIN_PACKAGES):
        return True
    return not any(_within(name, first) for first in FIRST_PARTY)


def forbidden_imports(module: str, source: str, is_package: bool = False) -> list[str]:
    """The imports of ``module`` (a domain module) that break the rule."""
    return [name for name in _imports(module, ast.parse(source), is_package) if not _allowed(name)]


def test_the_rule_catches_banned_and_outward_imports() -> None:
    source = "\n".join(
        [
            "import grpc.aio",
            "from google.protobuf import message",
            "from redis.asyncio import Redis",
            "from mesh.events.topics import COMMAND_KINDS",
            "from ..adapters import store",
            "from . import model",
            "from conductor_server.domain.errors import ConductorError",
            "import json",
        ]
    )
    bad = forbidden_imports("conductor_server.domain.resolution", source)
    assert bad == [
        "grpc.aio",
        "google.protobuf",
        "redis.asyncio",
        "mesh.events.topics",
        "conductor_server.adapters",
    ]


def test_the_domain_packages_are_found() -> None:
    assert any(name.startswith("conductor_server.domain.") for name, _ in _modules())


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[name for name, _ in _modules()])
def test_a_domain_module_imports_nothing_of_io(module: str, path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert forbidden_imports(module, source, path.name == "__init__.py") == []
