"""``modelserve compact``: closed JSONL log files into the Hive-partitioned Parquet warehouse.

Every closed log file (``app.telemetry.log_files.closed_files``: no
writer will append to it again) is split by ``kind`` and by the UTC date and
hour of each line's ``timestamp`` into zstd Parquet parts, laid out as
``app.jobs.warehouse`` describes. Per source file, in this order:

1. each part is written to a hidden temporary name, fsynced, renamed to its
   final name (``part-<source hash>.parquet``) and its directory fsynced;
2. one line naming the source is appended to the commit log and fsynced —
   from here on readers take the Parquet parts instead of the JSONL file;
3. the JSONL file is deleted by the next run, not this one: a reader that
   listed it just before the commit can still read it meanwhile (readers
   skip committed files, so nothing is read twice).

A run cut short anywhere loses and duplicates nothing: before step 2
readers still read the JSONL file and a re-run writes the same part names
over the leftovers; after it the file is simply committed. A run
with nothing closed to compact does nothing (idempotent). One run at a time
per warehouse (a lock file; a second run fails at once).

``MODELSERVE_COMPACT_FAULT`` (testing only) makes the process exit abruptly
``after_write`` (step 1 done for the first source) or ``after_commit``
(step 2 done, with the files of an earlier run deleted), to show the above
holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from app.errors import ModelServeError
from app.jobs.logdata import COLUMNS, quote
from app.jobs.warehouse import COMMIT_LOG, WAREHOUSE_DIR, committed, part_name, source_hash
from app.telemetry.log_files import closed_files
from app.telemetry.log_lines import LINE_FIELDS

log = logging.getLogger("modelserve.compact")

FAULT_ENV = "MODELSERVE_COMPACT_FAULT"
FAULT_EXIT = 86


class CompactBusy(ModelServeError):
    """Another compaction of the same warehouse is running."""


@dataclass
class CompactSummary:
    sources: int = 0
    rows: int = 0
    parts: int = 0
    skipped_rows: int = 0
    """Lines of a kind the warehouse does not hold, or with no kind (unreadable lines are not counted)."""
    removed: int = 0
    """Sources committed by an earlier run, deleted now."""
    files: list[str] = field(default_factory=list)

    def render(self) -> str:
        text = f"compacted {self.sources} file(s), {self.rows} row(s) into {self.parts} Parquet part(s)"
        if self.removed:
            text += f"; removed {self.removed} JSONL file(s) compacted by an earlier run"
        if self.skipped_rows:
            text += f"; skipped {self.skipped_rows} row(s) of no known kind"
        return text


def compact(log_dir: Path, *, max_age_seconds: float, now: float | None = None) -> CompactSummary:
    """Compact every closed, not yet committed log file of ``log_dir`` (see the module docstring)."""
    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        raise ModelServeError(f"log directory {log_dir} does not exist (set MODELSERVE_LOG_DIR or --log-dir)")
    warehouse = log_dir / WAREHOUSE_DIR
    warehouse.mkdir(exist_ok=True)
    summary = CompactSummary()
    fault = os.environ.get(FAULT_ENV, "")
    with _locked(warehouse):
        done = committed(log_dir)
        for name in done:  # committed by an earlier run: readers have had a run's interval to move on
            with contextlib.suppress(FileNotFoundError):
                (log_dir / name).unlink()
                summary.removed += 1
        now = time.time() if now is None else now
        for source in closed_files(log_dir, now, max_age_seconds):
            if source.name in done:
                continue
            rows, parts, skipped = _write_parts(source, warehouse)
            if fault == "after_write":
                os._exit(FAULT_EXIT)
            _commit(warehouse, source.name, rows, parts)
            if fault == "after_commit":
                os._exit(FAULT_EXIT)
            summary.sources += 1
            summary.rows += rows
            summary.parts += len(parts)
            summary.skipped_rows += skipped
            summary.files.append(source.name)
    return summary


def _write_parts(source: Path, warehouse: Path) -> tuple[int, list[str], int]:
    """Write the source's parts durably; (rows written, part paths relative to the warehouse, rows skipped)."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in COLUMNS.items()) + "}"
    con.execute(
        f"CREATE TABLE lines AS SELECT *, strftime(timestamp, '%Y-%m-%d') AS date, strftime(timestamp, '%H') AS hour "
        f"FROM read_json({quote(str(source))}, format = 'newline_delimited', columns = {columns}, "
        "ignore_errors = true)"
    )
    kinds = ", ".join(quote(k) for k in LINE_FIELDS)
    skipped = _scalar(con, f"SELECT count(*) FROM lines WHERE kind IS NULL OR kind NOT IN ({kinds})")
    groups = con.execute(
        f"SELECT kind, coalesce(date, '1970-01-01'), coalesce(hour, '00'), count(*) FROM lines "
        f"WHERE kind IN ({kinds}) GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    name = part_name(source.name)
    parts: list[str] = []
    rows = 0
    for kind, date, hour, count in groups:
        rel = f"kind={kind}/date={date}/hour={hour}/{name}"
        final = warehouse / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{name}.tmp-{os.getpid()}"
        cols = ", ".join(c for c, _ in LINE_FIELDS[kind])
        con.execute(
            f"COPY (SELECT {cols} FROM lines WHERE kind = ? AND coalesce(date, '1970-01-01') = ? "
            f"AND coalesce(hour, '00') = ?) TO {quote(str(tmp))} (FORMAT parquet, COMPRESSION zstd)",
            [kind, date, hour],
        )
        _fsync_file(tmp)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        _fsync_dir(final.parent.parent)  # a new hour=/date= directory's entry must be durable too
        _fsync_dir(final.parent.parent.parent)
        parts.append(rel)
        rows += count
    con.close()
    return rows, parts, skipped


def _commit(warehouse: Path, source: str, rows: int, parts: list[str]) -> None:
    """Append the source's commit line and make it durable (the point after which readers use its parts)."""
    path = warehouse / COMMIT_LOG
    created = not path.exists()
    line = orjson.dumps({"source": source, "hash": source_hash(source), "rows": rows, "parts": parts}) + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        _fsync_dir(warehouse)


@contextlib.contextmanager
def _locked(warehouse: Path) -> Iterator[None]:
    fd = os.open(warehouse / ".compact.lock", os.O_WRONLY | os.O_CREAT, 0o640)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CompactBusy(f"another compact is running on {warehouse}") from None
        yield
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _scalar(con: Any, sql: str) -> int:
    row = con.execute(sql).fetchone()
    return int(row[0]) if row else 0
