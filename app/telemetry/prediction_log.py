"""The prediction log: one JSON line per prediction and per shadow result.

The request path only enqueues: ``listener(record, model)`` (a predictor
listener) and ``submit(record)`` (shadow results) append the object itself
to a bounded deque — no serialisation, no lock, no I/O. When the queue is
full the record is dropped and counted (``prediction_log_dropped_total``);
a request never waits on the log.

A writer thread wakes every ``flush_seconds`` (or as soon as ``batch_size``
records are queued), serialises what is queued with orjson and writes it in
one ``write`` per batch, so the event loop never touches the disk. Files::

    <dir>/predictions-<UTC yyyymmddTHHMMSS>-<host>-<pid>-<seq>.jsonl

(host and pid keep writers apart: several workers, and several pods sharing
one log volume, where every container's pid is 1) are rotated when they reach
``max_bytes`` or are older than ``max_age_seconds``. ``close()`` (the
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

Line formats are defined here and only here: ``LINE_FIELDS`` names the
fields of each ``kind`` of line (``prediction``, ``shadow``, ``shadow_drops``,
``label``) in order, with their types, and ``prediction_line`` /
``shadow_line`` / ``shadow_drops_line`` / ``label_line`` shape records that
way; the shadow and the label log (``app.telemetry.label_log``, this writer
under the ``labels-`` prefix) build their records with them and
``app.jobs.logdata`` and ``app.jobs.compact`` read the files by them.
``closed_files`` says which files no writer will append to again. ``timestamp`` is
ISO 8601 UTC, latencies are seconds.

What a prediction holds follows the model's task: ``prediction`` is the
label (int or string) of a classifier or the value (float) of a regressor;
``probability`` is the positive class's (binary), the predicted label's
(multiclass) or null (regression); ``probabilities`` maps every class name
to its probability (multiclass only, else null). A shadow line names the
``task`` both versions share; its ``abs_diff`` is the absolute difference of
the positive-class probability (binary), of the predicted value
(regression), or the largest absolute difference of any class's probability
(multiclass, where the label disagreement is ``primary_prediction <>
shadow_prediction``).

Sampling (``sample_rate`` below 1): the writer keeps a prediction record
when a seeded MurmurHash3 of its ``request_id``, scaled to [0, 1), is below
the rate (:func:`sampled_in`), so the decision is the same in every process
and for every retry of a request; the others are counted
(``prediction_log_sampled_out_total``), not written. Every other kind of
line (shadow records, including those whose prediction was left out, and
``shadow_drops``) is always written. Each prediction line carries the
``sample_rate`` it was kept under, so a reader can weight counts or report
the rate; labels can only join the predictions that were written.

``trace_id`` is the OpenTelemetry trace of the request (lowercase hex), null
when tracing is off.

``user_id`` is written as sent (``user_id_mode="plain"``) or as the hex
HMAC-SHA256 of it under a secret key (``"hash"``): stable, so one user's
predictions can still be grouped, but not reversible without the key. The
key itself is never written anywhere.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import hashlib
import hmac
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
from typing import TYPE_CHECKING, Any, Literal

import mmh3
import orjson

from app.telemetry.metrics import Metrics

if TYPE_CHECKING:
    from app.predictor import PredictionRecord

log = logging.getLogger("modelserve.prediction_log")

UserIdMode = Literal["plain", "hash"]
FILE_PREFIX = "predictions-"
LABEL_FILE_PREFIX = "labels-"
FILE_SUFFIX = ".jsonl"
LOG_FILE_PREFIXES = (FILE_PREFIX, LABEL_FILE_PREFIX)
"""Every writer's file prefix in a log directory: prediction (and shadow) lines, label lines."""


FieldType = Literal["text", "int", "float", "json", "timestamp"]

