"""One small function per fault. Each returns a ``PhaseResult``; a phase whose
feature this build lacks returns ``skipped`` with the reason instead of running.

Every phase sends only valid requests for known users, so any 4xx, any 5xx
(except a 503 with Retry-After where a phase says features are truly
unavailable) and any connection error is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from harness.hostile import open_half
from soak import candidates, hostile
from soak.context import HEADER_TIMEOUT_SECONDS, Soak
from soak.report import PhaseResult


async def baseline(s: Soak) -> PhaseResult:
    r = PhaseResult("baseline", "steady load, no fault")
    await s.traffic(r)
    r.assert_traffic()
    target = s.alias_target()
    r.check("every answer from the production version", set(r.versions()) == {target}, str(dict(r.versions())))
    return r


# --- Redis ------------------------------------------------------------------------
def _redis_reason(s: Soak) -> str | None:
    if s.redis is None:
        return "no Redis tier in this build (or no redis-server binary)"
    if s.metric_sum("modelserve_feature_lookups_total", tier="redis") == 0:
        return "the server, started with MODELSERVE_REDIS_URL, made no Redis lookups"
    return None


async def redis_kill(s: Soak) -> PhaseResult:
    r = PhaseResult("redis-kill", "redis-server SIGKILLed mid-traffic, restarted on the same port")
    if (why := _redis_reason(s)) is not None:
        r.skipped = why
        return r
    redis = s.redis
    assert redis is not None  # _redis_reason checked it
    third = s.cfg.phase_seconds / 3
    failures_before = _redis_failures(s)
    state: dict[str, float] = {}

    async def script() -> None:
        await asyncio.sleep(third)
        await asyncio.to_thread(redis.kill)
        await asyncio.sleep(third)
        state["failures"] = _redis_failures(s) - failures_before
        await asyncio.to_thread(redis.restart)
        hits = s.metric_sum("modelserve_feature_lookups_total", tier="redis", outcome="hit")
        state["back"] = await s.wait_for(
            lambda: s.metric_sum("modelserve_feature_lookups_total", tier="redis", outcome="hit") > hits, 30
        )

    await s.traffic(r, script)
    r.assert_traffic()
    r.check("Redis failures were seen while it was down", state["failures"] > 0, f"{state['failures']:.0f}")
    r.check("Redis tier answers again after the restart", bool(state["back"]))
    return r


async def redis_freeze(s: Soak) -> PhaseResult:
    r = PhaseResult("redis-freeze", "redis-server SIGSTOPped (hangs, no errors), then SIGCONT")
    if (why := _redis_reason(s)) is not None:
        r.skipped = why
        return r
    redis = s.redis
    assert redis is not None  # _redis_reason checked it
    third = s.cfg.phase_seconds / 3
    state: dict[str, float] = {}

    async def script() -> None:
        await asyncio.sleep(third)
        before = _redis_failures(s)
        skipped = s.metric_sum("modelserve_feature_lookups_total", tier="redis", outcome="skipped")
        await asyncio.to_thread(redis.freeze)
        await asyncio.sleep(third)
        # Lookups skipped without asking Redis can only happen while the breaker is open.
        state["opened"] = s.metric_sum("modelserve_feature_lookups_total", tier="redis", outcome="skipped") > skipped
        state["failures"] = _redis_failures(s) - before
        await asyncio.to_thread(redis.thaw)
        hits = s.metric_sum("modelserve_feature_lookups_total", tier="redis", outcome="hit")
        state["back"] = await s.wait_for(
            lambda: s.metric_sum("modelserve_feature_lookups_total", tier="redis", outcome="hit") > hits, 30
        )

    await s.traffic(r, script)
    r.assert_traffic()
    worst = max((x.latency for x in r.samples), default=0.0)
    p99 = r.latency_ms(99)
    r.check("lookups gave up (timeouts counted)", state["failures"] > 0, f"{state['failures']:.0f}")
    r.check("the circuit breaker opened (lookups skipped)", bool(state["opened"]))
    r.check("Redis tier answers again after SIGCONT", bool(state["back"]))
    # Lookups that waited on the frozen server would take the whole 1 s feature budget.
    r.check(
        "requests did not wait on the frozen Redis (p99 < 1 s)",
        p99 < 1000,
        f"p99 {p99:.1f} ms, max {worst * 1000:.1f} ms",
    )
    return r


def _redis_failures(s: Soak) -> float:
    m = s.metrics()
    return sum(
        v
        for k, v in m.items()
        if k.startswith("modelserve_feature_lookups_total{")
        and 'tier="redis"' in k
        and ('outcome="error"' in k or 'outcome="skipped"' in k or 'outcome="timeout"' in k)
    )


# --- upstream ------------------------------------------------------------------------
async def _upstream(s: Soak, mode: str, description: str) -> PhaseResult:
    r = PhaseResult(f"upstream-{mode}", description, allow_503=True)
    upstream = s.upstream
    if upstream is None:
        r.skipped = "no upstream feature source in this build"
        return r
    if s.metric_sum("modelserve_feature_lookups_total", tier="upstream") == 0:
        r.skipped = "the server, started with MODELSERVE_UPSTREAM_URL, made no upstream calls"
        return r
    state: dict[str, float] = {}

    async def script() -> None:
        # Without this the Redis tier would answer every miss and the upstream would never be asked.
        if s.redis is not None:
            await asyncio.to_thread(s.redis.flushall)
        before = await asyncio.to_thread(upstream.stats)
        await asyncio.to_thread(upstream.set_mode, mode)
        await asyncio.sleep(s.cfg.phase_seconds)
        await asyncio.to_thread(upstream.set_mode, "ok")
        after = await asyncio.to_thread(upstream.stats)
        state["faulted"] = after.get(mode, 0) - before.get(mode, 0)

    stale_before = s.metric_sum("modelserve_feature_lookups_total", tier="memory", outcome="stale")
    await s.traffic(r, script, seconds=0)
    r.assert_traffic()
    stale = s.metric_sum("modelserve_feature_lookups_total", tier="memory", outcome="stale") - stale_before
    r.check(f"the upstream answered {mode} to the service", state["faulted"] > 0, f"{state['faulted']:.0f} calls")
    r.notes.append(f"stale values served: {stale:.0f}")
    return r


async def upstream_429(s: Soak) -> PhaseResult:
    return await _upstream(s, "429", "upstream answers 429 with Retry-After: 1")


async def upstream_500(s: Soak) -> PhaseResult:
    return await _upstream(s, "500", "upstream answers 500")


async def upstream_slow(s: Soak) -> PhaseResult:
    return await _upstream(s, "slow", "upstream answers after 2 s (beyond the request's feature budget)")


# --- registry and rollout ----------------------------------------------------------
async def promote_rollback(s: Soak) -> PhaseResult:
    r = PhaseResult("promote-rollback", "modelserve promote v3, then rollback, under load (hot reload)")
    if not s.has_admin():
        r.skipped = "the service has no admin API / hot reload in this build"
        return r
    start = s.alias_target()
    new = "v3" if start != "v3" else "v2"
    state: dict[str, object] = {}

    async def script() -> None:
        await asyncio.sleep(s.cfg.phase_seconds / 4)
        p = await asyncio.to_thread(s.cli, "promote", new)
        state["promote"] = p.returncode
        state["switched"] = await s.wait_for(lambda: s.served_version() == new, 30)
        await asyncio.sleep(s.cfg.phase_seconds / 4)
        p = await asyncio.to_thread(s.cli, "rollback")
        state["rollback"] = p.returncode
        state["back"] = await s.wait_for(lambda: s.served_version() == start, 30)

    await s.traffic(r, script)
    r.assert_traffic()
    r.check("promote exited 0", state["promote"] == 0)
    r.check(f"the service switched to {new} by itself", bool(state["switched"]))
    r.check("rollback exited 0", state["rollback"] == 0)
    r.check(f"the service returned to {start}", bool(state["back"]))
    r.check("every answer from one of the two versions", set(r.versions()) <= {start, new}, str(dict(r.versions())))
    return r


def make_corrupt_copy(models_dir: Path, source: str, name: str) -> Path:
    """A copy of ``source`` whose model.onnx no longer matches its manifest checksum."""
    dst = models_dir / name
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(models_dir / source, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["version"] = name
    (dst / "manifest.json").write_text(json.dumps(manifest))
    onnx = dst / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    return dst


async def corrupt_promote(s: Soak) -> PhaseResult:
    r = PhaseResult("corrupt-promote", "promote of a tampered artifact: CLI, admin reload and a hand-made symlink")
    start = s.alias_target()
    bad = "v3-tampered"
    make_corrupt_copy(s.models_dir, "v3", bad)
    hot = s.has_admin()
    state: dict[str, object] = {}

    async def script() -> None:
        await asyncio.sleep(s.cfg.phase_seconds / 4)
        p = await asyncio.to_thread(s.cli, "promote", bad)
        state["cli"] = p
        state["alias_after_cli"] = s.alias_target()
        if not hot:
            return
        errors_before = s.metric_sum("modelserve_model_load_errors_total")
        # An operator bypassing the CLI: the running service must refuse the version itself.
        tmp = s.models_dir / ".production.soak-tmp"
        os.symlink(bad, tmp)
        os.replace(tmp, s.models_dir / "production")
        reload = await asyncio.to_thread(s.post, "/admin/reload", headers=s.admin_headers())
        state["reload"] = reload
        state["refused"] = await s.wait_for(
            lambda: s.metric_sum("modelserve_model_load_errors_total") > errors_before, 15
        )
        await asyncio.sleep(s.cfg.phase_seconds / 4)
        tmp = s.models_dir / ".production.soak-tmp"
        os.symlink(start, tmp)
        os.replace(tmp, s.models_dir / "production")
        await asyncio.to_thread(s.post, "/admin/reload", headers=s.admin_headers())

    await s.traffic(r, script)
    r.assert_traffic()
    p = state["cli"]
    lines = p.stderr.strip().splitlines()  # type: ignore[attr-defined]
    r.check("CLI promote refused (non-zero exit)", p.returncode != 0, f"exit {p.returncode}")  # type: ignore[attr-defined]
    r.check(
        "refusal is one line naming the checksum, no traceback",
        len(lines) == 1 and "checksum" in lines[0] and "Traceback" not in p.stderr,  # type: ignore[attr-defined]
        lines[0] if lines else "",
    )
    r.check("alias unchanged after the refused promote", state["alias_after_cli"] == start)
    r.check("no answer from the tampered version", bad not in r.versions(), str(dict(r.versions())))
    if hot:
        reload = state["reload"]
        r.check(
            "admin reload onto the tampered version is a 409 naming the checksum",
            reload.status_code == 409 and "checksum" in reload.text,  # type: ignore[attr-defined]
            f"{reload.status_code} {reload.text[:160]}",  # type: ignore[attr-defined]
        )
        r.check("the service counted the refused load", bool(state["refused"]))
        r.check(f"kept serving {start} throughout", set(r.versions()) == {start}, str(dict(r.versions())))
    else:
        r.notes.append("hot reload absent: the running service was not asked to load the tampered version")
    shutil.rmtree(s.models_dir / bad, ignore_errors=True)
    return r


async def bad_flags(s: Soak) -> PhaseResult:
    r = PhaseResult("bad-flags", "a flags file sends everyone to v1, then is replaced by a broken file")
    start = s.alias_target()
    good = {"flags": [{"name": "soak-all", "version": "v1", "percent": 100}]}
    s.flags_file.write_text(json.dumps(good))
    routed = await s.wait_for(lambda: _one_version(s) == "v1", 10)
    if not routed:
        s.flags_file.write_text(json.dumps({"flags": []}))
        r.skipped = "the service does not route by MODELSERVE_FLAGS_FILE in this build"
        return r
    state: dict[str, object] = {}

    async def script() -> None:
        errors = s.metric_sum("modelserve_flags_reload_errors_total")
        await asyncio.sleep(s.cfg.phase_seconds / 3)
        s.flags_file.write_text('{"flags": [{"name": "soak-all", "version": ')  # truncated JSON
        state["counted"] = await s.wait_for(lambda: s.metric_sum("modelserve_flags_reload_errors_total") > errors, 15)
        await asyncio.sleep(s.cfg.phase_seconds / 3)
        state["kept"] = s.served_version()
        s.flags_file.write_text(json.dumps({"flags": []}))
        state["back"] = await s.wait_for(lambda: s.served_version() == start, 15)

    await s.traffic(r, script)
    r.assert_traffic()
    r.check("the broken file was refused and counted", bool(state["counted"]))
    r.check("the last good flags kept serving v1", state["kept"] == "v1", str(state["kept"]))
    r.check(f"removing the flag returned everyone to {start}", bool(state["back"]))
    return r


def _one_version(s: Soak) -> str | None:
    body = s.load.factory.body(f"soak-probe-{time.monotonic_ns()}")
    resp = s.post("/predict", json=body)
    if resp.status_code == 200:
        s.ok_request_ids.add(str(body["request_id"]))
    return resp.headers.get("x-model-version")


# --- shadow (candidate) ------------------------------------------------------------------
def _shadow_state(s: Soak) -> dict[str, Any] | None:
    r = s.get("/admin/models", headers=s.admin_headers())
    if r.status_code != 200:
        return None
    shadow = r.json().get("shadow")
    return shadow if isinstance(shadow, dict) else None


def _outcomes(s: Soak) -> dict[str, float]:
    return {
        o: s.metric_sum("modelserve_shadow_predictions_total", outcome=o)
        for o in ("ok", "error", "timeout", "dropped", "incompatible")
    }


async def _point_candidate(s: Soak, version: str) -> bool:
    tmp = s.models_dir / ".candidate.soak-tmp"
    os.symlink(version, tmp)
    os.replace(tmp, s.models_dir / "candidate")
    await asyncio.to_thread(s.post, "/admin/reload", headers=s.admin_headers())
    return await s.wait_for(lambda: (_shadow_state(s) or {}).get("candidate") == version, 30)


RECOVERY_SECONDS = 120.0


async def _candidate(s: Soak, mode: str, description: str) -> PhaseResult:
    r = PhaseResult(f"candidate-{mode}", description)
    shadow = _shadow_state(s)
    if shadow is None or "candidate" not in shadow:
        r.skipped = "no shadow candidate (admin API shows none) in this build"
        return r
    original = os.readlink(s.models_dir / "candidate") if (s.models_dir / "candidate").is_symlink() else None
    if original is None:
        r.skipped = "the registry has no candidate alias"
        return r
    name = f"{original}-{mode}"
    builder = candidates.make_raising if mode == "raise" else candidates.make_slow
    await asyncio.to_thread(builder, s.models_dir, original, name)
    start = s.alias_target()
    if not await _point_candidate(s, name):
        r.check(f"the service loaded {name} as the candidate", False, str(_shadow_state(s)))
        return r
    state: dict[str, Any] = {}

    async def script() -> None:
        before = _outcomes(s)
        await asyncio.sleep(s.cfg.phase_seconds / 3)
        state["threads"] = [s.server_threads()]
        await asyncio.sleep(s.cfg.phase_seconds * 2 / 3)
        state["threads"].append(s.server_threads())
        after = _outcomes(s)
        state["delta"] = {k: after[k] - before[k] for k in after}
        # Put the real candidate back under load: the shadow must recover by itself.
        state["restored"] = await _point_candidate(s, original)
        ok = _outcomes(s)["ok"]
        t0 = time.monotonic()
        # Records queued for the old candidate are still run (and time out) first, so this can take a while.
        state["recovered"] = await s.wait_for(lambda: _outcomes(s)["ok"] > ok, RECOVERY_SECONDS)
        state["recovery"] = time.monotonic() - t0

    await s.traffic(r, script, seconds=0)
    delta = state["delta"]
    r.assert_traffic()
    r.check(f"every answer from the primary ({start})", set(r.versions()) == {start}, str(dict(r.versions())))
    if mode == "raise":
        # A renamed input is a different input signature: the shadow refuses it up front (incompatible).
        r.check(
            "candidate errors or refusals counted, none reached a user",
            delta["error"] + delta["incompatible"] > 0,
            str(delta),
        )
    else:
        r.check(
            "candidate runs timed out (or were dropped), none waited on",
            delta["timeout"] + delta["dropped"] > 0,
            str(delta),
        )
        t1, t2 = state["threads"]
        # Unbounded, every timeout would leave a thread behind (hundreds here); idle pool threads may add one or two.
        r.check("no thread piles up behind the stuck candidate (<= +2)", t2 <= t1 + 2, f"{t1} -> {t2}")
    r.check(f"the candidate alias returned to {original}", bool(state["restored"]))
    r.check(
        f"the shadow recovered under load (ok outcomes again within {RECOVERY_SECONDS:.0f} s)",
        bool(state["recovered"]),
        f"after {state['recovery']:.1f} s",
    )
    r.notes.append(f"shadow outcomes while faulty: {', '.join(f'{k}={v:.0f}' for k, v in delta.items())}")
    r.notes.append(f"shadow back to ok {state['recovery']:.1f} s after the candidate alias was restored")
    shutil.rmtree(s.models_dir / name, ignore_errors=True)
    return r


async def candidate_raise(s: Soak) -> PhaseResult:
    return await _candidate(s, "raise", "the candidate raises on every shadow run (an input the path lacks)")


async def candidate_hang(s: Soak) -> PhaseResult:
    return await _candidate(s, "hang", "each candidate run takes >= 0.13 s against a 0.05 s shadow timeout (CPU-bound)")


# --- hostile clients -------------------------------------------------------------
HUGE_HEADER_BYTES = 8 * 1024 * 1024
UNREAD_INSTANCES = 120
"""Instances of the never-reading clients' batch: each with 650 unknown names, ~1 MB in all (a 422)."""
HOSTILE_RSS_LIMIT_MB = 32.0


