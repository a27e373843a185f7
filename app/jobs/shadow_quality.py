"""Candidate against primary on the same labelled requests: the shadow log joined with the labels.

Every ok shadow record holds both answers to one request; with its label
each model is scored on exactly the same rows, so the metric difference gets
a *paired* bootstrap interval (:func:`app.quality.metrics.paired_difference`).
The agreement rate is the share of those requests where both served the same
label. The task and classes are the primary's (a candidate of another task is
never shadowed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from app.jobs.labelled import columns_of, model_info, select_columns, target_sql, text, to_rows, unmasked
from app.jobs.logdata import connect
from app.model.repository import Repository
from app.quality import metrics as qm
from app.quality.bootstrap import REPLICATES, SEED, Interval


@dataclass
class LabelledPair:
    primary_version: str
    shadow_version: str
    task: str
    labelled: int
    agreement: float | None
    primary: dict[str, Interval] = field(default_factory=dict)
    candidate: dict[str, Interval] = field(default_factory=dict)
    difference: dict[str, Interval] = field(default_factory=dict)
    """candidate − primary, paired bootstrap interval."""

    @property
    def decisive_metric(self) -> str:
        return qm.PRIMARY[self.task]

    def to_dict(self) -> dict[str, Any]:
        return {
            "primary_version": self.primary_version,
            "shadow_version": self.shadow_version,
            "task": self.task,
            "labelled": self.labelled,
            "agreement": self.agreement,
            "decisive_metric": self.decisive_metric,
            "metrics": {
                name: {
                    "primary": self.primary[name].to_dict(),
                    "candidate": self.candidate[name].to_dict(),
                    "difference": d.to_dict(),
                }
                for name, d in self.difference.items()
            },
        }


def compare_labelled(
    log_dir: Path,
    models_dir: Path,
    since: timedelta,
    replicates: int = REPLICATES,
    seed: int = SEED,
    now: datetime | None = None,
    shadow_version: str | None = None,
) -> list[LabelledPair]:
    """One comparison per (primary, shadow) pair with labelled ok shadow records in the window."""
    start = (now or datetime.now(UTC)) - since
    repository = Repository(models_dir)
    con = connect(log_dir)
    available = sorted(columns_of(con, "shadow"))
    where = "s.timestamp >= ? AND s.outcome = 'ok'"
    params: list[Any] = [start]
    if shadow_version is not None:
        where += " AND s.shadow_version = ?"
        params.append(shadow_version)
    pairs = con.execute(
        f"SELECT DISTINCT s.primary_version, s.shadow_version FROM shadow s JOIN labels l USING (request_id) "
        f"WHERE {where} ORDER BY 1, 2",
        params,
    ).fetchall()
    out = []
    for primary, candidate in pairs:
        info = model_info(repository, primary)
        y_sql = (
            f"TRY_CAST({text('l.label')} AS DOUBLE)" if info.task == "regression" else target_sql(info, text("l.label"))
        )
        sql = (
            f"SELECT {y_sql} AS y, {{}} FROM shadow s JOIN labels l USING (request_id) "
            f"WHERE {where} AND s.primary_version = ? AND s.shadow_version = ? ORDER BY s.request_id"
        )
        sides = []
        for prefix in ("s.primary_", "s.shadow_"):
            data = con.execute(
                sql.format(select_columns(info, available, prefix)), [*params, primary, candidate]
            ).fetchnumpy()
            sides.append(to_rows(info, {k: unmasked(v) for k, v in data.items()})[0])
        p_rows, c_rows = sides
        if len(p_rows) != len(c_rows):  # a side without a usable answer: keep only rows both have
            continue
        agreement = float(np.mean(p_rows.prediction == c_rows.prediction)) if len(p_rows) else None
        if info.task == "regression":
            agreement = None
        out.append(
            LabelledPair(
                primary,
                candidate,
                info.task,
                len(p_rows),
                agreement,
                qm.measure(p_rows, replicates, seed),
                qm.measure(c_rows, replicates, seed),
                qm.paired_difference(c_rows, p_rows, replicates, seed),
            )
        )
    con.close()
    return out


def render_table(pairs: list[LabelledPair]) -> str:
    if not pairs:
        return "no labelled shadow records in this window"
    lines = []
    for p in pairs:
        agree = "-" if p.agreement is None else f"{100 * p.agreement:.2f}%"
        lines += [
            f"{p.shadow_version} vs {p.primary_version} on {p.labelled} labelled shadowed requests "
            f"(label agreement {agree}; decided on {p.decisive_metric})",
            f"  {'METRIC':<10} {'PRIMARY':>8} {'CANDIDATE':>9} {'DIFF':>8}  95% CI (paired)",
        ]
        for name, d in p.difference.items():
            ci = "-" if d.low is None or d.high is None else f"[{d.low:+.4f}, {d.high:+.4f}]"
            lines.append(
                f"  {name:<10} {p.primary[name].value:>8.4f} {p.candidate[name].value:>9.4f} {d.value:>+8.4f}  {ci}"
            )
        lines.append("")
    return "\n".join(lines).rstrip()