PREDICTION_FIELDS: tuple[tuple[str, FieldType], ...] = (
    ("timestamp", "timestamp"),
    ("request_id", "text"),
    ("model_version", "text"),
    ("variant", "text"),
    ("user_id", "text"),
    ("features", "json"),  # the full model input by feature name
    ("prediction", "json"),  # int or string label, or float value
    ("probability", "float"),
    ("probabilities", "json"),  # {class: p}, multiclass only
    ("latency", "float"),
    ("feature_tier", "text"),
    ("trace_id", "text"),  # null when tracing is off
    ("sample_rate", "float"),  # the MODELSERVE_LOG_SAMPLE_RATE this line was kept under
)
SHADOW_FIELDS: tuple[tuple[str, FieldType], ...] = (
    ("timestamp", "timestamp"),
    ("request_id", "text"),  # the primary's, so the two join
    ("primary_version", "text"),
    ("shadow_version", "text"),
    ("task", "text"),
    ("primary_prediction", "json"),
    ("primary_probability", "float"),
    ("shadow_prediction", "json"),  # shadow_* and abs_diff are null unless outcome is ok
    ("shadow_probability", "float"),
    ("abs_diff", "float"),
    ("outcome", "text"),  # ok, error or timeout
    ("primary_latency", "float"),
    ("shadow_latency", "float"),
)
SHADOW_DROPS_FIELDS: tuple[tuple[str, FieldType], ...] = (
    ("timestamp", "timestamp"),
    ("shadow_version", "text"),
    ("dropped", "int"),  # records the shadow queue dropped since the last such line
)
LABEL_FIELDS: tuple[tuple[str, FieldType], ...] = (
    ("timestamp", "timestamp"),  # when the label was received; the latest per request_id wins
    ("request_id", "text"),  # the prediction's, so the two join
    ("label", "json"),  # the class as JSON keeps its type (int or str), or a number for regression
    ("observed_at", "timestamp"),  # when the outcome happened, as the client said; may be null
    ("source", "text"),  # api or import
)
LINE_FIELDS: dict[str, tuple[tuple[str, FieldType], ...]] = {
    "prediction": PREDICTION_FIELDS,
    "shadow": SHADOW_FIELDS,
    "shadow_drops": SHADOW_DROPS_FIELDS,
    "label": LABEL_FIELDS,
}
"""Every field of each ``kind`` of line, after ``kind`` itself, in line order."""


SAMPLE_SEED = 0x6D5F_6C6F  # fixed for good: changing it changes which request ids every writer keeps


def sampled_in(request_id: str, rate: float) -> bool:
    """Whether a prediction record with this ``request_id`` is kept at ``rate`` (same answer everywhere, always)."""
    if rate >= 1.0:
        return True
    return mmh3.hash(request_id, SAMPLE_SEED, signed=False) < rate * 4294967296.0  # hash / 2**32 < rate


def prediction_line(record: PredictionRecord, user_id: str | None, sample_rate: float = 1.0) -> dict[str, Any]:
    """The ``prediction`` line of a record, with ``user_id`` as it is to be written."""
    return {
        "kind": "prediction",
        "timestamp": _iso(record.timestamp),
        "request_id": record.request_id,
        "model_version": record.model_version,
        "variant": record.variant,
        "user_id": user_id,
        "features": record.features,
        "prediction": record.prediction,
        "probability": record.probability,
        "probabilities": record.probabilities,
        "latency": record.latency,
        "feature_tier": record.tier,
        "trace_id": record.trace_id,
        "sample_rate": sample_rate,
    }


def shadow_line(
    primary: PredictionRecord,
    *,
    timestamp: float,
    shadow_version: str,
    outcome: str,
    task: str = "binary_classification",
    shadow_prediction: Any = None,
    shadow_probability: float | None = None,
    shadow_probabilities: dict[str, float] | None = None,
    shadow_latency: float | None = None,
) -> dict[str, Any]:
    """The ``shadow`` line comparing the candidate's answer with the primary's (``timestamp`` in epoch seconds)."""
    return {
        "kind": "shadow",
        "timestamp": timestamp,
        "request_id": primary.request_id,
        "primary_version": primary.model_version,
        "shadow_version": shadow_version,
        "task": task,
        "primary_prediction": primary.prediction,
        "primary_probability": primary.probability,
        "shadow_prediction": shadow_prediction,
        "shadow_probability": shadow_probability,
        "abs_diff": shadow_difference(primary, task, shadow_prediction, shadow_probability, shadow_probabilities),
        "outcome": outcome,
        "primary_latency": primary.latency,
        "shadow_latency": shadow_latency,
    }


def shadow_difference(
    primary: PredictionRecord,
    task: str,
    shadow_prediction: Any,
    shadow_probability: float | None,
    shadow_probabilities: dict[str, float] | None,
) -> float | None:
    """``abs_diff`` of a shadow line (see the module doc); None when the shadow gave no answer."""
    if task == "regression":
        if shadow_prediction is None:
            return None
        return abs(float(shadow_prediction) - float(primary.prediction))
    if task == "multiclass_classification":
        if shadow_probabilities is None or primary.probabilities is None:
            return None
        mine = primary.probabilities
        return max(abs(p - mine.get(c, 0.0)) for c, p in shadow_probabilities.items())
    if shadow_probability is None or primary.probability is None:
        return None
    return abs(shadow_probability - primary.probability)


def shadow_drops_line(*, timestamp: float, shadow_version: str | None, dropped: int) -> dict[str, Any]:
    """The ``shadow_drops`` line: how many records the shadow dropped (``timestamp`` in epoch seconds)."""
    return {"kind": "shadow_drops", "timestamp": timestamp, "shadow_version": shadow_version, "dropped": dropped}


