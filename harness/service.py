"""A real ``modelserve serve`` process on a free port.

Started at construction with the given settings in its environment (so a
test can also watch it fail to start); ``wait_live()`` / ``wait_ready()``
poll the health endpoints; ``stop()`` returns the exit code.
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.ports import free_port
from harness.process import ManagedProcess
from harness.ready import http_ok

MODELSERVE = Path(sys.executable).parent / "modelserve"


class ServerProcess(ManagedProcess):
    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        args: list[str] | None = None,
        cwd: Path | None = None,
        prefix: list[str] | None = None,
    ) -> None:
        """``prefix`` runs the server under another command (e.g. ``prlimit --nofile=256:512 --``)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            "modelserve serve",
            [*(prefix or []), str(MODELSERVE), "serve", *(args or [])],
            log_path=log_path,
            env={**env, "MODELSERVE_HOST": "127.0.0.1", "MODELSERVE_PORT": str(self.port)},
            cwd=cwd,
            stop_timeout=30.0,
        )
        self.spawn()

    def wait_live(self, timeout: float = 30) -> None:
        self.poll_until(http_ok(self.url + "/health/live"), timeout, "live")

    def wait_ready(self, timeout: float = 60) -> None:
        self.poll_until(http_ok(self.url + "/health/ready"), timeout, "ready")
