"""The one way the harness runs a real process: own session, log file, readiness wait, group stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Self

import psutil


class ProcessExited(RuntimeError):
    """The process ended while it was expected to start or run."""


class NotReady(TimeoutError):
    """The process kept running but its readiness check never passed in time."""


class ManagedProcess:
    """A child process in its own session whose stdout and stderr go to ``log_path``.

    ``start()`` spawns it and, if a ``ready`` check is given, polls that check
    until it passes (``ProcessExited`` if the process dies first, ``NotReady``
    after ``ready_timeout``; both messages end with the log's tail).
    ``stop()`` sends SIGTERM to the whole process group, then SIGKILL after
    ``stop_timeout``. As a context manager it starts on entry (unless already
    started) and stops on exit, also when start-up fails.

    ``env`` is laid over this process's environment. ``pid``, ``signal()``,
    ``kill()`` and ``restart()`` let a test break the process on purpose.
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        log_path: Path,
        ready: Callable[[], bool] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        poll_interval: float = 0.05,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.log_path = log_path
        self.ready = ready
        self.env = dict(env or {})
        self.cwd = cwd
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.poll_interval = poll_interval
        self.proc: subprocess.Popen[bytes] | None = None

    # --- lifecycle ---------------------------------------------------------------
    def spawn(self) -> None:
        """Start the process without waiting for it to become ready."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Appending keeps the output of earlier runs across restart(); the child owns its own descriptor.
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start(self) -> None:
        """Spawn, then wait until the ``ready`` check passes."""
        self.spawn()
        if self.ready is not None:
            self.poll_until(self.ready, self.ready_timeout, "ready")

    def poll_until(self, check: Callable[[], bool], timeout: float, what: str = "ready") -> None:
        """Poll ``check`` until it returns true; fail early if the process exits."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            code = self.proc.poll() if self.proc is not None else None
            if code is not None:
                raise ProcessExited(f"{self.name} exited with code {code} before it was {what}\n{self.log_tail()}")
            try:
                if check():
                    return
            except Exception as exc:  # a refused connection is the normal "not yet"
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise NotReady(f"{self.name} not {what} after {timeout:g} s ({last})\n{self.log_tail()}")
            time.sleep(self.poll_interval)

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM to the process, SIGKILL to its group after the grace period; the exit code (None if never started).

        SIGTERM goes to the leader only, as an orchestrator sends it: a supervisor (``serve --workers``) passes
        it on to its workers itself. Signalling the whole group made workers race their own start-up.
        """
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            # A stopped (SIGSTOPped) process only acts on SIGTERM once it runs again.
            self._signal_group(signal.SIGCONT)
            try:
                proc.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                proc.wait()
        return proc.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit by itself; its exit code (``subprocess.TimeoutExpired`` after ``timeout``)."""
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not started")
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL to the process group, at once, and reap it."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            self._signal_group(signal.SIGKILL)
            proc.wait()

    def restart(self) -> None:
        """Stop, then start again with the same command (and port, if it has one)."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        if self.proc is None:
            try:
                self.start()
            except BaseException:
                self.stop()
                raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- state and signals ---------------------------------------------------------
    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not started")
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` to the process itself (not its group), e.g. to test its own shutdown."""
        os.kill(self.pid, sig)

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def rss_bytes(self) -> int:
        """Resident memory of the process and all its children, now."""
        proc = psutil.Process(self.pid)
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        return int(total)

    # --- output ----------------------------------------------------------------------
    def output(self) -> str:
        """Everything the process wrote so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        tail = self.output().splitlines()[-lines:]
        return "\n".join(f"  | {line}" for line in tail) or f"  (no output from {self.name})"
