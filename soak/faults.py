"""Handles on the real processes the soak breaks: redis-server and the upstream feature API."""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx

from harness import ManagedProcess, RedisServer, free_port, http_ok


class Redis:
    """``harness.RedisServer`` plus a FLUSHALL for the upstream phases."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.url = server.url

    def kill(self) -> None:
        self.server.kill()

    def restart(self) -> None:
        self.server.start()

    def freeze(self) -> None:
        self.server.freeze()

    def thaw(self) -> None:
        self.server.thaw()

    def flushall(self) -> None:
        self.server.client().flushall()


@contextlib.contextmanager
def start_redis(root: Path) -> Iterator[Redis | None]:
    """A private redis-server, or None when the binary is missing."""
    if shutil.which("redis-server") is None:
        yield None
        return
    with RedisServer(root / "redis") as server:
        yield Redis(server)


class Upstream(ManagedProcess):
    """The fault-injecting upstream (``soak.upstream``) in its own process."""

    def __init__(self, root: Path, table: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        super().__init__(
            "upstream",
            [sys.executable, "-m", "soak.upstream", "--port", str(port), "--table", str(table)],
            log_path=root / "upstream.log",
            ready=http_ok(self.url + "/_soak/stats"),
            ready_timeout=30,
            poll_interval=0.1,
        )

    def set_mode(self, mode: str, delay: float = 2.0) -> None:
        httpx.post(self.url + "/_soak/fault", json={"mode": mode, "delay": delay}, timeout=5, trust_env=False)

    def stats(self) -> dict[str, int]:
        return dict(httpx.get(self.url + "/_soak/stats", timeout=5, trust_env=False).json())


@contextlib.contextmanager
def start_upstream(root: Path, table: Path) -> Iterator[Upstream]:
    with Upstream(root, table) as upstream:
        yield upstream