async def hostile_clients(s: Soak) -> PhaseResult:
    r = PhaseResult(
        "hostile-clients",
        "half-open connections, 8 MiB headers and clients that never read a 422, beside the valid load",
    )
    cfg = s.cfg
    state: dict[str, Any] = {}
    probes: list[tuple[float, int]] = []
    peak = [s.rss_bytes()]
    rss_before = peak[0]
    timed_out = s.metric_sum("modelserve_http_connections_refused_total", reason="header_timeout")
    too_large = s.metric_sum("modelserve_http_connections_refused_total", reason="header_too_large")
    done = asyncio.Event()

    async def watch() -> None:
        # Liveness probes, each on a fresh connection, and the server's memory, while the hostile clients act.
        fresh = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=s.server.url, timeout=5, limits=fresh, trust_env=False) as client:
            while not done.is_set():
                t0 = time.monotonic()
                try:
                    status = (await client.get("/health/live")).status_code
                except httpx.HTTPError:
                    status = 0
                probes.append((time.monotonic() - t0, status))
                with contextlib.suppress(Exception):
                    peak[0] = max(peak[0], s.rss_bytes())
                await asyncio.sleep(0.1)

    async def script() -> None:
        watcher = asyncio.create_task(watch())
        port = s.server.port
        body = hostile.invalid_batch(s.load.factory.body("soak-hostile"), 650, UNREAD_INSTANCES)
        state["body"] = len(body)
        opened = asyncio.to_thread(open_half, port, cfg.half_open)
        headers = asyncio.gather(
            *(asyncio.to_thread(hostile.send_huge_header, port, HUGE_HEADER_BYTES) for _ in range(cfg.huge_headers))
        )
        unread = asyncio.gather(
            *(asyncio.to_thread(hostile.post_unread, port, "/predict/batch", body) for _ in range(cfg.unread_clients))
        )
        half, answers, readers = await asyncio.gather(opened, headers, unread)
        t_opened = time.monotonic()
        state["half_open"] = len(half)
        state["headers"] = answers
        try:
            # Every half-open connection must have been answered 408 and closed by the header timeout.
            await asyncio.sleep(HEADER_TIMEOUT_SECONDS + 1.0)
            deadline = t_opened + HEADER_TIMEOUT_SECONDS + 5.0
            cut = [await asyncio.to_thread(_answered, h, 408, deadline) for h in half]
            state["cut"] = sum(cut)
            state["read"] = [await asyncio.to_thread(hostile.read_answer, c, 10.0) for c in readers]
        finally:
            hostile.close_all(half)
            hostile.close_all(readers)
            done.set()
            await watcher
        await asyncio.sleep(0.5)
        state["rss_after"] = s.rss_bytes()

    await s.traffic(r, script)
    r.assert_traffic()
    failed = [p for p in probes if p[1] != 200]
    slowest = max((p[0] for p in probes), default=0.0)
    r.check(
        "/health/live answered 200 throughout",
        bool(probes) and not failed,
        f"{len(probes)} probes, {len(failed)} failed, slowest {slowest * 1000:.0f} ms",
    )
    n = state["half_open"]
    r.check(f"{cfg.half_open} half-open connections opened", n == cfg.half_open, str(n))
    r.check(
        f"every half-open connection answered 408 and closed by the {HEADER_TIMEOUT_SECONDS:g} s header timeout",
        state["cut"] == n,
        f"{state['cut']} of {n}; header_timeout counted "
        f"{s.metric_sum('modelserve_http_connections_refused_total', reason='header_timeout') - timed_out:.0f}",
    )
    statuses = [status for status, _ in state["headers"]]
    refused_large = s.metric_sum("modelserve_http_connections_refused_total", reason="header_too_large") - too_large
    r.check(
        f"every {HUGE_HEADER_BYTES >> 20} MiB header answered 431",
        statuses == [431] * cfg.huge_headers,
        f"{statuses}, slowest {max((t for _, t in state['headers']), default=0) * 1000:.0f} ms; header_too_large "
        f"counted {refused_large:.0f}",
    )
    sizes = [len(data) for data in state["read"]]
    codes = [hostile.status_of(data) for data in state["read"]]
    r.check(
        "the never-reading clients' batches were answered 422 (read afterwards)",
        codes == [422] * cfg.unread_clients,
        f"{codes}; {state['body']:,}-byte bodies, answers of {min(sizes, default=0):,}-{max(sizes, default=0):,} bytes",
    )
    growth = (state["rss_after"] - rss_before) / 2**20
    r.check(
        f"RSS back near its level afterwards (<= +{HOSTILE_RSS_LIMIT_MB:.0f} MiB)",
        growth <= HOSTILE_RSS_LIMIT_MB,
        f"{rss_before / 2**20:.1f} -> {state['rss_after'] / 2**20:.1f} MiB (peak {peak[0] / 2**20:.1f}), "
        f"growth {growth:+.1f} MiB",
    )
    return r


