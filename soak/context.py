"""What every phase works with: the workspace, the server process, the load, the fault handles."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from harness import MODELSERVE, ServerProcess
from soak.load import LoadGenerator
from soak.report import PhaseResult

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


@dataclass(frozen=True)
class Config:
    short: bool
    phase_seconds: float
    """Minimum length of a phase's traffic (a phase also lasts as long as its fault script)."""
    rate: float
    """Total requests per second across all clients."""
    concurrency: int
    max_requests: int
    """Per phase: the load stops early once this many were sent."""
    rss_growth_limit_mb: float
    half_open: int
    """Hostile-clients phase: connections that never finish their headers (well below the descriptor limit)."""
    huge_headers: int
    """Hostile-clients phase: requests with one 8 MiB header."""
    unread_clients: int
    """Hostile-clients phase: clients that POST an invalid ~1 MB batch and never read the 422."""
    flood_rate: float
    """Overload phase: requests per second the open-loop flood offers (several times what the server serves)."""


HEADER_TIMEOUT_SECONDS = 2.0
"""The server's MODELSERVE_HEADER_READ_TIMEOUT_SECONDS during the soak (10 s by default)."""

SHORT = Config(
    short=True,
    phase_seconds=3.0,
    rate=100.0,
    concurrency=4,
    max_requests=2_000,
    rss_growth_limit_mb=64,
    half_open=200,
    huge_headers=2,
    unread_clients=2,
    flood_rate=4000.0,
)
FULL = Config(
    short=False,
    phase_seconds=20.0,
    rate=200.0,
    concurrency=8,
    max_requests=20_000,
    rss_growth_limit_mb=64,
    half_open=400,
    huge_headers=4,
    unread_clients=4,
    flood_rate=4000.0,
)


def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


@dataclass
class Soak:
    cfg: Config
    root: Path
    server: ServerProcess
    load: LoadGenerator
    admin_token: str
    env: dict[str, str]
    redis: Any | None = None
    upstream: Any | None = None
    rss: list[tuple[float, int]] = field(default_factory=list)
    ok_request_ids: set[str] = field(default_factory=set)

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def flags_file(self) -> Path:
        return self.root / "flags.json"

    # --- traffic ------------------------------------------------------------
    async def traffic(
        self, result: PhaseResult, script: Callable[[], Awaitable[None]] | None = None, seconds: float | None = None
    ) -> None:
        """Load for at least ``seconds`` (default: the phase length) and for as long as ``script`` runs."""
        stop = asyncio.Event()
        load = asyncio.create_task(self.load.run(result.name, stop, self.cfg.max_requests))
        try:
            await asyncio.gather(
                asyncio.sleep(seconds if seconds is not None else self.cfg.phase_seconds),
                script() if script else asyncio.sleep(0),
            )
        finally:
            stop.set()
            samples = await load
        result.samples.extend(samples)
        self.ok_request_ids.update(s.request_id for s in samples if s.status == 200)

    async def wait_for(self, what: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await asyncio.to_thread(what):
                return True
            await asyncio.sleep(step)
        return False

    # --- the server's own view ---------------------------------------------
    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.server.url + path, timeout=5, trust_env=False, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.post(self.server.url + path, timeout=10, trust_env=False, **kw)

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics as ``name{labels}`` -> value."""
        out: dict[str, float] = {}
        for line in self.get("/metrics").text.splitlines():
            m = _SAMPLE.match(line)
            if m:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        return out

    def metric_sum(self, name: str, **labels: str) -> float:
        total = 0.0
        for key, value in self.metrics().items():
            base, _, rest = key.partition("{")
            if base != name:
                continue
            if all(f'{k}="{v}"' in rest for k, v in labels.items()):
                total += value
        return total

    def has_admin(self) -> bool:
        return self.get("/admin/models", headers=self.admin_headers()).status_code == 200

    def served_version(self) -> str | None:
        return self.load.last_version

    # --- command line ---------------------------------------------------------
    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **self.env}
        return subprocess.run(
            [str(MODELSERVE), *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    def alias_target(self, alias: str = "production") -> str:
        return os.readlink(self.models_dir / alias)

    # --- resources -------------------------------------------------------------
    def server_threads(self) -> int:
        return int(psutil.Process(self.server.pid).num_threads())

    def rss_bytes(self) -> int:
        return self.server.rss_bytes()
