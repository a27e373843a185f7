"""Subcommands of the offline jobs, registered into ``modelserve`` by ``app.cli``.

``register(add)`` receives ``add(name, handler, help) -> ArgumentParser``.
Imports are lazy so ``modelserve --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

Add = Callable[..., argparse.ArgumentParser]


def _settings(args: argparse.Namespace) -> Any:
    from app.settings import Settings

    values: dict[str, Any] = {}
    if getattr(args, "models_dir", None) is not None:
        values["models_dir"] = args.models_dir
    return Settings(**values)


def _log_dir(args: argparse.Namespace) -> Path:
    from app.errors import ModelServeError

    log_dir = args.log_dir or _settings(args).log_dir
    if log_dir is None:
        raise ModelServeError("no prediction log: pass --log-dir or set MODELSERVE_LOG_DIR")
    return Path(log_dir)


def cmd_query(args: argparse.Namespace) -> int:
    from app.jobs.query import render, run_query

    names, rows = run_query(_log_dir(args), args.sql)
    print(render(names, rows, args.format))
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    from app.jobs.drift import EXIT_ALERT, compute_drift, parse_since, render_html, render_json, render_table

    report = compute_drift(_log_dir(args), _settings(args).models_dir, args.version, parse_since(args.since))
    if args.html is not None:
        args.html.write_text(render_html(report), encoding="utf-8")
    print(render_json(report) if args.json else render_table(report))
    if args.html is not None and not args.json:
        print(f"report: {args.html}", file=sys.stderr)
    return EXIT_ALERT if report.status == "alert" else 0


def cmd_batch(args: argparse.Namespace) -> int:
    from app.jobs.batch import BatchOptions, run_batch

    options = BatchOptions(
        input=args.input,
        output=args.output,
        version=args.version,
        rejects=args.rejects,
        chunk_rows=args.chunk_rows,
        threads=args.threads,
        sink=args.sink,
        sink_batch=args.sink_batch,
        sink_concurrency=args.sink_concurrency,
        sink_retries=args.sink_retries,
        restart=args.restart,
        progress=not args.no_progress,
    )
    summary = run_batch(_settings(args), options)
    print(summary.render(), file=sys.stderr)
    return 0


def cmd_shadow_report(args: argparse.Namespace) -> int:
    from app.jobs.drift import parse_since
    from app.jobs.shadow_report import compute_shadow_report, render_json, render_table

    report = compute_shadow_report(_log_dir(args), parse_since(args.since), args.threshold)
    if not args.labels:
        print(render_json(report) if args.json else render_table(report))
        return 0
    import orjson

    from app.jobs import shadow_quality

    pairs = shadow_quality.compare_labelled(
        _log_dir(args), _settings(args).models_dir, parse_since(args.since), args.bootstrap, args.seed
    )
    if args.json:
        out = {**report.to_dict(), "labelled": [p.to_dict() for p in pairs]}
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render_table(report) + "\n\n" + shadow_quality.render_table(pairs))
    return 0


def _quality(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """The quality commands' exit codes: 0 fine, 3 alert/fail/retrain, 2 a usage or data error."""

    def run(args: argparse.Namespace) -> int:
        from app.errors import ModelServeError

        try:
            return handler(args)
        except ModelServeError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 2

    return run


def cmd_evaluate(args: argparse.Namespace) -> int:
    from app.jobs.drift import parse_since
    from app.jobs.evaluate import evaluate, render_html, render_json, render_table

    report = evaluate(
        _log_dir(args),
        _settings(args).models_dir,
        parse_since(args.since),
        args.version,
        args.by,
        args.bootstrap,
        args.seed,
    )
    if args.html is not None:
        args.html.write_text(render_html(report), encoding="utf-8")
    print(render_json(report) if args.json else render_table(report))
    return 0


def gate_limits(args: argparse.Namespace) -> Any:
    from app.jobs.gate_limits import GateLimits

    return GateLimits(args.min_shadowed, args.min_labelled, args.max_error_rate, args.latency_ratio, args.margin)


def add_gate_options(sp: argparse.ArgumentParser) -> None:
    """The gate's thresholds, shared by ``gate`` and ``promote --gate``."""
    from app.jobs.gate_limits import GateLimits

    d = GateLimits()
    sp.add_argument("--since", default="7d", help="shadowed traffic to judge on: 24h, 7d (default 7d)")
    sp.add_argument("--log-dir", type=Path, default=None, help="prediction log directory (MODELSERVE_LOG_DIR)")
    sp.add_argument("--min-shadowed", type=int, default=d.min_shadowed, help=f"default {d.min_shadowed}")
    sp.add_argument("--min-labelled", type=int, default=d.min_labelled, help=f"default {d.min_labelled}")
    sp.add_argument("--max-error-rate", type=float, default=d.max_error_rate, help=f"default {d.max_error_rate}")
    sp.add_argument(
        "--latency-ratio",
        type=float,
        default=d.latency_ratio,
        help=f"candidate/primary p99 (default {d.latency_ratio:g})",
    )
    sp.add_argument("--margin", type=float, default=d.margin, help=f"non-inferiority margin (default {d.margin})")
    _bootstrap_options(sp)