def _answered(sock: socket.socket, status: int, deadline: float) -> bool:
    """``sock`` received an answer with ``status`` and was closed by the server before ``deadline``."""
    data, closed = hostile.read_all(sock, max(0.05, deadline - time.monotonic()))
    return closed and hostile.status_of(data) == status


# --- overload ---------------------------------------------------------------------
FLOOD_CONNECTIONS = 512
OVERLOAD_RSS_LIMIT_MB = 32.0
SHED_SERVER_SECONDS_LIMIT = 0.001
"""A refusal must cost the server at most this much of its own time (mean over the phase)."""


def _features_unavailable(s: Soak) -> float:
    """Requests answered 503 "features unavailable": the feature source failed and no stale value covered it.

    On a starved machine the upstream can miss the feature budget during the
    flood; that 503 (with ``Retry-After``) is the service's honest answer,
    not a shed one.
    """
    lookups = "modelserve_feature_lookups_total"
    source_errors = s.metric_sum(lookups, outcome="error") - s.metric_sum(lookups, tier="redis", outcome="error")
    return source_errors - s.metric_sum(lookups, outcome="stale")


async def overload(s: Soak) -> PhaseResult:
    """An open-loop flood of valid /predict requests, several times what the server can serve, beside the load."""
    cfg = s.cfg
    r = PhaseResult(
        "overload",
        f"open-loop flood of {cfg.flood_rate:,.0f} valid /predict requests/s beside the load (admission control)",
        allow_503=True,
    )
    try:
        from bench import loadgen

        await asyncio.to_thread(loadgen.build)
    except (ImportError, RuntimeError) as exc:
        r.skipped = f"no open-loop generator: {exc}"
        return r
    bodies = s.root / "flood.jsonl"
    bodies.write_bytes(b"".join(orjson.dumps(s.load.factory.body(f"soak-flood-{i}")) + b"\n" for i in range(500)))
    shed_before = s.metric_sum("modelserve_requests_shed_total")
    unavailable_before = _features_unavailable(s)
    seconds_before = s.metric_sum("modelserve_requests_shed_seconds_sum")
    rss_before = s.rss_bytes()
    probes: list[tuple[str, int]] = []
    state: dict[str, Any] = {}
    done = asyncio.Event()

    async def watch() -> None:
        # Health and metrics, each on a fresh connection, while the flood is on: never refused.
        fresh = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=s.server.url, timeout=5, limits=fresh, trust_env=False) as client:
            while not done.is_set():
                for path in ("/health/live", "/health/ready", "/metrics"):
                    try:
                        probes.append((path, (await client.get(path)).status_code))
                    except httpx.HTTPError:
                        probes.append((path, 0))
                await asyncio.sleep(0.2)

    async def script() -> None:
        watcher = asyncio.create_task(watch())
        try:
            state["flood"] = await asyncio.to_thread(
                loadgen.run,
                s.server.url + "/predict",
                bodies,
                rate=cfg.flood_rate,
                duration=cfg.phase_seconds,
                connections=FLOOD_CONNECTIONS,
                timeout=10.0,
                drain=10.0,
            )
        finally:
            done.set()
            await watcher
        # Right after the flood, the service serves as before: a few requests in a row, all answered 200.
        async with httpx.AsyncClient(base_url=s.server.url, timeout=5, trust_env=False) as client:
            state["after"] = [
                (await client.post("/predict", json=s.load.factory.body(f"soak-after-flood-{i}"))).status_code
                for i in range(20)
            ]
        state["rss_after"] = s.rss_bytes()

    await s.traffic(r, script)
    r.assert_traffic()
    flood = state["flood"]
    ok, shed = flood.count("ok"), flood.count("shed")
    others = {k: v for k, v in flood.statuses.items() if k not in ("200", "503")}
    figures = (
        f"{flood.sent:,} sent: {ok:,} answered 200 ({flood.rate('ok'):,.0f}/s), {shed:,} refused 503; "
        f"answered p50/p99 {flood.latency_ms.get('ok', {}).get('p50', 0):.0f}/"
        f"{flood.latency_ms.get('ok', {}).get('p99', 0):.0f} ms, refused "
        f"{flood.latency_ms.get('shed', {}).get('p50', 0):.0f}/{flood.latency_ms.get('shed', {}).get('p99', 0):.0f} ms"
    )
    r.notes.append(f"overload flood: {figures}")
    r.check("the flood was partly served and partly refused", ok > 0 and shed > 0, figures)
    r.check(
        "the flood got only 200 and 503, no socket error, nothing unanswered",
        not others and flood.socket_errors == 0 and flood.timed_out == 0 and flood.unsent == 0,
        f"other statuses {others or '-'}, socket errors {flood.socket_errors} {flood.socket_error_kinds or ''}, "
        f"timed out {flood.timed_out}, "
        f"unsent {flood.unsent}",
    )
    refused = s.metric_sum("modelserve_requests_shed_total") - shed_before
    unavailable = _features_unavailable(s) - unavailable_before
    seen = shed + r.counts()["503"]
    r.check(
        "every 503 seen was counted: as shed, or as features unavailable",
        refused + unavailable >= seen,
        f"{refused:.0f} shed + {unavailable:.0f} features unavailable counted, {seen} seen",
    )
    per_refusal = (s.metric_sum("modelserve_requests_shed_seconds_sum") - seconds_before) / max(refused, 1)
    r.check(
        f"a refusal took at most {SHED_SERVER_SECONDS_LIMIT * 1000:g} ms of server time (mean)",
        per_refusal <= SHED_SERVER_SECONDS_LIMIT,
        f"{per_refusal * 1e6:.0f} µs",
    )
    failed = [p for p in probes if p[1] != 200]
    r.check(
        "health and metrics answered 200 throughout",
        bool(probes) and not failed,
        f"{len(probes)} probes, {len(failed)} failed {failed[:3]}",
    )
    r.check("served normally right after the flood", state["after"] == [200] * 20, str(state["after"]))
    growth = (state["rss_after"] - rss_before) / 2**20
    r.check(
        f"RSS back near its level afterwards (<= +{OVERLOAD_RSS_LIMIT_MB:.0f} MiB)",
        growth <= OVERLOAD_RSS_LIMIT_MB,
        f"{rss_before / 2**20:.1f} -> {state['rss_after'] / 2**20:.1f} MiB",
    )
    return r


