"""Shadow traffic: the candidate model sees every request, users see only the primary.

The request path only offers: ``Shadow.offer`` (a ``Predictor`` listener)
appends the record to a bounded queue and returns; a full queue drops the
record and counts it (``modelserve_shadow_predictions_total{outcome="dropped"}``),
it never waits. ``concurrency`` worker threads take what is queued, up to
``batch_size`` records at a time, run the candidate on them as one batch,
and write the results (records, metrics) themselves.

Why threads that do everything: onnxruntime releases the GIL while it runs,
so the candidate's inference overlaps the event loop's waiting for the next
request; nothing comes back to the loop per batch (a hop to the loop and back
costs tens of microseconds and, on a busy loop, a loop iteration each way,
which used to cap the shadow below the request rate and drop the rest).
Batches: a worker that finds fewer than ``batch_size`` records waits
``linger`` seconds for more before it runs, so at low load one run (and one
thread wake-up) serves many requests instead of one each (a 64-row run takes
~0.4 ms against ~0.1 ms for one row, about 7 µs a row); a worker that
finds a whole batch queued runs it at once. ``linger`` is 20 ms (``LINGER``):
every wake-up of a worker costs the event loop's thread the GIL and a
context switch or two on the one core they share, so at a few thousand
requests a second a 5 ms linger (batches of ~25, ~0.2 context switches per
request) cost ~10 µs a request more than batches of 64. A shadow record is
therefore written up to ``linger`` after its request was answered.

Timeouts and hung candidates: a watchdog on the event loop (every quarter
of ``timeout``, at most 0.25 s) counts a batch that has run longer than
``timeout`` as timed out and writes its records as such; whatever the call
returns later is discarded. A hung call keeps its worker: at most
``concurrency`` calls are ever stuck, and while every worker is stuck the
queue fills and further records are dropped, so the process never grows
threads or memory behind a broken candidate.

Each result becomes one ``shadow`` record (``app.telemetry.log_lines.shadow_line``),
sent to ``sink`` (from a worker thread: the prediction log's ``submit`` and
logging are thread-safe), or a batch's records in one call to ``sink_many``
when there is one (the prediction log's ``submit_many``): ``outcome`` is ok, error or timeout (shadow fields
null unless ok); ``shadow_latency`` is the run time of the batch the record
was in. Drops never ran, so every ``drops_interval`` seconds with drops a
``shadow_drops`` record says how many (``modelserve shadow-report`` adds them up).

A request that the flags already routed to the candidate's version is not
shadowed (it would compare the version with itself). A candidate whose task
or input signature differs from the version that answered is not run at all:
its answers could not be compared. The first such request logs one warning
naming both versions; every such request is counted as outcome
``incompatible`` (no record is written for it).

The comparison follows the task (``shadow_line``): absolute difference of
the positive-class probability (binary) or of the value (regression); for
multiclass the largest difference of any class's probability, and label
disagreements are counted (``modelserve_shadow_label_disagreements_total``,
binary too).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from app.model.answers import REGRESSION, Answer
from app.model.pool import LoadedModel
from app.predictor import PredictionRecord
from app.telemetry import tracing
from app.telemetry.log_lines import shadow_difference, shadow_drops_line, shadow_line
from app.telemetry.metrics import Metrics, observe_values

log = logging.getLogger("modelserve.rollout")
record_log = logging.getLogger("modelserve.shadow")

Sink = Callable[[dict[str, Any]], None]
SinkMany = Callable[[list[dict[str, Any]]], None]
"""A sink's form for a batch's records at once (the prediction log's ``submit_many``)."""
LINGER = 0.02
"""Seconds a worker that finds less than a batch queued waits for more before it runs (see the module doc)."""
BATCH_SIZE = 128
"""Most records one run takes (``MODELSERVE_SHADOW_BATCH_SIZE``'s default): more than ``LINGER`` gathers at
up to ~6,000 requests a second, so one run and one wake-up a linger; at 64 a busy server ran two, ~1 µs a
request more of the shadow thread's time."""


class Candidate(Protocol):
    """What the shadow runs: a version name, its task and inputs, and a batch of answers."""

    @property
    def version(self) -> str: ...

    @property
    def task(self) -> str: ...

    @property
    def signature(self) -> Any:
        """What its requests must look like (``Manifest.input_signature``)."""
        ...

    def answer(self, rows: Sequence[dict[str, Any]]) -> list[Answer]:
        """``(prediction, probability, probabilities)`` per row (``app.model.answers``)."""
        ...


@dataclass(frozen=True)
class ModelCandidate:
    """A loaded model version as a shadow candidate."""

    model: LoadedModel

    @property
    def version(self) -> str:
        return self.model.version

    @property
    def task(self) -> str:
        return self.model.task

    @property
    def signature(self) -> Any:
        return self.model.manifest.input_signature()

    def answer(self, rows: Sequence[dict[str, Any]]) -> list[Answer]:
        return self.model.answer(list(rows))


def log_sink(record: dict[str, Any]) -> None:
    """One JSON line per record on the ``modelserve.shadow`` logger (when there is no prediction log).

    At DEBUG level: without a prediction log, shadow records are opt-in
    (``MODELSERVE_LOG_LEVEL=debug``) rather than a line on stderr per request.
    """
    if record_log.isEnabledFor(logging.DEBUG):
        record_log.debug(orjson.dumps(record).decode())


class _Batch:
    """Records one worker is running; settled once, by the worker (ok, error) or the watchdog (timeout)."""

    __slots__ = ("candidate", "records", "settled", "started", "worker")

    def __init__(self, worker: int, candidate: Candidate, records: list[PredictionRecord]) -> None:
        self.worker = worker
        self.candidate = candidate
        self.records = records
        self.started = time.perf_counter()
        self.settled = False


class Shadow:
    def __init__(
        self,
        metrics: Metrics,
        sink: Sink = log_sink,
        *,
        sink_many: SinkMany | None = None,
        queue_size: int = 1024,
        concurrency: int = 1,
        timeout: float = 1.0,
        batch_size: int = BATCH_SIZE,
        drops_interval: float = 10.0,
        linger: float = LINGER,
    ) -> None:
        self.metrics = metrics
        self.sink = sink
        self.sink_many = sink_many
        """Takes a batch's records in one call instead of ``sink`` once per record, when given."""
        self._candidate: Candidate | None = None
        self._verdicts: dict[str, bool] = {}
        """Primary version -> whether the current candidate can be compared with it."""
        self.queue_size = queue_size
        self.concurrency = concurrency
        self.timeout = timeout
        self.batch_size = batch_size
        self.drops_interval = drops_interval
        self.linger = linger
        # deque.append/popleft are atomic under the GIL: the request path takes no lock.
        self._queue: collections.deque[tuple[PredictionRecord, Candidate]] = collections.deque()
        self._wake = threading.Event()
        """Set when records are queued for idle workers; workers clear it before they take records."""
        self._lock = threading.Lock()
        """Settles batches and guards the counts, which the workers and the loop both update."""
        self._running = False
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._running_batches: dict[int, _Batch] = {}
        """Worker index -> the batch it is running (the watchdog's view)."""
        self._tasks: list[asyncio.Task[None]] = []
        self._busy: set[int] = set()
        """Workers holding records whose outcome is not written yet (``idle`` waits for them)."""
        self._dropped_unreported = 0
        outcomes = ("ok", "error", "timeout", "dropped", "incompatible")
        self._counts = {o: metrics.shadow_predictions.labels(o) for o in outcomes}
        self.counts = dict.fromkeys(self._counts, 0)
        """Outcome totals of this instance (the metric may be shared or multiprocess)."""

    @property
    def candidate(self) -> Candidate | None:
        """The model shadowed; ``None`` turns shadowing off (``offer`` returns at once)."""
        return self._candidate

    @candidate.setter
    def candidate(self, candidate: Candidate | None) -> None:
        self._verdicts = {}
        self._candidate = candidate

    # --- the request path --------------------------------------------------
    def offer(self, record: PredictionRecord, model: LoadedModel | None) -> None:
        """Queue ``record`` for the candidate; never blocks (a full queue drops and counts).

        ``model`` is the version that answered; None skips the compatibility check.
        """
        candidate = self._candidate
        if candidate is None or not self._running or candidate.version == record.model_version:
            return
        if model is not None:
            compatible = self._verdicts.get(record.model_version)
            if compatible is None:
                compatible = self._judge(candidate, model)
            if not compatible:
                self._count("incompatible", 1)
                return
        queue = self._queue
        if len(queue) >= self.queue_size:
            self._count("dropped", 1, unreported=True)
            return
        queue.append((record, candidate))
        if not self._wake.is_set():  # one wake-up per batch, not per record
            self._wake.set()

    def offer_many(self, records: list[PredictionRecord], model: LoadedModel) -> None:
        """``offer`` of records one version (``model``) answered, at the cost of one: a batch's rows.

        Queued in order while there is room; the rest are dropped and counted, as ``offer`` would.
        """
        candidate = self._candidate
        if not records or candidate is None or not self._running or candidate.version == model.version:
            return
        compatible = self._verdicts.get(model.version)
        if compatible is None:
            compatible = self._judge(candidate, model)
        if not compatible:
            self._count("incompatible", len(records))
            return
        queue = self._queue
        room = self.queue_size - len(queue)
        if room < len(records):
            self._count("dropped", len(records) - max(room, 0), unreported=True)
            records = records[: max(room, 0)]
        queue.extend(zip(records, itertools.repeat(candidate)))
        if records and not self._wake.is_set():
            self._wake.set()

    def _judge(self, candidate: Candidate, model: LoadedModel) -> bool:
        """Whether ``candidate``'s answers compare with ``model``'s; logs once per pair when not."""
        reasons = []
        if candidate.task != model.task:
            reasons.append(f"task {candidate.task} vs {model.task}")
        if candidate.signature != model.manifest.input_signature():
            reasons.append("a different input signature")
        if reasons:
            log.warning(
                "shadow refused: candidate %s cannot be compared with %s (%s); counted as incompatible",
                candidate.version,
                model.version,
                ", ".join(reasons),
            )
        self._verdicts[model.version] = not reasons
        return not reasons

    # --- lifecycle ---------------------------------------------------------
    async def start(self) -> None:
        if self._running:
            return
        self._stopping = False
        self._running = True
        self._threads = [
            threading.Thread(target=self._worker, args=(i,), name=f"shadow-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        for thread in self._threads:
            thread.start()
        self._tasks = [asyncio.create_task(self._watchdog(), name="shadow-watchdog")]
        if self.drops_interval > 0:
            self._tasks.append(asyncio.create_task(self._report_drops_periodically(), name="shadow-drops"))

    async def stop(self, drain_seconds: float = 2.0) -> None:
        """Stop taking records, give queued ones ``drain_seconds`` to finish, then stop the workers.

        Records still queued then are counted as dropped. A worker stuck in a hung call is not
        waited for; its thread ends when the call does.
        """
        if not self._running:
            return
        self._running = False
        await self.idle(drain_seconds)
        self._stopping = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._expire(time.perf_counter())
        left = 0
        while True:
            try:
                self._queue.popleft()
            except IndexError:
                break
            left += 1
        if left:
            self._count("dropped", left, unreported=True)
        self._report_drops()

    async def idle(self, timeout: float = 5.0) -> bool:
        """Wait until nothing is queued or running (tests, drains); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue or self._busy:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    def describe(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate.version if self.candidate is not None else None,
            "queued": len(self._queue),
            "queue_size": self.queue_size,
            "concurrency": self.concurrency,
            "timeout_seconds": self.timeout,
            "outcomes": dict(self.counts),
        }

    # --- workers (threads) ---------------------------------------------------
    def _worker(self, index: int) -> None:
        while not self._stopping:
            self._wake.wait()
            if self._stopping:
                return
            if self.linger > 0 and len(self._queue) < self.batch_size:
                time.sleep(self.linger)  # let a batch gather (the GIL is released meanwhile)
            self._wake.clear()  # before taking: a record queued after this sets it again
            self._busy.add(index)  # before taking: ``idle`` never sees a record in neither place
            batch = self._take()
            if self._queue:
                self._wake.set()  # more than one batch queued: the next worker (or this one) goes on
            try:
                while batch:  # almost always one candidate; it changes only when the alias moves
                    candidate = batch[0][1]
                    group = [rec for rec, c in batch if c is candidate]
                    batch = [item for item in batch if item[1] is not candidate]
                    if candidate is not self.candidate:
                        # Queued for a candidate that has since been replaced (or turned off):
                        # running them on it would keep the new one waiting behind a model
                        # that may be the very reason it was replaced. Counted as dropped.
                        self._count("dropped", len(group), unreported=True)
                        continue
                    self._busy.add(index)  # again, should the watchdog have written off a group before
                    self._run(index, candidate, group)
            except Exception:  # a bug here must not end shadowing for good
                log.exception("shadow worker failed on a batch")
            finally:
                self._busy.discard(index)

    def _take(self) -> list[tuple[PredictionRecord, Candidate]]:
        """Up to ``batch_size`` queued records."""
        batch: list[tuple[PredictionRecord, Candidate]] = []
        queue = self._queue
        while len(batch) < self.batch_size:
            try:
                batch.append(queue.popleft())
            except IndexError:  # empty, or another worker took the last one
                break
        return batch

    def _run(self, index: int, candidate: Candidate, records: list[PredictionRecord]) -> None:
        if not tracing.enabled:
            self._run_untraced(index, candidate, records)
            return
        # Its own trace (the requests were answered already), linked to each request's.
        links = [tracing.Link(r.trace) for r in records if r.trace is not None]
        attributes = {"modelserve.shadow_version": candidate.version, "modelserve.rows": len(records)}
        with tracing.span("shadow", attributes=attributes, links=links):
            self._run_untraced(index, candidate, records)

    def _run_untraced(self, index: int, candidate: Candidate, records: list[PredictionRecord]) -> None:
        batch = _Batch(index, candidate, records)
        self._running_batches[index] = batch
        answers: list[Answer] = []
        try:
            answers = candidate.answer([r.features for r in records])
            if len(answers) != len(records):
                raise ValueError(f"candidate returned {len(answers)} results for {len(records)} rows")
            outcome = "ok"
        except Exception as exc:
            outcome = "error"
            if not batch.settled:
                log.warning("shadow %s failed: %s: %s", candidate.version, type(exc).__name__, exc)
        finally:
            self._running_batches.pop(index, None)
        if self._settle(batch):  # else the watchdog already wrote it off as timed out
            self._record(batch, outcome, answers, time.perf_counter() - batch.started)

    # --- timeouts --------------------------------------------------------------
    async def _watchdog(self) -> None:
        interval = min(max(self.timeout / 4, 0.005), 0.25)
        while True:
            await asyncio.sleep(interval)
            self._expire(time.perf_counter())

    def _expire(self, now: float) -> None:
        """Write off every batch running longer than ``timeout`` as timed out."""
        for batch in list(self._running_batches.values()):
            if now - batch.started > self.timeout and self._settle(batch):
                self._busy.discard(batch.worker)  # it stays in the call, but nothing of it is pending
                self._record(batch, "timeout", [], now - batch.started)

    def _settle(self, batch: _Batch) -> bool:
        """True for the one caller (worker or watchdog) that gets to write ``batch``'s outcome."""
        with self._lock:
            if batch.settled:
                return False
            batch.settled = True
            return True

    def _record(self, batch: _Batch, outcome: str, answers: list[Answer], elapsed: float) -> None:
        records, candidate = batch.records, batch.candidate
        self._count(outcome, len(records))
        # Lines nobody reads (the default sink with DEBUG off) are not built; the metrics are kept all the same.
        lines = self.sink is not log_sink or record_log.isEnabledFor(logging.DEBUG)
        now = time.time()
        task = candidate.task
        version = candidate.version
        if outcome != "ok":
            if lines:
                self._emit_all(
                    [
                        shadow_line(rec, timestamp=now, shadow_version=version, outcome=outcome, task=task)
                        for rec in records
                    ]
                )
            return
        disagreements = 0
        diffs: list[float] = []
        out: list[dict[str, Any]] = []
        for rec, (prediction, probability, probabilities) in zip(records, answers, strict=True):
            if lines:
                line = shadow_line(
                    rec,
                    timestamp=now,
                    shadow_version=version,
                    outcome=outcome,
                    task=task,
                    shadow_prediction=prediction,
                    shadow_probability=probability,
                    shadow_probabilities=probabilities,
                    shadow_latency=elapsed,
                )
                diff = line["abs_diff"]
                out.append(line)
            else:
                diff = shadow_difference(rec, task, prediction, probability, probabilities)
            if diff is not None:
                diffs.append(diff)
            if task != REGRESSION and prediction != rec.prediction:
                disagreements += 1
        if out:
            self._emit_all(out)
        observe_values(self.metrics.shadow_abs_diff, diffs)
        if disagreements:
            self.metrics.shadow_label_disagreements.inc(disagreements)

    def _count(self, outcome: str, n: int, *, unreported: bool = False) -> None:
        self._counts[outcome].inc(n)
        with self._lock:
            self.counts[outcome] += n
            if unreported:
                self._dropped_unreported += n

    def _emit_all(self, records: list[dict[str, Any]]) -> None:
        """``_emit`` of each of ``records``, in one call to ``sink_many`` when there is one."""
        if self.sink_many is None:
            for record in records:
                self._emit(record)
            return
        try:
            self.sink_many(records)
        except Exception:  # as _emit: the sink is not allowed to break shadowing
            log.exception("shadow records could not be written")

    def _emit(self, record: dict[str, Any]) -> None:
        try:
            self.sink(record)
        except Exception:  # the sink (log queue) is not allowed to break shadowing
            log.exception("shadow record could not be written")

    async def _report_drops_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.drops_interval)
            self._report_drops()

    def _report_drops(self) -> None:
        with self._lock:
            n, self._dropped_unreported = self._dropped_unreported, 0
        if n:
            version = self.candidate.version if self.candidate is not None else None
            self._emit(shadow_drops_line(timestamp=time.time(), shadow_version=version, dropped=n))
