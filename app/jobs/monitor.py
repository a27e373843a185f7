"""``modelserve monitor``: one decision — ``ok``, ``watch`` or ``retrain`` — for the served model.

Over the last ``windows`` windows of ``window`` each (ending now), for one
version (default: the one ``production`` points to), per window:

* input drift: the worst PSI of the features against the training reference
  (:mod:`app.jobs.psi`, as ``modelserve drift``);
* the label-free estimate (:mod:`app.quality.cbpe`) of accuracy and, binary,
  ROC AUC, from the calibrated probabilities (the manifest's ``calibration``);
* realized quality on the window's predictions whose labels have arrived.

The windows' verdicts go through the sustained-signal rule of
:mod:`app.quality.decision`. Exit 0 for ``ok`` and ``watch``, 3 for
``retrain`` — so a CronJob's failure is the page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from app.errors import ModelServeError
from app.jobs import psi
from app.jobs.drift import _human, _row
from app.jobs.labelled import columns_of, model_info, select_columns, target_sql, text, to_rows
from app.jobs.logdata import Frame, connect
from app.model.repository import Repository
from app.quality import cbpe
from app.quality import metrics as qm
from app.quality.bootstrap import REPLICATES, SEED, Interval
from app.quality.decision import Decision, Rule, Verdict, decide, degraded

EXIT_RETRAIN = 3


@dataclass
class Window:
    start: datetime
    predictions: int
    labelled: int
    worst_psi: float | None
    worst_feature: str | None
    estimated: dict[str, Interval]
    realized: dict[str, Interval]
    verdict: Verdict
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "predictions": self.predictions,
            "labelled": self.labelled,
            "psi": {"worst": self.worst_psi, "feature": self.worst_feature},
            "estimated": {k: v.to_dict() for k, v in self.estimated.items()},
            "realized": {k: v.to_dict() for k, v in self.realized.items()},
            "verdict": self.verdict,
            "reasons": self.reasons,
        }


@dataclass
class MonitorReport:
    version: str
    metric: str
    reference: float | None
    window: timedelta
    rule: Rule
    windows: list[Window]
    decision: Decision
    reasons: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "decision": self.decision,
            "reasons": self.reasons,
            "metric": self.metric,
            "holdout": self.reference,
            "window_seconds": self.window.total_seconds(),
            "rule": {"sustain": self.rule.sustain, "margin": self.rule.margin, "min_labelled": self.rule.min_labelled},
            "psi_alert": psi.ALERT,
            "windows": [w.to_dict() for w in self.windows],
        }


def monitor(
    log_dir: Path,
    models_dir: Path,
    version: str | None = None,
    window: timedelta = timedelta(days=1),
    windows: int = 7,
    rule: Rule | None = None,
    replicates: int = REPLICATES,
    seed: int = SEED,
    now: datetime | None = None,
) -> MonitorReport:
    rule = rule or Rule()
    now = now or datetime.now(UTC)
    repository = Repository(models_dir)
    resolved = repository.resolve(version or "production")
    info = model_info(repository, resolved)
    if info.manifest is None:
        raise ModelServeError(f"{resolved}: no readable manifest.json")
    manifest = info.manifest
    metric = qm.PRIMARY[info.task]
    holdout = info.holdout.get(metric)
    reference = float(holdout) if isinstance(holdout, int | float) else None
    start = now - window * windows
    con = connect(log_dir)
    available = sorted(columns_of(con, "predictions"))
    specs = manifest.reference.get("features", {})
    features = [f for f in manifest.features if f.name in specs]
    cols = [
        f"TRY_CAST(p.features->>'$.{f.name}' AS DOUBLE) AS \"{f.name}\""
        if f.dtype in ("float", "int")
        else f"p.features->>'$.{f.name}' AS \"{f.name}\""
        for f in features
    ]
    y_sql = f"TRY_CAST({text('l.label')} AS DOUBLE)" if info.task == "regression" else target_sql(info, text("l.label"))
    result = con.execute(
        f"""SELECT CAST(floor((epoch(p.timestamp) - epoch(?::TIMESTAMPTZ)) / ?) AS INTEGER) AS win,
                   l.request_id IS NOT NULL AS has_label, {y_sql} AS y,
                   {select_columns(info, available, "p.")}{"".join(", " + c for c in cols)}
            FROM predictions p LEFT JOIN (SELECT * FROM labels WHERE timestamp <= ?) l USING (request_id)
            WHERE p.model_version = ? AND p.timestamp >= ? AND p.timestamp < ?""",
        [start, window.total_seconds(), now, resolved, start, now],
    )
    frame = Frame.of(result)
    con.close()
    out: list[Window] = []
    for i in range(windows):
        part = frame.where(frame["win"] == i)
        out.append(_window(start + window * i, part, info, features, specs, metric, reference, rule, replicates, seed))
    decision = decide([w.verdict for w in out], rule)
    recent = [w for w in out if w.verdict != "no-data"][-rule.sustain :]
    reasons = [f"{w.start:%Y-%m-%d %H:%M}: {r}" for w in recent for r in w.reasons]
    return MonitorReport(resolved, metric, reference, window, rule, out, decision, reasons)


def _window(
    start: datetime,
    part: Frame,
    info: Any,
    features: list[Any],
    specs: dict[str, Any],
    metric: str,
    reference: float | None,
    rule: Rule,
    replicates: int,
    seed: int,
) -> Window:
    if not len(part):
        return Window(start, 0, 0, None, None, {}, {}, "no-data", [])
    worst_psi, worst_feature = None, None
    if features:
        drift = [_row(f.name, f.dtype, part[f.name], specs[f.name]) for f in features]
        worst = max(drift, key=lambda r: r.psi)
        worst_psi, worst_feature = worst.psi, worst.name
    data = {
        c: part[c]
        for c in part.columns
        if c in ("y", "prediction", "probability") or (c[:1] == "p" and c[1:].isdigit())
    }
    estimated: dict[str, Interval] = {}
    if info.task == "binary_classification":
        prob = data["probability"].astype(np.float64)
        ok = ~np.isnan(prob)
        estimated = cbpe.estimate_binary(prob[ok], data["prediction"][ok], info.calibration, replicates, seed)
    elif info.task == "multiclass_classification":
        rows_all, _ = to_rows(info, {**data, "y": np.zeros(len(part), dtype=np.int64)})
        if rows_all.probabilities is not None:
            estimated = cbpe.estimate_multiclass(rows_all.probabilities, rows_all.prediction, seed)
    labelled = part["has_label"].astype(bool)
    realized: dict[str, Interval] = {}
    if labelled.sum() >= rule.min_labelled:
        rows, _ = to_rows(info, {k: v[labelled] for k, v in data.items()})
        realized = qm.measure(rows, replicates, seed)
    verdict: Verdict = "ok"
    reasons = []
    evidence, kind = (realized, "realized") if metric in realized else (estimated, "estimated")
    if reference is not None and metric in evidence:
        e = evidence[metric]
        if degraded(metric, e, reference, rule.margin):
            verdict = "degraded"
            reasons.append(
                f"{kind} {metric} {e.value:.4f} [{_f(e.low)}, {_f(e.high)}] is more than {_margin(metric, rule)} "
                f"worse than the holdout {reference:.4f}"
            )
    if worst_psi is not None and worst_psi >= psi.ALERT:
        if verdict == "ok":
            verdict = "drift"
        reasons.append(f"input drift: PSI {worst_psi:.3f} on {worst_feature} (alert at {psi.ALERT:g})")
    return Window(
        start, len(part), int(labelled.sum()), worst_psi, worst_feature, estimated, realized, verdict, reasons
    )


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _margin(metric: str, rule: Rule) -> str:
    return f"{rule.margin * 100:g}%" if metric in qm.IN_TARGET_UNITS else f"{rule.margin:g}"


def render_table(r: MonitorReport) -> str:
    lines = [
        f"monitor of {r.version}: {r.decision.upper()} ({r.windows.__len__()} windows of {_human(r.window)}; "
        f"{r.metric} holdout {_f(r.reference)}, degraded if worse by > {_margin(r.metric, r.rule)}, "
        f"retrain after {r.rule.sustain} degraded windows in a row)",
        f"{'WINDOW':<17} {'PREDS':>7} {'LABELS':>7} {'PSI':>7} "
        f"{'EST ' + r.metric:>14} {'REAL ' + r.metric:>14}  VERDICT",
    ]
    for w in r.windows:
        est, real = w.estimated.get(r.metric), w.realized.get(r.metric)
        lines.append(
            f"{w.start:%Y-%m-%d %H:%M} {w.predictions:>7} {w.labelled:>7} {_f(w.worst_psi):>7} "
            f"{_f(est.value if est else None):>14} {_f(real.value if real else None):>14}  {w.verdict}"
        )
    lines += [f"  {reason}" for reason in r.reasons]
    return "\n".join(lines)


def render_json(r: MonitorReport) -> str:
    return orjson.dumps(r.to_dict(), option=orjson.OPT_INDENT_2).decode()
