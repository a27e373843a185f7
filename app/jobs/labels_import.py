"""``modelserve labels import``: ground truth from a CSV or Parquet file into the label log.

Each row becomes one ``label`` line (``source: "import"``), checked like a
``POST /feedback`` label against the primary model's task (``app.labels``).
All or nothing: the whole file is checked first, and the first bad row stops
the import with one line naming the row (1-based, header not counted) and
column; nothing is written then. Import again after fixing the file — a
label imported twice is harmless, the latest received wins.

CSV cells are text: a label is read as an integer (ASCII digits) for a model with integer
classes, as text for string classes and as a number for regression. Parquet
columns keep their types, which must then fit (an integer class from an
integer column). Request ids of an integer column are taken as text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.errors import ModelServeError, clip
from app.labels import LabelRules
from app.model.manifest import Manifest
from app.telemetry.label_log import LabelLog
from app.telemetry.metrics import Metrics

_INT = re.compile(r"[+-]?[0-9]+")  # ASCII digits: \d (and int()) take any script's, U+0661 as 1


class ImportRefused(ModelServeError):
    """A row of the file does not fit the model; nothing was written. The message names row and column."""


@dataclass
class ImportSummary:
    rows: int
    log_dir: Path

    def render(self) -> str:
        return f"imported {self.rows} label(s) into {self.log_dir}"


def read_table(path: Path, columns: list[str], *, csv_text: bool) -> dict[str, list[Any]]:
    """The named columns of a CSV (every cell as text, empty as None) or Parquet file, as Python lists."""
    import pyarrow.parquet as pq

    suffix = path.suffix.lower()
    if suffix == ".parquet":
        schema = pq.read_schema(path)
        _check_named(path, columns, schema.names)
        table = pq.read_table(path, columns=columns)
        return {c: table.column(c).to_pylist() for c in columns}
    if suffix == ".csv":
        import pyarrow as pa
        import pyarrow.csv as pacsv

        with pacsv.open_csv(path) as reader:  # the header only: the first block
            header = reader.schema.names
        _check_named(path, columns, header)
        table = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                include_columns=columns,
                column_types=dict.fromkeys(columns, pa.string()) if csv_text else None,
                strings_can_be_null=True,
            ),
        )
        return {c: table.column(c).to_pylist() for c in columns}
    raise ImportRefused(f"{path}: expected a .csv or .parquet file")


def _check_named(path: Path, columns: list[str], names: list[str]) -> None:
    """Each of ``columns`` is in the file once: a label column twice left which one was imported to chance."""
    missing = [c for c in columns if c not in names]
    if missing:
        raise ImportRefused(f"{path}: no column {', '.join(map(repr, missing))} (columns: {clip(names)})")
    twice = [c for c in columns if names.count(c) > 1]
    if twice:
        raise ImportRefused(f"{path}: column {', '.join(map(repr, twice))} is named more than once")


def import_labels(
    path: Path,
    log_dir: Path,
    manifest: Manifest,
    *,
    request_id_column: str,
    label_column: str,
    observed_at_column: str | None = None,
) -> ImportSummary:
    """Check every row of ``path``, then write them all as label lines in ``log_dir`` (see the module docstring)."""
    columns = [request_id_column, label_column] + ([observed_at_column] if observed_at_column else [])
    data = read_table(path, list(dict.fromkeys(columns)), csv_text=path.suffix.lower() == ".csv")
    rules = LabelRules(manifest)
    is_csv = path.suffix.lower() == ".csv"
    names = {"request_id": request_id_column, "label": label_column, "observed_at": observed_at_column or ""}
    items: list[dict[str, Any]] = []
    for i in range(len(data[request_id_column])):
        request_id = data[request_id_column][i]
        if isinstance(request_id, int) and not isinstance(request_id, bool):
            request_id = str(request_id)
        label = data[label_column][i]
        if label is None:
            raise ImportRefused(f"row {i + 1}, column {label_column!r}: no label")
        if is_csv:
            label = _from_text(label, rules)
        obj: dict[str, Any] = {"request_id": request_id, "label": label}
        if observed_at_column and data[observed_at_column][i] is not None:
            obj["observed_at"] = data[observed_at_column][i]
        item, problems = rules.check(obj)
        if item is None:
            p = problems[0]
            column = names.get(str(p["loc"][0]), str(p["loc"][0]))
            raise ImportRefused(f"row {i + 1}, column {column!r}: {p['msg']} (got {clip(repr(obj.get(p['loc'][0])))})")
        items.append(item)
    labels = LabelLog(log_dir, Metrics(), queue_size=max(len(items), 1))
    for item in items:
        labels.submit_label(item["request_id"], item["label"], item["observed_at"], "import")
    labels.close_sync()  # writes everything queued, in file order
    if labels.failure is not None:
        raise ModelServeError(f"label log {log_dir} cannot write: {labels.failure}; some labels may be missing")
    return ImportSummary(len(items), log_dir)


def _from_text(text: str, rules: LabelRules) -> Any:
    """A CSV cell as the label type the model wants (left as text when it cannot be, so the check names it)."""
    if rules.task == "regression":
        if not text.isascii() or "_" in text:  # float() reads U+0661 U+0662 as 12.0 and "1_000" as 1000.0
            return text
        try:
            return float(text)
        except ValueError:
            return text
    if rules.class_type is int:
        return int(text) if _INT.fullmatch(text.strip()) else text
    return text
