"""Polling a file for changes: cheap ``stat`` signatures, no inotify.

A signature is (inode, size, mtime_ns): a rename over the file (how editors
and Kubernetes ConfigMap updates replace files) changes the inode, an edit in
place changes size or mtime.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from app.rollout.flags import Flag, FlagsError, load_flags
from app.telemetry.metrics import Metrics

log = logging.getLogger("modelserve.rollout")

Signature = tuple[int, int, int] | None


def signature(path: Path) -> Signature:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class FlagsWatcher:
    """Reads the flags file when it changes; a bad file keeps the last good flags (and is counted)."""

    def __init__(self, path: Path, metrics: Metrics) -> None:
        self.path = path
        self.metrics = metrics
        self.flags: tuple[Flag, ...] = ()
        self._seen: Signature = None
        self.loaded_at: float | None = None
        self.error: str | None = None
        """Why the current file was refused (``None`` when the file in use is the current one)."""

    def load_initial(self) -> tuple[Flag, ...]:
        """Read the file at start-up; a missing or invalid file fails start-up (there is no last good one)."""
        self._seen = signature(self.path)
        flags = load_flags(self.path)
        self._install(flags)
        return flags

    def check(self, force: bool = False) -> tuple[Flag, ...] | None:
        """The new flags when the file changed (or ``force``) and is valid, else ``None``."""
        sig = signature(self.path)
        if sig == self._seen and not force:
            return None
        self._seen = sig
        try:
            flags = load_flags(self.path)
        except FlagsError as exc:
            self.error = exc.message
            self.metrics.flags_reload_errors.inc()
            log.warning("flags file %s refused, keeping the last good flags: %s", self.path, exc.message)
            return None
        self._install(flags)
        log.info("flags reloaded from %s: %s", self.path, ", ".join(f.name for f in flags) or "none")
        return flags

    def _install(self, flags: tuple[Flag, ...]) -> None:
        self.flags = flags
        self.loaded_at = time.time()
        self.error = None

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "loaded_at": self.loaded_at, "error": self.error}
