"""Layout of the Parquet warehouse under a log directory (written by ``compact``, read by ``logdata``).

::

    <log_dir>/warehouse/kind=<kind>/date=YYYY-MM-DD/hour=HH/part-<source hash>.parquet
    <log_dir>/warehouse/_compacted.jsonl

One JSONL source file becomes one part per (kind, date, hour) it has rows
for, all named after the source (``part_name``), so compacting it again
writes the same files over themselves, never a second copy.
``_compacted.jsonl`` is the commit log: one line per source whose parts are
all durable. Readers take a part only when its source is committed there
and a JSONL file only when it is not, so a compaction cut short anywhere is
read exactly once: from JSONL before the commit line, from Parquet after.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson

WAREHOUSE_DIR = "warehouse"
COMMIT_LOG = "_compacted.jsonl"


def source_hash(name: str) -> str:
    """The id of a JSONL source file in part names (its file name is unique in the directory)."""
    return hashlib.sha256(name.encode()).hexdigest()[:20]


def part_name(source: str) -> str:
    return f"part-{source_hash(source)}.parquet"


def committed(log_dir: Path) -> dict[str, str]:
    """Source file name -> hash of every source whose Parquet parts are committed (a torn last line is ignored)."""
    path = Path(log_dir) / WAREHOUSE_DIR / COMMIT_LOG
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    out: dict[str, str] = {}
    for line in data.splitlines():
        try:
            entry = orjson.loads(line)
            out[entry["source"]] = entry["hash"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by a crash: that source is not committed
    return out


def committed_parts(log_dir: Path, kind: str, done: dict[str, str]) -> list[Path]:
    """The Parquet parts of one kind of line whose source is in ``done`` (a ``committed`` snapshot)."""
    root = Path(log_dir) / WAREHOUSE_DIR / f"kind={kind}"
    if not root.is_dir():
        return []
    hashes = set(done.values())
    return sorted(p for p in root.glob("date=*/hour=*/part-*.parquet") if p.name[5:-8] in hashes)
