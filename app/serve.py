"""Running the app under uvicorn: one worker in-process, or several under a supervisor.

Draining on SIGTERM lives in the app's lifespan (``app.main``), so it works
the same in every worker. Several workers share the listening socket
(uvicorn's supervisor) and Prometheus multiprocess mode: the metrics directory
is private to the run (or, when configured, wiped at start), and the files of a
worker that died are marked dead so its live gauges disappear (its counters
stay summed, as Prometheus expects).

Every worker runs uvicorn's httptools protocol with the connection limits of
``app.server.protocol`` (read deadlines, header size cap, connection cap),
under the descriptor limit raised at start (``app.server.descriptors``).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import stat
import sys
import tempfile
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from app.errors import NotReady
from app.main import create_app
from app.server import protocol
from app.server.descriptors import connection_cap, raise_descriptor_limit
from app.server.protocol import ConnectionLimits, ServerConfig
from app.settings import Settings
from app.telemetry import logs

log = logging.getLogger("modelserve")

STARTUP_FAILURE = 3  # uvicorn's supervisor stops instead of restarting a worker that exits with this


class FailFastServer(uvicorn.Server):
    """A uvicorn server that stops when the app reports a failed start-up."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.failed: str | None = None

    def fail(self, reason: str) -> None:
        self.failed = reason
        self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # The protocol's duplicates of the listening socket close with it, even with no connection open.
        protocol.close_listeners(self.server_state)
        await super().shutdown(sockets)


class MetricsAwareSupervisor(Multiprocess):
    """uvicorn's supervisor, marking dead workers' metric files as dead, passing SIGTERM on at once.

    uvicorn's supervisor only looks at its signals every 0.5 s, so its workers
    would turn unready up to half a second after a SIGTERM; here the handler
    passes it to every worker straight away, and ``terminate_all`` skips those
    (a second SIGTERM would cut a worker's drain short). Once the workers are
    told to stop, the supervisor closes its copy of the listening socket: when
    the last worker closes its own, new connections are refused (which clients
    can retry) instead of waiting in the backlog until they are reset.
    """

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self._signalled: set[int] = set()
        signal.signal(signal.SIGTERM, self._forward_sigterm)

    def _forward_sigterm(self, signum: int, frame: object) -> None:
        self.signal_queue.append(signum)  # the supervisor's own shutdown, at its next look
        for process in self.processes:
            pid = process.pid
            if pid is not None and pid not in self._signalled and process.exitcode is None:
                self._signalled.add(pid)
                os.kill(pid, signal.SIGTERM)

    def terminate_all(self) -> None:
        for process in self.processes:
            if process.pid not in self._signalled:
                process.terminate()
        for sock in self.sockets:
            sock.close()

    def keep_subprocess_alive(self) -> None:
        before = {p.pid for p in self.processes}
        super().keep_subprocess_alive()
        after = {p.pid for p in self.processes}
        _mark_dead(before - after)

    def join_all(self) -> None:
        super().join_all()
        _mark_dead({p.pid for p in self.processes})


def _mark_dead(pids: set[int | None]) -> None:
    if not pids or "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return
    from prometheus_client import multiprocess

    for pid in pids:
        if pid is not None:
            multiprocess.mark_process_dead(pid)


def worker_app() -> FastAPI:
    """App factory for supervised workers: settings from the environment; a failed start-up exits the worker."""
    settings = Settings()
    configure_logging(settings)  # a spawned worker starts with no logging configured
    app = create_app(settings, warm_before_listening=True)

    def fail(reason: str) -> None:
        log.error("start-up failed: %s", reason)
        logging.shutdown()
        os._exit(STARTUP_FAILURE)

    app.state.container.on_fatal = fail
    protocol.report_to(app.state.container.metrics, app.state.container.admission)
    return app


def _config(app: FastAPI | str, settings: Settings, limits: ConnectionLimits, **extra: object) -> uvicorn.Config:
    return ServerConfig(
        app,
        limits,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        access_log=False,
        log_level=settings.log_level,
        log_config=logs.log_config(settings.log_format, settings.log_level),
        timeout_graceful_shutdown=30,
        lifespan="on",
        **extra,
    )


def _prepare_metrics_dir(settings: Settings) -> Path:
    """The multiprocess metrics directory, empty; never a link followed, never a guessable name made in /tmp.

    Unset: a fresh private directory (``mkdtemp``: 0700, a random name), so
    nobody else on the machine can plant files or a link there beforehand.
    Configured: refused if it is a symbolic link, not ours, or holds anything
    but Prometheus's ``*.db`` files (a mistyped path, or an empty value read
    as the working directory, is never emptied); the stale ``*.db`` files are
    removed (they would add to this run's counters), never a link followed.
    """
    if settings.metrics_dir is None:
        return Path(tempfile.mkdtemp(prefix="modelserve-metrics-"))
    path = settings.metrics_dir
    try:
        info = path.lstat()
    except FileNotFoundError:
        path.mkdir(mode=0o700, parents=True)
        return path
    if stat.S_ISLNK(info.st_mode):
        raise NotReady(f"MODELSERVE_METRICS_DIR {path} is a symbolic link; refusing to use it")
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise NotReady(f"MODELSERVE_METRICS_DIR {path} is not a directory owned by this user; refusing to use it")
    entries = list(os.scandir(path))
    foreign = sorted(e.name for e in entries if not (e.name.endswith(".db") and e.is_file(follow_symlinks=False)))
    if foreign:
        raise NotReady(
            f"MODELSERVE_METRICS_DIR {path} holds {len(foreign)} entries other than metrics files "
            f"(e.g. {foreign[0]!r}); refusing to empty it: name an empty or new directory"
        )
    for entry in entries:
        os.unlink(entry.path)
    return path


def _limits(settings: Settings) -> ConnectionLimits:
    before, after = raise_descriptor_limit()
    cap = connection_cap(settings.max_connections, after, listeners=1 if settings.grpc_port is None else 2)
    log.info("descriptor limit %d -> %d; connection cap %d per worker", before, after, cap)
    return ConnectionLimits.from_settings(settings, max_connections=cap)


def configure_logging(settings: Settings) -> None:
    """The service's log: the configured format (``text`` or ``json``) and level (``app.telemetry.logs``)."""
    logs.configure(settings.log_format, settings.log_level)


def serve(settings: Settings) -> None:
    configure_logging(settings)
    # uvicorn re-raises the signal it caught once it has shut down, which would
    # end the process with -SIGTERM; a no-op handler makes a drained shutdown exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    limits = _limits(settings)
    if settings.workers > 1:
        metrics_dir = _prepare_metrics_dir(settings)
        log.info("metrics directory %s", metrics_dir)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        # Workers are fresh processes that read their settings from the environment.
        os.environ.update({"MODELSERVE_HOST": settings.host, "MODELSERVE_PORT": str(settings.port)})
        try:
            config = _config("app.serve:worker_app", settings, limits, factory=True, workers=settings.workers)
            sock = config.bind_socket()
            supervisor = MetricsAwareSupervisor(config, sockets=[sock])
            supervisor.run()
        finally:
            if settings.metrics_dir is None:
                shutil.rmtree(metrics_dir, ignore_errors=True)
        if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
            raise NotReady("a worker failed to start; see the log above")
        return
    app = create_app(settings)
    protocol.report_to(app.state.container.metrics, app.state.container.admission)
    server = FailFastServer(_config(app, settings, limits))
    app.state.container.on_fatal = server.fail
    server.run()
    if server.failed:
        raise NotReady(f"start-up failed: {server.failed}")
    sys.stdout.flush()
