"""The service's errors as gRPC statuses.

===========================================  =====================
``ValidationFailed``, 413, 415               ``INVALID_ARGUMENT``
``NotFound`` (unknown model, version, user)  ``NOT_FOUND``
``Unavailable`` (not ready, draining, ...)   ``UNAVAILABLE``
``Unauthorized``                             ``UNAUTHENTICATED``
``DeadlineExceeded`` (before inference)      ``DEADLINE_EXCEEDED``
anything else                                ``INTERNAL``
===========================================  =====================

The status message is the REST answer's ``error`` followed by its first
``detail`` entries (``input: msg``), bounded like the REST answer.
``UNAVAILABLE`` carries when to retry twice in its trailing metadata: a
``retry-after`` key (whole seconds, as the HTTP header) and the standard
``google.rpc.RetryInfo`` inside ``grpc-status-details-bin`` (a
``google.rpc.Status``), which gRPC clients that understand rich errors read.
"""

from __future__ import annotations

import math

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from app.errors import (
    DeadlineExceeded,
    ModelServeError,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    ValidationFailed,
    clip,
    retry_after_value,
)

MESSAGE_CHARS = 4096
"""Longest status message (it travels in a header)."""

Metadata = tuple[tuple[str, str | bytes], ...]


def code_of(exc: ModelServeError) -> grpc.StatusCode:
    if isinstance(exc, DeadlineExceeded):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    if isinstance(exc, ValidationFailed | PayloadTooLarge | UnsupportedMediaType):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, NotFound):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, Unavailable):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(exc, Unauthorized):
        return grpc.StatusCode.UNAUTHENTICATED
    return grpc.StatusCode.INTERNAL


def message_of(exc: ModelServeError, max_details: int) -> str:
    """The error's summary, then ``where: what`` for its first ``max_details`` detail entries."""
    parts = []
    for d in exc.detail[:max_details]:
        loc = [str(p) for p in d.get("loc", ())]
        where = ".".join(clip(p) for p in (loc[2:] if loc[:2] == ["body", "inputs"] else loc[1:] or loc))
        parts.append(f"{where}: {d.get('msg', '')}" if where else str(d.get("msg", "")))
    rest = exc.total - len(parts)
    if parts and rest > 0:
        parts.append(f"{rest} more problem(s) not listed")
    text = exc.message + (" (" + "; ".join(parts) + ")" if parts else "")
    return text[:MESSAGE_CHARS]


def trailing_metadata(exc: ModelServeError, code: grpc.StatusCode, message: str) -> Metadata:
    """``retry-after`` and a ``google.rpc.Status`` with ``RetryInfo`` for ``Unavailable``; nothing otherwise."""
    if not isinstance(exc, Unavailable):
        return ()
    seconds = max(1, math.ceil(exc.retry_after))
    info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds))
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=message, details=[detail])
    return (
        ("retry-after", retry_after_value(exc.retry_after)),
        ("grpc-status-details-bin", status.SerializeToString()),
    )