def decide_gate(args: argparse.Namespace, version: str, alias: str) -> Any:
    """Run the gate and write its decision, with the figures, to the alias history."""
    from app.jobs.drift import parse_since
    from app.jobs.gate import run_gate
    from app.model.repository import Repository

    models_dir = _settings(args).models_dir
    decision = run_gate(
        _log_dir(args),
        models_dir,
        version,
        alias,
        parse_since(args.since),
        gate_limits(args),
        args.bootstrap,
        args.seed,
    )
    figures = decision.to_dict()
    Repository(models_dir).record_gate(
        alias, decision.version, decision.decision, {"primary": figures["primary"], "criteria": figures["criteria"]}
    )
    return decision


def cmd_gate(args: argparse.Namespace) -> int:
    from app.jobs.gate import EXIT_FAIL, render_json, render_table

    decision = decide_gate(args, args.version, args.alias)
    print(render_json(decision) if args.json else render_table(decision))
    return 0 if decision.passed else EXIT_FAIL


def cmd_monitor(args: argparse.Namespace) -> int:
    from app.errors import ModelServeError
    from app.jobs.drift import MAX_SINCE, parse_since
    from app.jobs.monitor import EXIT_RETRAIN, monitor, render_json, render_table
    from app.quality.decision import Rule

    rule = Rule(args.sustain, args.margin, args.min_labelled)
    window = parse_since(args.window, "--window")
    if args.windows < 1 or window * args.windows > MAX_SINCE:
        raise ModelServeError(
            f"invalid --windows {args.windows}: at least 1, and --window × --windows at most {MAX_SINCE.days}d"
        )
    report = monitor(
        _log_dir(args),
        _settings(args).models_dir,
        args.version,
        window,
        args.windows,
        rule,
        args.bootstrap,
        args.seed,
    )
    print(render_json(report) if args.json else render_table(report))
    return EXIT_RETRAIN if report.decision == "retrain" else 0


def _bootstrap_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--bootstrap", type=int, default=200, metavar="N", help="bootstrap replicates (default 200)")
    sp.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")


def cmd_compact(args: argparse.Namespace) -> int:
    from app.jobs.compact import compact

    settings = _settings(args)
    summary = compact(_log_dir(args), max_age_seconds=settings.log_max_age_seconds)
    print(summary.render())
    return 0


def cmd_labels_import(args: argparse.Namespace) -> int:
    from app.jobs.labels_import import ImportRefused, import_labels
    from app.model.repository import Repository

    settings = _settings(args)
    repository = Repository(settings.models_dir)
    manifest = repository.read_manifest(repository.resolve(args.version or settings.alias))
    try:
        summary = import_labels(
            args.file,
            _log_dir(args),
            manifest,
            request_id_column=args.request_id_column,
            label_column=args.label_column,
            observed_at_column=args.observed_at_column,
        )
    except ImportRefused as exc:
        print(f"error: {exc.message}; nothing was written", file=sys.stderr)
        return 2
    print(summary.render())
    return 0


