"""The ``modelserve`` command.

Every subcommand has ``--help``; failures print one line (``error: ...``) to
stderr and exit non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from app.errors import ModelServeError

Handler = Callable[[argparse.Namespace], int]


def _settings(args: argparse.Namespace, **overrides: Any) -> Any:
    from app.settings import Settings

    values = {k: v for k, v in overrides.items() if v is not None}
    if getattr(args, "models_dir", None) is not None:
        values["models_dir"] = args.models_dir
    return Settings(**values)


def cmd_serve(args: argparse.Namespace) -> int:
    from app.serve import serve

    settings = _settings(args, host=args.host, port=args.port, workers=args.workers)
    serve(settings)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from app.training.train import train

    s = _settings(args)
    data_dir = args.data_dir or s.feature_table.parent
    written = train(s.models_dir, data_dir, seed=args.seed, force=args.force)
    print(f"trained {', '.join(written) if written else 'nothing (models exist; use --force)'} in {s.models_dir}")
    return 0


def _registry(args: argparse.Namespace) -> Any:
    from app.model.repository import Repository

    return Repository(_settings(args).models_dir)


def cmd_versions(args: argparse.Namespace) -> int:
    reg = _registry(args)
    if not reg.root.is_dir():  # a mistyped --models-dir is not an empty registry
        raise ModelServeError(f"no models directory at {reg.root} (--models-dir or MODELSERVE_MODELS_DIR)")
    infos = reg.describe()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "version": i.version,
                        "aliases": list(i.aliases),
                        "created_at": i.created_at,
                        "estimator": i.estimator,
                        "metrics": i.metrics,
                    }
                    for i in infos
                ],
                indent=2,
            )
        )
        return 0
    print(f"{'VERSION':<10} {'ALIASES':<22} {'ESTIMATOR':<30} {'ROC_AUC':>8}  CREATED")
    for i in infos:
        auc = i.metrics.get("roc_auc")
        auc_s = f"{auc:.4f}" if isinstance(auc, float) else "-"
        print(f"{i.version:<10} {','.join(i.aliases) or '-':<22} {i.estimator or '-':<30} {auc_s:>8}  {i.created_at}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    if args.gate:
        from app.jobs.cli import decide_gate
        from app.jobs.gate import EXIT_FAIL, render_table

        decision = decide_gate(args, args.version, args.alias)
        print(render_table(decision))
        if not decision.passed:
            print(f"error: gate failed: {args.alias} stays on {decision.primary}", file=sys.stderr)
            return EXIT_FAIL
    previous = _registry(args).promote(args.version, args.alias)
    print(f"{args.alias}: {previous or '-'} -> {args.version}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    reg = _registry(args)
    current = reg.aliases().get(args.alias)
    version = reg.rollback(args.alias)
    print(f"{args.alias}: {current} -> {version}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from app.model.pool import ModelPool

    reg = _registry(args)
    names = args.versions or reg.versions()
    if not names:
        raise ModelServeError(f"no model versions in {reg.root}")
    pool = ModelPool(reg, warmup_iterations=1)
    for name in names:
        version = reg.resolve(name)
        model = pool.load(version)  # checksums, load, self-check
        print(f"{version}: ok ({len(model.manifest.features)} features, self-check matched)")
    return 0


def _names(value: str | None) -> list[str]:
    return [n.strip() for n in (value or "").split(",") if n.strip()]


def cmd_publish(args: argparse.Namespace) -> int:
    from app.publish import publish

    summary = publish(
        args.pipeline,
        data=args.data,
        target=args.target,
        version=args.version,
        task=args.task,
        store_features=_names(args.store_features),
        feature_table=args.feature_table,
        id_column=args.id_column,
        nullable=_names(args.nullable),
        alias=args.alias,
        tolerance=args.tolerance,
        mlflow=args.mlflow,
        models_dir=_settings(args).models_dir,
    )
    print(summary)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="modelserve", description="Serve tabular ONNX models.")
    p.add_argument("--models-dir", type=Path, default=None, help="models directory (MODELSERVE_MODELS_DIR)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(handler=handler)
        return sp

    sp = add("serve", cmd_serve, "Serve the HTTP API.")
    sp.add_argument("--host", default=None, help="bind address (MODELSERVE_HOST)")
    sp.add_argument("--port", type=int, default=None, help="port (MODELSERVE_PORT)")
    sp.add_argument("--workers", type=int, default=None, help="worker processes (MODELSERVE_WORKERS)")

    sp = add("train", cmd_train, "Generate the demo data and train the demo model versions.")
    sp.add_argument("--seed", type=int, default=42)
    sp.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where features.parquet goes (default: beside MODELSERVE_FEATURE_TABLE)",
    )
    sp.add_argument("--force", action="store_true", help="retrain versions that exist")

    sp = add("versions", cmd_versions, "List model versions and their aliases.")
    sp.add_argument("--json", action="store_true")

    sp = add("promote", cmd_promote, "Point an alias at a version (verified first).")
    sp.add_argument("version")
    sp.add_argument("--alias", default="production")
    sp.add_argument("--gate", action="store_true", help="run `gate` first and refuse on fail (exit 3)")
    from app.jobs.cli import add_gate_options

    add_gate_options(sp)

    sp = add("rollback", cmd_rollback, "Point an alias back at its previous version.")
    sp.add_argument("--alias", default="production")

    sp = add("verify", cmd_verify, "Verify checksums, manifest and self-check of versions (default: all).")
    sp.add_argument("versions", nargs="*")

    sp = add("publish", cmd_publish, "Convert, check and write your own fitted scikit-learn pipeline as a version.")
    sp.add_argument("pipeline", nargs="?", type=Path, help="joblib file of the fitted pipeline (or use --mlflow)")
    sp.add_argument("--mlflow", type=Path, default=None, help="an MLflow model directory (sklearn flavour) instead")
    sp.add_argument("--data", type=Path, required=True, help="held-out rows with the target (.parquet or .csv)")
    sp.add_argument("--target", required=True, help="target column of --data")
    sp.add_argument("--version", required=True, help="new version name (versions are immutable)")
    sp.add_argument("--task", default="auto", choices=["auto", "binary", "multiclass", "regression"])
    sp.add_argument("--store-features", default=None, help="comma-separated inputs fetched by user_id from the store")
    sp.add_argument("--feature-table", type=Path, default=None, help="default: MODELSERVE_FEATURE_TABLE")
    sp.add_argument("--id-column", default=None, help="column of --data holding the user id (never a feature)")
    sp.add_argument("--nullable", default=None, help="comma-separated inputs that may be null in requests")
    sp.add_argument("--alias", default=None, help="point this alias at the new version (verified, recorded)")
    sp.add_argument("--tolerance", type=float, default=1e-4, help="parity tolerance (probabilities abs, values rel)")

    for register in _extensions():
        register(add)
    return p


def _extensions() -> list[Callable[..., None]]:
    """Subcommands that live with their jobs (batch, drift, query, shadow-report)."""
    out: list[Callable[..., None]] = []
    import importlib

    for mod in ("app.jobs.cli",):
        try:
            out.append(importlib.import_module(mod).register)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except ModelServeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``): end quietly, as SIGPIPE would, with nothing left to flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except Exception as exc:  # the CLI never shows a traceback
        from pydantic import ValidationError

        from app.extras import missing_extra

        if isinstance(exc, ModuleNotFoundError) and (hint := missing_extra(exc, f"modelserve {args.command}")):
            print(f"error: {hint.message}", file=sys.stderr)
            return 2

        if isinstance(exc, ValidationError):
            from app.settings import describe

            print(f"error: {describe(exc)}", file=sys.stderr)
            return 2
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
