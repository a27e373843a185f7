"""Where the benchmark runs: repository root, CPU pinning, preconditions."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU = 0  # every server under test runs here
LOAD_CPU = 1  # and wrk here, so load and server never share a core


class BenchError(Exception):
    """Stops the benchmark; the message is shown to the user as is."""


def require_tools() -> None:
    """Fail with a clear message when the benchmark cannot run on this machine."""
    missing = [tool for tool in ("wrk", "taskset") if shutil.which(tool) is None]
    if missing:
        raise BenchError(
            f"{' and '.join(missing)} not found on PATH: run `make system-deps` (apt packages `wrk`, `util-linux`)"
        )
    allowed = os.sched_getaffinity(0)
    if not {SERVER_CPU, LOAD_CPU} <= allowed:
        raise BenchError(
            f"needs CPU {SERVER_CPU} for the server and CPU {LOAD_CPU} for wrk; "
            f"this process may only use CPUs {sorted(allowed)}"
        )
