"""The Markdown report: one table per run, targets marked PASS / FAIL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.machine import LOAD_CPU, SERVER_CPU
from bench.rounds import Results


@dataclass(frozen=True)
class Check:
    """A target: ``value`` must be at least (or at most) ``limit``; None = not measured."""

    label: str
    value: float | None
    limit: float
    at_least: bool
    unit: str = ""
    context: str = ""  # e.g. what the baseline reached, to judge a FAIL by

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.limit if self.at_least else self.value <= self.limit

    def render(self) -> str:
        sign = "≥" if self.at_least else "≤"
        verdict = {True: "PASS", False: "FAIL", None: "SKIP"}[self.passed]
        value = "not measured" if self.value is None else f"{self.value:.2f}{self.unit}"
        context = f"; {self.context}" if self.context else ""
        return f"{verdict}  {self.label}: {value} (target {sign} {self.limit:g}{self.unit}{context})"


def render_table(results: Results) -> str:
    """One row per concurrency and scenario; ratio columns only when a baseline ran."""
    base = results.baseline
    header = ["C", "scenario", "req/s", "p50 ms", "p99 ms", "non-2xx / errors", "req/s min–max"]
    align = ["--:", ":--", "--:", "--:", "--:", "--:", "--:"]
    if base:
        header[3:3], align[3:3] = [f"req/s ÷ {base}"], ["--:"]
        header[5:5], align[5:5] = [f"p50 ÷ {base}"], ["--:"]
    rows = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for concurrency in results.plan.concurrency:
        for name in results.names:
            s = results.summary(name, concurrency)
            if s is None:
                continue
            cells = [str(concurrency), name, f"{s.rps:,.0f}", f"{s.p50_ms:.2f}", f"{s.p99_ms:.2f}"]
            cells += [f"{s.non2xx} / {s.errors}", f"{s.rps_min:,.0f}–{s.rps_max:,.0f}"]
            if base:
                cells[3:3] = [_ratio(s.rps_ratio)]
                cells[5:5] = [_ratio(s.p50_ratio)]
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def render_report(results: Results, checks: Iterable[Check] = (), notes: Iterable[str] = ()) -> str:
    plan = results.plan
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(results.started_at))
    load = f"{results.load_average[0]:.2f} at the start"
    if results.load_average_end:
        load += f", {results.load_average_end[0]:.2f} at the end"
    lines = [
        f"# Benchmark, {when}",
        "",
        f"Server pinned to CPU {SERVER_CPU}, `wrk -t1` to CPU {LOAD_CPU}; "
        f"{plan.rounds} round{'s' if plan.rounds != 1 else ''} × {plan.duration_s} s per concurrency, scenarios "
        "alternating; medians over rounds, ratios are medians of per-round ratios; "
        "p99 is corrected for coordinated omission by wrk, so a single stall shows. "
        f"Load average (1 min): {load}.",
        *notes,
        "",
        render_table(results),
        "",
    ]
    if results.rss_bytes:
        rss = ", ".join(f"{name} {b / 1e6:.0f} MB" for name, b in results.rss_bytes.items())
        lines += [f"RSS after the run (with children): {rss}.", ""]
    checks = list(checks)
    if checks:
        lines += ["Targets:", "", *(f"- {c.render()}" for c in checks), ""]
    return "\n".join(lines)


def write_report(text: str, results: Results, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.with_suffix(".json").write_text(json.dumps(results.to_json(), indent=2) + "\n")


def publish(text: str, results: Results, path: Path) -> None:
    """Write the report (Markdown + every round as JSON) and print it."""
    write_report(text, results, path)
    print()
    print(text)
    print(f"written to {path}")
