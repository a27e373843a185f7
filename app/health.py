"""Readiness state: what /health/ready reports, and why."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

ReadinessCheck = Callable[[], str | None]
"""An extra readiness condition: why the service should not take traffic now, or None."""


@dataclass
class Health:
    ready: bool = False
    draining: bool = False
    state: str = "starting"
    """Why the service is (not) ready, before ``checks`` are asked."""
    checks: list[ReadinessCheck] = field(default_factory=list)
    """Asked on every readiness probe once ready (e.g. the prediction log's failure policy)."""
    retry_after: float = 1.0
    """Seconds every not-ready answer asks a client to wait (``Retry-After``)."""

    def mark_ready(self) -> None:
        self.ready, self.state = True, "ready"

    def mark_not_ready(self, reason: str) -> None:
        self.ready, self.state = False, reason

    def start_draining(self) -> None:
        self.draining, self.state = True, "draining"

    def _failed_check(self) -> str | None:
        for check in self.checks:
            reason = check()
            if reason is not None:
                return reason
        return None

    @property
    def is_ready(self) -> bool:
        return self.ready and not self.draining and self._failed_check() is None

    @property
    def reason(self) -> str:
        if self.ready and not self.draining:
            return self._failed_check() or self.state
        return self.state
