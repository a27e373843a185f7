"""The hand-written OTLP encoder gives the message the SDK's own encoder gives, decoded with opentelemetry-proto."""

from __future__ import annotations

from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)
from opentelemetry.trace.span import TraceState

from app.telemetry.otlp_encode import encode_spans


class Keep(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[Any] = []

    def export(self, spans: Any) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def finished_spans() -> list[Any]:
    """Spans of every shape the service makes and some it does not: the encoders must agree on all of them."""
    keep = Keep()
    provider = TracerProvider(resource=Resource.create({"service.name": "modelserve-test", "k8s.pod.uid": "é-1"}))
    provider.add_span_processor(SimpleSpanProcessor(keep))
    tracer = provider.get_tracer("modelserve")
    other = provider.get_tracer("modelserve.jobs", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.21.0")
    remote = SpanContext(
        0x4BF92F3577B34DA6A3CE929D0E0E4736,
        0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "abc"), ("x", "1")]),
    )
    parent = set_span_in_context(NonRecordingSpan(remote))
    with tracer.start_as_current_span("POST /predict", parent, SpanKind.SERVER) as server:
        server.set_attributes({"http.route": "/predict", "http.response.status_code": 200, "url.path": "/predict"})
        with tracer.start_as_current_span("decode"):
            pass
        with tracer.start_as_current_span("features") as s:
            s.set_attributes(
                {
                    "modelserve.feature.tier": "redis",
                    "modelserve.feature.cache": "hit",
                    "modelserve.breaker.open": False,
                    "flag.true": True,
                    "modelserve.users": 3,
                    "negative": -5,
                    "big": 2**62,
                    "seconds": 0.00123,
                    "zero.int": 0,
                    "zero.float": 0.0,
                    "empty": "",
                    "list.str": ["a", "bc", ""],
                    "list.int": [1, -2, 300],
                    "list.float": [0.5, 1e300],
                    "list.bool": [True, False],
                    "unicode": "naïve ✓ " + "x" * 200,
                }
            )
            s.add_event("retry", {"modelserve.retry": 1, "why": "429"})
            s.add_event("bare")
        with tracer.start_as_current_span("upstream GET", kind=SpanKind.CLIENT) as s:
            s.set_status(Status(StatusCode.ERROR, "HTTPStatusError: 503 Service Unavailable"))
        with tracer.start_as_current_span("inference") as s:
            s.set_status(Status(StatusCode.OK))
    links = [Link(server.get_span_context(), {"modelserve.reason": "shadow"}), Link(remote)]
    with other.start_as_current_span("shadow", kind=SpanKind.INTERNAL, links=links) as s:
        s.set_attribute("modelserve.rows", 20)
    with (
        tracer.start_as_current_span("batch", kind=SpanKind.PRODUCER),
        tracer.start_as_current_span("", kind=SpanKind.CONSUMER),
    ):
        pass
    return keep.spans


def test_same_message_as_the_sdk_encoder() -> None:
    spans = finished_spans()
    assert len(spans) == 8
    ours = ExportTraceServiceRequest.FromString(encode_spans(spans))
    theirs = ExportTraceServiceRequest.FromString(sdk_encode_spans(spans).SerializePartialToString())
    assert ours == theirs, f"\nours:\n{ours}\ntheirs:\n{theirs}"
    assert sum(len(ss.spans) for rs in ours.resource_spans for ss in rs.scope_spans) == 8
    assert [len(rs.scope_spans) for rs in ours.resource_spans] == [2]  # two tracers: two scopes


def test_each_span_alone_and_empty_batch() -> None:
    for span in finished_spans():
        ours = ExportTraceServiceRequest.FromString(encode_spans([span]))
        assert ours == ExportTraceServiceRequest.FromString(sdk_encode_spans([span]).SerializePartialToString())
    assert encode_spans([]) == b""


class PublicOnly:
    """A span seen only through ReadableSpan's public properties (no private containers to read)."""

    def __init__(self, span: Any) -> None:
        self._span = span

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._span, name)


def test_spans_without_the_sdk_containers_through_the_public_properties() -> None:
    spans = finished_spans()
    assert encode_spans([PublicOnly(s) for s in spans]) == encode_spans(spans)
