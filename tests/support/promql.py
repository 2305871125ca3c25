"""Metric names: those a PromQL expression reads, and those a /metrics exposition offers."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

_LABELS = re.compile(r"\{[^}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_STRINGS = re.compile(r'"[^"]*"')
_FUNCTION = re.compile(r"\b[a-zA-Z_][a-zA-Z0-9_]*\s*\(")
_NAME = re.compile(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum"),
    "gauge": ("",),
    "info": ("_info",),
    "unknown": ("",),
}


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` reads (label matchers, groupings, functions and ranges
    removed; Grafana's ``$__...`` variables are not names)."""
    text = _STRINGS.sub("", expr.replace("$__rate_interval", "5m"))
    text = _GROUPING.sub(" ", _LABELS.sub(" ", text))
    text = _FUNCTION.sub("(", _RANGE.sub(" ", text))
    text = re.sub(r"\b\d+(\.\d+)?[smhdwy]?\b", " ", text)
    return {n for n in _NAME.findall(text) if n.lower() not in _KEYWORDS}


def exported_names(exposition: str) -> set[str]:
    """Every series name an exposition offers, families without samples included (a counter
    ``x`` offers ``x_total``, a histogram ``x_bucket``, ``x_count`` and ``x_sum``)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names
