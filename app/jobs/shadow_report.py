"""``modelserve shadow-report``: how the candidate compares with what users were served.

Reads the prediction log (``predictions-*.jsonl``; ``kind: "shadow"`` records
and the periodic ``kind: "shadow_drops"`` counts) with DuckDB, over a window
(``--since``), and reports per (primary version, shadow version):

* the share of ok shadow predictions whose ``abs_diff`` exceeds
  ``--threshold`` (default 0.1), mean and max |diff|. What ``abs_diff``
  measures follows the task (``app.telemetry.log_lines``): the
  positive-class probability (binary), the largest class probability
  (multiclass), the predicted value in its own units (regression);
* the label disagreement rate (classifiers; none for regression);
* error and timeout rates (of the shadow runs attempted), and the drop rate
  (records the bounded queue dropped, of all offered) — drops never ran, so
  they come from the ``shadow_drops`` records, which name only the candidate;
* p50/p99 latency of each side. The primary's is the request's own (decode,
  features, inference); the shadow's is the run time of the batch the record
  was in, so it reads as "how long the candidate took", not per row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from app.jobs.logdata import connect


@dataclass
class PairStats:
    primary_version: str | None
    shadow_version: str | None
    records: int
    ok: int
    errors: int
    timeouts: int
    over_threshold_share: float | None
    label_disagreement: float | None
    mean_abs_diff: float | None
    max_abs_diff: float | None
    primary_p50_ms: float | None
    primary_p99_ms: float | None
    shadow_p50_ms: float | None
    shadow_p99_ms: float | None
    task: str = "binary_classification"
    """The task both versions share (lines written before tasks existed count as binary)."""

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.records if self.records else None

    @property
    def timeout_rate(self) -> float | None:
        return self.timeouts / self.records if self.records else None


@dataclass
class ShadowReport:
    since: timedelta
    threshold: float
    pairs: list[PairStats] = field(default_factory=list)
    dropped: int = 0

    @property
    def records(self) -> int:
        return sum(p.records for p in self.pairs)

    @property
    def drop_rate(self) -> float | None:
        offered = self.records + self.dropped
        return self.dropped / offered if offered else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "since_seconds": self.since.total_seconds(),
            "threshold": self.threshold,
            "records": self.records,
            "dropped": self.dropped,
            "drop_rate": self.drop_rate,
            "pairs": [{**asdict(p), "error_rate": p.error_rate, "timeout_rate": p.timeout_rate} for p in self.pairs],
        }


def compute_shadow_report(
    log_dir: Path, since: timedelta, threshold: float = 0.1, now: datetime | None = None
) -> ShadowReport:
    start = (now or datetime.now(UTC)) - since
    con = connect(log_dir)
    con.execute("CREATE TEMP TABLE windowed AS SELECT * FROM log WHERE timestamp >= ?", [start])
    rows = con.execute(
        """
        SELECT primary_version, shadow_version, count(*),
               count(*) FILTER (WHERE outcome = 'ok'),
               count(*) FILTER (WHERE outcome = 'error'),
               count(*) FILTER (WHERE outcome = 'timeout'),
               avg(CASE WHEN abs_diff > ? THEN 1.0 ELSE 0.0 END) FILTER (WHERE outcome = 'ok'),
               avg(CASE WHEN primary_prediction <> shadow_prediction THEN 1.0 ELSE 0.0 END)
                   FILTER (WHERE outcome = 'ok' AND coalesce(task, '') <> 'regression'),
               avg(abs_diff) FILTER (WHERE outcome = 'ok'),
               max(abs_diff) FILTER (WHERE outcome = 'ok'),
               quantile_cont(primary_latency, 0.5) * 1000, quantile_cont(primary_latency, 0.99) * 1000,
               quantile_cont(shadow_latency, 0.5) FILTER (WHERE outcome = 'ok') * 1000,
               quantile_cont(shadow_latency, 0.99) FILTER (WHERE outcome = 'ok') * 1000,
               coalesce(any_value(task), 'binary_classification')
        FROM windowed WHERE kind = 'shadow'
        GROUP BY 1, 2 ORDER BY 3 DESC
        """,
        [threshold],
    ).fetchall()
    dropped = con.execute("SELECT coalesce(sum(dropped), 0) FROM windowed WHERE kind = 'shadow_drops'").fetchone()
    con.close()
    return ShadowReport(since, threshold, [PairStats(*row) for row in rows], int(dropped[0]) if dropped else 0)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def render_json(report: ShadowReport) -> str:
    return orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode()


def render_table(report: ShadowReport) -> str:
    hours = report.since.total_seconds() / 3600
    lines = [
        f"shadow predictions over the last {hours:g} h: {report.records} recorded, {report.dropped} dropped "
        f"(drop rate {_pct(report.drop_rate)}); threshold |diff| > {report.threshold:g}",
    ]
    if not report.pairs:
        lines.append("no shadow records in this window")
        return "\n".join(lines)
    header = (
        f"{'PRIMARY':<10} {'SHADOW':<10} {'RECORDS':>8} {'>THRESH':>8} {'LABELS≠':>8} {'MEAN|D|':>8} "
        f"{'ERRORS':>7} {'TIMEOUTS':>8} {'P50 ms':>15} {'P99 ms':>15}"
    )
    lines += ["", header]
    for p in report.pairs:
        mean = "-" if p.mean_abs_diff is None else f"{p.mean_abs_diff:.4f}"
        lines.append(
            f"{p.primary_version or '-':<10} {p.shadow_version or '-':<10} {p.records:>8} "
            f"{_pct(p.over_threshold_share):>8} {_pct(p.label_disagreement):>8} {mean:>8} "
            f"{_pct(p.error_rate):>7} {_pct(p.timeout_rate):>8} "
            f"{_ms(p.primary_p50_ms) + '/' + _ms(p.shadow_p50_ms):>15} "
            f"{_ms(p.primary_p99_ms) + '/' + _ms(p.shadow_p99_ms):>15}"
        )
    lines.append("")
    lines.append("latency columns: primary/shadow; the shadow's is the run time of its batch")
    return "\n".join(lines)
