"""Run the soak: ``python -m soak.run [--short] [--workspace DIR] [--report FILE]``.

Without ``--workspace`` the demo models are trained into a temporary
directory first. Exit status 0 only if every phase that ran passed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from harness import ServerProcess
from soak import phases
from soak.context import FULL, HEADER_TIMEOUT_SECONDS, SHORT, Config, Soak, has_module
from soak.faults import start_redis, start_upstream
from soak.load import LoadGenerator, RequestFactory
from soak.report import PhaseResult, checks_table, phase_table

Phase = Callable[[Soak], Awaitable[PhaseResult]]

# Order matters only in that each phase leaves the service as it found it.
PHASES: list[Phase] = [
    phases.redis_kill,
    phases.redis_freeze,
    phases.upstream_429,
    phases.upstream_500,
    phases.upstream_slow,
    phases.promote_rollback,
    phases.corrupt_promote,
    phases.bad_flags,
    phases.candidate_raise,
    phases.candidate_hang,
    phases.hostile_clients,
    phases.overload,
]


def train_workspace(root: Path) -> None:
    from app.training.train import train

    train(root / "models", root / "data", seed=7, n_users=400, n_events=6000)


async def run_soak(cfg: Config, root: Path, say: Callable[[str], None] = print) -> list[PhaseResult]:
    """Every phase against one real server process; the last one is SIGTERM."""
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(start_redis(root)) if has_module("app.features.redis_tier") else None
        upstream = (
            stack.enter_context(start_upstream(root, root / "data" / "features.parquet"))
            if has_module("app.features.upstream_api")
            else None
        )
        token = "soak-" + secrets.token_hex(16)
        (root / "flags.json").write_text(json.dumps({"flags": []}))
        (root / "log").mkdir(exist_ok=True)
        env = {
            "MODELSERVE_MODELS_DIR": str(root / "models"),
            "MODELSERVE_FEATURE_TABLE": str(root / "data" / "features.parquet"),
            "MODELSERVE_LOG_DIR": str(root / "log"),
            "MODELSERVE_FLAGS_FILE": str(root / "flags.json"),
            "MODELSERVE_ADMIN_TOKEN": token,
            "MODELSERVE_ALIAS_POLL_SECONDS": "0.5",
            "MODELSERVE_SHUTDOWN_DRAIN_SECONDS": "1",
            "MODELSERVE_WARMUP_ITERATIONS": "2",
            # A short memory TTL so that Redis and the compute source carry traffic all the time.
            "MODELSERVE_MEMORY_MAX_AGE_SECONDS": "0.2",
            # The default 100 ms feature budget assumes a quiet machine; on a shared 2-core box a
            # healthy upstream sometimes needs longer, and a 503 then would not be a fault's doing.
            "MODELSERVE_FEATURE_BUDGET_MS": "1000",
            "MODELSERVE_UPSTREAM_TIMEOUT_MS": "400",
            # The slow candidate (soak/candidates.py) needs >= 0.13 s a run even on an idle core.
            "MODELSERVE_SHADOW_TIMEOUT_SECONDS": "0.05",
            # The hostile-clients phase waits for its half-open connections to be cut; valid clients
            # send each request whole, so only those ever meet this timeout.
            "MODELSERVE_HEADER_READ_TIMEOUT_SECONDS": str(HEADER_TIMEOUT_SECONDS),
        }
        if redis is not None:
            env["MODELSERVE_REDIS_URL"] = redis.url
        if upstream is not None:
            env["MODELSERVE_UPSTREAM_URL"] = upstream.url
        server = ServerProcess(env, root / "server.log")
        stack.callback(server.stop)
        server.wait_ready(120)
        users = pq.read_table(root / "data" / "features.parquet", columns=["user_id"]).column(0).to_pylist()
        load = LoadGenerator(server.url, RequestFactory(users), concurrency=cfg.concurrency, rate=cfg.rate)
        s = Soak(cfg, root, server, load, token, env, redis=redis, upstream=upstream)
        sampler = asyncio.create_task(_sample_rss(s))
        results = []
        try:
            say(f"server ready at {server.url}; phases of >= {cfg.phase_seconds:.0f}s at {cfg.rate:.0f} req/s")
            results.append(await _timed(phases.baseline, s, say))
            rss_start = s.rss_bytes()
            for phase in PHASES:
                results.append(await _timed(phase, s, say))
            rss_end = s.rss_bytes()
            results.append(_rss_result(s, rss_start, rss_end))
            results.append(await _timed(phases.shutdown, s, say))
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            if any(not r.ok for r in results):
                say("server output (tail):\n" + "\n".join(server.output().splitlines()[-40:]))
        return results


async def _timed(phase: Phase, s: Soak, say: Callable[[str], None]) -> PhaseResult:
    t0 = time.monotonic()
    r = await phase(s)
    state = f"skipped ({r.skipped})" if r.skipped else ("pass" if r.ok else "FAIL")
    say(f"  {r.name}: {state} in {time.monotonic() - t0:.1f}s")
    for c in r.checks:
        if not c.ok:
            say(f"    FAILED: {c.what} {c.detail}")
    return r


async def _sample_rss(s: Soak) -> None:
    while True:
        with contextlib.suppress(Exception):
            s.rss.append((time.monotonic(), s.rss_bytes()))
        await asyncio.sleep(0.5)


def _rss_result(s: Soak, start: int, end: int) -> PhaseResult:
    r = PhaseResult("rss", "server memory after the baseline vs before SIGTERM")
    peak = max((b for _, b in s.rss), default=end)
    growth = (end - start) / 2**20
    r.check(
        f"RSS growth bounded (<= {s.cfg.rss_growth_limit_mb:.0f} MiB)",
        growth <= s.cfg.rss_growth_limit_mb,
        f"{start / 2**20:.1f} -> {end / 2**20:.1f} MiB (peak {peak / 2**20:.1f}), growth {growth:+.1f} MiB",
    )
    return r


def report(results: list[PhaseResult], cfg: Config) -> str:
    kind = "short" if cfg.short else "full"
    lines = [
        f"### Soak ({kind}: phases >= {cfg.phase_seconds:.0f} s, {cfg.rate:.0f} req/s, {cfg.concurrency} clients)",
        "",
        phase_table([r for r in results if r.samples or r.skipped]),
        "",
        checks_table(results),
    ]
    notes = [f"- {r.name}: {n}" for r in results for n in r.notes]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def trained_workspace(arg: Path | None) -> Iterator[Path]:
    """``arg`` as it is, or a temporary directory with the demo models trained into it (removed afterwards)."""
    if arg is not None:
        yield arg
        return
    tmp = Path(tempfile.mkdtemp(prefix="modelserve-soak-"))
    try:
        train_workspace(tmp)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m soak.run", description=__doc__.splitlines()[0])
    p.add_argument("--short", action="store_true", help="the CI form: short phases, low rate")
    p.add_argument("--workspace", type=Path, help="a trained workspace (models/, data/) the soak may change")
    p.add_argument("--report", type=Path, help="also write the Markdown tables here")
    args = p.parse_args(argv)
    cfg = SHORT if args.short else FULL
    with trained_workspace(args.workspace) as root:
        results: list[Any] = asyncio.run(run_soak(cfg, root))
    text = report(results, cfg)
    print(text)
    if args.report:
        args.report.write_text(text)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
