"""Deterministic per-user buckets, exactly as Unleash normalises them.

``bucket = murmur3_32("<group>:<user_id>", seed 0) % 100 + 1`` gives 1..100;
a rollout of ``percent`` is on for a user when ``bucket <= percent``. Using
Unleash's formula (the group is the flag name) means a rollout here and the
same rollout in an Unleash SDK pick the same users. The pinned vectors
(``normalized_bucket("123", "gr1") == 73``) are Unleash's own cross-client
test values.
"""

from __future__ import annotations

import mmh3


def normalized_bucket(user_id: str, group: str, normalizer: int = 100) -> int:
    """The user's bucket in ``1..normalizer`` for ``group`` (a flag name)."""
    return mmh3.hash(f"{group}:{user_id}", 0, signed=False) % normalizer + 1
