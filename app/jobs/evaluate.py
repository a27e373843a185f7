"""``modelserve evaluate``: live quality of the served models, from the prediction and label logs.

Per group (``--by version``, or per version and ``day`` or ``variant``): the
predictions, how many have a label, the label coverage, the label delay
(received label − prediction, p50/p95), and the task's metrics
(:mod:`app.quality.metrics`) with seeded 95% bootstrap intervals, each beside
the manifest's holdout figure and the difference. Classification adds the
reliability diagram (``--html``). A group always holds one model version:
metrics of two models mixed would describe neither.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson

from app.jobs import svgplot
from app.jobs.drift import _human
from app.jobs.labelled import (
    ModelInfo,
    columns_of,
    model_info,
    select_columns,
    target_sql,
    text,
    to_rows,
    unmasked,
)
from app.jobs.logdata import connect
from app.model.repository import Repository
from app.quality import metrics as qm
from app.quality.bootstrap import REPLICATES, SEED

By = Literal["version", "day", "variant"]
_KEY = {"version": "NULL", "day": "strftime(p.timestamp, '%Y-%m-%d')", "variant": "coalesce(p.variant, '-')"}


@dataclass
class Figure:
    value: float
    low: float | None
    high: float | None
    holdout: float | None

    @property
    def difference(self) -> float | None:
        return None if self.holdout is None else self.value - self.holdout

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": _num(self.value),
            "low": self.low,
            "high": self.high,
            "holdout": self.holdout,
            "difference": _num(self.difference),
        }


@dataclass
class Group:
    version: str
    key: str | None
    task: str
    predictions: int
    labelled: int
    unknown_labels: int
    delay_p50_s: float | None
    delay_p95_s: float | None
    metrics: dict[str, Figure] = field(default_factory=dict)
    reliability: list[dict[str, Any]] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        return self.labelled / self.predictions if self.predictions else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "group": self.key,
            "task": self.task,
            "predictions": self.predictions,
            "labelled": self.labelled,
            "label_coverage": self.coverage,
            "unknown_labels": self.unknown_labels,
            "label_delay_seconds": {"p50": self.delay_p50_s, "p95": self.delay_p95_s},
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
            "reliability": self.reliability,
        }


@dataclass
class EvaluateReport:
    since: timedelta
    by: By
    groups: list[Group]
    replicates: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "since_seconds": self.since.total_seconds(),
            "by": self.by,
            "bootstrap": {"replicates": self.replicates, "seed": self.seed, "level": 0.95},
            "groups": [g.to_dict() for g in self.groups],
        }


def _num(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def evaluate(
    log_dir: Path,
    models_dir: Path,
    since: timedelta,
    version: str | None = None,
    by: By = "version",
    replicates: int = REPLICATES,
    seed: int = SEED,
    now: datetime | None = None,
) -> EvaluateReport:
    start = (now or datetime.now(UTC)) - since
    repository = Repository(models_dir)
    con = connect(log_dir)
    available = sorted(columns_of(con, "predictions"))
    where = "p.timestamp >= ?"
    params: list[Any] = [start]
    if version is not None:
        where += " AND p.model_version = ?"
        params.append(repository.resolve(version))
    key = _KEY[by]
    answers = [c for c in ("prediction", "probability", "probabilities") if c in available]
    # One join, kept: the counts and every version's labelled rows read it (the join is most of the cost).
    con.execute(
        f"""CREATE TEMP TABLE joined AS
            SELECT p.model_version, {key} AS key, p.timestamp AS predicted_at, l.timestamp AS labelled_at, l.label,
                   {", ".join("p." + c for c in answers)}
            FROM predictions p LEFT JOIN labels l USING (request_id) WHERE {where}""",
        params,
    )
    counts = con.execute(
        """SELECT model_version, key, count(*), count(labelled_at),
                  quantile_cont(epoch(labelled_at) - epoch(predicted_at), 0.5),
                  quantile_cont(epoch(labelled_at) - epoch(predicted_at), 0.95),
                  bool_or(probability IS NOT NULL)
           FROM joined GROUP BY 1, 2 ORDER BY 1, 2"""
    ).fetchall()
    infos: dict[str, ModelInfo] = {}
    groups: list[Group] = []
    for v, k, n, labelled, d50, d95, has_prob in counts:
        if v not in infos:
            infos[v] = model_info(repository, v, "binary_classification" if has_prob else "regression")
        groups.append(Group(v, k, infos[v].task, n, labelled, 0, d50, d95))
    for v, info in infos.items():
        mine = [g for g in groups if g.version == v and g.labelled]
        if not mine:
            continue
        y_sql = target_sql(info, text("label"))
        if info.task == "regression":
            y_sql = f"TRY_CAST({text('label')} AS DOUBLE)"
        data = con.execute(
            f"""SELECT key, {y_sql} AS y, {select_columns(info, answers)}
                FROM joined WHERE labelled_at IS NOT NULL AND model_version = ? ORDER BY key""",
            [v],
        ).fetchnumpy()
        columns = {name: unmasked(col) for name, col in data.items()}
        keys = columns.pop("key")
        for g in mine:
            selected = {n: c[keys == g.key] for n, c in columns.items()} if by != "version" else columns
            rows, g.unknown_labels = to_rows(info, selected)
            for name, interval in qm.measure(rows, replicates, seed).items():
                holdout = info.holdout.get(name)
                g.metrics[name] = Figure(
                    interval.value,
                    interval.low,
                    interval.high,
                    float(holdout) if isinstance(holdout, int | float) else None,
                )
            if rows.probability is not None:
                g.reliability = qm.reliability(rows.y, rows.probability)
    con.close()
    return EvaluateReport(since, by, groups, replicates, seed)


# --- rendering ---------------------------------------------------------------
def _f(x: float | None, digits: int = 4) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _sec(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.0f}s" if x < 120 else f"{x / 3600:.1f}h"


def render_table(report: EvaluateReport) -> str:
    lines = [
        f"live quality over the last {_human(report.since)} by {report.by} "
        f"(95% bootstrap intervals, {report.replicates} replicates, seed {report.seed})"
    ]
    if not report.groups:
        return "\n".join([*lines, "no predictions in this window"])
    for g in report.groups:
        title = g.version + (f" {g.key}" if g.key is not None else "")
        lines += [
            "",
            f"{title} ({g.task}): {g.predictions} predictions, {g.labelled} labelled "
            f"({100 * g.coverage:.1f}%), label delay p50 {_sec(g.delay_p50_s)} p95 {_sec(g.delay_p95_s)}"
            + (f", {g.unknown_labels} labels outside the classes" if g.unknown_labels else ""),
        ]
        if not g.metrics:
            continue
        lines.append(f"  {'METRIC':<10} {'VALUE':>8}  {'95% CI':<17} {'HOLDOUT':>8} {'DIFF':>8}")
        for name, m in g.metrics.items():
            ci = f"[{_f(m.low)}, {_f(m.high)}]"
            lines.append(f"  {name:<10} {_f(m.value):>8}  {ci:<17} {_f(m.holdout):>8} {_f(m.difference):>8}")
    return "\n".join(lines)


def render_json(report: EvaluateReport) -> str:
    return orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode()


def render_html(report: EvaluateReport) -> str:
    parts = []
    for g in report.groups:
        title = html.escape(g.version + (f" {g.key}" if g.key is not None else ""))
        rows = "".join(
            f"<tr><td>{html.escape(n)}</td><td>{_f(m.value)}</td><td>[{_f(m.low)}, {_f(m.high)}]</td>"
            f"<td>{_f(m.holdout)}</td><td>{_f(m.difference)}</td></tr>"
            for n, m in g.metrics.items()
        )
        parts.append(
            f"<h2>{title}</h2><p>{g.task}: {g.predictions} predictions, {g.labelled} labelled "
            f"({100 * g.coverage:.1f}%); label delay p50 {_sec(g.delay_p50_s)}, p95 {_sec(g.delay_p95_s)}.</p>"
            + (
                f"<table><tr><th>metric</th><th>value</th><th>95% CI</th><th>holdout</th><th>difference</th></tr>"
                f"{rows}</table>"
                if rows
                else "<p>no labelled predictions</p>"
            )
        )
        if g.reliability:
            ece = g.metrics.get("ece")
            parts.append(
                f"<figure>{_reliability_plot(g)}<figcaption>reliability diagram: observed positive rate against "
                f"mean predicted probability per bin (ECE {_f(ece.value if ece else None)})</figcaption></figure>"
            )
    title = f"Live quality over the last {_human(report.since)}"
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>body{{font-family:sans-serif;margin:2em}}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}"
        "figure{display:inline-block;margin:1em}</style></head><body>"
        f"<h1>{title}</h1><p>By {report.by}; 95% bootstrap intervals ({report.replicates} replicates, seed "
        f"{report.seed}); holdout figures from each version's manifest.</p>{''.join(parts)}</body></html>"
    )


def _reliability_plot(g: Group) -> str:
    points = [(b["mean_probability"], b["positive_rate"], b["rows"] / max(1, g.labelled)) for b in g.reliability]
    return svgplot.reliability(f"{g.version} {g.key or ''}".strip(), points)
