"""Channels with the retry policy, keepalive and message limits both SDK clients share."""

from __future__ import annotations

import json
from collections.abc import Sequence

import grpc

DEFAULT_TIMEOUT_SECONDS = 10.0


def _service_config(services: tuple[str, ...]) -> str:
    # gRPC's own retry machinery: transparent, bounded, with backoff. Only UNAVAILABLE is retried:
    # every other code is an answer. Writes are safe to retry because every write RPC is idempotent
    # (request ids, per-essay outcome keys).
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{"service": name} for name in services],
                    "retryPolicy": {
                        "maxAttempts": 5,
                        "initialBackoff": "0.1s",
                        "maxBackoff": "2s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


def open_channel(
    target: str, *services: str, interceptors: Sequence[grpc.aio.ClientInterceptor] = ()
) -> grpc.aio.Channel:
    """An insecure channel to ``target`` (``host:port``) with retries for ``services``."""
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.service_config", _service_config(services)),
            ("grpc.enable_retries", 1),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
        ],
        interceptors=list(interceptors) or None,
    )
