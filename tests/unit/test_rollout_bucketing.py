"""Per-user buckets: Unleash's normalisation, and how a flag's percentage picks users by them."""

from __future__ import annotations

import pytest

from app.model.decoder import Decoded
from app.rollout.bucketing import normalized_bucket
from app.rollout.flags import Flag


def in_rollout(user_id: str, flag: str, percent: int) -> bool:
    """Whether a ``percent`` rollout flag named ``flag`` serves the user, asked the way routing asks."""
    return Flag(flag, "v3", percent).serves(Decoded(user_id, {}))


class TestNormalizedBucket:
    @pytest.mark.parametrize(
        ("user_id", "group", "bucket"),
        [("123", "gr1", 73), ("999", "groupX", 25)],
    )
    def test_unleash_vectors(self, user_id, group, bucket):
        """The values Unleash's SDKs pin across languages (node client ``util.test.ts``)."""
        assert normalized_bucket(user_id, group) == bucket

    def test_formula(self):
        """bucket = murmur3_32("<flag>:<user_id>", seed 0) % 100 + 1, computed independently."""
        import mmh3

        assert normalized_bucket("u-00042", "gbm-v3") == mmh3.hash("gbm-v3:u-00042", 0, signed=False) % 100 + 1

    def test_range(self):
        """Buckets span exactly 1..100."""
        seen = {normalized_bucket(f"u-{i}", "flag") for i in range(20_000)}
        assert seen == set(range(1, 101))

    def test_ten_percent_of_100k(self):
        """A 10% rollout takes 10% ± 1% of 100,000 users."""
        on = sum(in_rollout(f"u-{i}", "gbm-v3", 10) for i in range(100_000))
        assert 9_000 <= on <= 11_000

    def test_sticky_and_monotonic(self):
        """The same user always gets the same answer, and raising the percentage only adds users."""
        users = [f"user-{i}" for i in range(5_000)]
        first = [in_rollout(u, "f", 20) for u in users]
        assert first == [in_rollout(u, "f", 20) for u in users]
        at_50 = [in_rollout(u, "f", 50) for u in users]
        assert all(b for a, b in zip(first, at_50, strict=True) if a)

    def test_flags_are_independent(self):
        """Different flag names bucket the same users differently (the flag is part of the key)."""
        users = [f"u-{i}" for i in range(2_000)]
        a = {u for u in users if in_rollout(u, "alpha", 50)}
        b = {u for u in users if in_rollout(u, "beta", 50)}
        assert a != b
        assert 0.4 < len(a & b) / len(a) < 0.6

    def test_edges(self):
        """0% takes nobody, 100% everybody."""
        assert not any(in_rollout(f"u-{i}", "f", 0) for i in range(1000))
        assert all(in_rollout(f"u-{i}", "f", 100) for i in range(1000))
