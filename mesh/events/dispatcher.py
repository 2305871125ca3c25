"""One poll's records through the handler, and the plan that follows: commit, dead-letter, retry.

Shared by the Kafka consumer and the in-memory bus; it knows nothing of either. For each poll:

1. decode every record (``envelope.decode``); one that does not decode is a failure (permanent);
2. hand the decoded messages to the handler at once; it returns the messages it rejects, or
   raises for the whole batch. A transient raise fails every message; a permanent raise on more
   than one message retries them one at a time, so a poison message cannot sink good ones;
3. per partition, in offset order, ``retry.decide`` each failure: dead-letter it (permanent), or
   stop at it (transient): nothing at or after that offset is committed, and the partition
   resumes from it after the decided delay.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mesh.events import envelope as codec
from mesh.events.bus import BatchHandler, Message, Record, Rejection
from mesh.events.deadletter import Failure
from mesh.events.retry import DEFAULT_BACKOFF, Backoff, DeadLetter, decide, is_retriable

log = logging.getLogger(__name__)

Partition = tuple[str, int]  # (topic, partition); aiokafka's TopicPartition compares equal


@dataclass(frozen=True, slots=True)
class Resume:
    """A partition stopped at a transient failure: resume from ``offset`` after ``delay``."""

    offset: int
    delay: float
    error: BaseException
    attempt: int


@dataclass(slots=True)
class Plan:
    """What to do with one poll's records once the handler is done."""

    commit: dict[Partition, int] = field(default_factory=dict)  # next offset to commit
    dead: list[Failure] = field(default_factory=list)  # dead-letter these before committing
    resume: dict[Partition, Resume] = field(default_factory=dict)
    handled: dict[str, int] = field(default_factory=dict)  # topic -> records handled

    def without_dead_letters(self, error: BaseException, delay: float) -> Plan:
        """The plan when the dead letters could not be written: stop at the first of each."""
        plan = Plan(commit=dict(self.commit), resume=dict(self.resume), handled=self.handled)
        for failure in self.dead:
            part = (failure.record.topic, failure.record.partition)
            offset = failure.record.offset
            if offset < plan.commit.get(part, offset + 1):
                plan.commit[part] = offset
                plan.resume[part] = Resume(offset, delay, error, 1)
        return plan


class Dispatcher:
    """Runs a ``BatchHandler`` over polls and plans their fate; tracks retry attempts."""

    def __init__(
        self,
        handler: BatchHandler,
        *,
        accept: Collection[str] | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self._handler = handler
        self._accept = frozenset(accept) if accept is not None else None
        unknown = sorted((self._accept or frozenset()) - codec.TYPE_BY_FIELD.keys())
        if unknown:
            raise ValueError(f"not EventEnvelope payload fields: {unknown}")
        self._backoff = backoff
        self._draw = draw
        self._attempts: dict[Partition, tuple[int, int]] = {}  # partition -> (offset, failures)

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Drop the attempt counts of partitions this consumer no longer owns."""
        for part in partitions:
            self._attempts.pop((part[0], part[1]), None)

    async def dispatch(self, polled: Mapping[Partition, Sequence[Record]]) -> Plan:
        failed: dict[int, BaseException] = {}  # id(record) -> error
        messages = self._decode(polled.values(), failed)
        if messages:
            await self._handle(messages, failed)
        return self._plan(polled, failed)

    def _decode(
        self, polled: Iterable[Sequence[Record]], failed: dict[int, BaseException]
    ) -> list[Message]:
        """A ``Message`` for every record that decodes; the others fail with their error."""
        accept = self._accept
        messages: list[Message] = []
        for records in polled:
            for record in records:
                try:
                    messages.append(Message(record, codec.decode(record.value, accept)))
                except codec.EnvelopeError as exc:
                    failed[id(record)] = exc
        return messages

    async def _handle(self, messages: list[Message], failed: dict[int, BaseException]) -> None:
        try:
            rejections = await self._handler(messages)
        except Exception as exc:
            if is_retriable(exc) or len(messages) == 1:
                for message in messages:
                    failed[id(message.record)] = exc
                return
            log.warning(
                "handler failed a batch of %d with a permanent %s; retrying one by one",
                len(messages),
                type(exc).__name__,
            )
            await self._handle_one_by_one(messages, failed)
            return
        if rejections:
            self._reject(rejections, messages, failed)

    async def _handle_one_by_one(
        self, messages: list[Message], failed: dict[int, BaseException]
    ) -> None:
        for n, message in enumerate(messages):
            try:
                rejections = await self._handler([message])
            except Exception as exc:
                failed[id(message.record)] = exc
                if is_retriable(exc):  # the rest will be redelivered after the retry
                    for rest in messages[n + 1 :]:
                        failed[id(rest.record)] = exc
                    return
                continue
            if rejections:
                self._reject(rejections, [message], failed)

    @staticmethod
    def _reject(
        rejections: Iterable[Rejection], messages: list[Message], failed: dict[int, BaseException]
    ) -> None:
        batch = {id(m) for m in messages}
        for rejection in rejections:
            if id(rejection.message) not in batch:
                log.error("handler rejected a message that is not in its batch; ignored")
                continue
            failed[id(rejection.message.record)] = rejection.error

    def _plan(
        self, polled: Mapping[Partition, Sequence[Record]], failed: dict[int, BaseException]
    ) -> Plan:
        plan = Plan()
        for tp, records in polled.items():
            if not records:
                continue
            part: Partition = (tp[0], tp[1])
            done, stop = len(records), None
            if failed:
                done, stop = self._walk(part, records, failed, plan)
            if stop is None:
                plan.commit[part] = records[-1].offset + 1
                self._attempts.pop(part, None)
            else:
                plan.resume[part] = stop
                self._attempts[part] = (stop.offset, stop.attempt)
                if stop.offset > records[0].offset:
                    plan.commit[part] = stop.offset
            plan.handled[part[0]] = plan.handled.get(part[0], 0) + done
        return plan

    def _walk(
        self,
        part: Partition,
        records: Sequence[Record],
        failed: dict[int, BaseException],
        plan: Plan,
    ) -> tuple[int, Resume | None]:
        """Decide each failure of one partition in offset order; stop at a transient one."""
        done = 0
        for record in records:
            error = failed.get(id(record))
            if error is None:
                done += 1
                continue
            attempt = self._attempt(part, record.offset)
            decision = decide(error, attempt, self._backoff, draw=self._draw())
            if isinstance(decision, DeadLetter):
                plan.dead.append(Failure(record, error, attempt))
                continue
            return done, Resume(record.offset, decision.delay, error, attempt)
        return done, None

    def _attempt(self, part: Partition, offset: int) -> int:
        last = self._attempts.get(part)
        return last[1] + 1 if last is not None and last[0] == offset else 1
