"""The upstream HTTP feature API as a compute source: resilient calls to a remote feature service.

``GET {base_url}/users/{user_id}/features`` → ``{"user_id", "features": {...}}``;
404 means the user does not exist. Calls go through one pooled
``httpx.AsyncClient`` and are:

- retried only when retrying can help: connect errors, timeouts, network
  errors, 429, 502, 503, 504 (and 500 if ``retry_500``); any other status
  fails at once;
- spaced by exponential backoff with full jitter (``uniform(0, min(cap,
  base·2^n))``), or by ``Retry-After`` when a 429/503 carries one (at most
  ``MAX_RETRY_AFTER``; ``inf`` or ``nan`` is ignored like garbage); a
  Retry-After longer than the time left fails the call at once, and further
  calls fail fast until it has passed, so a throttling upstream is not hit
  again early;
- bounded by the request's deadline (each attempt also by ``attempt_timeout``)
  and by a retry budget, so a failing upstream sees at most ~``ratio`` more
  calls than a healthy one;
- shared: concurrent misses for one user wait on one call (single-flight);
- bounded: an answer over ``MAX_BODY`` (1 MiB) is refused as soon as its
  length says so, never read whole into memory;
- checked: an answer naming another ``user_id`` (a number is compared as
  its text), or whose features are not the store features' shape and
  types (``app.features.schema``) is a failed call (``FeaturesUnavailable``,
  503 unless a stale value serves; counted as ``outcome="invalid"``), never
  passed on to the model.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from urllib.parse import quote

import httpx
import orjson

from app.errors import FeaturesUnavailable, UnknownUser
from app.features.base import Features, PartiallyUnavailable, unknown_user
from app.features.schema import StoreSchema
from app.retry import backoff, parse_retry_after
from app.telemetry import tracing
from app.telemetry.metrics import Metrics

log = logging.getLogger("modelserve.features")

RETRY_AFTER_STATUSES = frozenset({429, 503})
MAX_BODY = 1024 * 1024
"""The largest answer read: one user's features are a few hundred bytes; a bigger body is refused unread."""


