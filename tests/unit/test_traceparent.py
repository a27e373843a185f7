"""An incoming traceparent read without the SDK: the same verdict as the SDK's propagator, for every form."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from app.telemetry.tracing import _GETTER, _unsampled_parent

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
VALUES = [
    f"00-{TRACE}-{SPAN}-00",
    f"00-{TRACE}-{SPAN}-02",
    f"00-{TRACE}-{SPAN}-01",
    f"00-{TRACE}-{SPAN}-03",
    f"00-{TRACE}-{SPAN}-04",  # unknown flag bits: not sampled
    f"00-{TRACE}-{SPAN}-fe",
    f"00-{TRACE.upper()}-{SPAN}-00",
    f"00-{TRACE}-{SPAN.upper()}-00",
    f"00-{'0' * 32}-{SPAN}-00",
    f"00-{TRACE}-{'0' * 16}-00",
    f" \t00-{TRACE}-{SPAN}-00 ",
    f"00-{TRACE}-{SPAN}-00-extra",
    f"01-{TRACE}-{SPAN}-00-extra",
    f"01-{TRACE}-{SPAN}-00",
    f"ff-{TRACE}-{SPAN}-00",
    f"00-{TRACE[:-1]}-{SPAN}-00",
    f"00-{TRACE}x-{SPAN}-00",
    f"00-{TRACE}-{SPAN}-0",
    f"00-+{TRACE[1:]}-{SPAN}-00",
    f"00-{TRACE[:10]}_{TRACE[11:]}-{SPAN}-00",
    f"00-{TRACE}-{SPAN}-00-" + "x" * 600,
    "",
    "garbage",
]


@pytest.mark.parametrize("value", VALUES)
def test_same_verdict_as_the_sdk(value: str) -> None:
    headers = [(b"traceparent", value.encode())]
    parent = trace.get_current_span(TraceContextTextMapPropagator().extract(headers, getter=_GETTER))
    ctx = parent.get_span_context()
    expected = None
    if ctx.is_valid and not ctx.trace_flags.sampled:
        expected = (ctx.trace_id, "02" if ctx.trace_flags & 2 else "00", None)
    assert _unsampled_parent(value.encode(), None, headers) == expected


def test_tracestate_as_the_sdk_reads_it() -> None:
    value = f"00-{TRACE}-{SPAN}-00".encode()
    headers = [(b"traceparent", value), (b"tracestate", b"vendor=abc, x=1,INVALID KEY=2")]
    parent = trace.get_current_span(TraceContextTextMapPropagator().extract(headers, getter=_GETTER))
    expected = parent.get_span_context().trace_state.to_header() or None
    assert _unsampled_parent(value, headers[1][1], headers) == (int(TRACE, 16), "00", expected)
