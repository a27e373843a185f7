"""The feature server: store features for a user, from the first tier that has them.

    memory (per process) → Redis (shared, optional) → compute (table or upstream)

A memory hit is a dict lookup. A miss asks Redis (one round trip, fail-fast,
behind a breaker; any failure is a miss), then the compute source, bounded
by the request's feature budget. A computed value fills memory at once and
Redis in the background. When compute fails, a value past its age but within
the stale-if-error window is served (tier ``stale``); otherwise
``FeaturesUnavailable`` (503). A user compute does not know is ``UnknownUser``
(404), remembered in memory for ``negative_ttl`` seconds.

Metrics: ``feature_lookups_total{tier,outcome}`` with outcomes ``hit``,
``miss``, ``negative`` (memory: a remembered unknown user), ``error``,
``skipped`` (Redis: circuit open), ``invalid`` (Redis or upstream: a value
not of the store features' shape, ``app.features.schema``) and ``stale``
(memory: served after a compute failure); ``feature_fetch_seconds{tier}`` for Redis and compute
(a memory hit costs less than timing it would).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from app.errors import FeaturesUnavailable, UnknownUser
from app.features.base import Features, FeatureSource, PartiallyUnavailable, unknown_user
from app.features.memory import MemoryTier
from app.telemetry.metrics import Metrics

if TYPE_CHECKING:
    from app.features.redis_tier import RedisTier  # imported only when Redis is configured


class FeatureServer:
    def __init__(
        self,
        source: FeatureSource,
        metrics: Metrics,
        memory: MemoryTier | None = None,
        redis: RedisTier | None = None,
        budget: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.memory = (
            memory
            if memory is not None
            else MemoryTier(max_age=60.0, max_entries=100_000, stale_window=300.0, negative_ttl=5.0)
        )
        self.redis = redis
        self.budget = budget
        self.clock = clock
        self._entries = self.memory.entries
        lookups = metrics.feature_lookups
        tier = source.name
        self._mem_hit = lookups.labels("memory", "hit")
        self._mem_miss = lookups.labels("memory", "miss")
        self._mem_negative = lookups.labels("memory", "negative")
        self._stale = lookups.labels("memory", "stale")
        self._hit = lookups.labels(tier, "hit")
        self._miss = lookups.labels(tier, "miss")
        self._error = lookups.labels(tier, "error")
        self._time = metrics.feature_fetch.labels(tier)

    def require(self, names: Sequence[str]) -> None:
        """Refuse (``ArtifactError``) store features the compute source is known not to give: the
        offline table's columns are known; an upstream API's are not, so it is trusted."""
        check = getattr(self.source, "require", None)
        if check is not None:
            check(names)

    def lookup_attributes(self, tier: str) -> dict[str, str]:
        """Span attributes of a lookup answered by ``tier``: that tier, the cache outcome, the breaker's state."""
        cache = "hit" if tier in ("memory", "redis") else "stale" if tier == "stale" else "miss"
        out = {"modelserve.feature.tier": tier, "modelserve.feature.cache": cache}
        if self.redis is not None:
            out["modelserve.redis.breaker"] = self.redis.breaker.state.name.lower()
        return out

    async def get(self, user_id: str) -> tuple[Features, str]:
        """(features, tier that answered) or UnknownUser / FeaturesUnavailable."""
        now = self.clock()
        entry = self._entries.get(user_id)
        if entry is not None and entry[1] > now:
            if entry[0] is None:
                self._mem_negative.inc()
                raise unknown_user(user_id)
            self._mem_hit.inc()
            return entry[0], "memory"
        self._mem_miss.inc()
        deadline = now + self.budget
        if self.redis is not None:
            features = await self.redis.get(user_id)
            if features is not None:
                self.memory.put(user_id, features, self.clock())
                return features, "redis"
        t0 = time.perf_counter()
        try:
            features = await self.source.fetch(user_id, deadline)
        except UnknownUser:
            self._miss.inc()
            self.memory.put_unknown(user_id, self.clock())
            raise
        except FeaturesUnavailable:
            self._error.inc()
            stale = self.memory.stale(user_id, self.clock())
            if stale is None:
                raise
            self._stale.inc()
            return stale, "stale"
        self._time.observe(time.perf_counter() - t0)
        self._hit.inc()
        self.memory.put(user_id, features, self.clock())
        if self.redis is not None:
            self.redis.write_back({user_id: features})
        return features, self.source.name

    async def get_many(self, user_ids: Sequence[str]) -> dict[str, tuple[Features, str]]:
        """Features of every known user among ``user_ids`` (unknown ones are absent).

        Memory first, then one Redis ``MGET`` for the rest, then one bulk
        compute; raises ``FeaturesUnavailable`` only if some user could be
        served neither by compute nor by a stale value.
        """
        now = self.clock()
        deadline = now + self.budget
        out: dict[str, tuple[Features, str]] = {}
        missing: list[str] = []
        entries = self._entries
        negative = 0
        for user_id in dict.fromkeys(user_ids):
            entry = entries.get(user_id)
            if entry is not None and entry[1] > now:
                if entry[0] is None:
                    negative += 1  # a remembered unknown user stays absent
                else:
                    out[user_id] = (entry[0], "memory")
                continue
            missing.append(user_id)
        if out:
            self._mem_hit.inc(len(out))
        if negative:
            self._mem_negative.inc(negative)
        if not missing:
            return out
        self._mem_miss.inc(len(missing))
        memory = self.memory
        if self.redis is not None:
            cached = await self.redis.get_many(missing)
            if cached:
                now = self.clock()
                for user_id, features in cached.items():
                    memory.put(user_id, features, now)
                    out[user_id] = (features, "redis")
                missing = [u for u in missing if u not in cached]
                if not missing:
                    return out
        t0 = time.perf_counter()
        unavailable: list[str] = []
        error: FeaturesUnavailable | None = None
        try:
            found = await self.source.fetch_many(missing, deadline)
        except PartiallyUnavailable as exc:
            found, unavailable, error = exc.found, exc.unavailable, exc
        except FeaturesUnavailable as exc:
            found, unavailable, error = {}, missing, exc
        else:
            self._time.observe(time.perf_counter() - t0)
        now = self.clock()
        name = self.source.name
        for user_id, features in found.items():
            memory.put(user_id, features, now)
            out[user_id] = (features, name)
        self._hit.inc(len(found))
        failed = set(unavailable)
        unknown = [u for u in missing if u not in found and u not in failed]
        for user_id in unknown:
            memory.put_unknown(user_id, now)
        if unknown:
            self._miss.inc(len(unknown))
        if self.redis is not None and found:
            self.redis.write_back(found)
        if error is not None:
            self._error.inc(len(unavailable))
            for user_id in unavailable:
                stale = memory.stale(user_id, now)
                if stale is None:
                    raise error
                self._stale.inc()
                out[user_id] = (stale, "stale")
        return out

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.close()
        await self.source.close()
