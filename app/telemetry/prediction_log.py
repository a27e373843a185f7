"""The prediction log: one JSON line per prediction and per shadow result.

The request path only enqueues: ``listener(record, model)`` (a predictor
listener) and ``submit(record)`` (shadow results) append the object itself
to a bounded deque — no serialisation, no lock, no I/O. When the queue is
full the record is dropped and counted (``prediction_log_dropped_total``);
a request never waits on the log.

A writer thread wakes every ``flush_seconds`` (or as soon as ``batch_size``
records are queued), serialises what is queued with orjson, ``YIELD_EVERY``
records to a call (cut back into lines: ``_serialise``), and writes it in
one ``write`` per batch, so the event loop never touches the disk. Between
two such calls it releases the GIL for a moment, so a request that
arrives meanwhile waits tens of microseconds, not a whole batch. Files
(named as ``app.telemetry.log_files`` describes) are rotated when they
reach ``max_bytes`` or are older than ``max_age_seconds``. ``close()`` (the
container's shutdown hook) stops the writer after it has written everything
queued so far; records submitted after that are counted as dropped.

Every record is either written, sampled out (below; counted in
``prediction_log_sampled_out_total``) or counted in
``prediction_log_dropped_total{reason}``: ``queue_full``, ``closed`` (after
``close()``), ``unserialisable`` and ``write_error`` (the disk is full, the
directory unwritable, a file-size limit reached...). A batch is written whole
or not at all: after a failed ``write`` the file is truncated back to the
last whole line (or, if even that fails, abandoned) and the next batch opens a
new file, so a torn line is never followed by a glued record. While writes
fail, ``writable`` is false and the writer probes the directory every
``flush_seconds`` so it recovers even with no traffic; ``failure`` says why,
for a readiness policy that refuses traffic while the log cannot write.
``prediction_log_free_bytes`` (the log filesystem's free space) and
``prediction_log_write_errors_total{error}`` (by errno name) show it coming.

Retention deletes rotated files, oldest first, once they are older than
``retention_seconds`` or while all files together exceed ``retention_bytes``
(0 disables either). The open file is never deleted; another writer's file
sharing the directory only once it is older than ``max_age_seconds`` plus a
grace period (so it has certainly been closed).

Duplicate ``request_id``s among the last ``duplicate_window`` predictions of
this process are counted (``duplicate_request_ids_total``); both records are
written, as the client sent them.

What each line holds, and which prediction records sampling
(``sample_rate`` below 1) keeps, is ``app.telemetry.log_lines``; a
``user_id`` is written as sent (``user_id_mode="plain"``) or hashed under
a key (``"hash"``) that is itself never written anywhere.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import os
import re
import socket
import stat
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson

from app.telemetry.log_files import FILE_PREFIX, FILE_SUFFIX, FOREIGN_GRACE_SECONDS
from app.telemetry.log_lines import _iso, hash_user_id, prediction_line, sampled_in
from app.telemetry.metrics import Metrics

log = logging.getLogger("modelserve.prediction_log")

UserIdMode = Literal["plain", "hash"]
RETENTION_INTERVAL_SECONDS = 30.0
YIELD_EVERY = 64
"""Records the writer serialises between two offers of the GIL to the event loop, in one orjson call.
Building and serialising lines holds the GIL (~5 µs a record); without a pause a 1,000-record batch
held the loop off for the interpreter's whole switch interval (5 ms) at a time. One call per record
cost about twice as much as one per 64 (a bytes object allocated, grown and shrunk per line)."""
PROBE_BYTES = 4096


class PredictionLog:
    def __init__(
        self,
        directory: Path,
        metrics: Metrics,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        max_age_seconds: float = 3600.0,
        queue_size: int = 100_000,
        batch_size: int = 1000,
        flush_seconds: float = 0.5,
        user_id_mode: UserIdMode = "plain",
        user_id_key: bytes | None = None,
        retention_seconds: float = 0.0,
        retention_bytes: int = 0,
        duplicate_window: int = 10_000,
        sample_rate: float = 1.0,
        clock: Callable[[], float] = time.time,
        file_prefix: str = FILE_PREFIX,
    ) -> None:
        if user_id_mode == "hash" and not user_id_key:
            raise ValueError("hashing user ids needs a key")
        self.directory = Path(directory)
        self.file_prefix = file_prefix
        self.max_bytes = max_bytes
        self.max_age_seconds = max_age_seconds
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.retention_seconds = retention_seconds
        self.retention_bytes = retention_bytes
        self.duplicate_window = duplicate_window
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError("sample_rate must be between 0 and 1")
        self.sample_rate = sample_rate
        self._sampled_out = metrics.log_sampled_out
        self._key = user_id_key if user_id_mode == "hash" else None
        self._clock = clock
        self._metrics = metrics
        self._records = metrics.log_records
        dropped = metrics.log_dropped
        self._drop_queue_full = dropped.labels("queue_full")
        self._drop_closed = dropped.labels("closed")
        self._drop_unserialisable = dropped.labels("unserialisable")
        self._drop_write_error = dropped.labels("write_error")
        self._writable_gauge = metrics.log_writable
        self._free_gauge = metrics.log_free_bytes
        self._duplicates = metrics.duplicate_request_ids
        # deque.append/popleft are atomic under the GIL: the request path needs no lock.
        self._queue: collections.deque[Any] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._path: Path | None = None
        self._opened_at = 0.0
        self._size = 0
        self._seq = 0
        self._pid = os.getpid()
        self._host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:63] or "host"
        self._recent_ids: collections.OrderedDict[str, None] = collections.OrderedDict()
        """The last ``duplicate_window`` distinct ids, oldest first. Not a plain dict: deleting a dict's first
        key leaves a hole that every later ``next(iter(...))`` walks past until the dict is rebuilt, which
        made each check cost ~5 µs at the default window; ``popitem(last=False)`` is constant time."""
        self._stamp: tuple[float, datetime] = (0.0, _iso(0.0))
        """The last timestamp written and its ``datetime``: a batch's records share theirs (``_timestamp``)."""
        self._retention_due = 0.0
        self.failure: str | None = None
        """Why the last write (or probe) failed, e.g. ``"ENOSPC: No space left on device"``; None while writable."""
        self._writable_gauge.set(1)
        self.files: list[Path] = []
        """Every file this log has opened, oldest first (deleted ones included)."""

    # --- request path ------------------------------------------------------
    def listener(self, record: Any, model: Any = None) -> None:
        """Predictor listener: enqueue the ``PredictionRecord`` as is."""
        self._enqueue(record)

    def listener_many(self, records: list[Any], model: Any = None) -> None:
        """Predictor batch listener: enqueue the records as ``listener`` would each, at once."""
        self._enqueue_many(records)

    def submit(self, record: dict[str, Any]) -> None:
        """Enqueue an already-built record (e.g. ``{"kind": "shadow", ...}``); never blocks."""
        self._enqueue(record)

    def submit_many(self, records: list[dict[str, Any]]) -> None:
        """``submit`` of each of ``records``, at once (a shadow batch's lines)."""
        self._enqueue_many(records)

    def _enqueue_many(self, records: list[Any]) -> None:
        queue = self._queue
        if self._closed:
            self._drop_closed.inc(len(records))
            return
        room = self.queue_size - len(queue)
        if room < len(records):
            self._drop_queue_full.inc(len(records) - max(room, 0))
            records = records[: max(room, 0)]
        queue.extend(records)
        if len(queue) >= self.batch_size and not self._wake.is_set():
            self._wake.set()

    def _enqueue(self, item: Any) -> None:
        queue = self._queue
        if self._closed:
            self._drop_closed.inc()
            return
        if len(queue) >= self.queue_size:
            self._drop_queue_full.inc()
            return
        queue.append(item)
        if len(queue) >= self.batch_size and not self._wake.is_set():  # a backlog: one wake-up, not one per record
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def writable(self) -> bool:
        return self.failure is None

    def readiness_failure(self) -> str | None:
        """A readiness check (``Health.checks``): why the service should not take traffic, or None."""
        return None if self.failure is None else f"prediction log cannot write: {self.failure}"

    # --- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # counted and retried like any write failure; serving goes on
            self._failed(exc)
        self._update_free_bytes()
        self._thread = threading.Thread(target=self._run, name=self.file_prefix.rstrip("-") + "-log", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Write everything queued, close the file and stop the writer (idempotent)."""
        self._closed = True  # set on the caller's thread: later submits count as dropped
        await asyncio.to_thread(self.close_sync)

    def close_sync(self) -> None:
        self._closed = True
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._drain()  # anything that raced the writer's last pass (or a writer never started)
        self._close_file()

    # --- writer thread -----------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            stopping = self._stopping
            try:
                self._drain()
                now = self._clock()
                if self._fd is not None and now - self._opened_at >= self.max_age_seconds:
                    self._close_file()  # idle too long: the next record opens a new file
                if self.failure is not None and not self._queue:
                    self._probe()
                if now >= self._retention_due:
                    self.apply_retention()
                self._update_free_bytes()
            except Exception:  # the writer must outlive anything; a record lost here is still counted
                log.exception("prediction log writer step failed")
            if stopping:
                return

    def _drain(self) -> None:
        queue = self._queue
        rate = self.sample_rate
        while queue:
            n = min(len(queue), self.batch_size)
            chunks = []
            written = 0
            records: list[dict[str, Any]] = []
            left_out = 0
            for i in range(n):
                if i and not i % YIELD_EVERY:
                    data, count = self._serialise(records)
                    chunks.append(data)
                    written += count
                    records = []
                    time.sleep(0)  # hand the GIL to a waiting event loop (see YIELD_EVERY)
                item = queue.popleft()
                try:
                    if not isinstance(item, dict):  # a prediction record: the only kind sampling leaves out
                        if self.duplicate_window:
                            self._check_duplicate(item.request_id)
                        if rate < 1.0 and not sampled_in(item.request_id, rate):
                            left_out += 1
                            continue
                    records.append(self._to_dict(item))
                except Exception:
                    log.exception("prediction log record not serialisable; skipped")
                    self._drop_unserialisable.inc()
            data, count = self._serialise(records)
            chunks.append(data)
            written += count
            if left_out:
                self._sampled_out.inc(left_out)
            if written:
                try:
                    self._write(b"".join(chunks), written)
                except Exception:  # _write counts OSErrors itself; anything else still loses the batch
                    log.exception("prediction log write failed")
                    self._drop_write_error.inc(written)

    def _serialise(self, records: list[dict[str, Any]]) -> tuple[bytes, int]:
        """The lines of ``records`` and how many there are; one that cannot be serialised is counted and left out.

        One orjson call serialises them all as a JSON array, which is cut back into lines at the
        separators between its items: every line starts with ``{"kind":`` (``_to_dict``), and a ``"`` inside a
        string is always escaped, so ``},{"kind":`` occurs exactly once between two items and
        nowhere else unless a record nests such an object itself, which the count tells (then, or
        when the array cannot be serialised, each record is serialised alone).
        """
        if not records:
            return b"", 0
        try:
            data = orjson.dumps(records, option=_ARRAY_OPTIONS)
        except Exception:  # the offending record is found, logged and counted below
            data = None
        if data is not None and data.count(_BETWEEN) == len(records) - 1:
            return data[1:-1].replace(_BETWEEN, _BETWEEN_LINES) + b"\n", len(records)
        lines = []
        for record in records:
            try:
                lines.append(orjson.dumps(record, option=_OPTIONS))
            except Exception:
                log.exception("prediction log record not serialisable; skipped")
                self._drop_unserialisable.inc()
        return b"".join(lines), len(lines)

    def _check_duplicate(self, request_id: str) -> None:
        recent = self._recent_ids
        if request_id in recent:
            self._duplicates.inc()
            return
        if len(recent) >= self.duplicate_window:
            recent.popitem(last=False)  # the oldest
        recent[request_id] = None

    def _to_dict(self, item: Any) -> dict[str, Any]:
        if isinstance(item, dict):
            # ``kind`` leads every line (and ``_serialise`` cuts lines where one starts).
            out = dict(item) if next(iter(item), None) == "kind" else {"kind": item.get("kind", "shadow"), **item}
            ts = out.get("timestamp")
            out["timestamp"] = self._timestamp(ts if isinstance(ts, int | float) else self._clock())
            uid = out.get("user_id")
            if self._key is not None and isinstance(uid, str):
                out["user_id"] = hash_user_id(uid, self._key)
            return out
        uid = item.user_id
        if self._key is not None and uid is not None:
            uid = hash_user_id(uid, self._key)
        return prediction_line(item, uid, self.sample_rate, self._timestamp(item.timestamp))

    def _timestamp(self, ts: float) -> datetime:
        """``ts`` as the ``datetime`` a line holds; the rows of a batch (and its shadow lines) share one."""
        last, stamp = self._stamp
        if ts != last:
            stamp = _iso(ts)
            self._stamp = (ts, stamp)
        return stamp

    def _write(self, data: bytes, count: int) -> None:
        now = self._clock()
        rotated = False
        if self._fd is not None and (self._size >= self.max_bytes or now - self._opened_at >= self.max_age_seconds):
            self._close_file()
            rotated = True
        done = 0
        try:
            if self._fd is None:
                self._open_file(now)
            assert self._fd is not None
            view = memoryview(data)
            while done < len(data):
                done += os.write(self._fd, view[done:])
        except OSError as exc:
            self._write_failed(exc, data, done, count)
            return
        self._size += len(data)
        self._records.inc(count)
        if self.failure is not None:
            self._recovered()
        if rotated and (self.retention_seconds or self.retention_bytes):
            try:
                self.apply_retention()
            except Exception:  # the batch is written and counted; retention runs again later
                log.exception("prediction log retention failed")

    def _write_failed(self, exc: OSError, data: bytes, done: int, count: int) -> None:
        """Count the batch as dropped and leave no torn line behind for the next batch to glue onto."""
        kept = 0
        if self._fd is not None and self._path is not None:
            path, fd = self._path, self._fd
            if done:
                try:
                    os.ftruncate(fd, self._size)  # back to the end of the last whole batch
                except OSError:
                    kept = data.count(b"\n", 0, done)  # whole lines stay; the torn tail ends this file
            empty = self._size == 0 and kept == 0  # nothing whole in it, at most a torn fragment
            self._close_file()
            if empty:  # no empty file per failed attempt while the disk stays full
                with contextlib.suppress(OSError):
                    path.unlink()
                    self.files.remove(path)
        if kept:
            self._records.inc(kept)
        self._drop_write_error.inc(count - kept)
        self._failed(exc, count_error=True)

    def _failed(self, exc: OSError, *, count_error: bool = False) -> None:
        name = errno.errorcode.get(exc.errno or 0, "other")
        if count_error:
            self._metrics.log_write_errors.labels(name).inc()
        reason = f"{name}: {exc.strerror or exc}"
        if self.failure is None:
            log.error(
                "prediction log cannot write to %s (%s); records are dropped and counted until it can",
                self.directory,
                reason,
            )
        self.failure = reason
        self._writable_gauge.set(0)

    def _recovered(self) -> None:
        log.warning("prediction log writes to %s again (after %s)", self.directory, self.failure)
        self.failure = None
        self._writable_gauge.set(1)

    def _probe(self) -> None:
        """While failing with nothing to write: can a small file be written now? (Recovery without traffic.)"""
        path = self.directory / f".probe-{self._host}-{self._pid}"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            try:
                written = os.write(fd, bytes(PROBE_BYTES))
            finally:
                os.close(fd)
                path.unlink()
        except OSError as exc:
            with contextlib.suppress(OSError):
                path.unlink()
            self._failed(exc)
            return
        if written == PROBE_BYTES:
            self._recovered()

    def _update_free_bytes(self) -> None:
        try:
            st = os.statvfs(self.directory)
        except OSError:
            return
        self._free_gauge.set(st.f_bavail * st.f_frsize)

    # --- retention ---------------------------------------------------------
    def apply_retention(self) -> None:
        """Delete rotated log files past ``retention_seconds``, then the oldest while over ``retention_bytes``."""
        now = self._clock()
        self._retention_due = now + RETENTION_INTERVAL_SECONDS
        if not (self.retention_seconds or self.retention_bytes):
            return
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return
        found: list[tuple[float, str, int]] = []
        for entry in entries:
            if not (entry.name.startswith(self.file_prefix) and entry.name.endswith(FILE_SUFFIX)):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                found.append((st.st_mtime, entry.name, st.st_size))
        found.sort()
        total = sum(size for _, _, size in found)
        own = {p.name: p for p in self.files}
        open_name = self._path.name if self._path is not None else None
        foreign_closed_after = self.max_age_seconds + FOREIGN_GRACE_SECONDS
        for mtime, name, size in found:
            if name == open_name:
                continue
            if name not in own and now - mtime < foreign_closed_after:
                continue  # possibly another writer's open file
            if self.retention_seconds and now - mtime > self.retention_seconds:
                reason = "age"
            elif self.retention_bytes and total > self.retention_bytes:
                reason = "bytes"
            else:
                continue
            try:
                (self.directory / name).unlink()
            except FileNotFoundError:
                pass  # another writer sharing the directory deleted it first
            except OSError as exc:
                log.warning("prediction log retention could not delete %s: %s", name, exc)
                continue
            else:
                self._metrics.log_files_deleted.labels(reason).inc()
            total -= size
            if name in own:
                self.files.remove(own[name])

    # --- files -------------------------------------------------------------
    def _open_file(self, now: float) -> None:
        self._seq += 1
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%S")
        path = self.directory / f"{self.file_prefix}{stamp}-{self._host}-{self._pid}-{self._seq}{FILE_SUFFIX}"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._path = path
        self._opened_at = now
        self._size = 0
        self.files.append(path)

    def _close_file(self) -> None:
        if self._fd is not None:
            fd, self._fd, self._path = self._fd, None, None
            try:
                os.close(fd)
            except OSError as exc:  # e.g. a network filesystem reporting a deferred write error
                self._metrics.log_write_errors.labels(errno.errorcode.get(exc.errno or 0, "other")).inc()
                log.warning("prediction log file close failed: %s", exc)


_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_UTC_Z | orjson.OPT_SERIALIZE_NUMPY
_ARRAY_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_SERIALIZE_NUMPY
_BETWEEN = b'},{"kind":'
_BETWEEN_LINES = b'}\n{"kind":'
