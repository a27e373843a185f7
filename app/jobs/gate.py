"""``modelserve gate VERSION``: may this candidate replace what an alias serves?

Decided on the traffic the candidate shadowed for the alias's version
(``shadow_version = VERSION``, ``primary_version`` = the alias's target) over
``--since``. Every criterion is listed with its figure and threshold; the gate
passes only if all pass:

* ``shadowed`` and ``labelled``: enough shadowed requests, and enough of them
  labelled, for the other figures to mean something;
* ``shadow_errors``: (errors + timeouts) / shadow runs at most the limit;
* ``latency_p99``: the candidate's p99 at most ``ratio`` × the primary's;
* ``quality``: non-inferiority on the task's decisive metric — the lower
  bound of the paired 95% interval of the improvement (candidate − primary,
  signed so that positive is better; for RMSE a fraction of the primary's
  RMSE) at least ``−margin``;
* ``drift``: no feature of the shadowed requests at PSI alert against the
  candidate's training reference.

A criterion that cannot be computed (no labelled rows, no latency) fails:
"no evidence" is not a pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from app.errors import ModelServeError
from app.jobs import psi
from app.jobs.drift import _row
from app.jobs.gate_limits import GateLimits
from app.jobs.logdata import Frame, connect
from app.jobs.shadow_quality import compare_labelled
from app.jobs.shadow_report import compute_shadow_report
from app.model.repository import Repository
from app.quality import metrics as qm
from app.quality.bootstrap import REPLICATES, SEED

EXIT_FAIL = 3


@dataclass
class Criterion:
    name: str
    passed: bool
    figure: float | None
    threshold: str
    detail: str = ""


@dataclass
class GateDecision:
    version: str
    alias: str
    primary: str | None
    since: timedelta
    criteria: list[Criterion] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.criteria) and all(c.passed for c in self.criteria)

    @property
    def decision(self) -> str:
        return "pass" if self.passed else "fail"

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "alias": self.alias,
            "primary": self.primary,
            "since_seconds": self.since.total_seconds(),
            "decision": self.decision,
            "criteria": [asdict(c) for c in self.criteria],
        }


def run_gate(
    log_dir: Path,
    models_dir: Path,
    version: str,
    alias: str = "production",
    since: timedelta = timedelta(days=7),
    limits: GateLimits | None = None,
    replicates: int = REPLICATES,
    seed: int = SEED,
    now: datetime | None = None,
) -> GateDecision:
    limits = limits or GateLimits()
    repository = Repository(models_dir)
    candidate = repository.resolve(version)
    primary = repository.aliases().get(alias)
    if primary is None:
        raise ModelServeError(f"alias {alias!r} points at nothing in {models_dir}")
    if primary == candidate:
        raise ModelServeError(f"{alias} already serves {candidate}")
    now = now or datetime.now(UTC)
    decision = GateDecision(candidate, alias, primary, since)
    add = decision.criteria.append

    report = compute_shadow_report(log_dir, since, now=now)
    pair = next((p for p in report.pairs if p.shadow_version == candidate and p.primary_version == primary), None)
    records = pair.records if pair else 0
    add(
        Criterion(
            "shadowed",
            records >= limits.min_shadowed,
            records,
            f">= {limits.min_shadowed}",
            f"shadow runs of {candidate} beside {primary}",
        )
    )
    labelled = next(
        (
            p
            for p in compare_labelled(log_dir, models_dir, since, replicates, seed, now, candidate)
            if p.primary_version == primary
        ),
        None,
    )
    n_labelled = labelled.labelled if labelled else 0
    add(
        Criterion(
            "labelled",
            n_labelled >= limits.min_labelled,
            n_labelled,
            f">= {limits.min_labelled}",
            "labelled requests both models answered",
        )
    )
    failed = (pair.errors + pair.timeouts) if pair else 0
    rate = failed / records if records else None
    add(
        Criterion(
            "shadow_errors",
            rate is not None and rate <= limits.max_error_rate,
            rate,
            f"<= {limits.max_error_rate:g}",
            f"{failed} errors and timeouts of {records} shadow runs",
        )
    )
    p99p, p99c = (pair.primary_p99_ms, pair.shadow_p99_ms) if pair else (None, None)
    ratio = p99c / p99p if p99c is not None and p99p else None
    add(
        Criterion(
            "latency_p99",
            ratio is not None and ratio <= limits.latency_ratio,
            ratio,
            f"<= {limits.latency_ratio:g} x primary",
            f"candidate {_ms(p99c)} ms, primary {_ms(p99p)} ms (candidate/primary)",
        )
    )
    if labelled is not None:
        metric = labelled.decisive_metric
        diff = labelled.difference.get(metric)
        low = None
        primary_figure = labelled.primary.get(metric)
        reference = primary_figure.value if primary_figure is not None else None
        if diff is not None and diff.low is not None and diff.high is not None:
            low = min(qm.scaled_improvement(metric, end, reference) for end in (diff.low, diff.high))
        add(
            Criterion(
                "quality",
                low is not None and low >= -limits.margin,
                low,
                f">= -{limits.margin:g}",
                f"lower 95% bound of the {metric} improvement (candidate - primary, paired bootstrap"
                + (", as a fraction of the primary's" if metric in qm.IN_TARGET_UNITS else "")
                + ")"
                + (f"; point {qm.scaled_improvement(metric, diff.value, reference):+.4f}" if diff else ""),
            )
        )
    else:
        add(Criterion("quality", False, None, f">= -{limits.margin:g}", "no labelled shadowed requests"))
    worst, worst_name = _drift(log_dir, repository, candidate, primary, since, now)
    add(
        Criterion(
            "drift",
            worst is not None and worst < psi.ALERT,
            worst,
            f"< {psi.ALERT:g}",
            f"worst PSI of the shadowed requests against {candidate}'s reference"
            + (f" ({worst_name})" if worst_name else ""),
        )
    )
    return decision


def _drift(
    log_dir: Path, repository: Repository, candidate: str, primary: str, since: timedelta, now: datetime
) -> tuple[float | None, str | None]:
    """Worst PSI of the features of the requests the candidate shadowed (read from the primary's records)."""
    manifest = repository.read_manifest(candidate)
    specs: Mapping[str, Any] = manifest.reference.get("features", {})
    if not specs:
        return None, None
    con = connect(log_dir)
    cols = []
    for f in manifest.features:
        if f.name not in specs:
            continue
        path = "$." + f.name
        expr = f"features->>'{path}'"
        cols.append(
            f'TRY_CAST({expr} AS DOUBLE) AS "{f.name}"' if f.dtype in ("float", "int") else f'{expr} AS "{f.name}"'
        )
    result = con.execute(
        f"SELECT {', '.join(cols)} FROM predictions WHERE model_version = ? AND timestamp >= ? AND request_id IN "
        "(SELECT request_id FROM shadow WHERE shadow_version = ? AND timestamp >= ?)",
        [primary, now - since, candidate, now - since],
    )
    frame = Frame.of(result)
    con.close()
    if not len(frame):
        return None, None
    rows = [_row(f.name, f.dtype, frame[f.name], specs[f.name]) for f in manifest.features if f.name in specs]
    worst = max(rows, key=lambda r: r.psi)
    return worst.psi, worst.name


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _fig(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def render_table(d: GateDecision) -> str:
    lines = [
        f"gate {d.version} for {d.alias} (now {d.primary}) over the last {d.since.total_seconds() / 3600:g} h: "
        f"{d.decision.upper()}",
        f"{'CRITERION':<14} {'RESULT':<6} {'FIGURE':>10}  {'THRESHOLD':<18} DETAIL",
    ]
    for c in d.criteria:
        lines.append(
            f"{c.name:<14} {'pass' if c.passed else 'FAIL':<6} {_fig(c.figure):>10}  {c.threshold:<18} {c.detail}"
        )
    return "\n".join(lines)


def render_json(d: GateDecision) -> str:
    return orjson.dumps(d.to_dict(), option=orjson.OPT_INDENT_2).decode()
