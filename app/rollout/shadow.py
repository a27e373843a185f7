"""Shadow traffic: the candidate model sees every request, users see only the primary.

The request path only offers: ``Shadow.offer`` (a ``Predictor`` listener) puts
the record on a bounded queue and returns; a full queue drops the record and
counts it (``modelserve_shadow_predictions_total{outcome="dropped"}``), it
never waits. Worker tasks take what is queued, up to ``batch_size`` records at
a time, and run the candidate on them as one batch in a thread.

Why a thread and why batches: onnxruntime releases the GIL while it runs, and
only a call in a thread can be abandoned when it hangs (``wait_for`` on the
thread's future), so a hanging candidate never blocks the event loop. The hop
to a thread costs tens of microseconds, about as much as a one-row inference;
batching what queued up meanwhile spreads that cost, so under load a shadow
prediction costs a few microseconds (a 64-row run takes ~110 µs against 14 µs
for one row).

How many threads can be stuck: at most ``concurrency``. A thread slot is
released when the candidate's call actually returns, not when it timed out;
while every slot is held by a hung call the workers wait for a slot, the
queue fills and further records are dropped, so the process never grows
threads or memory behind a broken candidate.

Each result becomes one ``shadow`` record (``app.telemetry.log_lines.shadow_line``),
sent to ``sink``: ``outcome`` is ok, error or timeout (shadow fields null
unless ok); ``shadow_latency`` is the run time of the batch the record was in.
Drops never ran, so every ``drops_interval`` seconds with drops a
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
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from app.model.answers import REGRESSION, Answer
from app.model.pool import LoadedModel
from app.predictor import PredictionRecord
from app.telemetry import tracing
from app.telemetry.log_lines import shadow_drops_line, shadow_line
from app.telemetry.metrics import Metrics

log = logging.getLogger("modelserve.rollout")
record_log = logging.getLogger("modelserve.shadow")

Sink = Callable[[dict[str, Any]], None]


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


class Shadow:
    def __init__(
        self,
        metrics: Metrics,
        sink: Sink = log_sink,
        *,
        queue_size: int = 1024,
        concurrency: int = 1,
        timeout: float = 1.0,
        batch_size: int = 64,
        drops_interval: float = 10.0,
    ) -> None:
        self.metrics = metrics
        self.sink = sink
        self._candidate: Candidate | None = None
        self._verdicts: dict[str, bool] = {}
        """Primary version -> whether the current candidate can be compared with it."""
        self.queue_size = queue_size
        self.concurrency = concurrency
        self.timeout = timeout
        self.batch_size = batch_size
        self.drops_interval = drops_interval
        self._queue: asyncio.Queue[tuple[PredictionRecord, Candidate]] = asyncio.Queue(queue_size)
        self._running = False
        self._tasks: list[asyncio.Task[None]] = []
        self._executor: ThreadPoolExecutor | None = None
        self._slots: asyncio.Semaphore | None = None
        self._busy = 0
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
        try:
            self._queue.put_nowait((record, candidate))
        except asyncio.QueueFull:
            self._dropped_unreported += 1
            self._count("dropped", 1)

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
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="shadow")
        self._slots = asyncio.Semaphore(self.concurrency)
        self._running = True
        self._tasks = [asyncio.create_task(self._worker(), name=f"shadow-{i}") for i in range(self.concurrency)]
        if self.drops_interval > 0:
            self._tasks.append(asyncio.create_task(self._report_drops_periodically(), name="shadow-drops"))

    async def stop(self, drain_seconds: float = 2.0) -> None:
        """Stop taking records, give queued ones ``drain_seconds`` to finish, then stop the workers."""
        if not self._running:
            return
        self._running = False
        deadline = time.monotonic() + drain_seconds
        while (self._queue.qsize() or self._busy) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._report_drops()
        if self._executor is not None:
            # Don't wait for a hung candidate call; its thread ends when the call does.
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def idle(self, timeout: float = 5.0) -> bool:
        """Wait until nothing is queued or running (tests, drains); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.qsize() or self._busy:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    def describe(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate.version if self.candidate is not None else None,
            "queued": self._queue.qsize(),
            "queue_size": self.queue_size,
            "concurrency": self.concurrency,
            "timeout_seconds": self.timeout,
            "outcomes": dict(self.counts),
        }

    # --- workers -------------------------------------------------------------
    async def _worker(self) -> None:
        while True:
            batch = [await self._queue.get()]
            self._busy += 1
            try:
                while len(batch) < self.batch_size:
                    try:
                        batch.append(self._queue.get_nowait())
                    except asyncio.QueueEmpty:
                        break
                # Almost always one candidate; it changes only when the alias moves.
                while batch:
                    candidate = batch[0][1]
                    group = [rec for rec, c in batch if c is candidate]
                    batch = [item for item in batch if item[1] is not candidate]
                    if candidate is not self.candidate:
                        # Queued for a candidate that has since been replaced (or turned off):
                        # running them on it would keep the new one waiting behind a model
                        # that may be the very reason it was replaced. Counted as dropped.
                        self._dropped_unreported += len(group)
                        self._count("dropped", len(group))
                        continue
                    await self._run(candidate, group)
            except Exception:  # a bug here must not end shadowing for good
                log.exception("shadow worker failed on a batch")
            finally:
                self._busy -= 1

    async def _run(self, candidate: Candidate, records: list[PredictionRecord]) -> None:
        if not tracing.enabled:
            await self._run_untraced(candidate, records)
            return
        # Its own trace (the requests were answered already), linked to each request's.
        links = [tracing.Link(r.trace) for r in records if r.trace is not None]
        attributes = {"modelserve.shadow_version": candidate.version, "modelserve.rows": len(records)}
        with tracing.span("shadow", attributes=attributes, links=links):
            await self._run_untraced(candidate, records)

    async def _run_untraced(self, candidate: Candidate, records: list[PredictionRecord]) -> None:
        assert self._slots is not None and self._executor is not None
        await self._slots.acquire()  # released when the thread returns, even after a timeout
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        try:
            future: Future[list[Answer]] = self._executor.submit(candidate.answer, [r.features for r in records])
        except RuntimeError:  # executor shut down
            self._slots.release()
            return
        future.add_done_callback(lambda _: _call_soon(loop, self._slots.release if self._slots else None))
        answers: list[Answer] = []
        try:
            answers = await asyncio.wait_for(asyncio.wrap_future(future), self.timeout)
            if len(answers) != len(records):
                raise ValueError(f"candidate returned {len(answers)} results for {len(records)} rows")
            outcome = "ok"
        except TimeoutError:
            outcome = "timeout"
        except Exception as exc:
            outcome = "error"
            log.warning("shadow %s failed: %s: %s", candidate.version, type(exc).__name__, exc)
        elapsed = time.perf_counter() - t0
        self._count(outcome, len(records))
        now = time.time()
        task = candidate.task
        disagreements = 0
        for i, rec in enumerate(records):
            if outcome == "ok":
                prediction, probability, probabilities = answers[i]
                out = shadow_line(
                    rec,
                    timestamp=now,
                    shadow_version=candidate.version,
                    outcome=outcome,
                    task=task,
                    shadow_prediction=prediction,
                    shadow_probability=probability,
                    shadow_probabilities=probabilities,
                    shadow_latency=elapsed,
                )
                if out["abs_diff"] is not None:
                    self.metrics.shadow_abs_diff.observe(out["abs_diff"])
                if task != REGRESSION and prediction != rec.prediction:
                    disagreements += 1
            else:
                out = shadow_line(rec, timestamp=now, shadow_version=candidate.version, outcome=outcome, task=task)
            self._emit(out)
        if disagreements:
            self.metrics.shadow_label_disagreements.inc(disagreements)

    def _count(self, outcome: str, n: int) -> None:
        self._counts[outcome].inc(n)
        self.counts[outcome] += n

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
        n, self._dropped_unreported = self._dropped_unreported, 0
        if n:
            version = self.candidate.version if self.candidate is not None else None
            self._emit(shadow_drops_line(timestamp=time.time(), shadow_version=version, dropped=n))


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None] | None) -> None:
    if callback is None:
        return
    with contextlib.suppress(RuntimeError):  # the loop closed while a hung call was still running
        loop.call_soon_threadsafe(callback)
