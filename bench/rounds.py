"""Scenarios run in paired, alternating rounds; medians and ratios over them.

All servers of a run are up at once, each pinned to ``SERVER_CPU``. Within a
round every scenario is loaded in turn at each concurrency, and the order
flips every round (A B, B A, A B, ...), so drift on a shared machine weighs on
all of them alike. A figure is the median over rounds; a ratio against the
baseline is the median of the per-round ratios, each from two back-to-back
runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.machine import BenchError, require_tools
from bench.server import Server
from bench.wrk import WrkResult, run_wrk, write_load_script
from harness import free_port


@dataclass(frozen=True)
class Scenario:
    """One server configuration under load.

    In ``command`` and in ``env`` values, ``{port}`` becomes a free port and
    ``{scratch}`` an empty directory owned by this scenario for the run.
    ``bodies`` are JSON values POSTed to ``path`` in rotation.
    """

    name: str
    command: Sequence[str]
    bodies: Sequence[Any]
    path: str = "/predict"
    ready_path: str = "/health/ready"
    env: Mapping[str, str] = field(default_factory=dict)
    ready_timeout: float = 120.0


@dataclass(frozen=True)
class Plan:
    concurrency: tuple[int, ...] = (1, 8, 64)
    duration_s: int = 5
    rounds: int = 3
    warmup_s: int = 1


@dataclass(frozen=True)
class Summary:
    """Medians over rounds; ratios are medians of per-round ratios to the baseline."""

    rps: float
    rps_min: float
    rps_max: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    errors: int
    rps_ratio: float | None
    p50_ratio: float | None
    p99_ratio: float | None


@dataclass
class Results:
    plan: Plan
    names: list[str]
    baseline: str | None
    runs: dict[tuple[str, int], list[WrkResult]] = field(default_factory=dict)
    rss_bytes: dict[str, int] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    load_average: tuple[float, float, float] = field(default_factory=os.getloadavg)
    load_average_end: tuple[float, float, float] | None = None

    def summary(self, name: str, concurrency: int) -> Summary | None:
        runs = self.runs.get((name, concurrency))
        if not runs:
            return None
        base = self.runs.get((self.baseline, concurrency)) if self.baseline else None
        rps = [r.rps for r in runs]
        return Summary(
            rps=statistics.median(rps),
            rps_min=min(rps),
            rps_max=max(rps),
            p50_ms=statistics.median(r.p50_ms for r in runs),
            p99_ms=statistics.median(r.p99_ms for r in runs),
            non2xx=sum(r.non2xx for r in runs),
            errors=sum(r.errors for r in runs),
            rps_ratio=_paired_ratio(runs, base, lambda r: r.rps),
            p50_ratio=_paired_ratio(runs, base, lambda r: r.p50_ms),
            p99_ratio=_paired_ratio(runs, base, lambda r: r.p99_ms),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": self.plan.__dict__,
            "baseline": self.baseline,
            "started_at": self.started_at,
            "load_average": self.load_average,
            "load_average_end": self.load_average_end,
            "rss_bytes": self.rss_bytes,
            "runs": [
                {
                    "scenario": name,
                    "concurrency": c,
                    "rounds": [r.__dict__ for r in runs],
                }
                for (name, c), runs in self.runs.items()
            ],
        }


def _paired_ratio(
    runs: Sequence[WrkResult],
    base: Sequence[WrkResult] | None,
    figure: Callable[[WrkResult], float],
) -> float | None:
    if not base:
        return None
    ratios = [figure(a) / figure(b) for a, b in zip(runs, base, strict=False) if figure(b) > 0]
    return statistics.median(ratios) if ratios else None


def _fill(template: str, port: int, scratch: Path) -> str:
    return template.replace("{port}", str(port)).replace("{scratch}", str(scratch))


def preflight(name: str, url: str, bodies: Sequence[Any], log: Callable[[str], None]) -> None:
    """POST a few bodies once and say so if any is refused: a benchmark of errors is noise."""
    with httpx.Client(trust_env=False, timeout=5.0) as client:
        for body in bodies[:5]:
            response = client.post(url, json=body)
            if not response.is_success:
                log(f"WARNING {name}: POST {url} answered {response.status_code}: {response.text[:300]}")
                return


def run_bench(
    scenarios: Sequence[Scenario],
    plan: Plan,
    *,
    baseline: str | None = None,
    log: Callable[[str], None] = print,
) -> Results:
    """Start every scenario's server, load them in alternating rounds, stop them."""
    require_tools()
    names = [s.name for s in scenarios]
    if len(set(names)) != len(names):
        raise BenchError(f"scenario names must be unique: {names}")
    for scenario in scenarios:
        if shutil.which(scenario.command[0]) is None:
            raise BenchError(f"{scenario.name}: command not found: {scenario.command[0]}")
    if baseline is not None and baseline not in names:
        baseline = None
    results = Results(plan=plan, names=names, baseline=baseline)
    with (
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        targets: list[tuple[Scenario, Server, str, Path]] = []
        for index, scenario in enumerate(scenarios):
            scratch = Path(tmp) / f"{index}"
            scratch.mkdir()
            port = free_port()
            command = [_fill(part, port, scratch) for part in scenario.command]
            base_url = f"http://127.0.0.1:{port}"
            server = Server(
                scenario.name,
                command,
                ready_url=base_url + scenario.ready_path,
                log_path=scratch / "server.log",
                env={k: _fill(v, port, scratch) for k, v in scenario.env.items()},
                ready_timeout=scenario.ready_timeout,
            )
            log(f"starting {scenario.name}: {' '.join(command)}")
            began = time.monotonic()
            stack.enter_context(server)
            log(f"  ready in {time.monotonic() - began:.1f} s")
            url = base_url + scenario.path
            preflight(scenario.name, url, scenario.bodies, log)
            script = write_load_script(scratch, scenario.bodies)
            targets.append((scenario, server, url, script))

        if plan.warmup_s > 0:
            for _, _, url, script in targets:
                run_wrk(url, script, max(plan.concurrency), plan.warmup_s)

        for round_no in range(plan.rounds):
            order = targets if round_no % 2 == 0 else targets[::-1]
            for concurrency in plan.concurrency:
                for scenario, _, url, script in order:
                    result = run_wrk(url, script, concurrency, plan.duration_s)
                    results.runs.setdefault((scenario.name, concurrency), []).append(result)
                    log(
                        f"round {round_no + 1}/{plan.rounds} C={concurrency:<3} "
                        f"{scenario.name:<16} {result.rps:>9,.0f} req/s  "
                        f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms"
                        + _problems(result.non2xx, result.errors)
                    )

        for scenario, server, _, _ in targets:
            results.rss_bytes[scenario.name] = server.rss_bytes()
        results.load_average_end = os.getloadavg()
    return results


def _problems(non2xx: int, errors: int) -> str:
    return f"  ({non2xx} non-2xx, {errors} socket errors)" if non2xx or errors else ""