def label_line(
    *, timestamp: float, request_id: str, label: int | str | float, observed_at: str | None, source: str
) -> dict[str, Any]:
    """The ``label`` line for ``request_id`` (``timestamp``: epoch seconds; ``observed_at``: ISO 8601 UTC Z)."""
    return {
        "kind": "label",
        "timestamp": timestamp,
        "request_id": request_id,
        "label": label,
        "observed_at": observed_at,
        "source": source,
    }


def hash_user_id(user_id: str, key: bytes) -> str:
    """The keyed hash written instead of a user id (hex HMAC-SHA256)."""
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()


def _iso(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def writer_of(name: str) -> tuple[str, tuple[str, int]] | None:
    """``(writer, (stamp, seq))`` of a log file name, or None if it is not one.

    The writer is the prefix with host and pid (``predictions-…-<host>-<pid>``
    without stamp and seq): its files sort by ``(stamp, seq)``, newest last.
    """
    prefix = next((p for p in LOG_FILE_PREFIXES if name.startswith(p)), None)
    if prefix is None or not name.endswith(FILE_SUFFIX):
        return None
    rest = name[len(prefix) : -len(FILE_SUFFIX)]
    stamp, _, host_pid_seq = rest.partition("-")
    host_pid, _, seq = host_pid_seq.rpartition("-")
    if not (stamp and host_pid and seq.isdigit()):
        return None
    return prefix + host_pid, (stamp, int(seq))


def closed_files(directory: Path, now: float, max_age_seconds: float) -> list[Path]:
    """The log files of ``directory`` no writer will append to again, oldest name first.

    A file is closed when a newer file of the same writer (prefix, host and
    pid) exists, or when it was last written longer ago than the rotation
    age plus ``FOREIGN_GRACE_SECONDS`` (its writer rotates it at its next
    wake-up) — the same notion retention uses for other writers' files.
    """
    newest: dict[str, tuple[str, int]] = {}
    found: list[tuple[Path, str, tuple[str, int], float]] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    for entry in entries:
        parsed = writer_of(entry.name)
        if parsed is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        writer, order = parsed
        found.append((Path(entry.path), writer, order, st.st_mtime))
        if writer not in newest or order > newest[writer]:
            newest[writer] = order
    grace = max_age_seconds + FOREIGN_GRACE_SECONDS
    closed = [p for p, w, order, mtime in found if order < newest[w] or now - mtime > grace]
    return sorted(closed, key=lambda p: p.name)


# Rotated files of another writer sharing the directory are deleted only once older
# than its rotation age plus this: by then that writer has certainly closed them.
FOREIGN_GRACE_SECONDS = 60.0
RETENTION_INTERVAL_SECONDS = 30.0
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
        self._recent_ids: dict[str, None] = {}
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

    def submit(self, record: dict[str, Any]) -> None:
        """Enqueue an already-built record (e.g. ``{"kind": "shadow", ...}``); never blocks."""
        self._enqueue(record)

    def _enqueue(self, item: Any) -> None:
        queue = self._queue
        if self._closed:
            self._drop_closed.inc()
            return
        if len(queue) >= self.queue_size:
            self._drop_queue_full.inc()
            return
        queue.append(item)
        if len(queue) >= self.batch_size:
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
            lines = []
            left_out = 0
            for _ in range(n):
                item = queue.popleft()
                try:
                    if not isinstance(item, dict):  # a prediction record: the only kind sampling leaves out
                        if self.duplicate_window:
                            self._check_duplicate(item.request_id)
                        if rate < 1.0 and not sampled_in(item.request_id, rate):
                            left_out += 1
                            continue
                    lines.append(orjson.dumps(self._to_dict(item), option=_OPTIONS))
                except Exception:
                    log.exception("prediction log record not serialisable; skipped")
                    self._drop_unserialisable.inc()
            if left_out:
                self._sampled_out.inc(left_out)
            if lines:
                try:
                    self._write(b"".join(lines), len(lines))
                except Exception:  # _write counts OSErrors itself; anything else still loses the batch
                    log.exception("prediction log write failed")
                    self._drop_write_error.inc(len(lines))

    def _check_duplicate(self, request_id: str) -> None:
        recent = self._recent_ids
        if request_id in recent:
            self._duplicates.inc()
            return
        if len(recent) >= self.duplicate_window:
            del recent[next(iter(recent))]  # oldest first: dicts keep insertion order
        recent[request_id] = None

    def _to_dict(self, item: Any) -> dict[str, Any]:
        if isinstance(item, dict):
            out = dict(item)
            out.setdefault("kind", "shadow")
            ts = out.get("timestamp")
            out["timestamp"] = _iso(ts if isinstance(ts, int | float) else self._clock())
            uid = out.get("user_id")
            if self._key is not None and isinstance(uid, str):
                out["user_id"] = hash_user_id(uid, self._key)
            return out
        uid = item.user_id
        if self._key is not None and uid is not None:
            uid = hash_user_id(uid, self._key)
        return prediction_line(item, uid, self.sample_rate)

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
