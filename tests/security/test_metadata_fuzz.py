"""Whatever metadata a client sends, no RPC answers UNKNOWN or INTERNAL.

Hypothesis draws the call's metadata: any number of entries with keys of the legal alphabet,
printable values (binary ones for ``-bin`` keys), ``authorization`` values from garbage to
well-formed unknown keys to a valid key, and ``x-correlation-id`` values of any printable
shape (printable ASCII is what gRPC lets a client send in a text entry).
"""

from __future__ import annotations

import string
from typing import Any

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.security.conftest import Mesh
from tests.support.rpcs import RPCS, Rpc

RESERVED = {"te", "content-type", "user-agent", "host", "authority", "grpc-accept-encoding"}
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}

keys = st.text(string.ascii_lowercase + string.digits + "-_.", min_size=1, max_size=24).filter(
    lambda k: not k.startswith("grpc-") and k not in RESERVED
)
printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200)


def entries(admin_key: str) -> st.SearchStrategy[list[tuple[str, str | bytes]]]:
    plain = st.tuples(keys.filter(lambda k: not k.endswith("-bin")), printable)
    binary = st.tuples(keys.map(lambda k: f"{k}-bin"), st.binary(max_size=200))
    authorization = st.tuples(
        st.just("authorization"),
        st.one_of(
            printable,
            printable.map(lambda v: f"Bearer {v}"),
            st.just(f"Bearer {admin_key}"),
            st.text(string.ascii_letters + string.digits + "-_", max_size=60).map(
                lambda v: f"Bearer hk_{v}"
            ),
        ),
    )
    correlation = st.tuples(st.just("x-correlation-id"), printable)
    entry = st.one_of(plain, binary, authorization, correlation)
    return st.lists(entry, max_size=8)


def test_no_metadata_makes_any_rpc_fail_with_unknown_or_internal(mesh: Mesh) -> None:
    channels = {
        name: grpc.secure_channel(mesh.server(name).address, mesh.credentials(name))
        for name in ("conductor", "batch")
    }

    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(rpc=st.sampled_from(RPCS), metadata=entries(mesh.keys["admin"]))
    def check(rpc: Rpc, metadata: list[tuple[str, str | bytes]]) -> None:
        code = _call(channels[rpc.server], rpc, tuple(metadata))
        assert code not in FORBIDDEN, (rpc, metadata)

    try:
        check()
    finally:
        for channel in channels.values():
            channel.close()


def _call(channel: grpc.Channel, rpc: Rpc, metadata: tuple[tuple[str, Any], ...]) -> Any:
    request = rpc.sample({"batch_id": "no-such-batch"})
    serializer, parser = rpc.request_type.SerializeToString, rpc.response_type.FromString
    try:
        if rpc.streaming:
            stream = channel.unary_stream(
                rpc.full_name, request_serializer=serializer, response_deserializer=parser
            )
            responses = stream(request, metadata=metadata, timeout=5)
            try:
                next(iter(responses), None)
            finally:
                responses.cancel()
        else:
            unary = channel.unary_unary(
                rpc.full_name, request_serializer=serializer, response_deserializer=parser
            )
            unary(request, metadata=metadata, timeout=5)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK
