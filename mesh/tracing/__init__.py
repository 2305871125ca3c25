"""Tracing: one pipeline run is one trace (OpenTelemetry).

The trace context travels in gRPC metadata and in Kafka headers (W3C ``traceparent``), so a
``CreateBatch``, the ``StepCommand`` of every step, the workers' ``EssayStepOutcome`` events, the
conductor's intake of each, the ``BatchStepCompleted`` that closes a step and the next dispatch
are spans of one trace.

- ``propagation``: the W3C header, read from and written to Kafka headers and the current
  context. An event captures the context it is *built* in (``OutgoingEvent.trace``), so an
  event that waits in the transactional outbox keeps its cause, whenever the relay sends it.
- ``provider``: ``Tracing``, the tracer of one service (or none), built by its composition root
  from the standard ``OTEL_*`` variables (``open_tracing``).
- ``rpc``: server spans around every RPC handler, client spans (and the context) on calls.
- ``messaging``: a consumer span per consumed message (its parent is the producer's context
  from the record's headers), and the ``create`` spans of dispatches.

Off (the default), none of these hooks is installed: handlers are not wrapped and no span is
made; events still carry a context that is already current (a caller's own).
"""
