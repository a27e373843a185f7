"""The feature tiers' logic with fakes: memory, breaker, retry policy, tier order, stale and negative caching."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from app.errors import FeaturesUnavailable, UnknownUser
from app.features.base import Features, PartiallyUnavailable, unknown_user
from app.features.breaker import CircuitBreaker, State
from app.features.memory import MemoryTier
from app.features.server import FeatureServer
from app.features.upstream import RetryBudget, backoff, parse_retry_after
from app.telemetry.metrics import Metrics


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSource:
    """A compute source over a dict that can be switched to failing."""

    name = "fake"

    def __init__(self, rows: dict[str, Features]) -> None:
        self.rows = rows
        self.calls = 0
        self.failing = False

    async def fetch(self, user_id: str, deadline: float | None = None) -> Features:
        self.calls += 1
        if self.failing:
            raise FeaturesUnavailable("down", 7.0)
        if user_id not in self.rows:
            raise unknown_user(user_id)
        return self.rows[user_id]

    async def fetch_many(self, user_ids: Sequence[str], deadline: float | None = None) -> dict[str, Features]:
        self.calls += 1
        if self.failing:
            raise PartiallyUnavailable("down", {}, list(user_ids), 7.0)
        return {u: self.rows[u] for u in user_ids if u in self.rows}

    async def close(self) -> None:
        return None


def lookups(metrics: Metrics, tier: str, outcome: str) -> float:
    return metrics.feature_lookups.labels(tier, outcome)._value.get()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def source() -> FakeSource:
    return FakeSource({"u-1": {"a": 1.0}, "u-2": {"a": 2.0}})


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def server(source: FakeSource, metrics: Metrics, clock: FakeClock) -> FeatureServer:
    memory = MemoryTier(max_age=60, max_entries=100, stale_window=300, negative_ttl=5)
    return FeatureServer(source, metrics, memory=memory, clock=clock)


class TestMemoryTier:
    def test_size_bound_evicts_oldest_written(self) -> None:
        """A full memory tier drops the entry written longest ago, and a rewrite counts as new."""
        memory = MemoryTier(max_age=60, max_entries=2, stale_window=0, negative_ttl=5)
        memory.put("a", {}, 0)
        memory.put("b", {}, 0)
        memory.put("a", {"x": 1}, 1)
        memory.put("c", {}, 1)
        assert set(memory.entries) == {"a", "c"}

    def test_stale_window(self) -> None:
        """A value is served stale only between its age and age + the stale window; unknowns never."""
        memory = MemoryTier(max_age=10, max_entries=10, stale_window=20, negative_ttl=5)
        memory.put("a", {"x": 1}, 0)
        memory.put_unknown("b", 0)
        assert memory.stale("a", 25) == {"x": 1}
        assert memory.stale("a", 30) is None
        assert memory.stale("b", 1) is None

    def test_zero_entries_disables(self) -> None:
        """max_entries=0 stores nothing."""
        memory = MemoryTier(max_age=10, max_entries=0, stale_window=0, negative_ttl=5)
        memory.put("a", {}, 0)
        assert len(memory) == 0


class TestCircuitBreaker:
    def test_opens_after_threshold_consecutive_failures(self, clock: FakeClock) -> None:
        """Failures open it only when consecutive; a success in between resets the count."""
        states: list[State] = []
        breaker = CircuitBreaker(3, 1.0, states.append, clock)
        breaker.failure()
        breaker.failure()
        breaker.success()
        breaker.failure()
        breaker.failure()
        assert breaker.allow()
        breaker.failure()
        assert breaker.state is State.OPEN and not breaker.allow()
        assert states == [State.CLOSED, State.OPEN]

    def test_half_open_lets_one_probe_through(self, clock: FakeClock) -> None:
        """After the cool-down exactly one call probes; its success closes the circuit."""
        breaker = CircuitBreaker(1, 1.0, clock=clock)
        breaker.failure()
        clock.now += 0.5
        assert not breaker.allow()
        clock.now += 0.6
        assert breaker.allow()
        assert breaker.state is State.HALF_OPEN
        assert not breaker.allow()
        breaker.success()
        assert breaker.state is State.CLOSED and breaker.allow()

    def test_failed_probe_reopens(self, clock: FakeClock) -> None:
        """A failed probe opens the circuit again for a full cool-down."""
        breaker = CircuitBreaker(1, 1.0, clock=clock)
        breaker.failure()
        clock.now += 1.1
        assert breaker.allow()
        breaker.failure()
        assert breaker.state is State.OPEN
        clock.now += 0.9
        assert not breaker.allow()

    def test_abandoned_probe_frees_the_slot(self, clock: FakeClock) -> None:
        """A cancelled probe does not leave the circuit stuck half-open."""
        breaker = CircuitBreaker(1, 1.0, clock=clock)
        breaker.failure()
        clock.now += 1.1
        assert breaker.allow()
        breaker.abandon()
        assert breaker.allow()


class TestRetryPolicy:
    def test_full_jitter_bounds(self) -> None:
        """Each delay lies in [0, min(cap, base·2^(n-1))] and the draws actually vary."""
        rng = random.Random(1)
        for attempt, ceiling in [(1, 0.01), (2, 0.02), (3, 0.04), (4, 0.05), (9, 0.05)]:
            delays = [backoff(attempt, 0.01, 0.05, rng) for _ in range(200)]
            assert min(delays) >= 0 and max(delays) <= ceiling
            assert max(delays) > ceiling * 0.8 and min(delays) < ceiling * 0.2

    def test_retry_budget_limits_retries_to_a_ratio(self) -> None:
        """Once the burst is spent, retries are allowed at ~ratio of calls."""
        budget = RetryBudget(0.2, 2.0)
        allowed = 0
        for _ in range(100):
            budget.deposit()
            allowed += budget.withdraw()
        assert 20 <= allowed <= 23

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("3", 3.0),
            ("0", 0.0),
            ("1.5", 1.5),
            ("-4", 0.0),
            ("soon", None),
            (None, None),
            ("", None),
            ("inf", None),
            ("nan", None),
            ("1e400", None),
            ("99999999999", 300.0),
            ("Fri, 31 Dec 9999 23:59:59 GMT", 300.0),
        ],
    )
    def test_parse_retry_after_seconds(self, value: str | None, expected: float | None) -> None:
        """Retry-After in seconds; garbage is ignored rather than trusted."""
        assert parse_retry_after(value) == expected

    def test_parse_retry_after_http_date(self) -> None:
        """Retry-After as an HTTP date is the time left until it."""
        assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)


class TestFeatureServer:
    async def test_compute_then_memory(self, server: FeatureServer, source: FakeSource, metrics: Metrics) -> None:
        """The first lookup computes and fills memory; the next is a memory hit."""
        assert await server.get("u-1") == ({"a": 1.0}, "fake")
        assert await server.get("u-1") == ({"a": 1.0}, "memory")
        assert source.calls == 1
        assert lookups(metrics, "memory", "hit") == 1 and lookups(metrics, "fake", "hit") == 1

    async def test_expired_entry_recomputed(self, server: FeatureServer, source: FakeSource, clock: FakeClock) -> None:
        """Past max_age the memory tier no longer answers."""
        await server.get("u-1")
        clock.now += 61
        assert (await server.get("u-1"))[1] == "fake"
        assert source.calls == 2

    async def test_stale_if_error(
        self, server: FeatureServer, source: FakeSource, clock: FakeClock, metrics: Metrics
    ) -> None:
        """A failing compute serves a recent stale value, and only within the window."""
        await server.get("u-1")
        source.failing = True
        clock.now += 100
        assert await server.get("u-1") == ({"a": 1.0}, "stale")
        assert lookups(metrics, "memory", "stale") == 1
        assert lookups(metrics, "fake", "error") == 1
        clock.now += 300
        with pytest.raises(FeaturesUnavailable) as err:
            await server.get("u-1")
        assert err.value.retry_after == 7.0

    async def test_unknown_user_negative_cached(
        self, server: FeatureServer, source: FakeSource, clock: FakeClock, metrics: Metrics
    ) -> None:
        """An unknown user is remembered for negative_ttl seconds, then asked again."""
        for _ in range(3):
            with pytest.raises(UnknownUser):
                await server.get("u-nobody")
        assert source.calls == 1
        assert lookups(metrics, "memory", "negative") == 2
        clock.now += 6
        with pytest.raises(UnknownUser):
            await server.get("u-nobody")
        assert source.calls == 2

    async def test_get_many_mixes_tiers(self, server: FeatureServer, source: FakeSource) -> None:
        """A batch takes memory hits as they are, computes the rest in one call, and leaves unknowns out."""
        await server.get("u-1")
        got = await server.get_many(["u-1", "u-2", "u-nobody", "u-2"])
        assert got == {"u-1": ({"a": 1.0}, "memory"), "u-2": ({"a": 2.0}, "fake")}
        assert source.calls == 2
        assert "u-nobody" not in await server.get_many(["u-nobody"])
        assert source.calls == 2  # negative-cached

    async def test_get_many_stale_or_unavailable(
        self, server: FeatureServer, source: FakeSource, clock: FakeClock
    ) -> None:
        """With compute down, a batch is served stale if every user has a stale value, else it is a 503."""
        await server.get_many(["u-1"])
        source.failing = True
        clock.now += 100
        assert await server.get_many(["u-1"]) == {"u-1": ({"a": 1.0}, "stale")}
        with pytest.raises(FeaturesUnavailable):
            await server.get_many(["u-1", "u-2"])