def register(add: Add) -> None:
    sp = add(
        "query", cmd_query, "Run SQL over the prediction and label logs (views: predictions, shadow, labels, log)."
    )
    sp.add_argument("sql", help='e.g. "SELECT model_version, count(*) FROM predictions GROUP BY 1"')
    sp.add_argument("--log-dir", type=Path, default=None, help="prediction log directory (MODELSERVE_LOG_DIR)")
    sp.add_argument("--format", choices=("table", "csv", "json"), default="table")

    sp = add("drift", cmd_drift, "PSI of logged traffic against the training reference (exit 3 on alert).")
    sp.add_argument("--since", default="24h", help="window to look back over: 90s, 30m, 24h, 7d (default 24h)")
    sp.add_argument("--version", default=None, help="version or alias to check (default: production)")
    sp.add_argument("--log-dir", type=Path, default=None, help="prediction log directory (MODELSERVE_LOG_DIR)")
    sp.add_argument("--html", type=Path, default=None, metavar="FILE", help="also write an HTML report with plots")
    sp.add_argument("--json", action="store_true", help="print JSON instead of a table")

    sp = add("batch", cmd_batch, "Score a CSV, Parquet or JSONL file into Parquet or CSV.")
    sp.add_argument("input", type=Path, help="rows: user_id, the request features, optional request_id")
    sp.add_argument("output", type=Path, help="output file (.parquet or .csv): the inputs + predictions")
    sp.add_argument("--version", default=None, help="version or alias to score with (default: production)")
    sp.add_argument("--rejects", type=Path, default=None, help="rejected rows (default: OUTPUT.rejects.jsonl)")
    sp.add_argument("--chunk-rows", type=int, default=100_000, help="rows per chunk (default 100000)")
    sp.add_argument(
        "--threads", type=int, default=1, help="onnxruntime threads (default 1: the other core reads and writes)"
    )
    sp.add_argument("--sink", default=None, metavar="URL", help="also POST results to this URL")
    sp.add_argument("--sink-batch", type=int, default=1000, help="rows per POST (default 1000)")
    sp.add_argument("--sink-concurrency", type=int, default=32, help="POSTs in flight (default 32)")
    sp.add_argument("--sink-retries", type=int, default=6, help="retries per POST (default 6)")
    sp.add_argument("--restart", action="store_true", help="ignore a checkpoint of an earlier run")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")

    sp = add("shadow-report", cmd_shadow_report, "Compare the shadowed candidate with the primary over the log.")
    sp.add_argument("--since", default="24h", help="window to look back over: 90s, 30m, 24h, 7d (default 24h)")
    sp.add_argument("--threshold", type=float, default=0.1, help="|probability difference| counted (default 0.1)")
    sp.add_argument("--log-dir", type=Path, default=None, help="prediction log directory (MODELSERVE_LOG_DIR)")
    sp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sp.add_argument(
        "--labels", action="store_true", help="also compare quality on labelled requests (paired bootstrap)"
    )
    _bootstrap_options(sp)

    sp = add("evaluate", _quality(cmd_evaluate), "Live quality: predictions joined with labels, metrics with 95%% CIs.")
    sp.add_argument("--since", default="7d", help="window to look back over: 90s, 30m, 24h, 7d (default 7d)")
    sp.add_argument("--version", default=None, help="only this version or alias (default: every logged version)")
    sp.add_argument("--by", choices=("version", "day", "variant"), default="version", help="groups (default version)")
    sp.add_argument("--log-dir", type=Path, default=None, help="prediction log directory (MODELSERVE_LOG_DIR)")
    sp.add_argument("--html", type=Path, default=None, metavar="FILE", help="also write an HTML report with plots")
    sp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _bootstrap_options(sp)

    sp = add("gate", _quality(cmd_gate), "Promotion gate for a shadowed candidate (exit 0 pass, 3 fail).")
    sp.add_argument("version", help="the candidate version")
    sp.add_argument("--alias", default="production", help="the alias it would replace (default production)")
    sp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_gate_options(sp)

    sp = add("monitor", _quality(cmd_monitor), "Drift, estimated and realized quality: ok, watch or retrain (exit 3).")
    sp.add_argument("--version", default=None, help="version or alias to watch (default: production)")
    sp.add_argument("--window", default="1d", help="length of one window: 6h, 1d (default 1d)")
    sp.add_argument("--windows", type=int, default=7, help="windows to look back over (default 7)")
    sp.add_argument("--sustain", type=int, default=3, help="degraded windows in a row that mean retrain (default 3)")
    sp.add_argument("--margin", type=float, default=0.05, help="drop below the holdout that counts (default 0.05)")
    sp.add_argument("--min-labelled", type=int, default=200, help="labels a window needs for realized quality")
    sp.add_argument("--log-dir", type=Path, default=None, help="prediction log directory (MODELSERVE_LOG_DIR)")
    sp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _bootstrap_options(sp)

    sp = add("compact", cmd_compact, "Turn closed JSONL log files into the partitioned Parquet warehouse.")
    sp.add_argument("--log-dir", type=Path, default=None, help="prediction log directory (MODELSERVE_LOG_DIR)")

    sp = add("labels", cmd_labels_import, "Ground truth for logged predictions (labels import).")
    labels = sp.add_subparsers(dest="labels_command", required=True, metavar="COMMAND")
    sp = labels.add_parser(
        "import",
        help="Write labels from a CSV or Parquet file into the label log (all rows checked first).",
        description="Write labels from a CSV or Parquet file into the label log. Every row is checked against "
        "the primary model's task first; a bad row is named and nothing is written (exit 2).",
    )
    sp.set_defaults(handler=cmd_labels_import)
    sp.add_argument("file", type=Path, help="a .csv or .parquet file")
    sp.add_argument("--request-id-column", required=True, help="column holding the prediction's request_id")
    sp.add_argument("--label-column", required=True, help="column holding the label")
    sp.add_argument("--observed-at-column", default=None, help="column holding when the outcome happened")
    sp.add_argument("--version", default=None, help="version or alias whose task labels must fit (default: production)")
    sp.add_argument("--log-dir", type=Path, default=None, help="prediction log directory (MODELSERVE_LOG_DIR)")
