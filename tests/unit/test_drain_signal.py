"""The drain handler, with the signal landing inside a metric update.

A signal handler runs in the main thread between two bytecodes of whatever
that thread was doing. A worker's main thread counts every request after its
response is sent, inside prometheus_client's lock (one lock for all metrics in
multiprocess mode, ``--workers``; one per metric otherwise), and that lock is
not re-entrant: a handler that sets a metric itself would wait for the lock
its own thread holds, and the worker would never exit.

Here the signal is raised from inside that lock, deterministically: the
amount added to a metric raises it while prometheus_client holds the lock.
Each case runs in a fresh process (the value class is chosen when
prometheus_client is imported), which the test kills if it hangs.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
import uvloop

from app.container import build_container
from app.main import _install_drain_handler
from app.settings import Settings

HANG = 60  # seconds: far beyond what the case needs; only a deadlock reaches it


class SignalInsideTheLock:
    """An amount whose addition raises ``sig``: the handler runs while the metric's lock is held."""

    def __init__(self, sig: int) -> None:
        self.sig = sig

    def __radd__(self, value: float) -> float:
        signal.raise_signal(self.sig)  # the Python handler runs before this returns
        return value


def _signal_inside_a_metric_update(models_dir: Path, metric: str, sig: int, drain: float, out: Connection) -> None:
    """In a fresh process: the handlers as a worker has them, then ``sig`` from inside ``metric``'s update."""

    async def main() -> tuple[bool, list[int], float | None]:
        server_calls: list[int] = []
        signal.signal(sig, lambda signum, frame: server_calls.append(signum))  # stands for uvicorn's handler
        c = build_container(Settings(models_dir=models_dir, shutdown_drain_seconds=drain))
        c.health.mark_ready()
        c.metrics.ready.set(1)
        _install_drain_handler(c)
        getattr(c.metrics, metric).inc(SignalInsideTheLock(sig))
        draining_at_once = c.health.draining
        registry = c.metrics.exposition_registry()
        while not server_calls or registry.get_sample_value("modelserve_ready") != 0:
            await asyncio.sleep(0.01)
        return draining_at_once, server_calls, registry.get_sample_value("modelserve_ready")

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        out.send(runner.run(main()))


@pytest.mark.parametrize(
    ("multiprocess", "metric", "sig", "drain"),
    [
        (True, "in_flight", signal.SIGTERM, 0.0),  # --workers: any metric's update holds the shared lock
        (True, "in_flight", signal.SIGTERM, 0.05),  # with a drain delay: the server's handler comes later
        (True, "in_flight", signal.SIGINT, 0.0),
        (False, "ready", signal.SIGTERM, 0.0),  # one process: the readiness gauge's own lock
    ],
    ids=["workers-sigterm", "workers-sigterm-drain", "workers-sigint", "one-process-sigterm"],
)
def test_signal_inside_a_metric_update_drains_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, multiprocess: bool, metric: str, sig: int, drain: float
) -> None:
    if multiprocess:
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    else:
        monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    spawn = multiprocessing.get_context("spawn")  # as uvicorn starts its workers
    receiver, sender = spawn.Pipe(duplex=False)
    process = spawn.Process(
        target=_signal_inside_a_metric_update, args=(tmp_path / "models", metric, sig, drain, sender)
    )
    process.start()
    try:
        answered = receiver.poll(HANG)
        assert answered, "the drain handler never returned: it waited for a lock its own thread held"
        draining_at_once, server_calls, ready = receiver.recv()
    finally:
        process.kill()
        process.join()
    assert draining_at_once, "readiness must turn 503 in the handler itself"
    assert server_calls == [sig], "the server's own handler must run once"
    assert ready == 0
