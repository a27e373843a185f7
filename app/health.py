"""Readiness state: what /health/ready reports, and why."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Health:
    ready: bool = False
    draining: bool = False
    reason: str = "starting"
    retry_after: float = 1.0
    """Seconds every not-ready answer asks a client to wait (``Retry-After``)."""

    def mark_ready(self) -> None:
        self.ready, self.reason = True, "ready"

    def mark_not_ready(self, reason: str) -> None:
        self.ready, self.reason = False, reason

    def start_draining(self) -> None:
        self.draining, self.reason = True, "draining"

    @property
    def is_ready(self) -> bool:
        return self.ready and not self.draining
