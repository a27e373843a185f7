"""uvicorn's httptools protocol with the limits it lacks: read deadlines, a header size cap, a connection cap.

Hand-written because uvicorn (0.54) has none of them for httptools:
``timeout_keep_alive`` only covers the idle time between requests,
``h11_max_incomplete_event_size`` only the h11 protocol, and
``limit_concurrency`` answers 503 only once a request's headers are complete,
so a connection that never completes them was held for ever. Measured before
this existed (RELIABILITY.md): half-open connections past the descriptor limit
stopped every probe; a 64 MB header took seconds of event-loop time to parse
(the parser's work grows quadratically with a header fed in socket-sized
chunks); a body that never arrived held a SIGTERM for uvicorn's 30 s.

The subclass hooks the points where a connection changes phase and keeps one
timer at a time:

- reading a request's line and headers: ``header_timeout`` from the
  connection's start (or the request's first byte on a kept-alive one), and
  at most ``max_header_bytes`` fed to the parser, else 431 without parsing;
- reading its body: ``body_timeout`` from the end of the headers, then 408
  (the app's ``receive()`` says the client is gone);
- at the connection cap, a new connection closes the oldest one still
  waiting for its first request's headers (a client that sends a request at
  once is never that one); with none such, the new one is refused with 503;
- bytes the parser refuses (a bad chunk size, Content-Length with
  Transfer-Encoding, bare LF line ends): 400 naming what the parser found,
  where uvicorn answered plain text and dropped the answers still owed to
  requests pipelined before them.

Refusals answer in the service's error shape with ``Connection: close``, then
linger briefly, discarding input, so the client reads the answer instead of
a reset. Counted in ``modelserve_http_connections_refused_total{reason}``.

One more gap, in the event loop rather than uvicorn: libuv (under uvloop)
accepts *one* connection per loop iteration. Under overload an iteration
reads and answers hundreds of requests (20-30 ms), so new connections were
accepted at ~40 a second and the rest waited unseen in the kernel's listen
queue for seconds, never refused, never answered (measured with 512
connections opened at once: 280 still queued after 3 s). So each accepted
connection also takes up to ``ACCEPT_BURST`` more from the listen queue
(through a duplicate of the listening socket, found once per process) and
hands them to the loop as accepted sockets; at shutdown the duplicate is
closed with the server's own.

And one gap in what a refusal costs: under a flood, prediction requests past
what admission control has measured a loop round can serve in time are
answered 503 here, before uvicorn builds them (``EarlyShed``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from app.api.admission import DEADLINE_HEADER, ENVOY_TIMEOUT_HEADER, REFUSALS, ROUND_KEY, Admission, Refusal

if TYPE_CHECKING:
    from app.settings import Settings
    from app.telemetry.metrics import Metrics

log = logging.getLogger("modelserve.server")

LINGER_SECONDS = 1.0  # how long a refused connection is read (and discarded) so its answer is not lost to a reset
ACCEPT_BURST = 128
"""Connections taken from the listen queue each time the loop accepts one (asyncio's own loop takes 100)."""


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    max_header_bytes: int = 64 * 1024
    max_connections: int = 4096

    @classmethod
    def from_settings(cls, settings: Settings, max_connections: int) -> ConnectionLimits:
        return cls(
            header_timeout=settings.header_read_timeout_seconds,
            body_timeout=settings.body_read_timeout_seconds,
            max_header_bytes=settings.max_header_bytes,
            max_connections=max_connections,
        )


class ServerConfig(uvicorn.Config):
    """uvicorn's config with the guarded protocol and its limits (pickled as is to every worker)."""

    def __init__(self, app: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, http=GuardedHttpToolsProtocol, **kwargs)
        self.limits = limits


def _not_counted(reason: str) -> None:
    pass


_count: Callable[[str], None] = _not_counted
_DEADLINE_HEADERS = (ENVOY_TIMEOUT_HEADER.encode(), DEADLINE_HEADER.encode())
_early: EarlyShed | None = None


def report_to(metrics: Metrics, admission: Admission | None = None) -> None:
    """Count this process's refusals in ``metrics``, and shed prediction requests early for ``admission``.

    uvicorn builds the protocol itself, one per connection, and passes it
    only its config; the app's metrics and admission limits reach it through
    this one hook per process (each worker sets it when it builds its app).
    """
    global _count, _early
    _count = lambda reason: metrics.http_connections_refused.labels(reason).inc()  # noqa: E731
    _early = None if admission is None else EarlyShed(admission, metrics)


def _template(url: bytes) -> str | None:
    """The prediction route template of a request target taken as is (no query, no escapes), else None."""
    if url == b"/predict":
        return "/predict"
    if url == b"/predict/batch":
        return "/predict/batch"
    if url.startswith(b"/v2/models/") and url.endswith(b"/infer") and b"?" not in url and b"%" not in url:
        return "/v2/models/{name}/versions/{version}/infer" if b"/versions/" in url else "/v2/models/{name}/infer"
    return None


class EarlyShed:
    """Prediction requests refused by the protocol before uvicorn builds them, while the worker is flooded.

    Admission control refuses a request for a few tens of microseconds once
    its task runs, but uvicorn's request, scope and task and the middlewares
    around it cost about three times that, so under a flood the worker could
    not even read and refuse what arrived. The event loop reads every
    request that came in since it last looked, then runs their tasks in the
    order it read them: the n-th request handed to the app in a round waits
    for the n - 1 before it. So the protocol counts the requests it hands
    over in each round (``Admission.handed``, reset when the round's tasks
    start) and tells admission control each one's place (``ROUND_KEY``);
    admission control measures what the last of a round actually waited and
    sets ``Admission.cut``, how many fit in part of the queue-time limit.
    Past the cut, while a request has recently waited long
    (``Admission.congested_until``), a ``POST`` to a prediction route is
    answered at once with admission's own ``queue_time`` refusal (the same
    status, headers and body, ``Retry-After`` included) and never becomes a
    task. It is counted as shed and as a 5xx of its route, its server time in
    ``modelserve_requests_shed_seconds``, all once per round. Its body is
    read and dropped and the connection stays open unless the client asked
    to close it.

    Left to admission control: requests with a deadline header (their refusal
    has its own reason), ``Expect: 100-continue``, pipelined requests (answers
    keep their order), targets with a query or escapes, and anything but
    ``POST`` to a prediction route.
    """

    def __init__(self, admission: Admission, metrics: Metrics) -> None:
        self.admission = admission
        refusal = Refusal(REFUSALS["queue_time"])
        self._headers = b"".join(b"%s: %s\r\n" % pair for pair in refusal.headers)
        self._body = refusal.payload
        self._metrics = metrics
        self._defaults: list[tuple[bytes, bytes]] | None = None
        self._head = b""
        self._round_pending = False
        self._refused: dict[str, int] = {}
        self._seconds: list[float] = []

    def answer(self, default_headers: list[tuple[bytes, bytes]], keep_alive: bool) -> bytes:
        """The 503's bytes, with the server's current default headers (date, server) as uvicorn would send."""
        if default_headers is not self._defaults:  # uvicorn replaces the list when the date changes
            self._defaults = default_headers
            self._head = b"".join([STATUS_LINE[503], *(b"%s: %s\r\n" % pair for pair in default_headers)])
        if keep_alive:
            return b"".join([self._head, self._headers, b"\r\n", self._body])
        return b"".join([self._head, self._headers, b"connection: close\r\n\r\n", self._body])

    def handing(self, loop: asyncio.AbstractEventLoop) -> int:
        """A request is handed to the app: its place in the round."""
        if not self._round_pending:
            self._round_pending = True
            loop.call_soon(self._next_round)  # runs before (or among) this round's tasks, after all its reads
        admission = self.admission
        position = admission.handed
        admission.handed = position + 1
        return position

    def refused(self, loop: asyncio.AbstractEventLoop, template: str, seconds: float) -> None:
        self._refused[template] = self._refused.get(template, 0) + 1
        self._seconds.append(seconds)
        if not self._round_pending:
            self._round_pending = True
            loop.call_soon(self._next_round)

    def _next_round(self) -> None:
        self._round_pending = False
        self.admission.next_round()
        if self._refused:
            refused, self._refused = self._refused, {}
            seconds, self._seconds = self._seconds, []
            self.admission.refused_early(len(seconds))
            for template, count in refused.items():
                self._metrics.http_requests.labels(template, "POST", "5xx").inc(count)
            observe = self.admission.shed_seconds.observe
            for took in seconds:
                observe(took)


def _answer(status: int, message: str, retry_after: int | None = None) -> bytes:
    body = orjson.dumps({"error": message, "detail": []})
    head = [
        STATUS_LINE[status],
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n",
    ]
    if retry_after is not None:
        head.append(b"retry-after: %d\r\n" % retry_after)
    return b"".join([*head, b"\r\n", body])


def _waiting_first_request(state: ServerState) -> dict[GuardedHttpToolsProtocol, None]:
    """Connections still reading their first request's headers, oldest first (shared per server)."""
    waiting: dict[GuardedHttpToolsProtocol, None] | None = getattr(state, "modelserve_waiting", None)
    if waiting is None:
        waiting = {}
        state.modelserve_waiting = waiting  # type: ignore[attr-defined]
    return waiting


def _listeners(state: ServerState) -> dict[int, socket.socket | None]:
    """Duplicates of the listening sockets by port, found once per server (shared per server)."""
    found: dict[int, socket.socket | None] | None = getattr(state, "modelserve_listeners", None)
    if found is None:
        found = {}
        state.modelserve_listeners = found  # type: ignore[attr-defined]
    return found


def _find_listener(port: int) -> socket.socket | None:
    """A non-blocking duplicate of this process's listening TCP socket on ``port`` (Linux: via /proc/self/fd)."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return None
    for name in names:
        try:
            fd = os.dup(int(name))
        except (OSError, ValueError):
            continue  # closed meanwhile
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)  # not a socket
            continue
        try:
            if (
                sock.family in (socket.AF_INET, socket.AF_INET6)
                and sock.type == socket.SOCK_STREAM
                and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                and sock.getsockname()[1] == port
            ):
                sock.setblocking(False)
                return sock
        except OSError:
            pass
        sock.close()
    return None


def close_listeners(state: ServerState) -> None:
    """Close the duplicates and accept no more through them (at shutdown: new connections must be refused)."""
    state.modelserve_closing = True  # type: ignore[attr-defined]
    found = _listeners(state)
    for port, sock in list(found.items()):
        if sock is not None:
            sock.close()
        found[port] = None


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits: ConnectionLimits = getattr(config, "limits", ConnectionLimits())
        self._waiting = _waiting_first_request(server_state)
        self._deadline: asyncio.TimerHandle | None = None
        self._in_headers = True
        self._in_body = False
        self._header_bytes = 0
        self._refused = False
        self._discarding: bool | None = None
        """While a request refused early is still sending its body: whether the connection stays open after it."""

    # --- connection -----------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            if self._waiting:
                oldest = next(iter(self._waiting))
                oldest._refuse(503, "connection closed for a newer one: the server is at its connection cap", "evicted")
            else:
                self.transport = transport
                self._refuse(503, "too many connections; retry later", "connection_cap", retry_after=1)
                return
        super().connection_made(transport)
        self._waiting[self] = None
        self._arm(self.limits.header_timeout, self._header_timeout)
        self._accept_queued()

    def _accept_queued(self) -> None:
        """Take up to ``ACCEPT_BURST`` connections waiting in the listen queue (see the module docstring)."""
        sockname = self.transport.get_extra_info("sockname")
        if not isinstance(sockname, tuple) or getattr(self.server_state, "modelserve_closing", False):
            return
        found = _listeners(self.server_state)
        port = sockname[1]
        if port not in found:
            found[port] = _find_listener(port)
        listener = found[port]
        if listener is None:
            return
        # Never past the connection cap: there, the loop's own accept (one at a time) evicts or refuses.
        state = self.server_state
        adopting: int = getattr(state, "modelserve_adopting", 0)
        room = self.limits.max_connections - len(self.connections) - adopting
        for _ in range(min(ACCEPT_BURST, room)):
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, or aborted: the loop's own accept will report it
                log.debug("accepting a queued connection failed: %s", exc)
                return
            conn.setblocking(False)
            state.modelserve_adopting = getattr(state, "modelserve_adopting", 0) + 1  # type: ignore[attr-defined]
            self.loop.create_task(self._adopt(conn))

    async def _adopt(self, conn: socket.socket) -> None:
        def protocol() -> GuardedHttpToolsProtocol:
            return type(self)(self.config, self.server_state, self.app_state, self.loop)

        try:
            await self.loop.connect_accepted_socket(protocol, conn)
        except OSError:
            conn.close()  # reset before it was adopted
        finally:
            self.server_state.modelserve_adopting -= 1  # type: ignore[attr-defined]

    def shutdown(self) -> None:
        close_listeners(self.server_state)
        super().shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._waiting.pop(self, None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: read and dropped
        cap = self.limits.max_header_bytes
        while self._in_headers and len(data) > cap - self._header_bytes:
            # Feed only what fits: the parser never sees header bytes past the cap.
            room = cap - self._header_bytes
            if room <= 0:
                self._refuse(431, f"request headers larger than {cap} bytes", "header_too_large")
                return
            piece, data = data[:room], data[room:]
            self._header_bytes += room  # back to 0 if the headers complete within the piece
            super().data_received(piece)
            if self.transport.is_closing() or self._refused:
                return
        if self._in_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if self._deadline is None and not self._refused and not self.transport.is_closing():
            if self._in_headers:
                self._arm(self.limits.header_timeout, self._header_timeout)
            elif self._in_body:
                self._arm(self.limits.body_timeout, self._body_timeout)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes its parser refuses (bad chunk sizes, framing, header syntax), in the error shape.

        uvicorn calls this inside its ``except httptools.HttpParserError``,
        so the parser's own reason is the exception being handled. Bad bytes
        after requests still being answered (pipelined) get no answer of
        their own: those requests are answered, then the connection closes.
        """
        reason = sys.exc_info()[1]
        if self._discarding is not None:  # refused early and already answered: nothing more to say
            _count("malformed")
            self.transport.close()
            return
        cycle = self.cycle
        if self._in_body:
            if self._client_gone("malformed"):
                return
        elif cycle is not None and not cycle.response_complete:
            _count("malformed")
            cycle.keep_alive = False  # the last request read: the connection closes once it is answered
            self._refused = True  # anything more is dropped unparsed
            return
        self._refuse(400, f"malformed HTTP request: {reason or msg}", "malformed")

    # --- parser callbacks ---------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True

    def on_headers_complete(self) -> None:
        self._disarm()
        self._waiting.pop(self, None)
        self._in_headers = False
        self._in_body = True
        self._header_bytes = 0
        early = _early
        if early is not None and early.admission.handed >= early.admission.cut and self._shed_early(early):
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._discarding is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._disarm()
        keep_alive = self._discarding
        if keep_alive is None:
            super().on_message_complete()
            return
        self._discarding = None  # the refused request's body is all read: the connection is between requests
        self.server_state.total_requests += 1
        if not keep_alive:
            self.transport.close()
        elif not self.transport.is_closing():
            idle = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)
            self.timeout_keep_alive_task = idle

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        early = _early
        if early is not None:
            cycle.scope[ROUND_KEY] = early.handing(self.loop)  # type: ignore[literal-required]
        super()._start_asgi_task(cycle, app)

    # --- early refusal of prediction requests -------------------------------------------
    def _shed_early(self, early: EarlyShed) -> bool:
        """Answer the request whose headers were just read with admission's 503, if ``EarlyShed`` may."""
        now = time.perf_counter()
        if now >= early.admission.congested_until or self.root_path or self.expect_100_continue:
            return False
        parser = self.parser
        if parser.get_method() != b"POST" or (self.cycle is not None and not self.cycle.response_complete):
            return False
        template = _template(self.url)
        if template is None or any(name in _DEADLINE_HEADERS for name, _ in self.headers):
            return False
        keep_alive = parser.get_http_version() == "1.1" and parser.should_keep_alive()
        self.transport.write(early.answer(self.server_state.default_headers, keep_alive))
        self._discarding = keep_alive
        early.refused(self.loop, template, time.perf_counter() - now)
        return True

    # --- deadlines and refusals -----------------------------------------------------
    def _arm(self, seconds: float, callback: Callable[[], None]) -> None:
        self._deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _header_timeout(self) -> None:
        self._deadline = None
        if not self._in_headers or self._refused or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request behind one still being answered: write nothing in between, close after it.
            self.cycle.keep_alive = False
            return
        self._refuse(408, f"request headers not received within {self.limits.header_timeout:g} s", "header_timeout")

    def _body_timeout(self) -> None:
        self._deadline = None
        if self._discarding is not None:  # refused early, and its body never came: nothing more to answer
            _count("body_timeout")
            self.transport.close()
            return
        if not self._in_body or self._refused or self.transport.is_closing():
            return
        if self._client_gone("body_timeout"):
            return
        self._refuse(408, f"request body not received within {self.limits.body_timeout:g} s", "body_timeout")

    def _client_gone(self, reason: str) -> bool:
        """The request being read will never be whole: tell its app so; True when no clean answer is possible."""
        cycle = self.cycle
        if self.pipeline or (cycle is not None and cycle.response_started):
            # Queued behind another request, or already being answered: close without an answer.
            _count(reason)
            self.transport.close()
            return True
        if cycle is not None:
            # The app waiting in receive() gets http.disconnect; anything it sends after is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        return False

    def _refuse(self, status: int, message: str, reason: str, retry_after: int | None = None) -> None:
        _count(reason)
        log.debug("refused a connection (%s) from %s", reason, self.client)
        self._refused = True
        self._disarm()
        self._waiting.pop(self, None)
        self.connections.discard(self)  # nothing left to drain at shutdown
        transport = self.transport
        transport.write(_answer(status, message, retry_after))
        if reason == "evicted":
            transport.close()  # its descriptor is what the new connection needs
            return
        if transport.can_write_eof():
            transport.write_eof()
        transport.resume_reading()
        self.loop.call_later(LINGER_SECONDS, transport.close)
