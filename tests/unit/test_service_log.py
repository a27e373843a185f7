"""The service's own log: JSON lines with the request, model and trace ids; uvicorn's loggers in the same format."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider

from app.telemetry import logs, tracing


def formatted(record: logging.LogRecord) -> dict[str, Any]:
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    parsed: dict[str, Any] = orjson.loads(line)
    return parsed


def make_record(msg: str = "hello %s", args: tuple[Any, ...] = ("world",), exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord("modelserve.test", logging.WARNING, __file__, 1, msg, args, exc_info)


@pytest.fixture
def request_scope() -> Iterator[None]:
    tokens = (logs.request_id.set("req-42"), logs.model_version.set("v2"))
    yield
    logs.model_version.reset(tokens[1])
    logs.request_id.reset(tokens[0])


@pytest.fixture
def restore_logging() -> Iterator[None]:
    names = (None, "uvicorn", "uvicorn.error", "uvicorn.access", "httpx")
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in map(logging.getLogger, names)]
    yield
    for lg, handlers, level, propagate in saved:
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate


class TestJsonFormatter:
    def test_a_line_outside_a_request_has_the_base_fields_only(self) -> None:
        """Outside a request a line carries time, level, logger and message, and no id keys."""
        line = formatted(make_record())
        assert set(line) == {"time", "level", "logger", "message"}
        assert line["level"] == "WARNING" and line["logger"] == "modelserve.test" and line["message"] == "hello world"
        assert line["time"].endswith("Z")

    def test_a_request_scoped_line_carries_the_request_and_model(self, request_scope: None) -> None:
        """Inside a request the predictor's context variables put request_id and model_version on the line."""
        line = formatted(make_record())
        assert line["request_id"] == "req-42" and line["model_version"] == "v2"
        assert "trace_id" not in line and "span_id" not in line  # no tracer provider: no ids

    def test_trace_and_span_ids_come_from_the_current_span(self, request_scope: None) -> None:
        """With a tracer provider, a line inside a span carries that span's trace and span ids as hex."""
        tracer = TracerProvider().get_tracer("test")
        with tracer.start_as_current_span("predict") as span:
            line = formatted(make_record())
            ctx = span.get_span_context()
            assert logs.current_trace_id() == format(ctx.trace_id, "032x")
        assert line["trace_id"] == format(ctx.trace_id, "032x") and len(line["trace_id"]) == 32
        assert line["span_id"] == format(ctx.span_id, "016x") and len(line["span_id"]) == 16
        assert line["request_id"] == "req-42"
        assert logs.current_trace_ids() == (None, None) and logs.current_trace_id() is None

    def test_a_request_dropped_before_any_span_has_its_trace_id_and_no_span_id(
        self, request_scope: None, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Under always_off the middleware drops a request without the SDK: a line logged while serving it carries
        the request's trace id (the one its outgoing traceparent names, not sampled) and no span_id."""
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # nothing is ever exported
        seen: dict[str, Any] = {}

        async def inner(scope: Any, receive: Any, send: Any) -> None:
            seen["line"] = formatted(make_record())
            seen["headers"] = tracing.inject({})
            seen["span"] = tracing.current()

        assert tracing.setup()
        try:
            asyncio.run(tracing.TracingMiddleware(inner)({"type": "http", "method": "GET", "headers": []}, None, None))
        finally:
            tracing.shutdown()
        version, trace_id, span_id, flags = seen["headers"]["traceparent"].split("-")
        assert version == "00" and len(span_id) == 16 and int(flags, 16) & 1 == 0
        assert seen["line"]["trace_id"] == trace_id and "span_id" not in seen["line"]
        assert not seen["span"].get_span_context().is_valid  # the SDK made no span, not even a non-recording one
        assert logs.current_trace_id() is None  # outside the request

    def test_an_exception_is_one_string_field(self) -> None:
        """exc_info is the formatted traceback as one string field, so the line stays one line."""
        line = formatted(make_record("failed", (), exc=True))
        assert line["message"] == "failed"
        assert isinstance(line["exc_info"], str) and "RuntimeError: boom" in line["exc_info"]
        assert line["exc_info"].startswith("Traceback")

    def test_arguments_and_extras_are_not_logged_beyond_the_message(self) -> None:
        """Only the formatted message is written: extra attributes on the record never become fields."""
        rec = make_record()
        rec.password = "hunter2-secret"  # type: ignore[attr-defined]
        line = orjson.dumps(formatted(rec)).decode()
        assert "hunter2" not in line


class TestConfigure:
    @pytest.mark.parametrize("fmt", ["json", "text"])
    def test_uvicorn_and_our_loggers_share_one_format(
        self, fmt: logs.LogFormat, capsys: pytest.CaptureFixture[str], restore_logging: None, request_scope: None
    ) -> None:
        """After configure, uvicorn's error and access loggers write in the chosen format, like the service's own."""
        logs.configure(fmt, "info", access_log=True)
        for name in ("modelserve", "uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).info("from %s", name)
        logging.getLogger("httpx").info("HTTP Request: GET http://user:pw@host/")  # held at WARNING
        err = capsys.readouterr().err
        out = [line for line in err.splitlines() if line]
        assert len(out) == 3, err
        assert "user:pw" not in err
        for name, line in zip(("modelserve", "uvicorn.error", "uvicorn.access"), out, strict=True):
            if fmt == "json":
                parsed = orjson.loads(line)
                assert parsed["logger"] == name and parsed["message"] == f"from {name}"
                assert parsed["request_id"] == "req-42"
            else:
                assert line.split()[2:] == ["INFO", name, "from", name]

    def test_access_log_stays_off_by_default(self, capsys: pytest.CaptureFixture[str], restore_logging: None) -> None:
        """Configuring again (as a worker does after uvicorn) does not turn uvicorn's access log back on."""
        logs.configure("json", "debug")
        logging.getLogger("uvicorn.access").info("GET /predict 200")
        logging.getLogger("uvicorn.error").info("started")
        out = capsys.readouterr().err.splitlines()
        assert [orjson.loads(line)["logger"] for line in out] == ["uvicorn.error"]
