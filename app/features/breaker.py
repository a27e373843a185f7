"""A circuit breaker for the Redis tier: stop calling a dependency that keeps failing.

::

    closed ──(threshold consecutive failures)──▶ open
      ▲                                           │ cool-down elapsed
      └──────(probe succeeds)── half-open ◀───────┘
                                   │ probe fails
                                   └──────────▶ open (cool-down restarts)

Hand-written rather than a library: it sits on the request path (one call
per lookup, a couple of comparisons), it must drive a Prometheus gauge on
every transition, and the asyncio breaker libraries are either unmaintained
or wrap calls in ways that add an await. Not thread-safe by design: it lives
on one event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum


class State(IntEnum):
    """Values of ``modelserve_redis_circuit_state``."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(
        self,
        threshold: int,
        cooldown: float,
        on_change: Callable[[State], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.state = State.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self._probing = False
        self._on_change = on_change
        self._clock = clock
        if on_change is not None:
            on_change(self.state)

    def allow(self) -> bool:
        """May a call go through now? In half-open, only one probe at a time does."""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN:
            if self._clock() - self.opened_at < self.cooldown:
                return False
            self._set(State.HALF_OPEN)
        if self._probing:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        self.failures = 0
        self._probing = False
        if self.state is not State.CLOSED:
            self._set(State.CLOSED)

    def failure(self) -> None:
        self.failures += 1
        self._probing = False
        if self.state is State.HALF_OPEN or (self.state is State.CLOSED and self.failures >= self.threshold):
            self.opened_at = self._clock()
            self._set(State.OPEN)

    def _set(self, state: State) -> None:
        self.state = state
        if self._on_change is not None:
            self._on_change(state)

    def abandon(self) -> None:
        """A call was cancelled before it could tell: free the half-open probe slot."""
        self._probing = False
