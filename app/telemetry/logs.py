"""The service's own log: ``text`` for a terminal, ``json`` (one object a line) for collectors.

``MODELSERVE_LOG_FORMAT=json`` writes every record, uvicorn's included, as one
JSON object a line: ``time`` (ISO 8601 UTC), ``level``, ``logger``,
``message``, and where known ``request_id`` and ``model_version`` (context
variables the predictor sets for the request it serves), ``trace_id`` and
``span_id`` (the current OpenTelemetry span, when a tracer provider is
configured; a request the sampler dropped before making a span has its
``trace_id`` and no ``span_id``) and ``exc_info`` (the formatted traceback, one string).

The formatter is written here with orjson (already a dependency) rather than
taken from python-json-logger: it is a few lines, and one dependency fewer to
pin, audit and keep in the slim image.

What is logged is only ever the message and the ids above; nothing reads
``record.args`` or the extra attributes a caller may attach, so a secret can
only reach the log if a message itself names it, whatever the format.
"""

from __future__ import annotations

import contextvars
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

try:
    from opentelemetry import trace as _otel_trace

    from app.telemetry.tracing import unsampled_trace as _unsampled_trace
except ImportError:  # tracing is optional; without it no line carries trace ids
    _otel_trace = None  # type: ignore[assignment]

LogFormat = Literal["json", "text"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("modelserve_request_id", default=None)
"""The request id of the prediction being served in this context (set by the predictor)."""
model_version: contextvars.ContextVar[str | None] = contextvars.ContextVar("modelserve_model_version", default=None)
"""The model version answering the request being served in this context (set by the predictor)."""


def current_trace_ids() -> tuple[str | None, str | None]:
    """The current span's (trace id, span id) as lowercase hex, or (None, None) when tracing is off.

    A request the sampler dropped before any span was made has a trace id and no span id: (trace id, None).
    """
    if _otel_trace is None:
        return None, None
    dropped = _unsampled_trace.get()
    if dropped > 0:
        return format(dropped, "032x"), None
    ctx = _otel_trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None, None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def current_trace_id() -> str | None:
    """The current trace id as lowercase hex, or None when tracing is off (one call per record built)."""
    if _otel_trace is None:
        return None
    dropped = _unsampled_trace.get()
    if dropped > 0:
        return format(dropped, "032x")
    ctx = _otel_trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


class JsonFormatter(logging.Formatter):
    """One JSON object a line; ids appear only when known (absent keys, not nulls)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = request_id.get()
        if rid is not None:
            out["request_id"] = rid
        version = model_version.get()
        if version is not None:
            out["model_version"] = version
        trace_id, span_id = current_trace_ids()
        if trace_id is not None:
            out["trace_id"] = trace_id
            if span_id is not None:
                out["span_id"] = span_id
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc_info"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        # default=str: a message is already a str; this only guards odd ids from ever breaking a log call
        return orjson.dumps(out, default=str, option=orjson.OPT_UTC_Z).decode()


def log_config(fmt: LogFormat, level: str, access_log: bool = False) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the whole process, uvicorn's loggers included.

    It is also passed to uvicorn as its ``log_config``, so uvicorn's access and
    error loggers write through the same handler in the same format instead of
    installing their own. httpx and httpcore stay at WARNING whatever the
    level: httpx logs every request's full URL at INFO, userinfo (an upstream
    password) included. uvicorn's access log stays off unless ``access_log``
    (as ``serve`` runs uvicorn): a worker configures logging again after
    uvicorn has, and must not turn it back on.
    """
    formatter: dict[str, Any] = {"()": f"{__name__}.JsonFormatter"} if fmt == "json" else {"format": TEXT_FORMAT}
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"modelserve": formatter},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "modelserve", "stream": "ext://sys.stderr"}
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            # uvicorn's own loggers propagate to the root handler, so one format covers them all.
            "uvicorn": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.error": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.access": {"level": level, "handlers": [], "propagate": access_log},
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
        },
    }


def configure(fmt: LogFormat, level: str, access_log: bool = False) -> None:
    """Configure the process's logging (see ``log_config``); safe to call again."""
    logging.config.dictConfig(log_config(fmt, level, access_log))
