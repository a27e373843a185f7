"""Running the app under uvicorn, with a drain on SIGTERM.

On the first SIGTERM/SIGINT readiness turns 503 at once; the server keeps
answering for ``shutdown_drain_seconds`` (so a load balancer sees the 503 and
stops routing here), then uvicorn stops accepting, lets in-flight requests
finish and runs the lifespan shutdown (log flush, shadow drain).
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import uvicorn

from app.errors import NotReady
from app.main import create_app
from app.settings import Settings

log = logging.getLogger("modelserve")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, settings: Settings) -> None:
        super().__init__(config)
        self.settings = settings
        self._draining = False
        self.failed: str | None = None

    def fail(self, reason: str) -> None:
        """Start-up failed: stop serving and exit non-zero rather than sit unready."""
        self.failed = reason
        self.should_exit = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        app = self.config.app
        container = getattr(getattr(app, "state", None), "container", None)
        if container is not None:
            container.health.start_draining()
            container.metrics.ready.set(0)
        delay = self.settings.shutdown_drain_seconds
        if self._draining or delay <= 0:
            super().handle_exit(sig, frame)  # a second signal exits without waiting
            return
        self._draining = True
        log.info("draining for %.1fs before shutdown", delay)
        timer = threading.Timer(delay, super().handle_exit, args=(sig, frame))
        timer.daemon = True
        timer.start()


def serve(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
        lifespan="on",
    )
    # uvicorn re-raises the signal it caught once it has shut down, which would
    # end the process with -SIGTERM; a no-op handler makes a drained shutdown exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server = DrainingServer(config, settings)
    app.state.container.on_fatal = server.fail
    server.run()
    if server.failed:
        raise NotReady(f"start-up failed: {server.failed}")
