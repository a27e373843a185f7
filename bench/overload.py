"""The service under more load than it can serve: does it refuse the excess quickly and keep serving the rest?

    python -m bench.overload                       # capacity, closed loop C=512, open loop 1.5× and 3×
    python -m bench.overload --duration 5 --profile

One ``modelserve serve`` (default settings, so admission control as shipped)
pinned to ``SERVER_CPU``; the load comes from ``bench.loadgen`` (a small C
generator, ``bench/openloop.c``, compiled on first use) pinned to
``LOAD_CPU``. Steps:

1. *capacity*: closed loop at a few connections; the best 2xx rate is the
   peak throughput the other steps are compared with;
2. closed loop at C=512 (wrk-like: every connection resends at once);
3. open loop at 1.5 × and 3 × capacity (requests sent on schedule whatever
   the answers; latency counted from when each was due).

For each: goodput (2xx/s, and ÷ capacity), the shed fraction (503), the
client-side latency of shed answers and p99 of the answered requests, the
server's own time per refusal (``modelserve_requests_shed_seconds``), any
other status or socket error, and the server's RSS before and after.

``--profile`` also samples the server with py-spy (``PYSPY``, default
``py-spy`` on PATH; see bench/README.md) under closed-loop load on
``/predict``, ``/predict/batch`` (100 rows) and V2 infer, and writes the
top functions by share to ``bench/results/profile.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.loadgen import LoadResult, build
from bench.loadgen import run as run_load
from bench.machine import LOAD_CPU, ROOT, BenchError, require_tools
from bench.profile import render as render_profile
from bench.run import MANIFEST, predict_bodies, service_scenario
from bench.server import Server
from bench.v2 import V2_PATH, v2_body
from harness import free_port

RESULTS = ROOT / "bench" / "results" / "overload.md"
PROFILE_RESULTS = ROOT / "bench" / "results" / "profile.md"
QUEUE_LIMIT_MS = 50.0
"""The default MODELSERVE_MAX_QUEUE_MS: answered p99 should stay under it plus 10 ms."""


def loadgen(url: str, bodies_file: Path, **options: Any) -> LoadResult:
    """One run of the generator (``bench/openloop.c``) pinned to ``LOAD_CPU``."""
    try:
        return run_load(url, bodies_file, prefix=("taskset", "-c", str(LOAD_CPU)), **options)
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"loadgen: {exc}") from None


def shed_seconds(base_url: str) -> tuple[float, float, float]:
    """Refusals so far, the server time they took in all, and how many the protocol made (from /metrics).

    The protocol's refusals (``app.server.protocol.EarlyShed``) are counted
    in ``http_requests_total`` but never timed by the app: the difference is theirs.
    """
    text = httpx.get(base_url + "/metrics", timeout=10, trust_env=False).text
    count = total = answered = timed = 0.0
    route = 'route="/predict"'
    for line in text.splitlines():
        if line.startswith("modelserve_requests_shed_seconds_count"):
            count = float(line.split()[-1])
        elif line.startswith("modelserve_requests_shed_seconds_sum"):
            total = float(line.split()[-1])
        elif line.startswith("modelserve_http_requests_total{") and route in line:
            answered += float(line.split()[-1])
        elif line.startswith("modelserve_http_request_duration_seconds_count{") and route in line:
            timed += float(line.split()[-1])
    return count, total, answered - timed


def _write_bodies(directory: Path, name: str, bodies: Sequence[Any]) -> Path:
    path = directory / f"{name}.jsonl"
    path.write_text("".join(json.dumps(b, separators=(",", ":")) + "\n" for b in bodies))
    return path


def _row(label: str, r: LoadResult, capacity: float, shed: tuple[float, float, float], rss: tuple[int, int]) -> str:
    total = sum(r.statuses.values()) or 1
    shed_n = r.count("shed")
    other = {s: n for s, n in r.statuses.items() if not (200 <= int(s) < 300 or s == "503")}
    ok_lat, shed_lat = r.latency_ms.get("ok", {}), r.latency_ms.get("shed", {})
    server_us = shed[1] / shed[0] * 1e6 if shed[0] else 0.0
    early = shed[2] / shed_n if shed_n else 0.0
    return (
        f"| {label} | {r.sent:,} | {r.rate('ok'):,.0f} | {r.rate('ok') / capacity:.2f} | {shed_n / total:.1%} "
        f"| {early:.0%} "
        f"| {ok_lat.get('p50', 0):.1f} / {ok_lat.get('p99', 0):.1f} | {shed_lat.get('p50', 0):.1f} / "
        f"{shed_lat.get('p99', 0):.1f} | {server_us:.0f} | {other or '-'} / {r.socket_errors} / "
        f"{r.timed_out} / {r.unsent} | {r.late_sends:,} | {rss[0] / 1e6:.0f} → {rss[1] / 1e6:.0f} |"
    )


def profile(
    pyspy: str, server: Server, base_url: str, files: dict[str, Path], duration: int, out_dir: Path
) -> list[str]:
    """py-spy on the server under closed-loop load on each endpoint; the summaries' Markdown."""
    sections = []
    for name, (path, bodies_file) in {
        "/predict": ("/predict", files["predict"]),
        "/predict/batch (100 rows)": ("/predict/batch", files["batch"]),
        "V2 infer (JSON, one row)": (V2_PATH, files["v2"]),
    }.items():
        raw = out_dir / f"profile-{path.strip('/').replace('/', '-')}.txt"
        spy = subprocess.Popen(
            [pyspy, "record", "-p", str(server.pid), "-d", str(duration), "-r", "200", "-f", "raw", "-o", str(raw)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            loadgen(base_url + path, bodies_file, connections=16, duration=duration, closed=True)
        finally:
            spy.wait(timeout=duration + 60)
        if raw.exists():
            sections.append(render_profile(f"{name}, closed loop C=16", raw, top=20))
    return sections


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.overload", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=int(os.environ.get("BENCH_DURATION", 10)))
    parser.add_argument("--factors", default="1.5,3")
    parser.add_argument("--profile", action="store_true", help="also write a py-spy summary (bench/results/profile.md)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    try:
        require_tools()
        try:
            build()
        except RuntimeError as exc:
            raise BenchError(str(exc)) from None
        if not MANIFEST.is_file():
            raise BenchError(f"{MANIFEST} not found: run `make models` first")
        pyspy = os.environ.get("PYSPY") or shutil.which("py-spy")
        if args.profile and not pyspy:
            raise BenchError("--profile needs py-spy: set PYSPY or put it on PATH (see bench/README.md)")
        manifest = json.loads(MANIFEST.read_text())
        bodies, source = predict_bodies()
        scenario = service_scenario("service", bodies)
        load_start = os.getloadavg()[0]
        lines: list[str] = []
        with tempfile.TemporaryDirectory(prefix="bench-overload-") as tmp:
            scratch = Path(tmp)
            files = {
                "predict": _write_bodies(scratch, "predict", bodies),
                "batch": _write_bodies(
                    scratch, "batch", [{"instances": bodies[i : i + 100]} for i in range(0, len(bodies), 100)]
                ),
                "v2": _write_bodies(scratch, "v2", [v2_body(manifest, b) for b in bodies]),
            }
            port = free_port()
            base_url = f"http://127.0.0.1:{port}"
            command = [part.replace("{port}", str(port)) for part in scenario.command]
            with Server(
                "service", command, ready_url=base_url + "/health/ready", log_path=scratch / "server.log"
            ) as server:
                url = base_url + "/predict"
                loadgen(url, files["predict"], connections=16, duration=2, closed=True)  # warm-up
                capacity = 0.0
                for c in (4, 16):
                    r = loadgen(url, files["predict"], connections=c, duration=args.duration, closed=True)
                    print(f"capacity C={c}: {r.rate('ok'):,.0f} 2xx/s, statuses {r.statuses}")
                    capacity = max(capacity, r.rate("ok"))
                if capacity <= 0:
                    raise BenchError("the service answered nothing with 2xx while measuring capacity")
                runs: list[tuple[str, dict[str, Any]]] = [("closed loop, C=512", {"connections": 512, "closed": True})]
                for factor in (float(f) for f in args.factors.split(",") if f):
                    rate = factor * capacity
                    runs.append((f"open loop, {factor:g} × capacity ({rate:,.0f}/s)", {"rate": round(rate, 1)}))
                rows, raw_results = [], {}
                for label, options in runs:
                    rss_before = server.rss_bytes()
                    shed_before = shed_seconds(base_url)
                    r = loadgen(url, files["predict"], duration=args.duration, **options)
                    shed_after = shed_seconds(base_url)
                    shed = (
                        shed_after[0] - shed_before[0],
                        shed_after[1] - shed_before[1],
                        shed_after[2] - shed_before[2],
                    )
                    rows.append(_row(label, r, capacity, shed, (rss_before, server.rss_bytes())))
                    raw_results[label] = r.__dict__
                    print(rows[-1])
                    time.sleep(1)
                profile_sections = (
                    profile(pyspy, server, base_url, files, args.duration, scratch) if args.profile and pyspy else []
                )
        load_end = os.getloadavg()[0]
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130

    lines += [
        f"# Overload, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"`modelserve serve` with default settings (queue-time limit {QUEUE_LIMIT_MS:g} ms) on one pinned core; "
        f"load from `bench.loadgen` (`bench/openloop.c`) on the other. Capacity (best closed-loop 2xx/s at C=4 or 16): "
        f"**{capacity:,.0f} req/s**. {args.duration} s per run. Load average (1 min): {load_start:.2f} at the start, "
        f"{load_end:.2f} at the end. Bodies: {source}.",
        "",
        "| run | sent | goodput 2xx/s | ÷ capacity | shed | of which by the protocol | answered p50 / p99 ms "
        "| shed p50 / p99 ms | server µs per refusal | other statuses / socket errors / timed out / unsent "
        "| late sends | RSS MB |",
        "|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        *rows,
        "",
        "Targets at 3 × capacity: goodput ≥ 0.9 × capacity, answered p99 ≤ queue-time limit + 10 ms, "
        "refusals ≤ 1 ms of server time, no status but 200 and 503, RSS flat. Client-side latencies include "
        "the generator's own delays; *late sends* counts requests sent over 10 ms after they were due.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    PROFILE_RESULTS.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    args.output.with_suffix(".json").write_text(json.dumps({"capacity": capacity, "runs": raw_results}, indent=1))
    if profile_sections:
        PROFILE_RESULTS.write_text("# Profile of the service under load\n\n" + "\n".join(profile_sections) + "\n")
        print(f"profile summary written to {PROFILE_RESULTS}")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
