"""Errors of the service: one base carrying an HTTP status, a small tree.

::

    ModelServeError (500)
    ├── ValidationFailed (422)        bad input; ``detail`` names every field
    │   └── NonFiniteAnswer           valid inputs the model answers with ±inf or NaN
    ├── PayloadTooLarge (413)
    ├── UnsupportedMediaType (415)    a JSON route given a body that is not JSON
    ├── NotFound (404)                also an unknown path, or the admin API without a token
    │   ├── UnknownUser               the compute source has no such user
    │   └── ModelNotFound             no such version or alias
    ├── MethodNotAllowed (405)        carries the allowed methods (``Allow``)
    ├── Unavailable (503)             carries ``retry_after`` (``Retry-After``)
    │   ├── NotReady                  model not loaded/warm, or draining
    │   └── FeaturesUnavailable       no tier could produce the user's features
    ├── NotSupported (400)            a protocol operation this service does not do (V2 load/unload)
    ├── Unauthorized (401)            admin token missing or wrong (``WWW-Authenticate``)
    ├── DeadlineExceeded (504)        the caller's deadline (gRPC ``grpc-timeout``) passed before inference
    └── ArtifactError (409)           checksum mismatch, bad manifest, failed self-check
        └── InvalidName (422)         a version or alias name that is not allowed


        ├── InvalidName               a version or alias name that is not allowed
        └── PublishRefused            a model ``modelserve publish`` will not write, and why

The status lives on the class, never on an instance; ``headers()`` are the
response headers an answer must carry. The HTTP layer (``app/api/errors.py``)
turns every one into the single error shape ``{"error": str, "detail":
[{"loc", "msg", "type"}]}`` through one function; the CLI prints ``str(err)``
on one line and exits non-zero.

``from_pydantic`` is the one place a pydantic validation error becomes
``detail`` entries.

Error answers are bounded whatever the input: collectors stop building
entries after ``COLLECT_LIMIT`` (``total`` still counts every problem), an
answer lists at most ``MODELSERVE_MAX_ERROR_DETAILS`` of them, and client
text (names, keys, values) is echoed at most ``ECHO_CHARS`` long (``clip``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import islice
from typing import Any

from pydantic import ValidationError

ECHO_CHARS = 64
"""At most this many characters of any client-supplied text are echoed in an error."""
COLLECT_LIMIT = 1000
"""Most ``detail`` entries any decoder builds; further problems are only counted."""
SUMMARY_NAMES = 10
"""Fields a one-line summary names before it says "and more"."""


def clip(text: object) -> str:
    """``text`` as a string, cut to ``ECHO_CHARS`` (marked with "…") when longer."""
    s = text if isinstance(text, str) else str(text)
    return s if len(s) <= ECHO_CHARS else s[:ECHO_CHARS] + "…"


class ModelServeError(Exception):
    status_code = 500

    def __init__(self, message: str, detail: list[dict[str, Any]] | None = None, total: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or []
        self.total = max(total or 0, len(self.detail))
        """How many problems there were; ``detail`` may list fewer."""

    def headers(self) -> dict[str, str]:
        """Headers the answer to this error carries."""
        return {}


class ValidationFailed(ModelServeError):
    status_code = 422


class NonFiniteAnswer(ValidationFailed):
    """The model answered ±inf or NaN for valid inputs (far outside what it was trained on): JSON
    cannot carry the answer. ``at(locs)`` names the instances, one ``loc`` per row of ``rows``."""

    MSG = "the model's answer for these features is not finite (they are far outside what it was trained on)"

    def __init__(self, rows: Sequence[int]) -> None:
        super().__init__(f"the model's answer is not finite for {len(rows)} instance(s)")
        self.rows = list(rows)

    def at(self, locs: Sequence[Sequence[str | int]]) -> NonFiniteAnswer:
        out = NonFiniteAnswer(self.rows)
        out.detail = [{"loc": list(loc), "msg": self.MSG, "type": "non_finite_answer"} for loc in locs]
        out.total = len(out.detail)
        return out


class PayloadTooLarge(ModelServeError):
    status_code = 413


class UnsupportedMediaType(ModelServeError):
    status_code = 415


class NotFound(ModelServeError):
    status_code = 404


class UnknownUser(NotFound):
    pass


class ModelNotFound(NotFound):
    pass


class MethodNotAllowed(ModelServeError):
    status_code = 405

    def __init__(self, message: str, allow: str | None = None) -> None:
        super().__init__(message)
        self.allow = allow

    def headers(self) -> dict[str, str]:
        return {"Allow": self.allow} if self.allow else {}


class Unavailable(ModelServeError):
    status_code = 503

    def __init__(self, message: str, retry_after: float = 1.0, detail: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message, detail)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": retry_after_value(self.retry_after)}


class NotReady(Unavailable):
    pass


class FeaturesUnavailable(Unavailable):
    pass


class NotSupported(ModelServeError):
    """A protocol operation the service deliberately does not offer; the message says what to do instead.

    400, not 501: the request will never succeed, so it is the client's to
    change (a 5xx would count against the service's error rate and invite
    retries), and the V2 repository extension answers a failed load "typically
    400"; its clients read ``error`` whatever the status."""

    status_code = 400


class Unauthorized(ModelServeError):
    status_code = 401

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class DeadlineExceeded(ModelServeError):
    status_code = 504


class ArtifactError(ModelServeError):
    status_code = 409


class InvalidName(ArtifactError):
    status_code = 422


class PublishRefused(ArtifactError):
    """``publish`` refused a model; nothing was written. The message names the column, step or row at fault."""


def retry_after_value(seconds: float) -> str:
    """``Retry-After`` in whole seconds, at least 1 (the header takes no fractions)."""
    return str(max(1, math.ceil(seconds)))


def from_pydantic(
    errors: ValidationError | Sequence[Mapping[str, Any]],
    prefix: Sequence[str | int] = ("body",),
    what: str = "invalid request",
    total: int | None = None,
) -> ValidationFailed:
    """``ValidationFailed`` for a pydantic error (or the list its ``errors()`` gives), one ``detail`` entry each.

    Each ``loc`` is put under ``prefix`` with client-supplied keys clipped;
    at most ``COLLECT_LIMIT`` entries are kept and ``total`` counts them all
    (pass it when ``errors`` lists only some). pydantic's ``errors()`` builds
    one dict per problem, so callers keep that number bounded (see
    ``app.model.decoder.Decoder``). The summary names the first offending
    fields relative to ``prefix`` (``<body>`` for the whole document).
    """
    if isinstance(errors, ValidationError):
        total = errors.error_count()
        errors = errors.errors(include_url=False, include_context=False, include_input=False)
    elif total is None:
        total = len(errors)
    detail = [
        {
            "loc": [*prefix, *(p if isinstance(p, int) else clip(p) for p in e.get("loc", ()))],
            "msg": e.get("msg", ""),
            "type": e.get("type", ""),
        }
        for e in islice(errors, COLLECT_LIMIT)
    ]
    names: list[str] = []
    for d in detail:
        name = ".".join(str(p) for p in d["loc"][len(prefix) :]) or "<body>"
        if name not in names:
            names.append(name)
        if len(names) > SUMMARY_NAMES:
            break
    shown = ", ".join(names[:SUMMARY_NAMES]) + (" and more" if len(names) > SUMMARY_NAMES else "")
    return ValidationFailed(f"{what}: {total} error(s) in {shown}", detail, total)
