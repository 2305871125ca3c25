"""What Redis holds after a scenario: the conductor's mirror, one hash per batch, compared with
PostgreSQL's counts (the key layout is the conductor's, ``conductor_server.store.keys``)."""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping
from typing import Any, cast

from redis.asyncio import Redis

from chaos.check.postgres import Counts
from conductor_server.store import keys

Mirror = dict[str, str]  # one batch's hash: field -> value


async def read_mirror(redis_url: str, batch_ids: Iterable[str]) -> dict[str, Mirror]:
    """Each batch's hash; a batch Redis does not have (no marker field) is left out."""
    client: Redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        found: dict[str, Mirror] = {}
        async with client.pipeline(transaction=False) as pipe:
            ids = list(batch_ids)
            for batch_id in ids:
                pipe.hgetall(keys.batch_key(batch_id))
            replies: list[dict[str, str]] = await pipe.execute()
        for batch_id, fields in zip(ids, replies, strict=True):
            if keys.VERSION in fields:
                found[batch_id] = fields
        return found
    finally:
        await client.aclose()


async def flush(redis_url: str) -> None:
    """FLUSHALL."""
    client: Redis = Redis.from_url(redis_url)
    try:
        await cast(Awaitable[Any], client.flushall())
    finally:
        await client.aclose()


def differences(mirror: Mirror, essays: int, counts: Mapping[str, Counts]) -> list[str]:
    """Where a batch's hash differs from PostgreSQL's essay count and step counts."""
    found = []
    if mirror.get(keys.ESSAYS) != str(essays):
        found.append(f"essays {mirror.get(keys.ESSAYS)} != {essays}")
    for step, pg in counts.items():
        redis = (
            int(mirror.get(step, 0)),
            keys.epoch_and_count(int(mirror.get(step + keys.FAILED, 0)))[1],
            mirror.get(step + keys.TOTAL),
        )
        if redis[:2] != (pg.succeeded, pg.failed) or (
            pg.total is not None and redis[2] != str(pg.total)
        ):
            found.append(f"{step} {redis} != {(pg.succeeded, pg.failed, pg.total)}")
    return found
