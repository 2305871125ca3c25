"""Every RPC of both services, with a valid sample request and a way to call it on any channel.

Read from the proto descriptors, so a new RPC or a new string field is covered by the
table-driven tests (input checks, scopes, credentials) without anyone listing it:

- ``RPCS``: one ``Rpc`` per method of ``PipelineConductorService`` and ``BatchService``;
- ``Rpc.sample(ids)``: a request that passes validation (its ids from ``ids``);
- ``string_fields(rpc)``: the path of every string in the request (map keys and values,
  elements of repeated fields, fields of nested messages), for putting a NUL in each;
- ``with_text(request, path, text)``: a copy of the request with that string replaced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import field_mask_pb2
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

from generated.huleedu.batch.v1 import batch_pb2 as bpb
from generated.huleedu.conductor.v1 import conductor_pb2 as cpb
from generated.huleedu.events.v1 import events_pb2

CONDUCTOR = cpb.DESCRIPTOR.services_by_name["PipelineConductorService"]
BATCH = bpb.DESCRIPTOR.services_by_name["BatchService"]

# A sample request per RPC: valid as far as validation goes (the batch or run may not exist).
Sample = Callable[[Mapping[str, str]], Message]
_SAMPLES: dict[str, Sample] = {
    "ListPipelines": lambda ids: cpb.ListPipelinesRequest(),
    "GetPipeline": lambda ids: cpb.GetPipelineRequest(name="nlp"),
    "RegisterBatch": lambda ids: cpb.RegisterBatchRequest(
        batch_id=ids["batch_id"], essay_ids=["essay-1"], flags={"prompt_attached": True}
    ),
    "ResolvePipeline": lambda ids: cpb.ResolvePipelineRequest(
        batch_id=ids["batch_id"], target="nlp", flags={"prompt_attached": True}, dry_run=True
    ),
    "ValidatePrerequisites": lambda ids: cpb.ValidatePrerequisitesRequest(
        batch_id=ids["batch_id"], step="nlp", flags={"prompt_attached": True}
    ),
    "RecordStepOutcome": lambda ids: cpb.RecordStepOutcomeRequest(
        batch_id=ids["batch_id"],
        step="spellcheck",
        essay_id="essay-1",
        outcome=events_pb2.STEP_OUTCOME_SUCCEEDED,
        event_id="event-1",
        output_storage_id="storage-1",
    ),
    "GetBatchPipelineState": lambda ids: cpb.GetBatchPipelineStateRequest(batch_id=ids["batch_id"]),
    "ReopenEssays": lambda ids: cpb.ReopenEssaysRequest(
        batch_id=ids["batch_id"], run_id=ids.get("run_id", "run-1"), attempt=2, steps=["spellcheck"]
    ),
    "ExpireStep": lambda ids: cpb.ExpireStepRequest(
        batch_id=ids["batch_id"], step="spellcheck", run_id=ids.get("run_id", "run-1"), attempt=1
    ),
    "GetEssayOutcomes": lambda ids: cpb.GetEssayOutcomesRequest(
        batch_id=ids["batch_id"], essay_ids=["essay-1"]
    ),
    "TriggerSpellcheck": lambda ids: bpb.TriggerSpellcheckRequest(text="Teh essay.", language="en"),
    "CreateBatch": lambda ids: bpb.CreateBatchRequest(
        request_id=ids.get("request_id", ""),
        essays=[bpb.EssayInput(text="An essay.", client_ref="essay.txt")],
        metadata=bpb.BatchMetadata(
            name="Class 9B",
            course_code="ENG5",
            language="en",
            flags={"prompt_attached": True},
            labels={"term": "spring"},
        ),
    ),
    "StartPipeline": lambda ids: bpb.StartPipelineRequest(
        batch_id=ids["batch_id"], pipeline="spellcheck", request_id=ids.get("request_id", "")
    ),
    "GetBatchStatus": lambda ids: bpb.GetBatchStatusRequest(batch_id=ids["batch_id"]),
    "ListBatches": lambda ids: bpb.ListBatchesRequest(page_size=10, page_token=""),
    "WatchBatch": lambda ids: bpb.WatchBatchRequest(
        batch_id=ids["batch_id"], run_id=ids.get("run_id", "")
    ),
    "CancelRun": lambda ids: bpb.CancelRunRequest(
        batch_id=ids["batch_id"], run_id=ids.get("run_id", "run-1"), reason="wrong essays"
    ),
    "RetryRun": lambda ids: bpb.RetryRunRequest(
        batch_id=ids["batch_id"],
        run_id=ids.get("run_id", "run-1"),
        steps=["spellcheck"],
        request_id=ids.get("request_id", ""),
    ),
    "UpdateBatch": lambda ids: bpb.UpdateBatchRequest(
        batch_id=ids["batch_id"],
        metadata=bpb.BatchMetadata(
            name="Class 9C", flags={"prompt_attached": True}, labels={"term": "autumn"}
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["name", "flags", "labels"]),
    ),
    "GetEssay": lambda ids: bpb.GetEssayRequest(
        essay_id=ids.get("essay_id", "essay-1"), batch_id=ids["batch_id"]
    ),
    "ListEssays": lambda ids: bpb.ListEssaysRequest(batch_id=ids["batch_id"], page_size=10),
}


@dataclass(frozen=True)
class Rpc:
    server: str  # "conductor" or "batch"
    method: MethodDescriptor

    @property
    def name(self) -> str:
        return self.method.name

    @property
    def full_name(self) -> str:
        """``/package.Service/Method``, as on the wire."""
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def streaming(self) -> bool:
        return bool(self.method.server_streaming)

    @property
    def request_type(self) -> type[Message]:
        return _message_class(self.method.input_type.name)

    @property
    def response_type(self) -> type[Message]:
        return _message_class(self.method.output_type.name)

    def sample(self, ids: Mapping[str, str]) -> Message:
        return _SAMPLES[self.name](ids)

    def __str__(self) -> str:
        return f"{self.server}.{self.name}"


def _message_class(name: str) -> type[Message]:
    found: type[Message] | None = getattr(cpb, name, None) or getattr(bpb, name, None)
    assert found is not None, name
    return found


RPCS: tuple[Rpc, ...] = tuple(
    Rpc(server, method)
    for server, service in (("conductor", CONDUCTOR), ("batch", BATCH))
    for method in service.methods
)


async def call(
    channel: grpc.aio.Channel,
    rpc: Rpc,
    request: Message | bytes,
    *,
    metadata: tuple[tuple[str, str | bytes], ...] = (),
    deadline: float = 10.0,
) -> Any:
    """Call ``rpc`` (raw bytes are sent as they are) with a deadline of ``deadline`` seconds;
    for a stream, its first response (then the stream is cancelled). Raises
    ``grpc.aio.AioRpcError``."""
    serialize = (lambda b: b) if isinstance(request, bytes) else rpc.request_type.SerializeToString
    if rpc.streaming:
        stream: Any = channel.unary_stream(
            rpc.full_name,
            request_serializer=serialize,
            response_deserializer=rpc.response_type.FromString,
        )
        responses = stream(request, metadata=metadata, timeout=deadline)
        try:
            async for response in responses:
                return response
            return None
        finally:
            responses.cancel()
    unary: Any = channel.unary_unary(
        rpc.full_name,
        request_serializer=serialize,
        response_deserializer=rpc.response_type.FromString,
    )
    return await unary(request, metadata=metadata, timeout=deadline)


def string_fields(rpc: Rpc) -> list[str]:
    """Paths of every string in ``rpc``'s sample request: ``a.b``, ``items[0].c``, ``m{key}``
    (a map key) and ``m[key]`` (a map value)."""
    return list(_paths(rpc.sample(_IDS), ""))


_IDS = {"batch_id": "b", "request_id": "r", "run_id": "run"}


def _paths(message: Message, prefix: str) -> Iterator[str]:
    for field in message.DESCRIPTOR.fields:
        path = f"{prefix}{field.name}"
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for key in value:
                yield f"{path}{{{key}}}"
                if value_field.type == FieldDescriptor.TYPE_STRING:
                    yield f"{path}[{key}]"
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if _is_repeated(field):
                for index, item in enumerate(value):
                    yield from _paths(item, f"{path}[{index}].")
            else:
                yield from _paths(value, f"{path}.")
        elif field.type == FieldDescriptor.TYPE_STRING:
            yield f"{path}[0]" if _is_repeated(field) else path


def _is_repeated(field: Any) -> bool:
    return bool(field.is_repeated)


def with_text(request: Message, path: str, text: str) -> Message:
    """A copy of ``request`` with the string at ``path`` (from ``string_fields``) set to
    ``text``; for a map key, the entry moves to the key ``text``."""
    copy = type(request)()
    copy.CopyFrom(request)
    *parents, last = path.split(".")
    target: Any = copy
    for part in parents:
        name, _, index = part.partition("[")
        target = getattr(target, name)
        if index:
            target = target[int(index.rstrip("]"))]
    if "{" in last:
        name, _, key = last.partition("{")
        mapping = getattr(target, name)
        mapping[text] = mapping[key.rstrip("}")]
        del mapping[key.rstrip("}")]
    elif last.endswith("]"):
        name, _, key = last[:-1].partition("[")
        container = getattr(target, name)
        if key.isdigit() and not hasattr(container, "keys"):
            container[int(key)] = text
        else:
            container[key] = text
    else:
        setattr(target, last, text)
    return copy
