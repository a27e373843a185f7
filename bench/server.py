"""A server under test: started pinned, awaited until ready, measured, stopped."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from bench.machine import ROOT, SERVER_CPU, BenchError
from harness import ManagedProcess, NotReady, ProcessExited, http_ok, tcp_open


class Server(ManagedProcess):
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
        self.ready_url = ready_url
        super().__init__(
            name,
            # taskset execs the command, so the pid is the server's own.
            ["taskset", "-c", str(SERVER_CPU), *command],
            log_path=log_path,
            ready=_probe(ready_url),
            env=env,
            cwd=ROOT,
            ready_timeout=ready_timeout,
            stop_timeout=stop_timeout,
            poll_interval=0.1,
        )

    def start(self) -> None:
        try:
            super().start()
        except (ProcessExited, NotReady) as exc:
            raise BenchError(f"{exc} at {self.ready_url}") from None


def _probe(url: str) -> Callable[[], bool]:
    if url.startswith("tcp://"):
        host, _, port = url.removeprefix("tcp://").rpartition(":")
        return tcp_open(int(port), host)
    return http_ok(url, timeout=2.0)
