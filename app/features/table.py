"""The offline feature table (``data/features.parquet``) as a compute source.

The embedded default: loaded once at start-up into a dict keyed by user_id
with plain Python values, so a lookup is a dict access.

The serving process reads the file through a short-lived child process
(``isolated=True``): reading Parquet maps Arrow's libraries and allocator
arenas (~60 MB measured here) that would otherwise stay resident in every
worker for the rest of its life, for a table that is read once.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from app.errors import ArtifactError
from app.extras import require
from app.features.base import Features, unknown_user


class OfflineTable:
    name = "table"

    def __init__(self, rows: dict[str, Features]) -> None:
        self.rows = rows
        self.columns: tuple[str, ...] = tuple(next(iter(rows.values())).keys()) if rows else ()

    @classmethod
    def load(cls, path: Path, columns: Iterable[str] | None = None, *, isolated: bool = True) -> OfflineTable:
        names = None if columns is None else list(columns)
        # The table is read with pyarrow, which only the jobs extra installs.
        require("pyarrow", f"the feature table {path} (set MODELSERVE_UPSTREAM_URL to serve without it)")
        if not isolated:
            return cls(read_rows(Path(path), names))
        code = "import sys; from app.features.table import _dump; _dump(sys.argv[1], sys.argv[2:])"
        args = [sys.executable, "-c", code, str(path), *(names or [])]
        proc = subprocess.run(args, capture_output=True, timeout=300, check=False)
        if proc.returncode != 0:
            lines = proc.stderr.decode(errors="replace").strip().splitlines()
            raise ArtifactError(lines[-1] if lines else f"feature table {path} cannot be read")
        return cls(orjson.loads(proc.stdout))

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


def read_rows(path: Path, columns: list[str] | None = None) -> dict[str, Features]:
    """user_id -> {store feature: value} from the Parquet file (all columns, or ``columns``)."""
    import pyarrow.parquet as pq

    try:
        # ParquetFile, not read_table: read_table goes through pyarrow.dataset,
        # which imports pandas, doubling the reader's start-up (0.7 s → 0.3 s CPU)
        table = pq.ParquetFile(path).read()
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"feature table {path} cannot be read: {exc}") from None
    if "user_id" not in table.column_names:
        raise ArtifactError(f"feature table {path} has no user_id column")
    wanted = [c for c in table.column_names if c != "user_id" and (not columns or c in set(columns))]
    data = {c: table.column(c).to_pylist() for c in ["user_id", *wanted]}
    # Requests carry user ids as strings; an integer id column is read as theirs (as publish reads it).
    ids = [uid if isinstance(uid, str) else str(uid) for uid in data["user_id"]]
    return {uid: {c: data[c][i] for c in wanted} for i, uid in enumerate(ids)}


def _dump(path: str, columns: list[str]) -> None:
    """Child-process side of ``OfflineTable.load``: the rows as JSON on stdout, or one error line."""
    try:
        rows = read_rows(Path(path), columns or None)
    except ArtifactError as exc:
        print(exc.message, file=sys.stderr)
        sys.exit(1)
    sys.stdout.buffer.write(orjson.dumps(rows))
