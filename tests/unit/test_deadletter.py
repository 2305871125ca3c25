"""Building dead-letter records and reading them back (show, replay)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from generated.huleedu.events.v1 import events_pb2
from mesh.events import deadletter
from mesh.events import envelope as codec
from mesh.events.bus import OutgoingRecord
from mesh.events.metrics import ConsumerMetrics
from mesh.events.retry import PermanentError

FAILED_AT = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class FakeRecord:
    topic: str = "ns.huleedu.essay.step.outcome.v1"
    partition: int = 2
    offset: int = 41
    timestamp: int = 1_700_000_000_123
    key: bytes | None = b"batch-7"
    value: bytes | None = b"\x00garbage\xff"
    headers: tuple[tuple[str, bytes], ...] = (("correlation_id", b"corr-9"), ("x", b"\x01"))


def failure(error: BaseException | None = None, **record: object) -> deadletter.Failure:
    try:
        raise error or PermanentError("unknown batch batch-7")
    except Exception as exc:  # a real traceback
        return deadletter.Failure(FakeRecord(**record), exc, attempts=3)  # type: ignore[arg-type]


def test_envelope_carries_every_fact_and_the_original_bytes() -> None:
    f = failure()
    env = deadletter.build(f, consumer_group="g", service="conductor", failed_at=FAILED_AT)
    assert codec.decode(codec.encode(env), accept={"dead_letter"}) == env
    letter = env.dead_letter
    assert letter.original_topic == "ns.huleedu.essay.step.outcome.v1"
    assert (letter.partition, letter.offset, letter.key) == (2, 41, b"batch-7")
    assert letter.timestamp.ToMilliseconds() == 1_700_000_000_123
    assert letter.schema_version == 1
    assert letter.payload == b"\x00garbage\xff"
    assert letter.error_info.type == "mesh.events.retry.PermanentError"
    assert letter.error_info.message == "unknown batch batch-7"
    assert "Traceback" in letter.error_info.traceback
    assert (letter.consumer_group, letter.service, letter.attempts) == ("g", "conductor", 3)
    assert letter.failed_at.ToDatetime(tzinfo=UTC) == FAILED_AT
    assert env.correlation_id == "corr-9"  # the failed record's correlation id is kept
    assert env.source_service == "conductor"


def test_the_same_failure_gets_the_same_event_id() -> None:
    a = deadletter.build(failure(), consumer_group="g", service="s", failed_at=FAILED_AT)
    b = deadletter.build(failure(), consumer_group="g", service="s", failed_at=datetime.now(UTC))
    c = deadletter.build(failure(offset=42), consumer_group="g", service="s", failed_at=FAILED_AT)
    assert a.event_id == b.event_id != c.event_id


def test_record_goes_to_the_dlq_topic_with_facts_as_headers() -> None:
    record = deadletter.to_record(failure(), consumer_group="g", service="s", failed_at=FAILED_AT)
    assert record.topic == "ns.huleedu.essay.step.outcome.v1.dlq"
    assert record.key == b"batch-7"
    headers = dict(record.headers)
    assert headers["dlq.original_topic"] == b"ns.huleedu.essay.step.outcome.v1"
    assert headers["dlq.original_partition"] == b"2"
    assert headers["dlq.original_offset"] == b"41"
    assert headers["dlq.original_timestamp"] == b"1700000000123"
    assert headers["dlq.error_type"] == b"mesh.events.retry.PermanentError"
    assert headers["dlq.error_message"] == b"unknown batch batch-7"
    assert headers["dlq.consumer_group"] == b"g"
    assert headers["dlq.service"] == b"s"
    assert headers["dlq.attempts"] == b"3"
    assert headers["dlq.failed_at"] == b"2025-06-01T12:00:00Z"
    assert headers["event_type"] == b"huleedu.events.v1.DeadLetter"
    assert headers["original.x"] == b"\x01"


def read_back(failure_: deadletter.Failure) -> deadletter.DeadLetterRecord:
    out = deadletter.to_record(failure_, consumer_group="g", service="s", failed_at=FAILED_AT)
    return read_back_record(out)


def read_back_record(out: OutgoingRecord) -> deadletter.DeadLetterRecord:
    return deadletter.DeadLetterRecord(
        topic=out.topic,
        partition=0,
        offset=5,
        key=out.key,
        value=out.value,
        headers=tuple(out.headers),
    )


def test_show_is_json_with_base64_payload_and_decodes_an_envelope_payload() -> None:
    garbage = json.loads(deadletter.show(read_back(failure())))
    assert garbage["envelope"]["deadLetter"]["payload"] == "AGdhcmJhZ2X/"
    assert "payload_decoded" not in garbage
    assert garbage["dlq"] == {
        "topic": "ns.huleedu.essay.step.outcome.v1.dlq",
        "partition": 0,
        "offset": 5,
    }

    original = codec.build(events_pb2.BatchCreated(batch_id="b"), source_service="s")
    shown = json.loads(deadletter.show(read_back(failure(value=codec.encode(original)))))
    assert shown["payload_decoded"]["batchCreated"] == {"batchId": "b"}
    assert shown["payload_decoded"]["eventId"] == original.event_id


async def test_replay_restores_the_original_record_marked_as_a_replay() -> None:
    letter = read_back(failure())
    original = await deadletter.original_value(letter, None)
    record = deadletter.replay_record(letter, original, replayed_at=FAILED_AT)
    assert record.topic == "ns.huleedu.essay.step.outcome.v1"
    assert (record.key, record.value) == (b"batch-7", b"\x00garbage\xff")
    headers = dict(record.headers)
    assert headers["correlation_id"] == b"corr-9"
    assert headers["x"] == b"\x01"
    assert headers["replay.of"] == b"ns.huleedu.essay.step.outcome.v1.dlq/0/5"
    assert headers["replay.at"] == FAILED_AT.isoformat().encode()


def test_metrics_count_a_batch() -> None:
    registry = CollectorRegistry()
    metrics = ConsumerMetrics(registry)
    metrics.observe("g", {"t": 10}, {"t": 8}, [failure(topic="t")], ["t"], 0.01)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("mesh_consumer_consumed_total", group="g", topic="t") == 10
    assert value("mesh_consumer_handled_total", group="g", topic="t") == 8
    assert (
        value(
            "mesh_consumer_dead_lettered_total",
            group="g",
            topic="t",
            error_type="mesh.events.retry.PermanentError",
        )
        == 1
    )
    assert value("mesh_consumer_retries_total", group="g", topic="t") == 1
    assert value("mesh_consumer_batch_records_sum", group="g") == 10
    assert value("mesh_consumer_batch_duration_seconds_count", group="g") == 1


class Vault:
    storage = events_pb2.PAYLOAD_STORAGE_POSTGRESQL

    def __init__(self) -> None:
        self.kept: dict[str, bytes] = {}

    async def keep(self, sha256: str, payload: bytes, f: deadletter.Failure, group: str) -> None:
        self.kept[sha256] = payload

    async def fetch(self, sha256: str) -> bytes | None:
        return self.kept.get(sha256)


class Writer:
    def __init__(self) -> None:
        self.records: list[OutgoingRecord] = []

    async def write(self, records: Sequence[OutgoingRecord]) -> None:
        self.records += records


@pytest.mark.parametrize("vault", [Vault(), None], ids=["with a vault", "without"])
async def test_a_letter_too_large_for_its_topic_goes_without_the_original_bytes(
    vault: Vault | None,
) -> None:
    writer = Writer()
    dlq = deadletter.DeadLetterQueue(
        writer, consumer_group="g", service="s", max_bytes=10_000, vault=vault
    )
    big = b"\x01" * 20_000
    await dlq.put([failure(value=big), failure(offset=42)])
    oversized, small = writer.records
    assert deadletter.size(oversized) <= 10_000
    letter = codec.decode(oversized.value, accept={"dead_letter"}).dead_letter
    assert (letter.payload, letter.payload_size) == (b"", 20_000)
    assert letter.payload_sha256 == hashlib.sha256(big).hexdigest()
    assert letter.error_info.message == "unknown batch batch-7"  # the facts are all there
    assert not any(name.startswith("original.") for name, _ in oversized.headers)
    read = read_back_record(oversized)
    if vault is None:
        assert letter.payload_storage == events_pb2.PAYLOAD_STORAGE_DISCARDED
        with pytest.raises(deadletter.OriginalNotKept, match="20000 bytes"):
            await deadletter.original_value(read, vault)
    else:
        assert letter.payload_storage == events_pb2.PAYLOAD_STORAGE_POSTGRESQL
        assert await deadletter.original_value(read, vault) == big
        replayed = Writer()
        assert await deadletter.replay(replayed, [read], vault) == 1
        assert replayed.records[0].value == big
    fits = codec.decode(small.value, accept={"dead_letter"}).dead_letter
    assert fits.payload == b"\x00garbage\xff"  # a letter that fits keeps them
    assert fits.payload_storage == events_pb2.PAYLOAD_STORAGE_UNSPECIFIED
