"""The feature-source interface: where a user's store features come from.

A source answers ``fetch(user_id)`` with the user's store features by name, or
raises ``UnknownUser`` (the user does not exist: 404) or
``FeaturesUnavailable`` (the source cannot answer now: 503). ``fetch_many``
is the bulk form used by /predict/batch and batch scoring; users it does not
know are absent from its result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

Features = dict[str, Any]


class FeatureSource(Protocol):
    name: str
    """Tier label for metrics and the prediction log (``table``, ``upstream``, ...)."""

    async def fetch(self, user_id: str) -> Features: ...

    async def fetch_many(self, user_ids: Sequence[str]) -> dict[str, Features]: ...

    async def close(self) -> None: ...
