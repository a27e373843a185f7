"""The feature server: store features for a user, from the first tier that has them.

This is the seam the request path calls; what sits behind it (memory, Redis,
the compute source) is composed in ``app.container``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from app.errors import UnknownUser
from app.features.base import Features, FeatureSource
from app.telemetry.metrics import Metrics


class FeatureServer:
    def __init__(self, source: FeatureSource, metrics: Metrics) -> None:
        self.source = source
        tier = source.name
        self._hit = metrics.feature_lookups.labels(tier, "hit")
        self._miss = metrics.feature_lookups.labels(tier, "miss")
        self._time = metrics.feature_fetch.labels(tier)

    async def get(self, user_id: str) -> tuple[Features, str]:
        """(features, tier that answered) or UnknownUser / FeaturesUnavailable."""
        t0 = time.perf_counter()
        try:
            features = await self.source.fetch(user_id)
        except UnknownUser:
            self._miss.inc()
            raise
        self._hit.inc()
        self._time.observe(time.perf_counter() - t0)
        return features, self.source.name

    async def get_many(self, user_ids: Sequence[str]) -> dict[str, tuple[Features, str]]:
        """Features of every known user among ``user_ids`` (unknown ones are absent)."""
        t0 = time.perf_counter()
        found = await self.source.fetch_many(list(dict.fromkeys(user_ids)))
        self._time.observe(time.perf_counter() - t0)
        self._hit.inc(len(found))
        return {u: (f, self.source.name) for u, f in found.items()}

    async def close(self) -> None:
        await self.source.close()
