"""A small HTTP/1.1 load generator that keeps answered and refused requests apart.

    python -m bench.loadgen URL --bodies FILE --rate 3000 --duration 10      # open loop
    python -m bench.loadgen URL --bodies FILE --connections 512 --duration 10 --closed

wrk is closed loop: each connection waits for its answer before it sends the
next request, so a slow server is sent less and its queue never grows beyond
the connections. An overloaded service meets an *open* loop (clients arrive
whatever it does), and its figures of merit are per answer class: how many
were answered 200 (goodput), how many refused, how fast each kind came back.

Open loop: request ``i`` is due at ``start + i / rate``. It goes out on an
idle keep-alive connection, or a new one (at most ``--connections``); when
none is free it waits its turn, and its latency is still counted from when it
was due, so a generator or server that falls behind shows up as latency
instead of as a lower rate (no coordinated omission). Closed loop: each of
``--connections`` connections sends its next request as soon as the last one
is answered.

Bounded: at most ``rate × duration`` requests (open loop), at most
``--connections`` connections, and answers still outstanding ``--drain``
seconds after the last request was due are counted as timed out and dropped.
Loopback only. Prints one JSON object (``LoadResult``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

MAX_CONNECTIONS = 4096
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class LoadResult:
    mode: str
    target_rate: float
    duration_s: float
    sent: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    socket_errors: int = 0
    timed_out: int = 0
    late_sends: int = 0
    """Open loop: requests that went out more than 10 ms after they were due (no free connection)."""
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per answer class (``ok`` for 2xx, ``shed`` for 503, ``other``): p50, p90, p99, max."""

    def count(self, status_class: str) -> int:
        return sum(n for s, n in self.statuses.items() if _klass(int(s)) == status_class)

    def rate(self, status_class: str) -> float:
        return self.count(status_class) / self.duration_s if self.duration_s > 0 else 0.0


def _klass(status: int) -> str:
    if 200 <= status < 300:
        return "ok"
    return "shed" if status == 503 else "other"


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    values.sort()
    n = len(values)

    def at(q: float) -> float:
        return round(values[min(n - 1, int(q * n))] * 1000, 3)

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": round(values[-1] * 1000, 3), "n": n}


