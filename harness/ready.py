"""Readiness checks for ``ManagedProcess(ready=...)``: each returns a callable that says "ready" or not.

A check may also raise (connection refused, timeout); the process keeps
polling and shows the last such error if it never becomes ready.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx

from harness.ports import port_open


def http_ok(url: str, timeout: float = 1.0) -> Callable[[], bool]:
    """Ready once GET ``url`` answers 200."""

    def check() -> bool:
        response = httpx.get(url, timeout=timeout, trust_env=False)
        if response.status_code != 200:
            raise NotYet(f"HTTP {response.status_code} {response.text[:200]}")
        return True

    return check


def tcp_open(port: int, host: str = "127.0.0.1") -> Callable[[], bool]:
    """Ready once ``host:port`` accepts a connection."""
    return lambda: port_open(port, host, timeout=1.0)


def log_line(path: Path, pattern: str) -> Callable[[], bool]:
    """Ready once a line of the file at ``path`` matches the regular expression ``pattern``."""
    compiled = re.compile(pattern, re.MULTILINE)

    def check() -> bool:
        return path.exists() and compiled.search(path.read_text(errors="replace")) is not None

    return check


class NotYet(Exception):
    """A check's reason for "not ready", shown if the process never becomes ready."""
