"""The memory tier: a per-process cache of store features, bounded in age and size.

Hand-written because it is the hot path of every /predict with store
features: a hit is one dict lookup and one float comparison. A general
TTL cache (cachetools) walks its expiry list and relinks an LRU list on
every read, and drops expired values, which the stale-if-error fallback
still needs.

Each entry is ``(features, fresh_until, stale_until)``; ``features`` is
``None`` for a user the compute source said does not exist (a negative
entry, kept only ``negative_ttl`` seconds and never served stale). Expired
entries stay until overwritten or evicted so they can be served stale when
compute fails. Eviction is oldest-written first (dict insertion order), so a
full cache costs O(1) per insert and nothing per hit.
"""

from __future__ import annotations

from app.features.base import Features

Entry = tuple[Features | None, float, float]


class MemoryTier:
    name = "memory"

    def __init__(self, max_age: float, max_entries: int, stale_window: float, negative_ttl: float) -> None:
        self.max_age = max_age
        self.max_entries = max_entries
        self.stale_window = stale_window
        self.negative_ttl = negative_ttl
        self.entries: dict[str, Entry] = {}

    def put(self, user_id: str, features: Features, now: float) -> None:
        fresh = now + self.max_age
        self._store(user_id, (features, fresh, fresh + self.stale_window))

    def put_unknown(self, user_id: str, now: float) -> None:
        self._store(user_id, (None, now + self.negative_ttl, 0.0))

    def stale(self, user_id: str, now: float) -> Features | None:
        """A value past its age but within the stale-if-error window, if there is one."""
        entry = self.entries.get(user_id)
        if entry is None or entry[0] is None or entry[2] <= now:
            return None
        return entry[0]

    def _store(self, user_id: str, entry: Entry) -> None:
        entries = self.entries
        if self.max_entries <= 0:
            return
        if entries.pop(user_id, None) is None and len(entries) >= self.max_entries:
            del entries[next(iter(entries))]
        entries[user_id] = entry

    def __len__(self) -> int:
        return len(self.entries)