def _content_length(head: bytes) -> int:
    at = head.find(b"content-length:")
    if at < 0:
        return 0
    eol = head.find(b"\r\n", at)
    return int(head[at + 15 : eol if eol >= 0 else len(head)])


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request outstanding."""

    def __init__(self, gen: _Generator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.due = 0.0
        self.busy = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio classes

    def send(self, request: bytes, due: float) -> None:
        assert self.transport is not None
        self.busy, self.due = True, due
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            length = _content_length(head)
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            status = int(head[9:12])
            del self.buffer[:total]
            self.busy = False
            close = b"connection: close" in head
            self.gen.answered(self, status, time.perf_counter() - self.due)
            if close:
                self._drop()
                return

    def connection_lost(self, exc: Exception | None) -> None:
        if self.busy:
            self.gen.failed()
        self._drop()

    def _drop(self) -> None:
        if not self.closed:
            self.closed = True
            self.busy = False
            if self.transport is not None:
                self.transport.close()
            self.gen.lost(self)


class _Generator:
    def __init__(self, host: str, port: int, requests: list[bytes], connections: int) -> None:
        self.host, self.port = host, port
        self.requests = requests
        self.max_connections = connections
        self.idle: deque[_Connection] = deque()
        self.open = 0
        self.pending: deque[float] = deque()
        self.latencies: dict[str, list[float]] = {"ok": [], "shed": [], "other": []}
        self.statuses: dict[int, int] = {}
        self.errors = 0
        self.sent = 0
        self.outstanding = 0
        self.late = 0
        self.closed_loop = False
        self.stop_at = 0.0
        self._next = 0
        self.connecting: set[asyncio.Future[None]] = set()

    def request(self) -> bytes:
        self._next = (self._next + 1) % len(self.requests)
        return self.requests[self._next]

    async def connect(self) -> None:
        self.open += 1
        try:
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(lambda: _Connection(self), self.host, self.port)
        except OSError:
            self.open -= 1
            self.errors += 1
            return
        self.ready(conn)

    def ready(self, conn: _Connection) -> None:
        now = time.perf_counter()
        if self.closed_loop:
            if now < self.stop_at:
                self.dispatch(conn, now, now)
            else:
                self.idle.append(conn)
            return
        if self.pending:
            due = self.pending.popleft()
            self.dispatch(conn, due, now)
        else:
            self.idle.append(conn)

    def dispatch(self, conn: _Connection, due: float, now: float) -> None:
        if now - due > 0.010:
            self.late += 1
        self.sent += 1
        self.outstanding += 1
        conn.send(self.request(), due)

    def answered(self, conn: _Connection, status: int, seconds: float) -> None:
        self.outstanding -= 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.latencies[_klass(status)].append(seconds)
        if not conn.closed:
            self.ready(conn)

    def failed(self) -> None:
        self.outstanding -= 1
        self.errors += 1

    def lost(self, conn: _Connection) -> None:
        self.open -= 1
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)

    def offer(self, due: float) -> None:
        """A request is due: send it now if a connection is free, else queue it (and open one if allowed)."""
        while self.idle:
            conn = self.idle.popleft()
            if not conn.closed:
                self.dispatch(conn, due, time.perf_counter())
                return
        self.pending.append(due)
        if self.open < self.max_connections:
            task = asyncio.ensure_future(self.connect())
            self.connecting.add(task)
            task.add_done_callback(self.connecting.discard)


async def _run(
    url: str, bodies: Sequence[bytes], *, rate: float, duration: float, connections: int, closed: bool, drain: float
) -> LoadResult:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if host not in LOOPBACK:
        raise SystemExit("loadgen: loopback targets only")
    path = parts.path or "/"
    requests = [
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for body in bodies
    ]
    gen = _Generator(host, port, requests, connections)
    warm = min(connections, 256)  # opening connections mid-run (SYN queue, retransmits) would be measured too
    await asyncio.gather(*(gen.connect() for _ in range(warm)))
    start = time.perf_counter()
    if closed:
        gen.closed_loop = True
        gen.stop_at = start + duration
        for conn in list(gen.idle):
            gen.idle.remove(conn)
            gen.ready(conn)
        await asyncio.sleep(duration)
    else:
        total = int(rate * duration)
        issued = 0
        while issued < total:
            now = time.perf_counter()
            due_now = min(total, int((now - start) * rate) + 1)
            while issued < due_now:
                gen.offer(start + issued / rate)
                issued += 1
            await asyncio.sleep(max(0.0, min(0.001, start + issued / rate - time.perf_counter())))
    last_due = time.perf_counter()
    while (gen.outstanding > 0 or gen.pending) and time.perf_counter() - last_due < drain:
        await asyncio.sleep(0.01)
    elapsed = duration
    result = LoadResult(
        mode="closed" if closed else "open",
        target_rate=0.0 if closed else rate,
        duration_s=elapsed,
        sent=gen.sent,
        statuses={str(k): v for k, v in sorted(gen.statuses.items())},
        socket_errors=gen.errors,
        timed_out=gen.outstanding + len(gen.pending),
        late_sends=gen.late,
        latency_ms={k: _percentiles(v) for k, v in gen.latencies.items() if v},
    )
    for conn in list(gen.idle):
        if conn.transport is not None:
            conn.transport.close()
    return result


def run(
    url: str,
    bodies: Sequence[bytes],
    *,
    rate: float = 0.0,
    duration: float = 10.0,
    connections: int = 1024,
    closed: bool = False,
    drain: float = 5.0,
) -> LoadResult:
    """Load ``url`` with ``bodies`` (raw JSON bytes, in rotation); see the module docstring."""
    if not bodies:
        raise ValueError("at least one body")
    if not 1 <= connections <= MAX_CONNECTIONS:
        raise ValueError(f"connections must be 1..{MAX_CONNECTIONS}")
    if not closed and rate <= 0:
        raise ValueError("open loop needs --rate")
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    coro = _run(url, bodies, rate=rate, duration=duration, connections=connections, closed=closed, drain=drain)
    result: LoadResult = runner(coro)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--bodies", required=True, help="file of JSON bodies, one a line")
    parser.add_argument("--rate", type=float, default=0.0, help="requests per second (open loop)")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=1024)
    parser.add_argument("--closed", action="store_true", help="closed loop over --connections")
    parser.add_argument("--drain", type=float, default=5.0)
    args = parser.parse_args(argv)
    with open(args.bodies, "rb") as f:
        bodies = [line.rstrip(b"\n") for line in f if line.strip()]
    result = run(
        args.url,
        bodies,
        rate=args.rate,
        duration=args.duration,
        connections=args.connections,
        closed=args.closed,
        drain=args.drain,
    )
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
