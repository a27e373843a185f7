"""Errors of the service: one base carrying an HTTP status, a small tree.

::

    ModelServeError (500)
    ├── ValidationFailed (422)        bad input; ``detail`` names every field
    ├── PayloadTooLarge (413)
    ├── NotFound (404)
    │   ├── UnknownUser               the compute source has no such user
    │   └── ModelNotFound             no such version or alias
    ├── Unavailable (503)             carries ``retry_after``
    │   ├── NotReady                  model not loaded/warm, or draining
    │   └── FeaturesUnavailable       no tier could produce the user's features
    ├── Unauthorized (401)            admin token missing or wrong
    └── ArtifactError (409)           checksum mismatch, bad manifest, failed self-check
        ├── InvalidName               a version or alias name that is not allowed
        └── PublishRefused            a model ``modelserve publish`` will not write, and why

The HTTP layer (``app/api/errors.py``) maps every one to the single error
shape ``{"error": str, "detail": [{"loc", "msg", "type"}]}``; the CLI prints
``str(err)`` on one line and exits non-zero.
"""

from __future__ import annotations

from typing import Any


class ModelServeError(Exception):
    status_code = 500

    def __init__(self, message: str, detail: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or []


class ValidationFailed(ModelServeError):
    status_code = 422


class PayloadTooLarge(ModelServeError):
    status_code = 413


class NotFound(ModelServeError):
    status_code = 404


class UnknownUser(NotFound):
    pass


class ModelNotFound(NotFound):
    pass


class Unavailable(ModelServeError):
    status_code = 503

    def __init__(self, message: str, retry_after: float = 1.0, detail: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message, detail)
        self.retry_after = retry_after


class NotReady(Unavailable):
    pass


class FeaturesUnavailable(Unavailable):
    pass


class Unauthorized(ModelServeError):
    status_code = 401


class ArtifactError(ModelServeError):
    status_code = 409


class InvalidName(ArtifactError):
    status_code = 422


class PublishRefused(ArtifactError):
    """``publish`` refused a model; nothing was written. The message names the column, step or row at fault."""
