"""The overload benchmark's load generator (bench/openloop.c via bench.loadgen) against a real local server.

The server answers each request as its body says (a status, a closed
connection, no answer at all), so every request's fate is known in advance
and the generator's counts can be asserted exactly; nothing here depends on
how fast either side runs.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import loadgen
from harness import free_port


class ScriptedServer:
    """HTTP/1.1 keep-alive server on loopback; the JSON body says how to answer.

    ``{"status": N}`` answers N with a Content-Length body; ``"close": true``
    adds ``Connection: close`` and closes; ``"unframed": true`` sends no
    Content-Length and ends the body by closing; ``"reset": true`` closes with
    no answer; ``"hang": true`` never answers. With ``idle_timeout``, a
    connection that sends nothing for that long gets a 408 and is closed.
    """

    def __init__(self, idle_timeout: float | None = None) -> None:
        self.idle_timeout = idle_timeout
        self.port = free_port()
        self.requests = 0
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.idle_timeout)
                except TimeoutError:
                    writer.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    await writer.drain()
                    return
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                body = json.loads(await reader.readexactly(length))
                self.requests += 1
                if body.get("reset"):
                    return
                if body.get("hang"):
                    await asyncio.sleep(3600)
                payload = b'{"ok":true}'
                status = body.get("status", 200)
                lines = [f"HTTP/1.1 {status} X".encode()]
                if not body.get("unframed"):
                    lines.append(b"Content-Length: %d" % len(payload))
                if body.get("close") or body.get("unframed"):
                    lines.append(b"Connection: close")
                writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + payload)
                await writer.drain()
                if body.get("close") or body.get("unframed"):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(asyncio.start_server(self._handle, "127.0.0.1", self.port), self.loop).result(
            10
        )
        return self

    async def _stop(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as s:
        yield s


def bodies(tmp_path: Path, *items: dict[str, object]) -> Path:
    path = tmp_path / "bodies.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def url(server: ScriptedServer) -> str:
    return f"http://127.0.0.1:{server.port}/predict"


def test_open_loop_sends_rate_times_duration_and_counts_each_status(server: ScriptedServer, tmp_path: Path) -> None:
    file = bodies(tmp_path, {"status": 200}, {"status": 503}, {"status": 404}, {"status": 201})
    r = loadgen.run(url(server), file, rate=2000, duration=0.2, connections=8)
    assert r.mode == "open" and r.sent == 400 and server.requests == 400
    assert r.statuses == {"200": 100, "201": 100, "404": 100, "503": 100}
    assert (r.count("ok"), r.count("shed"), r.count("other")) == (200, 100, 100)
    assert {k: v["n"] for k, v in r.latency_ms.items()} == {"ok": 200, "shed": 100, "other": 100}
    assert r.socket_errors == r.timed_out == r.unsent == 0
    assert server.connections <= 8
    for figures in r.latency_ms.values():
        assert 0 <= figures["p50"] <= figures["p90"] <= figures["p99"] <= figures["max"]


def test_connection_close_and_unframed_answers_are_counted_and_the_pool_reopens(
    server: ScriptedServer, tmp_path: Path
) -> None:
    file = bodies(tmp_path, {"status": 200, "close": True}, {"status": 503, "unframed": True})
    r = loadgen.run(url(server), file, rate=1000, duration=0.1, connections=4)
    assert r.sent == 100 and r.statuses == {"200": 50, "503": 50}
    assert r.socket_errors == r.timed_out == r.unsent == 0
    assert server.connections >= 100  # every answer closed its connection


def test_resets_are_socket_errors_and_silence_is_a_timeout(server: ScriptedServer, tmp_path: Path) -> None:
    file = bodies(tmp_path, {"status": 200}, {"reset": True}, {"hang": True}, {"status": 200})
    r = loadgen.run(url(server), file, rate=400, duration=0.1, connections=64, timeout=0.5, drain=2)
    assert r.sent == 40
    assert r.statuses == {"200": 20}
    assert r.socket_errors == 10
    assert sum(r.socket_error_kinds.values()) == 10
    assert set(r.socket_error_kinds) <= {"closed", "reused_closed"}  # closed with the request out
    assert r.timed_out == 10
    assert r.sent == sum(r.statuses.values()) + r.socket_errors + r.timed_out


def test_a_408_on_a_connection_with_no_request_out_is_the_server_closing_it_not_an_error(tmp_path: Path) -> None:
    # Four connections opened up front; one carries a request that is never answered, so the run lasts
    # past the server's idle timeout, which answers the three unused ones 408 and closes them.
    with ScriptedServer(idle_timeout=0.3) as server:
        r = loadgen.run(
            url(server),
            bodies(tmp_path, {"hang": True}),
            rate=10,
            duration=0.1,
            connections=4,
            warm=4,
            timeout=1.0,
            drain=2,
        )
    assert r.sent == 1 and r.timed_out == 1
    assert r.statuses == {}
    assert r.socket_errors == 0 and r.socket_error_kinds == {}
    assert r.idle_timeouts == 3


def test_closed_loop_accounts_for_every_request(server: ScriptedServer, tmp_path: Path) -> None:
    file = bodies(tmp_path, {"status": 200}, {"status": 503})
    r = loadgen.run(url(server), file, closed=True, connections=3, duration=0.3)
    assert r.mode == "closed" and r.sent > 0
    assert r.sent == sum(r.statuses.values()) == server.requests
    assert abs(r.count("ok") - r.count("shed")) <= 1
    assert server.connections == 3


def test_nothing_listening_leaves_requests_unsent(tmp_path: Path) -> None:
    file = bodies(tmp_path, {"status": 200})
    r = loadgen.run(f"http://127.0.0.1:{free_port()}/", file, rate=100, duration=0.1, connections=2, drain=0.5)
    assert r.sent == 0 and r.statuses == {}
    assert r.socket_errors >= 1 and r.unsent == 10


@pytest.mark.parametrize(
    "target, options",
    [
        ("http://10.1.2.3:80/predict", {"rate": 10}),
        ("http://example.com:80/", {"rate": 10}),
        ("http://127.0.0.1/", {"rate": 10}),
        ("http://127.0.0.1:80/", {"rate": 0}),
        ("http://127.0.0.1:80/", {"rate": 10, "connections": 0}),
    ],
)
def test_refuses_non_loopback_targets_and_bad_options(target: str, options: dict[str, float], tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        loadgen.command(target, bodies(tmp_path, {}), **options)  # type: ignore[arg-type]
