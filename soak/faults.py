"""Handles on the real processes the soak breaks: redis-server and the upstream feature API."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support.server import free_port


class Redis:
    """``tests.support.redis_server.RedisServer`` plus a FLUSHALL for the upstream phases."""

    def __init__(self, server: object) -> None:
        self.server = server
        self.url: str = server.url  # type: ignore[attr-defined]

    def kill(self) -> None:
        self.server.kill()  # type: ignore[attr-defined]

    def restart(self) -> None:
        self.server.start()  # type: ignore[attr-defined]

    def freeze(self) -> None:
        self.server.freeze()  # type: ignore[attr-defined]

    def thaw(self) -> None:
        self.server.thaw()  # type: ignore[attr-defined]

    def flushall(self) -> None:
        self.server.client().flushall()  # type: ignore[attr-defined]


@contextlib.contextmanager
def start_redis(root: Path) -> Iterator[Redis | None]:
    """A private redis-server, or None when the binary or the test support is missing."""
    if shutil.which("redis-server") is None:
        yield None
        return
    try:
        from tests.support.redis_server import RedisServer
    except ImportError:
        yield None
        return
    server = RedisServer(root / "redis")
    server.start()
    try:
        yield Redis(server)
    finally:
        server.stop()


class Upstream:
    """The fault-injecting upstream (``soak.upstream``) in its own process."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"

    def set_mode(self, mode: str, delay: float = 2.0) -> None:
        httpx.post(self.url + "/_soak/fault", json={"mode": mode, "delay": delay}, timeout=5, trust_env=False)

    def stats(self) -> dict[str, int]:
        return dict(httpx.get(self.url + "/_soak/stats", timeout=5, trust_env=False).json())


@contextlib.contextmanager
def start_upstream(root: Path, table: Path) -> Iterator[Upstream]:
    port = free_port()
    log = open(root / "upstream.log", "wb")  # noqa: SIM115  (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "soak.upstream", "--port", str(port), "--table", str(table)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    up = Upstream(proc, port)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                up.stats()
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"upstream did not start: {(root / 'upstream.log').read_text()}") from None
                time.sleep(0.1)
        yield up
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
