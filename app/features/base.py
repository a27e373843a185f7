"""The feature-source interface: where a user's store features come from.

A source answers ``fetch(user_id, deadline)`` with the user's store features
by name, or raises ``UnknownUser`` (the user does not exist: 404) or
``FeaturesUnavailable`` (the source cannot answer now: 503). ``fetch_many``
is the bulk form used by /predict/batch and batch scoring; users it does not
know are absent from its result, and when only some users could not be
fetched it raises ``PartiallyUnavailable`` carrying the ones that were.
``deadline`` is a ``time.monotonic()`` instant the source must answer by
(``None``: its own default budget); local sources may ignore it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from app.errors import FeaturesUnavailable, UnknownUser

Features = dict[str, Any]


class FeatureSource(Protocol):
    name: str
    """Tier label for metrics and the prediction log (``table``, ``upstream``, ...)."""

    async def fetch(self, user_id: str, deadline: float | None = None) -> Features: ...

    async def fetch_many(self, user_ids: Sequence[str], deadline: float | None = None) -> dict[str, Features]: ...

    async def close(self) -> None: ...


class PartiallyUnavailable(FeaturesUnavailable):
    """Some users of a bulk fetch could not be fetched now; ``found`` holds those that were."""

    def __init__(self, message: str, found: dict[str, Features], unavailable: list[str], retry_after: float) -> None:
        super().__init__(message, retry_after)
        self.found = found
        self.unavailable = unavailable


def unknown_user(user_id: str) -> UnknownUser:
    return UnknownUser(
        f"unknown user {user_id!r}",
        [{"loc": ["body", "user_id"], "msg": "unknown user", "type": "unknown_user"}],
    )
