"""Pipeline definitions from YAML text to a validated ``PipelineCatalog``, or every problem.

Pure: the caller reads the file (and names it, for the error messages) and passes the set of
valid command names (the application passes the topic registry's ``COMMAND_KINDS``).
"""

from __future__ import annotations

from collections.abc import Set

from conductor_server.domain.catalog import PipelineCatalog
from conductor_server.domain.errors import DefinitionError
from conductor_server.domain.schema import parse_document
from conductor_server.domain.validation import check_pipelines


def parse_catalog(text: str, source: str, commands: Set[str]) -> PipelineCatalog:
    """The catalog defined by ``text``; ``DefinitionError`` listing every problem otherwise.

    ``source`` names the file in each issue; ``commands`` are the valid step ``command`` values.
    Issues come in file order (file-level first, then pipeline by pipeline). Cross-step checks
    run only on the steps that parsed, so one bad field does not also report its dependants.
    """
    document = parse_document(text, source, commands)
    issues = [*document.issues, *check_pipelines(document.pipelines, source)]
    if issues:
        rank = {name: position for position, name in enumerate(document.pipeline_names)}
        issues.sort(key=lambda issue: rank.get(issue.pipeline, -1))  # stable: file order
        raise DefinitionError(tuple(issues))
    return PipelineCatalog(source, tuple(parsed.definition for parsed in document.pipelines))
