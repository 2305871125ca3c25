"""The topic registry: the only place a Kafka topic name is spelled.

Every event kind maps to one topic. A deployment (or a test run) isolates its topics with a
namespace prefix: ``topic_name(EventKind.BATCH_CREATED, namespace="ci42")`` is
``"ci42.huleedu.batch.created.v1"``; the Kafka bus prefixes consumer groups the same way.
Dead letters of a topic go to ``<topic>.dlq``.
"""

from __future__ import annotations

from enum import StrEnum

DLQ_SUFFIX = ".dlq"


class EventKind(StrEnum):
    """Every kind of event the mesh publishes; the value is the topic's base name."""

    ESSAY_SPELLCHECK_REQUESTED = "huleedu.essay.spellcheck.requested.v1"
    BATCH_CREATED = "huleedu.batch.created.v1"
    SPELLCHECK_COMMAND = "huleedu.step.spellcheck.command.v1"
    NLP_COMMAND = "huleedu.step.nlp.command.v1"
    CJ_ASSESSMENT_COMMAND = "huleedu.step.cj_assessment.command.v1"
    AI_FEEDBACK_COMMAND = "huleedu.step.ai_feedback.command.v1"
    STUDENT_MATCHING_COMMAND = "huleedu.step.student_matching.command.v1"
    ESSAY_STEP_OUTCOME = "huleedu.essay.step.outcome.v1"
    BATCH_STEP_COMPLETED = "huleedu.batch.step.completed.v1"
    PHASE_SKIPPED = "huleedu.batch.phase.skipped.v1"
    PIPELINE_RUN_COMPLETED = "huleedu.batch.pipeline.run.completed.v1"
    RUN_CANCELLED = "huleedu.batch.pipeline.run.cancelled.v1"


# Step commands, by the name a pipeline definition's ``command`` field uses.
COMMAND_KINDS: dict[str, EventKind] = {
    "spellcheck": EventKind.SPELLCHECK_COMMAND,
    "nlp": EventKind.NLP_COMMAND,
    "cj_assessment": EventKind.CJ_ASSESSMENT_COMMAND,
    "ai_feedback": EventKind.AI_FEEDBACK_COMMAND,
    "student_matching": EventKind.STUDENT_MATCHING_COMMAND,
}


def topic_name_prefix(namespace: str) -> str:
    """What a namespace puts before each of its topic (and consumer group) names."""
    return f"{namespace}." if namespace else ""


def topic_name(kind: EventKind, namespace: str = "") -> str:
    """The topic of ``kind``, prefixed with ``namespace`` when one is set."""
    return topic_name_prefix(namespace) + kind.value


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of ``topic``."""
    return topic + DLQ_SUFFIX


def all_topics(namespace: str = "") -> list[str]:
    """Every topic and its dead-letter topic, for creation at start-up."""
    names = [topic_name(kind, namespace) for kind in EventKind]
    return names + [dlq_topic(name) for name in names]
