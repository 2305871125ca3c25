"""The Kafka consumer runner: at-least-once batches with a DLQ and paused retries.

Loop: ``getmany`` a batch → ``Dispatcher`` (decode, handler, plan) → write dead letters and wait
for their acks → hand ``{partition: next offset}`` to the background committer (one commit per
``commit_interval_ms`` at most) → for a partition that hit a transient error, seek back to the
failed record and pause it for the backoff delay.

Offsets are committed only for records that are done (handled, or acknowledged in the DLQ),
never past a failed one. A revocation waits for the batch in flight and commits what it finished
before the partitions go. ``stop()`` finishes the current batch, commits and leaves the group.

While it runs, a side task measures each assigned partition's lag every ``lag_interval``
seconds (``mesh_consumer_lag``): the broker's end offsets, one request, less the positions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import random
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition, errors
from aiokafka.errors import CommitFailedError, IllegalStateError
from prometheus_client import CollectorRegistry

from mesh.events.bus import BatchHandler, RecordWriter
from mesh.events.deadletter import H_REPLAY_OF, DeadLetterQueue, PayloadVault
from mesh.events.dispatcher import Dispatcher, Partition, Plan
from mesh.events.metrics import ConsumerMetrics
from mesh.events.retry import DEFAULT_BACKOFF, Backoff
from mesh.events.security import PLAINTEXT, KafkaSecurity
from mesh.events.topics import EventKind, topic_name
from mesh.resource import AsyncResource

log = logging.getLogger(__name__)

# Failures of a dead-letter write that waiting will not cure: an operator must act (grant the
# group the topic, create it, raise its size limit). Their partition still waits (moving past
# the record would lose it), but loudly: an ERROR at every retry and the failures metric. A
# letter too large for its topic never gets here: it is written without its original bytes.
PERMANENT_WRITE_ERRORS: tuple[type[Exception], ...] = (
    errors.TopicAuthorizationFailedError,
    errors.ClusterAuthorizationFailedError,
    errors.InvalidTopicError,
    errors.PolicyViolationError,
    errors.MessageSizeTooLargeError,
    errors.RecordTooLargeError,
    errors.RecordListTooLargeError,
)


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    """Connection and tuning of one consumer (built by the entry point from its settings)."""

    bootstrap_servers: str
    group_id: str
    service: str  # named in dead letters
    namespace: str = ""
    client_id: str = "huleedu-mesh"
    max_records: int = 1000
    poll_timeout_ms: int = 200
    commit_interval_ms: int = 1000  # at most one offset commit per interval (stop/revoke: now)
    # The longest a fetch waits at the broker for new records. aiokafka has one fetch at a time
    # in flight to a broker and leaves out of it a partition whose fetched records are not all
    # consumed; once they have waited 100 ms it fetches the other partitions alone. When those
    # have nothing new, that fetch waits this long, and the partition with a backlog waits with
    # it (aiokafka's default is 500 ms). docs/architecture.md has the measurements.
    fetch_max_wait_ms: int = 100
    backoff: Backoff = DEFAULT_BACKOFF
    auto_offset_reset: str = "earliest"
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    close_timeout: float = 30.0
    commit_timeout: float = 10.0  # a stop's or revocation's commit, at most (then redelivered)
    group_instance_id: str = ""  # static membership when set
    leave_timeout: float = 5.0  # leaving the group on close, at most (it may still be joining)
    security: KafkaSecurity = PLAINTEXT
    lag_interval: float = 5.0  # seconds between measurements of the partitions' lag


class Consumer(AsyncResource):
    """Consumes ``kinds`` with ``handler``; ``async with`` it, then ``await run()``."""

    def __init__(
        self,
        config: ConsumerConfig,
        kinds: Sequence[EventKind],
        handler: BatchHandler,
        dead_letters: RecordWriter,
        *,
        accept: Collection[str] | None = None,
        metrics: ConsumerMetrics | None = None,
        vault: PayloadVault | None = None,
        client: Any = None,  # an aiokafka consumer to use instead of one built from ``config``
    ) -> None:
        self._config = config
        self.topics = [topic_name(kind, config.namespace) for kind in kinds]
        self._dispatcher = Dispatcher(handler, accept=accept, backoff=config.backoff)
        self._dlq = DeadLetterQueue(
            dead_letters, consumer_group=config.group_id, service=config.service, vault=vault
        )
        self._metrics = metrics or ConsumerMetrics(CollectorRegistry())
        self._kafka: Any = client or AIOKafkaConsumer(
            bootstrap_servers=config.bootstrap_servers,
            group_id=config.group_id,
            client_id=config.client_id,
            enable_auto_commit=False,
            auto_offset_reset=config.auto_offset_reset,
            session_timeout_ms=config.session_timeout_ms,
            heartbeat_interval_ms=config.heartbeat_interval_ms,
            max_poll_interval_ms=config.max_poll_interval_ms,
            group_instance_id=config.group_instance_id or None,
            fetch_max_wait_ms=config.fetch_max_wait_ms,
            **config.security.client_options(),
        )
        self._lock = asyncio.Lock()  # held while a batch is processed and committed
        self._pending: dict[Partition, int] = {}  # done but not yet committed
        self._committing: asyncio.Task[None] | None = None
        self._commit_now = asyncio.Event()  # set by stop and revocation: no more waiting
        self._next_commit_at = 0.0  # time.monotonic() before which no commit starts
        self._paused_until: dict[Partition, float] = {}
        self._dlq_failures = 0
        self._started = False
        self._closed = False
        self._stopping = False
        self._running: asyncio.Task[None] | None = None
        self._polling = False  # waiting on getmany, with nothing in hand
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        if self._started:
            return
        self._kafka.subscribe(self.topics, listener=_Rebalance(self))
        self._started = True  # from here on ``close`` stops the client, even mid-start
        await self._kafka.start()

    async def run(self) -> None:
        """Consume until ``stop()``; errors other than the handler's propagate."""
        if not self._started or self._closed:
            raise RuntimeError("consumer is not started")
        self._running = asyncio.current_task()
        self._stopped.clear()
        lag = asyncio.create_task(self._watch_lag(), name=f"{self._config.group_id}.lag")
        try:
            while not self._stopping:
                self._resume_due()
                self._polling = True
                try:
                    polled = await self._kafka.getmany(
                        timeout_ms=self._poll_timeout_ms(), max_records=self._config.max_records
                    )
                except asyncio.CancelledError:
                    if not self._stopping:
                        raise
                    self._running.uncancel()  # ``stop`` interrupted a poll: nothing in hand
                    break
                finally:
                    self._polling = False
                if polled:
                    async with self._lock:
                        await self._process(polled)
            await self._flush_commits()
        finally:
            lag.cancel()
            await asyncio.wait({lag})
            self._running = None
            self._stopped.set()

    async def stop(self) -> None:
        """Finish the batch in flight, commit it, and return (the loop of ``run`` ends).

        A consumer waiting on a poll holds nothing: the wait is interrupted (a poll can wait for
        a rebalance, such as one that waits out a dead member's session).
        """
        self._stopping = True
        task = self._running
        if task is None or task is asyncio.current_task():
            return
        if self._polling:
            task.cancel()
        try:
            await asyncio.wait_for(self._stopped.wait(), self._config.close_timeout)
        except TimeoutError:
            log.warning("consumer %s did not stop in time; cancelling", self._config.group_id)
            task.cancel()
            await asyncio.wait({task})

    async def close(self) -> None:
        """Stop, commit, and leave the group; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await self.stop()
        if self._committing is not None and not self._committing.done():
            self._committing.cancel()
            await asyncio.wait({self._committing})
        if self._started:
            try:
                await asyncio.wait_for(self._kafka.stop(), self._config.leave_timeout)
            except TimeoutError:  # a join in progress waits out a dead member's session
                log.warning("consumer %s left without waiting for its group", self._config.group_id)

    # --- one batch ------------------------------------------------------------------------

    async def _process(self, polled: dict[Any, list[Any]]) -> None:
        started = time.perf_counter()
        plan = await self._dispatcher.dispatch(polled)
        if plan.dead:
            plan = await self._dead_letter(plan)
        self._pending.update(plan.commit)
        self._schedule_commit()
        assigned = self._kafka.assignment() if plan.resume else set()
        for part, resume in plan.resume.items():
            tp = TopicPartition(*part)
            if tp not in assigned:
                continue
            self._kafka.seek(tp, resume.offset)
            self._kafka.pause(tp)
            self._paused_until[part] = time.monotonic() + resume.delay
            log.warning(
                "transient failure at %s[%d]@%d (attempt %d): %r; retrying in %.2fs",
                part[0],
                part[1],
                resume.offset,
                resume.attempt,
                resume.error,
                resume.delay,
            )
        consumed = {tp.topic: 0 for tp in polled}
        replayed = dict(consumed)
        for tp, recs in polled.items():
            consumed[tp.topic] += len(recs)
            replayed[tp.topic] += sum(1 for r in recs if _replayed(r.headers))
        self._metrics.observe(
            self._config.group_id,
            consumed,
            plan.handled,
            plan.dead,
            [part[0] for part in plan.resume],
            time.perf_counter() - started,
            replayed,
        )

    async def _dead_letter(self, plan: Plan) -> Plan:
        try:
            await self._dlq.put(plan.dead)
        except Exception as exc:
            # A record is done only once its dead letter is acknowledged: stop at the first.
            self._dlq_failures += 1
            delay = self._config.backoff.ceiling(self._dlq_failures) * (1 - random.random() / 5)
            self._metrics.dead_letter_failures.labels(
                self._config.group_id, type(exc).__name__
            ).inc()
            if isinstance(exc, PERMANENT_WRITE_ERRORS):
                log.error(
                    "cannot write dead letters (%r): the partition waits here until an operator "
                    "fixes the dead-letter topic; retrying in %.2fs",
                    exc,
                    delay,
                )
            else:
                log.warning("dead-letter write failed (%r); retrying in %.2fs", exc, delay)
            return plan.without_dead_letters(exc, delay)
        self._dlq_failures = 0
        for failure in plan.dead:
            log.error(
                "dead-lettered %s[%d]@%d after %d attempt(s): %s",
                failure.record.topic,
                failure.record.partition,
                failure.record.offset,
                failure.attempts,
                failure.error,
            )
        return plan

    # --- commits ---------------------------------------------------------------------------
    # One commit task at a time, in the background, at most one commit per interval: offsets of
    # the batches finished meanwhile coalesce into the next commit, so neither the round trip
    # nor its cost stalls consumption (committing after every batch cost 5-13% of a no-op
    # consumer's throughput, measured). Only offsets of finished work ever enter ``_pending``;
    # revocation and stop commit at once and wait for it. A crash redelivers at most one
    # interval of records, which the handlers are idempotent against.

    def _schedule_commit(self) -> None:
        if self._pending and (self._committing is None or self._committing.done()):
            self._committing = asyncio.create_task(self._commit_while_pending())

    async def _commit_while_pending(self) -> None:
        interval = self._config.commit_interval_ms / 1000
        while self._pending:
            delay = self._next_commit_at - time.monotonic()
            if delay > 0 and not self._commit_now.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._commit_now.wait(), delay)
            if not await self._commit_pending():
                return  # retried after the next batch
            self._next_commit_at = time.monotonic() + interval

    async def _flush_commits(self) -> None:
        """Commit everything pending now, for ``commit_timeout`` at most: a commit retries
        for as long as the group's coordinator is unreachable, and a stop or a rebalance must
        not wait on it. Offsets not committed are records delivered again, which the handlers
        are idempotent against."""
        self._commit_now.set()
        try:
            await asyncio.wait_for(self._commit_all(), self._config.commit_timeout)
        except TimeoutError:
            log.warning(
                "offsets of %s not committed within %g s: their records will be delivered again",
                self._config.group_id,
                self._config.commit_timeout,
            )
            self._pending.clear()
        finally:
            self._commit_now.clear()

    async def _commit_all(self) -> None:
        if self._committing is not None:
            await self._committing
        await self._commit_pending()

    async def _commit_pending(self) -> bool:
        """Commit every pending offset of an assigned partition; False if it must be retried."""
        pending, self._pending = self._pending, {}
        if not pending:
            return True
        assigned = self._kafka.assignment()
        offsets = {TopicPartition(*part): off for part, off in pending.items()}
        offsets = {tp: off for tp, off in offsets.items() if tp in assigned}
        if not offsets:
            return True
        try:
            await self._kafka.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on; the new owner starts from the last commit and redelivers.
            log.warning("commit of %d partition(s) failed after a rebalance: %s", len(offsets), exc)
        except Exception as exc:
            log.warning("commit failed (%r); retrying after the next batch", exc)
            for part, off in pending.items():
                self._pending.setdefault(part, off)
            return False
        return True

    # --- lag -------------------------------------------------------------------------------

    async def _watch_lag(self) -> None:
        while True:
            await asyncio.sleep(self._config.lag_interval)
            try:
                await self._measure_lag()
            except Exception as exc:  # the broker may be away: the next measurement will tell
                log.debug("lag of %s not measured: %r", self._config.group_id, exc)

    async def _measure_lag(self) -> None:
        assigned = list(self._kafka.assignment())
        if not assigned:
            return
        ends = await self._kafka.end_offsets(assigned)
        group = self._config.group_id
        for tp in assigned:
            position = await asyncio.wait_for(self._kafka.position(tp), 1.0)
            behind = max(ends.get(tp, position) - position, 0)
            self._metrics.lag.labels(group, tp.topic, str(tp.partition)).set(behind)

    def _forget_lag(self, partitions: Collection[Any]) -> None:
        for tp in partitions:
            with contextlib.suppress(KeyError):
                self._metrics.lag.remove(self._config.group_id, tp.topic, str(tp.partition))

    # --- pause / resume and rebalancing --------------------------------------------------

    def _poll_timeout_ms(self) -> int:
        timeout = self._config.poll_timeout_ms
        if self._paused_until:
            due = min(self._paused_until.values()) - time.monotonic()
            timeout = max(0, min(timeout, int(due * 1000) + 1))
        return timeout

    def _resume_due(self) -> None:
        if not self._paused_until:
            return
        now = time.monotonic()
        due = [part for part, at in self._paused_until.items() if at <= now]
        assigned = self._kafka.assignment()
        for part in due:
            del self._paused_until[part]
            tp = TopicPartition(*part)
            if tp in assigned:
                self._kafka.resume(tp)

    def _assigned(self, partitions: int) -> None:
        self._metrics.assigned.labels(self._config.group_id).set(partitions)

    async def _on_revoked(self, revoked: Collection[Any]) -> None:
        async with self._lock:  # let the batch in flight finish and commit
            await self._flush_commits()
            self._dispatcher.forget(revoked)
            self._forget_lag(revoked)
            for tp in revoked:
                self._paused_until.pop((tp.topic, tp.partition), None)


_NAME = operator.itemgetter(0)  # of a (name, value) header


def _replayed(headers: Sequence[tuple[str, bytes]]) -> bool:
    """Whether a record was replayed from a dead-letter topic (``huleedu dlq replay``).

    ``in`` over ``map`` compares in C: it runs for every record consumed."""
    return H_REPLAY_OF in map(_NAME, headers)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Collection[Any]) -> None:
        await self._consumer._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Collection[Any]) -> None:
        log.info("assigned %s", sorted((tp.topic, tp.partition) for tp in assigned))
        self._consumer._assigned(len(assigned))