class RetryBudget:
    """A token bucket: each call deposits ``ratio`` tokens, each retry spends one.

    Retries are thus at most ~``ratio`` of calls over time, with ``burst``
    retries allowed at once (Finagle's and gRPC's retry budgets work alike).
    A dozen lines, so written here rather than pulled in.
    """

    def __init__(self, ratio: float, burst: float) -> None:
        self.ratio = ratio
        self.capacity = burst
        self.tokens = burst

    def deposit(self) -> None:
        self.tokens = min(self.capacity, self.tokens + self.ratio)

    def withdraw(self) -> bool:
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class UpstreamSource:
    name = "upstream"

    def __init__(
        self,
        base_url: str,
        metrics: Metrics,
        *,
        budget: float = 0.1,
        attempt_timeout: float = 0.05,
        max_retries: int = 3,
        backoff_base: float = 0.01,
        backoff_cap: float = 0.05,
        retry_500: bool = False,
        retry_budget: RetryBudget | None = None,
        max_connections: int = 64,
        client: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
        schema: StoreSchema | None = None,
    ) -> None:
        self.schema = schema
        self.base_url = base_url.rstrip("/")
        self.budget = budget
        self.attempt_timeout = attempt_timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.retryable = frozenset({429, 502, 503, 504} | ({500} if retry_500 else set()))
        self.retry_budget = retry_budget or RetryBudget(0.2, 10.0)
        self.client = client or httpx.AsyncClient(
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"accept": "application/json"},
        )
        self.calls = 0
        """Upstream HTTP requests made (attempts, retries included)."""
        self.blocked_until = 0.0
        """No call before this monotonic instant (an upstream's Retry-After)."""
        self._rng = rng or random.Random()
        self._retries = metrics.upstream_retries
        self._invalid = metrics.feature_lookups.labels("upstream", "invalid")
        self._inflight: dict[str, asyncio.Task[Features]] = {}

    async def fetch(self, user_id: str, deadline: float | None = None) -> Features:
        now = time.monotonic()
        if deadline is None:
            deadline = now + self.budget
        task = self._inflight.get(user_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._call(user_id, deadline))
            self._inflight[user_id] = task
            task.add_done_callback(lambda t: self._landed(user_id, t))
        try:
            async with asyncio.timeout(max(0.0, deadline - now)):
                # shield: one waiter giving up (its deadline, a disconnect) must not cancel the shared call.
                return await asyncio.shield(task)
        except TimeoutError:
            raise FeaturesUnavailable("features unavailable: upstream did not answer in time", 1.0) from None

    def _landed(self, user_id: str, task: asyncio.Task[Features]) -> None:
        if self._inflight.get(user_id) is task:
            del self._inflight[user_id]
        if not task.cancelled():
            task.exception()  # retrieved here, so a call every waiter gave up on logs no warning

    async def fetch_many(self, user_ids: Sequence[str], deadline: float | None = None) -> dict[str, Features]:
        if deadline is None:
            deadline = time.monotonic() + self.budget
        results = await asyncio.gather(*(self.fetch(u, deadline) for u in user_ids), return_exceptions=True)
        found: dict[str, Features] = {}
        unavailable: list[str] = []
        retry_after = 0.0
        for user_id, result in zip(user_ids, results, strict=True):
            if isinstance(result, UnknownUser):
                continue
            if isinstance(result, FeaturesUnavailable):
                unavailable.append(user_id)
                retry_after = max(retry_after, result.retry_after)
            elif isinstance(result, BaseException):
                raise result
            else:
                found[user_id] = result
        if unavailable:
            raise PartiallyUnavailable(
                f"features unavailable for {len(unavailable)} user(s)", found, unavailable, retry_after or 1.0
            )
        return found

    async def _call(self, user_id: str, deadline: float) -> Features:
        self.retry_budget.deposit()
        url = f"{self.base_url}/users/{quote(user_id, safe='')}/features"
        attempt = 0
        waited: float | None = None
        while True:
            now = time.monotonic()
            if now < self.blocked_until:
                raise FeaturesUnavailable(
                    "features unavailable: upstream asked to retry later", self.blocked_until - now
                )
            remaining = deadline - now
            if remaining <= 0:
                raise FeaturesUnavailable("features unavailable: upstream did not answer in time", 1.0)
            try:
                if tracing.enabled:
                    return await self._traced_attempt(
                        user_id, url, min(self.attempt_timeout, remaining), attempt, waited
                    )
                return await self._attempt(user_id, url, min(self.attempt_timeout, remaining))
            except _Retryable as failure:
                exc = failure
            attempt += 1
            now = time.monotonic()
            delay = backoff(attempt, self.backoff_base, self.backoff_cap, self._rng)
            if exc.retry_after is not None:
                self.blocked_until = max(self.blocked_until, now + exc.retry_after)
                delay = max(delay, exc.retry_after)
            if attempt > self.max_retries or now + delay >= deadline or not self.retry_budget.withdraw():
                raise FeaturesUnavailable(
                    f"features unavailable: upstream failed ({exc.reason})",
                    exc.retry_after if exc.retry_after is not None else 1.0,
                )
            self._retries.labels(exc.reason).inc()
            await asyncio.sleep(delay)
            waited = delay

    async def _traced_attempt(
        self, user_id: str, url: str, timeout: float, retry: int, waited: float | None
    ) -> Features:
        """``_attempt`` in a client span (status, retry number, Retry-After, the wait before it) continued upstream.

        ``waited`` is the backoff slept before this retry: at least the previous
        answer's Retry-After when it carried one (the wait honoured it).
        """
        with tracing.span("upstream GET", tracing.CLIENT, {"url.full": url, "modelserve.retry": retry}) as span:
            if waited is not None:
                span.set_attribute("modelserve.retry.waited_seconds", waited)
            try:
                features = await self._attempt(user_id, url, timeout, tracing.inject({}))
            except _Retryable as exc:
                span.set_attribute("modelserve.upstream.outcome", exc.reason)
                if exc.reason.isdigit():
                    span.set_attribute("http.response.status_code", int(exc.reason))
                if exc.retry_after is not None:
                    span.set_attribute("modelserve.upstream.retry_after_seconds", exc.retry_after)
                raise
            except UnknownUser:
                span.set_attribute("http.response.status_code", 404)
                raise
            span.set_attribute("http.response.status_code", 200)
            return features

    async def _attempt(self, user_id: str, url: str, timeout: float, headers: dict[str, str] | None = None) -> Features:
        self.calls += 1
        try:
            async with asyncio.timeout(timeout):
                async with self.client.stream("GET", url, timeout=timeout, headers=headers) as response:
                    content = await _read_at_most(response, MAX_BODY) if response.status_code == 200 else b""
        except (TimeoutError, httpx.TimeoutException):
            raise _Retryable("timeout") from None
        except httpx.ConnectError:
            raise _Retryable("connect") from None
        except httpx.TransportError as exc:  # reset or closed mid-response: GET is safe to repeat
            log.debug("upstream transport error: %r", exc)
            raise _Retryable("network") from None
        status = response.status_code
        if status == 200:
            if content is None:
                self._invalid.inc()
                raise FeaturesUnavailable(f"features unavailable: upstream answer larger than {MAX_BODY} bytes", 1.0)
            try:
                body = orjson.loads(content)
                features = body["features"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                self._invalid.inc()
                raise FeaturesUnavailable("features unavailable: malformed upstream response", 1.0) from None
            named = body.get("user_id", user_id)  # body is an object: body["features"] was found
            if named != user_id and (isinstance(named, bool) or str(named) != user_id):
                self._invalid.inc()
                log.warning("upstream answered features of another user")
                raise FeaturesUnavailable("features unavailable: upstream answered for another user", 1.0)
            problem = self.schema.problem(features) if self.schema is not None else None
            if not isinstance(features, dict) or problem is not None:
                self._invalid.inc()
                log.warning("upstream answered invalid features (%s)", problem or "not an object")
                raise FeaturesUnavailable("features unavailable: malformed upstream response", 1.0)
            return features
        if status == 404:
            raise unknown_user(user_id)
        if status in self.retryable:
            retry_after = (
                parse_retry_after(response.headers.get("retry-after")) if status in RETRY_AFTER_STATUSES else None
            )
            raise _Retryable(str(status), retry_after)
        raise FeaturesUnavailable(f"features unavailable: upstream answered {status}", 1.0)

    async def close(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        await self.client.aclose()


async def _read_at_most(response: httpx.Response, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed ``limit`` (a declared length or the bytes so far)."""
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
