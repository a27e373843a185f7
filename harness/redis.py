"""A throwaway ``redis-server``: start, kill, freeze, thaw, restart.

    with RedisServer(tmp_path) as redis:
        redis.freeze()      # SIGSTOP: the port still accepts, nothing answers
        redis.thaw()        # SIGCONT
        redis.kill()        # SIGKILL: connections refused
        redis.restart()     # a fresh, empty server on the same port

Runs with no persistence (``--save '' --appendonly no``) on a free port, so
users never share state. ``client()`` is a plain synchronous redis-py client.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import redis

from harness.ports import free_port, port_open
from harness.process import ManagedProcess


class RedisServer(ManagedProcess):
    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        password: str | None = None,
        binary: str | None = None,
        ready_timeout: float = 10.0,
    ) -> None:
        binary = binary or shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed (make system-deps)")
        self.port = port or free_port()
        self.password = password
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.frozen = False
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        if password is not None:
            command += ["--requirepass", password]
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(
            f"redis-server on port {self.port}",
            command,
            log_path=workdir / f"redis-{self.port}.log",
            ready=lambda: bool(self.client(timeout=0.5).ping()),
            cwd=workdir,
            ready_timeout=ready_timeout,
            poll_interval=0.02,
        )

    def start(self) -> None:
        self.frozen = False
        super().start()

    def client(self, timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )

    def kill(self) -> None:
        """SIGKILL and wait until the port refuses connections."""
        if self.proc is None:
            return
        super().kill()
        self.proc = None
        self.frozen = False
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and port_open(self.port):
            time.sleep(0.01)

    def stop(self, timeout: float | None = None) -> int | None:
        # Nothing to save (no persistence), so there is no graceful shutdown to wait for.
        self.kill()
        return None

    def freeze(self) -> None:
        """SIGSTOP: TCP connections are still accepted by the kernel, but nothing is ever answered."""
        self.signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        self.signal(signal.SIGCONT)
        self.frozen = False

    def restart(self) -> None:
        """A fresh, empty server on the same port."""
        self.kill()
        self.start()
