"""``modelserve drift``: PSI of logged traffic against the model's training reference.

For one model version (default: the one ``production`` points to) the
prediction records of the last ``--since`` are compared with the manifest's
``reference``: every feature (request and store features, as logged) and the
prediction as its task defines it (``app.model.reference``): the
positive-class probability (binary), the predicted label's frequencies
(multiclass) or the predicted value (regression). The binning is the manifest's own
(:func:`app.model.reference.histogram`), PSI and its smoothing are in
:mod:`app.jobs.psi`. The worst status decides the exit code of the command
(``EXIT_ALERT`` on any alert), so a CronJob can page.

Every output names the prediction log's sample rate the records were kept
under (``MODELSERVE_LOG_SAMPLE_RATE``, from each line's ``sample_rate``; lines
written before it existed count as 1): PSI compares shares, so a uniform
sample leaves it unbiased, but fewer records make it noisier.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from app.errors import ModelServeError
from app.jobs import psi, svgplot
from app.jobs.logdata import EmptyLog, Frame, connect
from app.model.manifest import Manifest
from app.model.repository import Repository

EXIT_ALERT = 3
PREDICTION = "(prediction)"
_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


MAX_SINCE = timedelta(days=36500)
"""The longest look-back (100 years): a window reaching before year 1 overflows the calendar."""


def parse_since(text: str, option: str = "--since") -> timedelta:
    """``90s``, ``30m``, ``24h``, ``7d``, ``2w``; at most ``MAX_SINCE``."""
    m = _SINCE.match(text)
    if not m:
        raise ModelServeError(f"invalid {option} {text!r}: use a number and a unit s, m, h, d or w (e.g. 24h)")
    seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if seconds > MAX_SINCE.total_seconds():
        raise ModelServeError(f"invalid {option} {text!r}: at most {MAX_SINCE.days}d")
    return timedelta(seconds=seconds)


@dataclass
class DriftRow:
    name: str
    dtype: str
    psi: float
    status: str
    labels: list[str]
    expected: list[float]
    actual: list[float]


@dataclass
class DriftReport:
    version: str
    since: timedelta
    records: int
    rows: list[DriftRow] = field(default_factory=list)
    sample_rates: list[float] = field(default_factory=lambda: [1.0])
    """The distinct sample rates the records were logged under, ascending (one, unless the setting changed)."""

    @property
    def sample_rate(self) -> float | None:
        """The one rate every record was logged under; None when the period mixes rates."""
        return self.sample_rates[0] if len(self.sample_rates) == 1 else None

    def sample_text(self) -> str:
        rates = "/".join(f"{r:g}" for r in self.sample_rates)
        return f"log sample rate {rates}" + ("" if self.sample_rate is not None else " (mixed)")

    @property
    def status(self) -> str:
        order = {"ok": 0, "warn": 1, "alert": 2}
        return max((r.status for r in self.rows), key=order.__getitem__, default="ok")

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "since_seconds": self.since.total_seconds(),
            "records": self.records,
            "sample_rate": self.sample_rate,
            "sample_rates": self.sample_rates,
            "status": self.status,
            "thresholds": {"warn": psi.WARN, "alert": psi.ALERT, "epsilon": psi.EPSILON},
            "features": [
                {
                    "name": r.name,
                    "dtype": r.dtype,
                    "psi": r.psi,
                    "status": r.status,
                    "buckets": [
                        {"bucket": b, "expected": e, "actual": a}
                        for b, e, a in zip(r.labels, r.expected, r.actual, strict=True)
                    ],
                }
                for r in self.rows
            ],
        }


def compute_drift(log_dir: Path, models_dir: Path, version: str | None, since: timedelta) -> DriftReport:
    repository = Repository(models_dir)
    resolved = repository.resolve(version or "production")
    manifest = repository.read_manifest(resolved)
    reference = manifest.reference
    if not reference.get("features") and not reference.get("prediction"):
        raise ModelServeError(f"{resolved}: manifest.json has no reference distributions")
    frame = _load(log_dir, manifest, since)
    if len(frame) == 0:
        raise EmptyLog(f"no predictions by {resolved} in the last {_human(since)} in {log_dir}")
    rates = sorted({1.0 if r != r else float(r) for r in frame["sample_rate"]})  # NaN: a line from before sampling
    report = DriftReport(resolved, since, len(frame), sample_rates=rates)
    specs: Mapping[str, Any] = reference.get("features", {})
    for f in manifest.features:
        spec = specs.get(f.name)
        if spec is None:
            continue
        report.rows.append(_row(f.name, f.dtype, frame[f.name], spec))
    if "prediction" in reference:
        # The reference follows the task: positive-class probability (binary),
        # predicted label (multiclass, categorical), predicted value (regression).
        if manifest.task == "binary_classification":
            report.rows.append(_row(PREDICTION, "float", frame["probability"], reference["prediction"]))
        elif manifest.task == "multiclass_classification":
            report.rows.append(_row(PREDICTION, "string", frame["prediction"], reference["prediction"]))
        else:
            report.rows.append(_row(PREDICTION, "float", frame["prediction"], reference["prediction"]))
    return report


def _row(name: str, dtype: str, values: Any, spec: Mapping[str, Any]) -> DriftRow:
    expected = psi.reference_buckets(spec)
    actual = psi.observed_buckets(values, spec)
    value = psi.psi(expected, actual)
    return DriftRow(name, dtype, value, psi.status(value), psi.bucket_labels(spec), expected, actual)


def _load(log_dir: Path, manifest: Manifest, since: timedelta) -> Frame:
    con = connect(log_dir)
    cols = []
    for f in manifest.features:
        path = "$." + f.name  # names match ^[A-Za-z_][A-Za-z0-9_]*$ (the manifest enforces it)
        if f.dtype in ("float", "int"):
            cols.append(f"TRY_CAST(features->>'{path}' AS DOUBLE) AS \"{f.name}\"")
        else:
            cols.append(f"features->>'{path}' AS \"{f.name}\"")
    # ``prediction`` is JSON: a label (text) or a value (number) by task.
    if manifest.task == "regression":
        cols.append("TRY_CAST(prediction AS DOUBLE) AS prediction")
    else:
        cols.append("prediction->>'$' AS prediction")
    sql = (
        f"SELECT {', '.join(cols)}, probability, sample_rate FROM predictions "
        "WHERE model_version = ? AND timestamp >= now() - to_seconds(?)"
    )
    return Frame.of(con.execute(sql, [manifest.version, since.total_seconds()]))


def _human(since: timedelta) -> str:
    s = since.total_seconds()
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size and s % size == 0 and not (unit == "d" and s <= 2 * 86400):
            return f"{int(s // size)}{unit}"
    return f"{s:g}s"


# --- rendering ---------------------------------------------------------------
def render_table(report: DriftReport) -> str:
    lines = [
        f"drift of {report.version} over the last {_human(report.since)}: {report.records} predictions "
        f"({report.sample_text()}; PSI warn ≥ {psi.WARN}, alert ≥ {psi.ALERT})",
        f"{'FEATURE':<20} {'TYPE':<7} {'PSI':>8}  STATUS",
    ]
    for r in report.rows:
        lines.append(f"{r.name:<20} {r.dtype:<7} {r.psi:>8.4f}  {r.status.upper() if r.status != 'ok' else 'ok'}")
    lines.append(f"overall: {report.status}")
    return "\n".join(lines)


def render_json(report: DriftReport) -> str:
    return orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode()


def render_html(report: DriftReport) -> str:
    colours = {"ok": "#2e7d32", "warn": "#ef6c00", "alert": "#c62828"}
    rows = "".join(
        f"<tr><td>{html.escape(r.name)}</td><td>{r.dtype}</td><td>{r.psi:.4f}</td>"
        f'<td style="color:{colours[r.status]};font-weight:bold">{r.status}</td></tr>'
        for r in report.rows
    )
    plots = "".join(
        f"<figure>{_plot(r)}<figcaption>{html.escape(r.name)}: PSI {r.psi:.4f} ({r.status})</figcaption></figure>"
        for r in report.rows
    )
    title = f"Drift report: {html.escape(report.version)}"
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>body{{font-family:sans-serif;margin:2em}}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}"
        "figure{display:inline-block;margin:1em}</style></head><body>"
        f"<h1>{title}</h1><p>{report.records} predictions over the last {_human(report.since)} "
        f"({report.sample_text()}); "
        f"PSI warn ≥ {psi.WARN}, alert ≥ {psi.ALERT}; overall <b>{report.status}</b>.</p>"
        f"<table><tr><th>feature</th><th>type</th><th>PSI</th><th>status</th></tr>{rows}</table>"
        f"{plots}</body></html>"
    )


def _plot(row: DriftRow) -> str:
    title = f"{row.name} — PSI {row.psi:.3f} ({row.status})"
    return svgplot.grouped_bars(title, row.labels, row.expected, row.actual)
