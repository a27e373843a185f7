"""A server under test: started pinned, awaited until ready, measured, stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
import psutil

from bench.machine import ROOT, SERVER_CPU, BenchError


class Server:
    """A server process pinned to ``SERVER_CPU``, in its own process group.

    ``with Server(...) as server:`` starts it and waits until ``ready_url``
    answers 200 (or, for ``tcp://host:port``, accepts a connection); leaving
    the block sends SIGTERM to the group, then SIGKILL after ``stop_timeout``.
    Its output goes to ``log_path``; the tail is shown if it fails to start.
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        ready_url: str,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        ready_timeout: float = 120.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.ready_url = ready_url
        self.log_path = log_path
        self.env = dict(env or {})
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._proc.pid

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            # taskset execs the command, so the pid is the server's own.
            self._proc = subprocess.Popen(
                ["taskset", "-c", str(SERVER_CPU), *self.command],
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last = "no answer yet"
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while time.monotonic() < deadline:
                code = self._proc.poll() if self._proc else None
                if code is not None:
                    raise BenchError(f"{self.name} exited with code {code} before it was ready\n{self.log_tail()}")
                ok, last = _probe(client, self.ready_url)
                if ok:
                    return
                time.sleep(0.1)
        raise BenchError(
            f"{self.name} not ready after {self.ready_timeout:.0f} s at {self.ready_url} ({last})\n{self.log_tail()}"
        )

    def rss_bytes(self) -> int:
        """Resident memory of the server and all its children, now."""
        proc = psutil.Process(self.pid)
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                total += child.memory_info().rss
        return int(total)

    def stop(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server output)"
        tail = text.splitlines()[-lines:]
        return "\n".join(f"  | {line}" for line in tail) or "(no server output)"


def _probe(client: httpx.Client, url: str) -> tuple[bool, str]:
    if url.startswith("tcp://"):
        host, _, port = url.removeprefix("tcp://").rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=1.0):
                return True, "accepting connections"
        except OSError as exc:
            return False, str(exc)
    try:
        response = client.get(url)
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return (
        response.status_code == 200,
        f"HTTP {response.status_code} {response.text[:200]}",
    )