# --- shutdown ---------------------------------------------------------------------
async def shutdown(s: Soak) -> PhaseResult:
    """SIGTERM under load; then every 200 of the whole run must be in the prediction log."""
    r = PhaseResult("sigterm", "SIGTERM under load: drain, exit 0, nothing accepted is missing from the log")
    state: dict[str, object] = {}

    async def script() -> None:
        await asyncio.sleep(s.cfg.phase_seconds / 2)
        s.server.signal(signal.SIGTERM)
        state["exit"] = await asyncio.to_thread(s.server.wait, 60)

    await s.traffic(r, script)
    bad5 = [x for x in r.samples if x.status >= 500]
    r.check("no 5xx while draining", not bad5, str(len(bad5)))
    r.check("exit code 0", state["exit"] == 0, f"exit {state['exit']}")
    r.notes.append(f"{sum(1 for x in r.samples if x.status == 0)} requests refused after the listener closed")
    files = sorted(s.log_dir.glob("predictions-*.jsonl"))
    if not files:
        r.notes.append("no prediction log files were written: the log check was skipped (no prediction log)")
        r.check("prediction log present (skipped: no prediction log in this build)", True)
        return r
    logged: set[str] = set()
    records = 0
    for f in files:
        for line in f.read_bytes().splitlines():
            if not line.strip():
                continue
            rec = orjson.loads(line)
            if rec.get("kind", "prediction") == "prediction":
                records += 1
                logged.add(rec.get("request_id"))
    missing = s.ok_request_ids - logged
    r.check(
        "every accepted (200) request of the run is in the prediction log",
        not missing,
        f"{len(s.ok_request_ids)} accepted, {records} logged, {len(missing)} missing"
        + (f" e.g. {sorted(missing)[:3]}" if missing else ""),
    )
    return r
