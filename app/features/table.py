"""The offline feature table (``data/features.parquet``) as a compute source.

The embedded default: loaded once at start-up into a dict keyed by user_id
with plain Python values, so a lookup is a dict access.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from app.errors import ArtifactError
from app.features.base import Features, unknown_user


class OfflineTable:
    name = "table"

    def __init__(self, rows: dict[str, Features]) -> None:
        self.rows = rows
        self.columns: tuple[str, ...] = tuple(next(iter(rows.values())).keys()) if rows else ()

    @classmethod
    def load(cls, path: Path, columns: Iterable[str] | None = None) -> OfflineTable:
        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"feature table {path} cannot be read: {exc}") from None
        if "user_id" not in table.column_names:
            raise ArtifactError(f"feature table {path} has no user_id column")
        wanted = [c for c in table.column_names if c != "user_id" and (columns is None or c in set(columns))]
        data = {c: table.column(c).to_pylist() for c in ["user_id", *wanted]}
        rows = {uid: {c: data[c][i] for c in wanted} for i, uid in enumerate(data["user_id"])}
        return cls(rows)

    def require(self, names: Iterable[str]) -> None:
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise ArtifactError(f"feature table lacks store features {missing}")

    def get(self, user_id: str) -> Features:
        try:
            return self.rows[user_id]
        except KeyError:
            raise unknown_user(user_id) from None

    async def fetch(self, user_id: str, deadline: float | None = None) -> Features:
        return self.get(user_id)

    async def fetch_many(self, user_ids: Sequence[str], deadline: float | None = None) -> dict[str, Features]:
        rows = self.rows
        return {u: rows[u] for u in user_ids if u in rows}

    async def close(self) -> None:
        return None

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, user_id: Any) -> bool:
        return user_id in self.rows
