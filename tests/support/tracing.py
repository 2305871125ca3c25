"""One traced pipeline run, and what its trace must look like (no tests here).

Every service gets a provider of its own (its ``service.name``) over one in-memory exporter.
``traced_run`` creates a batch and starts ``comprehensive`` on it inside a root span of the
client, through an SDK client that sends its context, then waits for the run to end.
``check_run_trace`` asserts that the whole run is one trace, parented across gRPC and Kafka:
the RPC spans of both servers, and for every step its dispatch (``create``), the worker's span,
the conductor's intake of each essay's outcome and the BatchService's intake of the completion,
which is the parent of the next dispatch.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from clients import BatchClient
from generated.huleedu.batch.v1 import batch_pb2 as pb
from mesh.events.topics import COMMAND_KINDS, EventKind
from mesh.tracing.provider import Tracing
from tests.support.polling import eventually

BATCH = "huleedu-batch-service"
CONDUCTOR = "huleedu-pipeline-conductor"
WORKERS = "demo-workers"
CLIENT = "test-client"
STEPS = {"spellcheck": (), "cj_assessment": ("spellcheck",), "nlp": ("spellcheck",)}
STEPS["ai_feedback"] = ("spellcheck", "nlp")
ESSAYS = ["Teh cat sat on teh mat.", "Essays are fun to write.", "A third essay about dogs."]
TERMINAL = {pb.RUN_STATUS_COMPLETED, pb.RUN_STATUS_COMPLETED_WITH_FAILURES, pb.RUN_STATUS_FAILED}


def memory_tracing(exporter: InMemorySpanExporter, service: str) -> Tracing:
    """A ``Tracing`` of ``service`` exporting every span to ``exporter`` as it ends."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider)


async def traced_run(address: str, client_tracing: Tracing, within: float = 60.0) -> int:
    """Create a 3-essay batch and run ``comprehensive`` under one root span; the root's trace id."""
    assert client_tracing.tracer is not None
    assert client_tracing.provider is not None
    async with BatchClient(address, tracer_provider=client_tracing.provider) as client:
        with client_tracing.tracer.start_as_current_span("user runs a pipeline") as root:
            batch = await client.create_batch(ESSAYS, flags={"prompt_attached": True})
            await client.start_pipeline(batch.batch_id, "comprehensive")
        async with BatchClient(address) as untraced:

            async def ended() -> bool:
                status = await untraced.get_batch_status(batch.batch_id)
                return status.runs[0].status in TERMINAL

            await eventually(ended, within, what="the traced run to end")
    return root.get_span_context().trace_id


def _service(span: ReadableSpan) -> str:
    return str(span.resource.attributes.get("service.name", ""))


class RunTrace:
    """The spans of one trace, with lookups by name, service and parent."""

    def __init__(self, spans: Sequence[ReadableSpan], trace_id: int) -> None:
        self.spans = [s for s in spans if s.context is not None and s.context.trace_id == trace_id]
        self.by_id = {s.context.span_id: s for s in self.spans if s.context is not None}

    def named(self, name: str, service: str, kind: SpanKind | None = None) -> list[ReadableSpan]:
        return [
            s
            for s in self.spans
            if s.name == name and _service(s) == service and (kind is None or s.kind == kind)
        ]

    def one(self, name: str, service: str, kind: SpanKind | None = None) -> ReadableSpan:
        found = self.named(name, service, kind)
        assert len(found) == 1, f"{len(found)} spans {name!r} of {service}: {self.describe()}"
        return found[0]

    def parent(self, span: ReadableSpan) -> ReadableSpan:
        assert span.parent is not None, f"{span.name} has no parent"
        found = self.by_id.get(span.parent.span_id)
        assert found is not None, f"the parent of {span.name} is not in the trace"
        return found

    def children(self, span: ReadableSpan, name: str, service: str) -> list[ReadableSpan]:
        assert span.context is not None
        return [
            s
            for s in self.named(name, service)
            if s.parent is not None and s.parent.span_id == span.context.span_id
        ]

    def describe(self) -> str:
        return ", ".join(sorted(f"{_service(s)}:{s.name}" for s in self.spans))


def _rpc(trace: RunTrace, method: str, server: str, caller: ReadableSpan) -> ReadableSpan:
    """The client span of ``method`` under ``caller`` and its server span; the server span."""
    [client] = [
        s
        for s in trace.named(method, _service(caller), SpanKind.CLIENT)
        if trace.parent(s) is caller
    ]
    [served] = [
        s for s in trace.named(method, server, SpanKind.SERVER) if trace.parent(s) is client
    ]
    return served


def check_run_trace(spans: Sequence[ReadableSpan], trace_id: int, namespace: str = "") -> RunTrace:
    """Assert the shape of one ``comprehensive`` run's trace (see the module docstring)."""
    trace = RunTrace(spans, trace_id)
    root = trace.one("user runs a pipeline", CLIENT)
    created = _rpc(trace, "huleedu.batch.v1.BatchService/CreateBatch", BATCH, root)
    _rpc(trace, "huleedu.conductor.v1.PipelineConductorService/RegisterBatch", CONDUCTOR, created)
    started = _rpc(trace, "huleedu.batch.v1.BatchService/StartPipeline", BATCH, root)
    _rpc(trace, "huleedu.conductor.v1.PipelineConductorService/ResolvePipeline", CONDUCTOR, started)

    completions: dict[str, ReadableSpan] = {}
    dispatches: dict[str, ReadableSpan] = {}
    pending = dict(STEPS)
    outcome_topic = f"process {_topic(EventKind.ESSAY_STEP_OUTCOME.value, namespace)}"
    completion_topic = f"process {_topic(EventKind.BATCH_STEP_COMPLETED.value, namespace)}"
    while pending:
        progressed = False
        for step, needs in list(pending.items()):
            if any(n not in completions for n in needs):
                continue
            command = COMMAND_KINDS[step].value
            dispatch = trace.one(f"create {command}", BATCH, SpanKind.PRODUCER)
            assert dispatch.attributes is not None
            assert dispatch.attributes["huleedu.step"] == step
            cause = trace.parent(dispatch)
            if needs:  # dispatched by the completion of one of its dependencies
                assert cause in [completions[n] for n in needs], (step, cause.name)
            else:
                assert cause is started
            [worked] = trace.children(dispatch, f"process {_topic(command, namespace)}", WORKERS)
            intakes = trace.children(worked, outcome_topic, CONDUCTOR)
            assert len(intakes) == len(ESSAYS), (step, len(intakes))
            completed = [
                s for intake in intakes for s in trace.children(intake, completion_topic, BATCH)
            ]
            assert len(completed) == 1, (step, len(completed))
            dispatches[step], completions[step] = dispatch, completed[0]
            del pending[step]
            progressed = True
        assert progressed, f"steps never dispatched: {sorted(pending)}: {trace.describe()}"
    ended = trace.one(f"create {EventKind.PIPELINE_RUN_COMPLETED.value}", BATCH)
    assert trace.parent(ended) in completions.values()
    return trace


def _topic(base: str, namespace: str) -> str:
    """A topic as the spans name it: consumed, with the namespace prefix, if any."""
    return f"{namespace}.{base}" if namespace else base
