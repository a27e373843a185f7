"""A throwaway ``redis-server`` for one test: start, kill, freeze, thaw, restart.

    with RedisServer(tmp_path) as redis:
        settings = ws.settings(redis_url=redis.url)
        redis.freeze()      # SIGSTOP: the port still accepts, nothing answers
        redis.thaw()        # SIGCONT
        redis.kill()        # SIGKILL: connections refused
        redis.restart()     # a fresh, empty server on the same port

Runs with no persistence (``--save '' --appendonly no``) on a free port, so
tests never share state. ``client()`` is a plain synchronous redis-py client
for inspecting what the service wrote.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.support.server import free_port


def redis_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        pytest.skip("redis-server is not installed (make system-deps)")
    return path


class RedisServer:
    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.binary = redis_binary()
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.frozen = False

    def start(self, timeout: float = 10.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / f"redis-{self.port}.log", "ab")  # noqa: SIM115  (the child owns it)
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.frozen = False
        self.wait_ping(timeout)

    def wait_ping(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                if self.client(timeout=0.5).ping():
                    return
            except (redis.RedisError, OSError):
                pass
            time.sleep(0.02)
        raise TimeoutError(f"redis-server on port {self.port} did not answer PING")

    def client(self, timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=timeout, socket_connect_timeout=timeout)

    def kill(self) -> None:
        """SIGKILL and wait until the port refuses connections."""
        if self.proc is None:
            return
        if self.frozen:
            self.thaw()
        self.proc.kill()
        self.proc.wait()
        self.proc = None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self._accepting():
            time.sleep(0.01)

    def freeze(self) -> None:
        """SIGSTOP: TCP connections are still accepted by the kernel, but nothing is ever answered."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)
        self.frozen = False

    def restart(self) -> None:
        """A fresh, empty server on the same port."""
        self.kill()
        self.start()

    def _accepting(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        self.kill()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
