"""Admission control: prediction requests are refused early (503) rather than queued without bound.

A worker is one event loop on one core. Under overload a request waits in two
places before its inference runs: in the loop's ready queue (uvicorn has read
and parsed it and created its task, which waits for the CPU behind every
other ready task), and for one of ``MODELSERVE_MAX_IN_FLIGHT`` slots here
(only requests that await I/O, such as store features, hold a slot for long).
Its *queue time* is measured from when the server read it:

- **Arrival.** ``install_arrival_stamps`` sets a task factory on the loop
  that stamps every task with the time it was created. uvicorn creates a
  request's task as soon as it has parsed the request's headers (in the
  same loop callback that read the bytes), so the stamp is the arrival time
  the server itself does not expose. Without a stamp (another server, an
  in-process test client) the middleware's own entry time is used.
- **Slots.** Up to ``max_in_flight`` requests run at once; the next ones wait
  in FIFO order, each no longer than its remaining queue time.
- **Deadlines.** A client may say how long it will wait, and a request that
  cannot finish in time is not started: ``x-envoy-expected-rq-timeout-ms``
  (Envoy's header: a budget in milliseconds, counted from arrival) or
  ``X-Request-Deadline-Ms`` (an absolute deadline, Unix epoch milliseconds).
  When both are sent the earlier wins. A deadline already past, or nearer
  than the recent service time of the route, is refused at once; otherwise
  it also shortens the time the request may queue.

A progress floor keeps refusing from turning into serving nothing: when
requests are refused for queue time but the admitted ones have had less
than half the time of the last half second, late requests are admitted
anyway (a burst of hundreds of requests read in one loop iteration can make
every one of them older than the limit before the first runs).

What this cannot see: bytes waiting in the kernel's socket buffer until the
loop next polls. That wait is at most one loop iteration, and shedding keeps
iterations short (a refusal costs a few tens of microseconds, no decoding and
no inference). Under a flood even that is too much (uvicorn's request, scope
and task and the middlewares around a refusal cost about three times what
admission control itself spends), so the server's protocol refuses the
excess before building it, on the word of ``Admission.cut`` (below and
``app.server.protocol.EarlyShed``).

A refused request is answered ``503`` with ``Retry-After`` in the service's
one error shape, before its body is read; one that outlives its queue time
while waiting for a slot is dropped the same way and never reaches the
model. Counted in ``modelserve_requests_shed_total{reason}``:
``queue_time`` (waited too long before the app saw it), ``overloaded`` (no
slot freed in time) and ``deadline`` (the client's deadline is past or cannot
be met). ``modelserve_requests_in_flight`` is the number running.

Only ``POST`` to the prediction routes (``/predict``, ``/predict/batch``,
V2 ``.../infer``) is guarded; health, metrics, metadata and admin routes are
never refused.

The limits themselves (``Admission``: slots, queue time, deadlines, the
progress floor, the counters) are protocol-neutral and one per worker: the
container builds them and hands the same instance to this middleware and to
the gRPC server (``app.rpc``), whose ``ModelInfer`` calls take their slots
from the same pool and are counted in the same metrics (the answer's status
tells the protocols apart: ``modelserve_http_requests_total`` and
``modelserve_grpc_requests_total``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Coroutine, Generator
from types import SimpleNamespace
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import error_response
from app.errors import ModelServeError, Unavailable, ValidationFailed
from app.telemetry import tracing
from app.telemetry.metrics import Metrics

ENVOY_TIMEOUT_HEADER = "x-envoy-expected-rq-timeout-ms"
"""Relative deadline: milliseconds the client will wait, counted from when the request arrived."""
DEADLINE_HEADER = "x-request-deadline-ms"
"""Absolute deadline: Unix epoch milliseconds by which the answer must be sent."""
RETRY_AFTER_SECONDS = 1.0
"""What a refused client is asked to wait (``Retry-After`` takes whole seconds)."""
SHED_REASONS = ("queue_time", "overloaded", "deadline")
REFUSALS = {
    "queue_time": "overloaded: request waited too long to be served; retry later",
    "overloaded": "overloaded: too many requests in flight; retry later",
    "deadline": "deadline cannot be met; retry with a later deadline",
}
"""What a refused client is told, by reason (every protocol says the same)."""

_ENVOY = ENVOY_TIMEOUT_HEADER.encode()
_DEADLINE = DEADLINE_HEADER.encode()
_EWMA_WEIGHT = 0.1
ROUND_KEY = "modelserve.round_position"
"""Scope key: how many requests the server had handed to the app before this one in the same loop round."""
CUT_TARGET_SHARE = 0.3
"""Share of the queue-time limit the last request handed over in a loop round may wait (the protocol's cut)."""
CONGESTED_SHARE = 0.25
"""A request that waited longer than this share of the limit marks the worker congested for ``CONGESTED_HOLD``."""
CONGESTED_HOLD = 0.5
"""Seconds the protocol may refuse on ``Admission.cut`` after the last sign of congestion."""
MIN_ROUND = 4
"""Least requests in a round for its last one's wait to say what each request ahead costs."""
MIN_CUT = 4
"""The protocol always hands at least this many requests to the app per loop round."""
SERVING_WINDOW = 0.5
"""Seconds over which the progress floor (``AdmissionControl._starved``) measures served work."""
MIN_SERVING_SHARE = 0.5
"""Least share of the time admitted requests get while old requests are being refused."""


class StampedTask(asyncio.Task[Any]):
    """An ``asyncio.Task`` that knows when it was created (``perf_counter`` seconds)."""

    arrival: float


def _stamped_task_factory(
    loop: asyncio.AbstractEventLoop, coro: Generator[Any, None, Any] | Coroutine[Any, Any, Any], **kwargs: Any
) -> asyncio.Future[Any]:
    task = StampedTask(coro, loop=loop, **kwargs)
    task.arrival = time.perf_counter()
    return task


def install_arrival_stamps(loop: asyncio.AbstractEventLoop) -> None:
    """Stamp every task the loop creates from now on with its creation time (unless a factory is set)."""
    if loop.get_task_factory() is None:
        loop.set_task_factory(_stamped_task_factory)


def arrival_time(default: float) -> float:
    """When the current task (a request's) was created, or ``default`` if it carries no stamp."""
    task = asyncio.current_task()
    return task.arrival if isinstance(task, StampedTask) else default


def route_of(path: str) -> tuple[str, str] | None:
    """The guarded route's kind and template for ``path``, or None when it is not a prediction route."""
    if path == "/predict":
        return "predict", "/predict"
    if path == "/predict/batch":
        return "batch", "/predict/batch"
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        if "/versions/" in path:
            return "v2", "/v2/models/{name}/versions/{version}/infer"
        return "v2", "/v2/models/{name}/infer"
    return None


class Refusal:
    """A prebuilt 503 answer: two ASGI messages, no per-request work (and its raw parts, for the protocol)."""

    def __init__(self, message: str) -> None:
        response = error_response(Unavailable(message, retry_after=RETRY_AFTER_SECONDS))
        self.headers: list[tuple[bytes, bytes]] = response.raw_headers
        self.payload = bytes(response.body)
        self.start = {"type": "http.response.start", "status": 503, "headers": self.headers}
        self.body = {"type": "http.response.body", "body": self.payload}


class Admission:
    """The per-worker limits on prediction requests, whatever protocol brought them.

    ``enter()`` decides (at once, or after waiting in line for a slot) and
    ``leave()`` gives the slot back; a refusal is counted with ``shed()``.
    ``kind`` names a class of request (``predict``, ``batch``, ``v2``,
    ``grpc``) whose recent service time a deadline must leave room for.
    """

    def __init__(self, metrics: Metrics, max_in_flight: int, max_queue_ms: float) -> None:
        self.max_in_flight = max_in_flight
        self.max_queue = max_queue_ms / 1000
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._service_time: dict[str, float] = {}
        """Recent time (EWMA, seconds) an admitted request of each kind took: what a deadline must leave."""
        self._gauge = metrics.in_flight
        self._shed = {reason: metrics.requests_shed.labels(reason) for reason in SHED_REASONS}
        self.shed_seconds = metrics.shed_seconds
        """Server time of a refusal, observed by the front end once its answer is sent."""
        self._window_start = time.perf_counter()
        self._window_work = 0.0
        """Time admitted requests took in the current window (``SERVING_WINDOW`` seconds)."""
        self._window_shed = 0
        # The protocol's cut (``app.server.protocol.EarlyShed``): what a loop round may hand to the app.
        self.handed = 0
        """Requests the server has handed to the app in the current loop round (reset by ``next_round``)."""
        self.round_size = 0
        """How many it handed in the previous round: the last of them is the one whose wait is measured."""
        self.cut = 1 << 30
        """Requests a round may hand over before the protocol refuses the rest (while ``congested_until``)."""
        self.congested_until = -1.0
        """Until when (``perf_counter``) the protocol may refuse on ``cut``: a request recently waited long."""
        self._ahead_cost = 0.0
        """Recent time (EWMA, seconds) each request handed over in a round added to the wait of the last one."""
        self._round = 0
        self._first = (-1, 0.0)
        """The current round's number and what its first request waited, once it has started."""

    def next_round(self) -> None:
        """A new loop round begins: the requests handed over in the last one are about to run."""
        self.round_size, self.handed = self.handed, 0
        self._round += 1

    def waited(self, position: int, wait: float, now: float) -> None:
        """A request handed over ``position``-th in its round starts after waiting ``wait`` seconds.

        Keeps the protocol's cut honest with what requests actually wait,
        not an estimate of it. Every request of a round waits for the whole
        of the round's reading (the loop reads everything that came in,
        refusals included, before it runs any task), and the n-th also for
        the n - 1 tasks before it; so the difference between what the last
        and the first request of a round waited, over the requests between
        them, is what each request handed over costs the ones behind it, and
        ``cut`` is how many fit in ``CUT_TARGET_SHARE`` of the limit. The
        reading is left out on purpose: refusing more cannot shorten it (the
        excess is read either way), only serve less. The cut grows back as
        soon as the requests handed over cost less, and it only applies while
        some request has recently waited past ``CONGESTED_SHARE`` of the
        limit, so a burst at normal load is never refused on it.
        """
        if wait > self.max_queue * CONGESTED_SHARE:
            self.congested_until = now + CONGESTED_HOLD
        if position == 0:
            self._first = (self._round, wait)
        elif position + 1 == self.round_size and position + 1 >= MIN_ROUND and self._first[0] == self._round:
            sample = max(0.0, wait - self._first[1]) / position
            cost = self._ahead_cost
            cost = sample if cost == 0.0 else cost + 0.25 * (sample - cost)
            self._ahead_cost = cost
            if cost > 0.0:
                self.cut = max(MIN_CUT, int(self.max_queue * CUT_TARGET_SHARE / cost))

    def refused_early(self, count: int) -> None:
        """Count ``count`` refusals the server made on ``cut``'s word (reason ``queue_time``)."""
        self._shed["queue_time"].inc(count)

    async def enter(self, kind: str, arrival: float, now: float, deadline: float | None) -> str | None:
        """None once a slot is held (the caller must ``leave()``), else the reason to refuse (not yet counted).

        ``arrival``, ``now`` and ``deadline`` (the client's, or None) are on the ``perf_counter`` clock.
        """
        limit = arrival + self.max_queue
        by_deadline = False
        if deadline is not None:
            latest_start = deadline - self._service_time.get(kind, 0.0)
            if latest_start <= now:
                return "deadline"
            if latest_start < limit:
                limit, by_deadline = latest_start, True
        if now > limit and (by_deadline or not self._starved(now)):
            return "deadline" if by_deadline else "queue_time"
        if self.in_flight < self.max_in_flight and not self._waiters:
            self.in_flight += 1
        else:
            reason = await self._wait_for_slot(limit)
            if reason is not None:
                return "deadline" if by_deadline else reason
        self._gauge.inc()
        if tracing.enabled:
            tracing.record_admission(time.perf_counter() - arrival, "admitted")
        return None

    def leave(self, kind: str, started: float) -> None:
        """An admitted request of ``kind`` that started at ``started`` is done: its slot goes to the next."""
        self._gauge.dec()
        previous = self._service_time.get(kind)
        took = time.perf_counter() - started
        self._service_time[kind] = took if previous is None else previous + _EWMA_WEIGHT * (took - previous)
        self._window_work += took
        self._release()

    def shed(self, reason: str, arrival: float, since: float) -> None:
        """Count a refusal decided at ``since`` (and put it on the request's span)."""
        self._shed[reason].inc()
        if tracing.enabled:
            tracing.record_admission(since - arrival, f"shed:{reason}")

    def _starved(self, now: float) -> bool:
        """Whether admitted work has had less than ``MIN_SERVING_SHARE`` of the time while shedding.

        The progress floor: when every request is already too old by the time
        the app sees it (a burst read in one go, a worker that was descheduled),
        refusing all of them would serve nothing at all; then old requests are
        admitted until served work is back to its share of the time.
        """
        elapsed = now - self._window_start
        if elapsed > SERVING_WINDOW:
            self._window_start, self._window_work, self._window_shed = now, 0.0, 0
            elapsed = 0.0
        self._window_shed += 1
        if self._window_shed == 1:
            return False  # one late request is no sign of starvation
        return self._window_work < MIN_SERVING_SHARE * max(elapsed, 0.01)

    async def _wait_for_slot(self, limit: float) -> str | None:
        """Wait in line until a slot is handed over or ``limit`` passes; None once admitted, else why not."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, max(0.0, limit - time.perf_counter()))
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot just as the wait ran out: pass it on
            else:
                self._forget(waiter)
            return "overloaded"
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release()
            else:
                self._forget(waiter)
            raise
        if time.perf_counter() > limit:  # woken, but too late to be worth running: pass the slot on
            self._release()
            return "queue_time"
        return None

    def _release(self) -> None:
        """Hand the caller's slot to the first live waiter, or free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.in_flight -= 1

    def _forget(self, waiter: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)


class AdmissionControl:
    """Pure ASGI middleware: the prediction routes go through ``Admission`` (its own, or the worker's shared one)."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        max_in_flight: int,
        max_queue_ms: float,
        limits: Admission | None = None,
    ) -> None:
        self.app = app
        self.limits = limits or Admission(metrics, max_in_flight, max_queue_ms)
        self._refusals = {reason: Refusal(message) for reason, message in REFUSALS.items()}
        # Shed answers are labelled by their route template in the HTTP metrics, like routed ones.
        self._templates: dict[str, SimpleNamespace] = {}

    @property
    def in_flight(self) -> int:
        """Prediction requests holding a slot now (every protocol's)."""
        return self.limits.in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        route = route_of(scope["path"])
        if route is None:
            await self.app(scope, receive, send)
            return
        now = time.perf_counter()
        arrival = arrival_time(now)
        position = scope.get(ROUND_KEY)
        if position is not None:
            self.limits.waited(position, now - arrival, now)
        kind, template = route
        try:
            deadline = self._client_deadline(scope, arrival, now)
        except ValidationFailed as exc:
            await self._invalid(exc, kind, scope, receive, send)
            return
        reason = await self.limits.enter(kind, arrival, now, deadline)
        if reason is not None:
            await self._refuse(reason, template, scope, send, arrival)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.limits.leave(kind, started)

    def _client_deadline(self, scope: Scope, arrival: float, now: float) -> float | None:
        """The client's deadline on the ``perf_counter`` clock, from either header; None if neither is sent."""
        deadline: float | None = None
        for name, value in scope["headers"]:
            if name == _ENVOY:
                at = arrival + _milliseconds(value, ENVOY_TIMEOUT_HEADER) / 1000
            elif name == _DEADLINE:
                at = now + (_milliseconds(value, DEADLINE_HEADER) / 1000 - time.time())
            else:
                continue
            deadline = at if deadline is None else min(deadline, at)
        return deadline

    async def _refuse(self, reason: str, template: str, scope: Scope, send: Send, arrival: float) -> None:
        since = time.perf_counter()
        self.limits.shed(reason, arrival, since)
        scope["route"] = self._template(template)
        refusal = self._refusals[reason]
        await send(refusal.start)
        await send(refusal.body)
        self.limits.shed_seconds.observe(time.perf_counter() - since)

    async def _invalid(self, exc: ModelServeError, kind: str, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self._template(route_of(scope["path"])[1])  # type: ignore[index]
        response = error_response(exc, 400 if kind == "v2" else None)  # V2 answers bad input with 400
        await response(scope, receive, send)

    def _template(self, template: str) -> SimpleNamespace:
        route = self._templates.get(template)
        if route is None:
            route = self._templates[template] = SimpleNamespace(path=template)
        return route


MAX_DEADLINE_MS = 1e15
"""A later deadline (some 30,000 years) is as good as none; a longer number is read as this."""


def _milliseconds(value: bytes, header: str) -> float:
    """ASCII digits only (``int()`` would also take '+5' and '1_000'); any length, capped at ``MAX_DEADLINE_MS``."""
    digits = value.strip()
    if not digits.isdigit():
        raise ValidationFailed(
            f"{header} must be a whole number of milliseconds",
            [{"loc": ["header", header], "msg": "not a whole number of milliseconds", "type": "deadline_header"}],
        )
    return min(float(digits), MAX_DEADLINE_MS)  # float() of 400 digits is inf, never an error
