"""The Kafka event bus: the same surface as the in-memory bus, over a real cluster.

``KafkaBus`` owns one idempotent producer (``publish``, ``publish_many``, ``write``) and makes
consumers (``consumer``) that share its settings. Starting it creates the registry's topics
(and their dead-letter topics) that do not exist yet, then starts the producer.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from mesh.events.admin import create_topics
from mesh.events.bus import BatchHandler, OutgoingEvent, OutgoingRecord
from mesh.events.consumer import Consumer, ConsumerConfig
from mesh.events.deadletter import PayloadVault
from mesh.events.metrics import ConsumerMetrics
from mesh.events.producer import Producer
from mesh.events.retry import DEFAULT_BACKOFF, Backoff
from mesh.events.security import PLAINTEXT, KafkaSecurity
from mesh.events.topics import EventKind, all_topics, topic_name_prefix
from mesh.resource import AsyncResource


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    """Where the cluster is and how this process uses it."""

    bootstrap_servers: str
    namespace: str = ""
    client_id: str = "huleedu-mesh"
    partitions: int = 3  # of each topic this bus creates
    commit_interval_ms: int = 1000
    fetch_max_wait_ms: int = 100  # see ConsumerConfig
    group_instance_id: str = ""  # static membership when set
    security: KafkaSecurity = PLAINTEXT  # SASL and TLS of every client


class KafkaBus(AsyncResource):
    """Topics on Kafka; an ``EventPublisher``, a ``RecordWriter`` and a consumer factory."""

    def __init__(self, config: KafkaConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.namespace = config.namespace
        self._metrics = ConsumerMetrics(registry or CollectorRegistry())
        self._producer = Producer(
            config.bootstrap_servers,
            namespace=config.namespace,
            client_id=config.client_id,
            security=config.security,
        )

    async def start(self) -> None:
        c = self.config
        await create_topics(
            c.bootstrap_servers,
            all_topics(c.namespace),
            partitions=c.partitions,
            security=c.security,
        )
        await self._producer.start()

    async def close(self) -> None:
        """Flush what is queued and close the producer; safe to call twice."""
        await self._producer.close()

    async def publish(self, event: OutgoingEvent) -> None:
        await self._producer.publish(event)

    async def publish_many(self, events: Sequence[OutgoingEvent]) -> None:
        await self._producer.publish_many(events)

    async def write(self, records: Sequence[OutgoingRecord]) -> None:
        await self._producer.write(records)

    def consumer(
        self,
        group: str,
        kinds: Sequence[EventKind],
        handler: BatchHandler,
        *,
        service: str,
        accept: Collection[str] | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        vault: PayloadVault | None = None,
    ) -> Consumer:
        """A consumer of ``kinds`` in ``group`` (prefixed with the namespace, as the topics are:
        deployments sharing a cluster never share a group); its dead letters go through this
        bus, and the original of one too large for its topic goes to ``vault``."""
        c = self.config
        config = ConsumerConfig(
            bootstrap_servers=c.bootstrap_servers,
            group_id=topic_name_prefix(c.namespace) + group,
            service=service,
            namespace=c.namespace,
            client_id=c.client_id,
            commit_interval_ms=c.commit_interval_ms,
            fetch_max_wait_ms=c.fetch_max_wait_ms,
            group_instance_id=c.group_instance_id,
            backoff=backoff,
            security=c.security,
        )
        return Consumer(
            config, kinds, handler, self, accept=accept, metrics=self._metrics, vault=vault
        )
