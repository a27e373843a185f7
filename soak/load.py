"""A bounded asyncio + httpx load generator for valid ``/predict`` requests.

A few concurrent clients share a token-bucket rate so the load stays modest
on a shared machine; every request carries its own ``request_id`` so the
prediction log can be matched against the answers afterwards.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass

import httpx


@dataclass(frozen=True, slots=True)
class Sample:
    phase: str
    request_id: str
    status: int
    """HTTP status, or 0 when no response arrived (connection refused, reset, timeout)."""
    latency: float
    version: str | None
    retry_after: str | None
    error: str | None = None
    """The exception name when no response arrived, else the start of a non-200 body."""


class RequestFactory:
    """Valid /predict bodies for users known to the feature table."""

    DEVICES = ("ios", "android", "web")

    def __init__(self, users: list[str], seed: int = 0) -> None:
        if not users:
            raise ValueError("no users to send requests for")
        self.users = users
        self.rng = random.Random(seed)

    def body(self, request_id: str) -> dict[str, object]:
        r = self.rng
        return {
            "user_id": r.choice(self.users),
            "request_id": request_id,
            "features": {
                "amount": round(r.uniform(0.5, 500.0), 2),
                "device": r.choice(self.DEVICES),
                "score": None if r.random() < 0.2 else round(r.uniform(0, 1), 4),
                "first_purchase": r.random() < 0.3,
            },
        }


class LoadGenerator:
    def __init__(
        self,
        url: str,
        factory: RequestFactory,
        *,
        concurrency: int = 4,
        rate: float = 150.0,
        timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.factory = factory
        self.concurrency = concurrency
        self.rate = rate
        self.timeout = timeout
        self._ids = itertools.count()
        self.last_version: str | None = None
        """The X-Model-Version of the most recent 200 answer."""

    async def run(self, phase: str, stop: asyncio.Event, max_requests: int) -> list[Sample]:
        """Send requests until ``stop`` is set or ``max_requests`` were sent."""
        samples: list[Sample] = []
        interval = 1.0 / self.rate
        next_slot = time.monotonic()
        lock = asyncio.Lock()
        sent = 0
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)

        async def slot() -> bool:
            # A shared token bucket without bursts: a slow server is not hit by a backlog afterwards.
            nonlocal next_slot, sent
            async with lock:
                if stop.is_set() or sent >= max_requests:
                    return False
                sent += 1
                now = time.monotonic()
                next_slot = max(next_slot + interval, now)
                wait = next_slot - now
            if wait > 0:
                await asyncio.sleep(wait)
            return True

        async def client_loop(client: httpx.AsyncClient) -> None:
            while await slot():
                rid = f"soak-{phase}-{next(self._ids)}"
                samples.append(await self._one(client, phase, rid))

        async with httpx.AsyncClient(base_url=self.url, timeout=self.timeout, limits=limits, trust_env=False) as client:
            await asyncio.gather(*(client_loop(client) for _ in range(self.concurrency)))
        return samples

    async def _one(self, client: httpx.AsyncClient, phase: str, rid: str) -> Sample:
        body = self.factory.body(rid)
        t0 = time.perf_counter()
        try:
            r = await client.post("/predict", json=body)
        except httpx.HTTPError as exc:
            return Sample(phase, rid, 0, time.perf_counter() - t0, None, None, type(exc).__name__)
        latency = time.perf_counter() - t0
        if r.status_code == 200:
            self.last_version = r.headers.get("x-model-version")
        return Sample(
            phase,
            rid,
            r.status_code,
            latency,
            r.headers.get("x-model-version"),
            r.headers.get("retry-after"),
            None if r.status_code == 200 else r.text[:120],
        )
