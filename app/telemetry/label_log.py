"""The label log: ground truth (``label`` lines) beside the prediction log.

The same writer as ``app.telemetry.prediction_log`` (background thread,
rotation by size and age, retention, drops counted, everything queued written
on ``close()``), writing ``labels-<UTC stamp>-<host>-<pid>-<seq>.jsonl``.
Every label submitted is either written or counted in
``modelserve_feedback_total{outcome="dropped"}``.

A later label for the same ``request_id`` replaces an earlier one: readers
keep the line with the latest ``timestamp``. So that "later" is well defined
even within one batch, ``submit_label`` stamps labels with strictly
increasing times in this process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.telemetry.log_files import LABEL_FILE_PREFIX
from app.telemetry.log_lines import label_line
from app.telemetry.metrics import Metrics
from app.telemetry.prediction_log import PredictionLog

TICK = 1e-6
"""The resolution of a logged timestamp (microseconds): consecutive labels are at least this far apart."""


class LabelLog(PredictionLog):
    def __init__(self, directory: Path, metrics: Metrics, *, clock: Callable[[], float] = time.time, **kw: Any) -> None:
        kw.pop("user_id_mode", None)  # labels carry no user id
        kw.pop("user_id_key", None)
        super().__init__(directory, metrics, clock=clock, file_prefix=LABEL_FILE_PREFIX, duplicate_window=0, **kw)
        dropped = metrics.feedback.labels("dropped")
        self._drop_queue_full = self._drop_closed = dropped
        self._drop_unserialisable = self._drop_write_error = dropped
        self._records = metrics.label_log_records
        self._writable_gauge = metrics.label_log_writable
        self._writable_gauge.set(1)
        self._last = 0.0

    def submit_label(self, request_id: str, label: int | str | float, observed_at: str | None, source: str) -> None:
        """Enqueue one label line (never blocks; a full or closed log counts it as dropped)."""
        now = self._clock()
        if now <= self._last:
            now = self._last + TICK
        self._last = now
        self._enqueue(
            label_line(timestamp=now, request_id=request_id, label=label, observed_at=observed_at, source=source)
        )

    def readiness_failure(self) -> str | None:
        return None if self.failure is None else f"label log cannot write: {self.failure}"
