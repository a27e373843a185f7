"""The Redis tier: features shared by every worker and replica, fail-fast.

One key per user, ``<prefix><user_id>``, holding the store features as JSON.
The prefix carries a format version and a fingerprint of the feature names
(``modelserve:features:v1:<fp>:``), so a schema change reads fresh keys
instead of old shapes.

Redis must never fail or slow a prediction: a lookup is one round trip
(``GET``; ``MGET`` for a batch) bounded by a few milliseconds, never retried,
and behind a circuit breaker; any failure is a miss. Write-back after a
compute is a background task the request does not wait for.

A value is input like any other: one that is not JSON, not the store
features' shape and types (``app.features.schema``), or a key of another
Redis type (a hash, a list: ``GET`` answers WRONGTYPE, which is not a Redis
failure) is counted (``outcome="invalid"``), deleted in the background so
the next lookup does not meet it again, and treated as a miss: the request
goes on to compute.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from app.features.base import Features
from app.features.breaker import CircuitBreaker
from app.features.schema import StoreSchema
from app.telemetry import tracing
from app.telemetry.metrics import Metrics

log = logging.getLogger("modelserve.features")

KEY_VERSION = "v1"
# Compare-and-delete in one step: a plain DEL could remove the good value a
# concurrent write-back (this process's or another's) has just stored.
DELETE_IF_UNCHANGED = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
# A key of another Redis type (a hash, a list) holds no value of ours; delete it unless a write-back made it a string.
DELETE_IF_NOT_STRING = (
    "if redis.call('TYPE', KEYS[1])['ok'] ~= 'string' then return redis.call('DEL', KEYS[1]) end return 0"
)


def key_prefix(feature_names: Iterable[str]) -> str:
    fingerprint = hashlib.sha256(",".join(sorted(feature_names)).encode()).hexdigest()[:12]
    return f"modelserve:features:{KEY_VERSION}:{fingerprint}:"


def connect(url: str, connect_timeout: float, read_timeout: float) -> Redis:
    """A client that fails fast: ms-scale timeouts and no retries (redis-py retries by default)."""
    return Redis.from_url(
        url,
        socket_connect_timeout=connect_timeout,
        socket_timeout=read_timeout,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        health_check_interval=0,
    )


class RedisTier:
    name = "redis"

    def __init__(
        self,
        client: Redis,
        breaker: CircuitBreaker,
        metrics: Metrics,
        prefix: str,
        ttl: float,
        timeout: float,
        schema: StoreSchema | None = None,
    ) -> None:
        self.client = client
        self.schema = schema
        self.breaker = breaker
        self.prefix = prefix
        self.ttl = max(1, round(ttl))
        self.timeout = timeout
        """Bound on one whole operation (pool, connect, send, read): connect + read timeout."""
        self._pending: set[asyncio.Task[None]] = set()
        self._outcome = "error"
        """Why the last read returned None (``skipped`` or ``error``), for its span."""
        lookups = metrics.feature_lookups
        self._hit = lookups.labels("redis", "hit")
        self._miss = lookups.labels("redis", "miss")
        self._error = lookups.labels("redis", "error")
        self._skipped = lookups.labels("redis", "skipped")
        self._invalid = lookups.labels("redis", "invalid")
        self._time = metrics.feature_fetch.labels("redis")

    async def get(self, user_id: str) -> Features | None:
        """The user's features, or None on a miss, a failure or an open circuit."""
        found = await self._read([user_id])
        return found.get(user_id) if found is not None else None

    async def get_many(self, user_ids: Sequence[str]) -> dict[str, Features]:
        """Features of the users Redis has, in one ``MGET``; empty on failure."""
        found = await self._read(user_ids)
        return found or {}

    async def _read(self, user_ids: Sequence[str]) -> dict[str, Features] | None:
        if not tracing.enabled:
            return await self._read_untraced(user_ids)
        with tracing.span("redis", tracing.CLIENT, {"db.system": "redis", "modelserve.users": len(user_ids)}) as span:
            found = await self._read_untraced(user_ids)
            outcome = self._outcome if found is None else "hit" if found else "miss"
            span.set_attribute("modelserve.redis.outcome", outcome)
            span.set_attribute("modelserve.redis.breaker", self.breaker.state.name.lower())
            return found

    async def _read_untraced(self, user_ids: Sequence[str]) -> dict[str, Features] | None:
        n = len(user_ids)
        if not self.breaker.allow():
            self._skipped.inc(n)
            self._outcome = "skipped"
            return None
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                if n == 1:
                    raws: list[Any] = [await self.client.get(self.prefix + user_ids[0])]
                else:
                    raws = await self.client.mget([self.prefix + u for u in user_ids])
        except asyncio.CancelledError:
            self.breaker.abandon()
            raise
        except Exception as exc:  # a Redis failure of any kind is a miss, never an error
            if isinstance(exc, ResponseError) and str(exc).startswith("WRONGTYPE"):
                # GET of a hash or list: the key's content is bad, Redis is fine (MGET answers nil for it).
                self.breaker.success()
                self._invalid.inc(n)
                self._outcome = "invalid"
                log.warning("invalid features in Redis for one user (not a string key); deleted")
                self._spawn(self._delete_wrong_type(self.prefix + user_ids[0]))
                return None
            self.breaker.failure()
            self._error.inc(n)
            log.debug("redis read failed: %r", exc)
            self._outcome = "error"
            return None
        self.breaker.success()
        self._time.observe(time.perf_counter() - t0)
        found: dict[str, Features] = {}
        invalid: list[tuple[str, bytes]] = []
        absent = 0
        for user_id, raw in zip(user_ids, raws, strict=True):
            if raw is None:
                absent += 1
                continue
            value, problem = self._parse(raw)
            if value is not None:
                found[user_id] = value
            else:
                invalid.append((user_id, raw))
                log.warning("invalid features in Redis for one user (%s); deleted", problem)
        self._hit.inc(len(found))
        if absent:
            self._miss.inc(absent)
        if invalid:
            self._invalid.inc(len(invalid))
            self._spawn(self._delete(invalid))
        return found

    def _parse(self, raw: bytes) -> tuple[Features | None, str | None]:
        """(features, None), or (None, why they are refused)."""
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None, "not JSON"
        if self.schema is None:
            problem = None if type(value) is dict else "not an object"
        else:
            problem = self.schema.problem(value)
        return (value, None) if problem is None else (None, problem)

    async def _delete(self, bad: list[tuple[str, bytes]]) -> None:
        """Delete each bad value, unless something (the write-back racing this) has replaced it."""
        try:
            async with asyncio.timeout(self.timeout):
                pipe = self.client.pipeline(transaction=False)
                for user_id, raw in bad:
                    pipe.eval(DELETE_IF_UNCHANGED, 1, self.prefix + user_id, raw)
                await pipe.execute()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the value stays until its TTL or the next write-back; still a miss
            log.debug("redis delete of invalid values failed: %r", exc)

    async def _delete_wrong_type(self, key: str) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.client.eval(DELETE_IF_NOT_STRING, 1, key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("redis delete of a wrong-typed key failed: %r", exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def write_back(self, values: dict[str, Features]) -> None:
        """Store computed features in the background; the caller never waits."""
        if not values or not self.breaker.allow():
            return
        self._spawn(self._write(values))

    async def _write(self, values: dict[str, Features]) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                if len(values) == 1:
                    ((user_id, features),) = values.items()
                    await self.client.set(self.prefix + user_id, orjson.dumps(features), ex=self.ttl)
                else:
                    pipe = self.client.pipeline(transaction=False)
                    for user_id, features in values.items():
                        pipe.set(self.prefix + user_id, orjson.dumps(features), ex=self.ttl)
                    await pipe.execute()
        except asyncio.CancelledError:
            self.breaker.abandon()
            raise
        except Exception as exc:
            self.breaker.failure()
            log.debug("redis write-back failed: %r", exc)
        else:
            self.breaker.success()

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=max(self.timeout * 4, 0.1))
        for task in self._pending:
            task.cancel()
        await self.client.aclose()
