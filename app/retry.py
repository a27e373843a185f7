"""Retry timing shared by every HTTP client of the service (upstream features, the batch sink)."""

from __future__ import annotations

import email.utils
import math
import random
import time

MAX_RETRY_AFTER = 300.0
"""The longest ``Retry-After`` honoured: a longer one (a far date, 99999999999) waits this long, so a
throttling peer is asked again within minutes rather than never."""


def backoff(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Full jitter: a uniform delay up to ``min(cap, base·2^(attempt-1))`` for retry ``attempt`` (1, 2, ...)."""
    ceiling = min(cap, base * (2 ** (attempt - 1)))
    return (rng or random).uniform(0.0, ceiling)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), within
    0..``MAX_RETRY_AFTER``; None if absent or bad (``inf`` and ``nan`` are bad)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, OverflowError):
            return None
        seconds = when.timestamp() - (now if now is not None else time.time())
    if not math.isfinite(seconds):
        return None
    return min(MAX_RETRY_AFTER, max(0.0, seconds))
