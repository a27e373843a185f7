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

Line formats are defined here and only here: ``LINE_FIELDS`` names the
fields of each ``kind`` of line (``prediction``, ``shadow``, ``shadow_drops``)
in order, with their types, and ``prediction_line`` / ``shadow_line`` /
``shadow_drops_line`` shape records that way; the shadow builds its records
with them and ``app.jobs.logdata`` reads the files by them. ``timestamp`` is
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

``user_id`` is written as sent (``user_id_mode="plain"``) or as the hex
HMAC-SHA256 of it under a secret key (``"hash"``): stable, so one user's
predictions can still be grouped, but not reversible without the key. The
key itself is never written anywhere.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

from app.telemetry.metrics import Metrics

if TYPE_CHECKING:
    from app.predictor import PredictionRecord

log = logging.getLogger("modelserve.prediction_log")

UserIdMode = Literal["plain", "hash"]
FILE_PREFIX = "predictions-"
FILE_SUFFIX = ".jsonl"


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
LINE_FIELDS: dict[str, tuple[tuple[str, FieldType], ...]] = {
    "prediction": PREDICTION_FIELDS,
    "shadow": SHADOW_FIELDS,
    "shadow_drops": SHADOW_DROPS_FIELDS,
}
"""Every field of each ``kind`` of line, after ``kind`` itself, in line order."""


def prediction_line(record: PredictionRecord, user_id: str | None) -> dict[str, Any]:
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


def hash_user_id(user_id: str, key: bytes) -> str:
    """The keyed hash written instead of a user id (hex HMAC-SHA256)."""
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()


def _iso(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        if user_id_mode == "hash" and not user_id_key:
            raise ValueError("hashing user ids needs a key")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.max_age_seconds = max_age_seconds
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self._key = user_id_key if user_id_mode == "hash" else None
        self._clock = clock
        self._records = metrics.log_records
        self._dropped = metrics.log_dropped
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
        self.files: list[Path] = []
        """Every file this log has opened, oldest first."""

    # --- request path ------------------------------------------------------
    def listener(self, record: Any, model: Any = None) -> None:
        """Predictor listener: enqueue the ``PredictionRecord`` as is."""
        self._enqueue(record)

    def submit(self, record: dict[str, Any]) -> None:
        """Enqueue an already-built record (e.g. ``{"kind": "shadow", ...}``); never blocks."""
        self._enqueue(record)

    def _enqueue(self, item: Any) -> None:
        queue = self._queue
        if self._closed or len(queue) >= self.queue_size:
            self._dropped.inc()
            return
        queue.append(item)
        if len(queue) >= self.batch_size:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    # --- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
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
                if self._fd is not None and self._clock() - self._opened_at >= self.max_age_seconds:
                    self._close_file()  # idle too long: the next record opens a new file
            except Exception:  # the writer must outlive a bad record or a full disk
                log.exception("prediction log write failed")
            if stopping:
                return

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            n = min(len(queue), self.batch_size)
            lines = []
            for _ in range(n):
                item = queue.popleft()
                try:
                    lines.append(orjson.dumps(self._to_dict(item), option=_OPTIONS))
                except Exception:
                    log.exception("prediction log record not serialisable; skipped")
                    self._dropped.inc()
            if lines:
                self._write(b"".join(lines), len(lines))

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
        return prediction_line(item, uid)

    def _write(self, data: bytes, count: int) -> None:
        now = self._clock()
        if self._fd is not None and (self._size >= self.max_bytes or now - self._opened_at >= self.max_age_seconds):
            self._close_file()
        if self._fd is None:
            self._open_file(now)
        assert self._fd is not None
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._size += len(data)
        self._records.inc(count)

    def _open_file(self, now: float) -> None:
        self._seq += 1
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%S")
        path = self.directory / f"{FILE_PREFIX}{stamp}-{self._host}-{self._pid}-{self._seq}{FILE_SUFFIX}"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._path = path
        self._opened_at = now
        self._size = 0
        self.files.append(path)

    def _close_file(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._path = None


_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_UTC_Z | orjson.OPT_SERIALIZE_NUMPY
