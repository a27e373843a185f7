"""Train the demo model versions and write them as registry artifacts.

``train()`` writes, under ``models_dir``::

    v1/  LogisticRegression
    v2/  GradientBoostingClassifier(n_estimators=100, max_depth=3)
    v3/  GradientBoostingClassifier(n_estimators=150, max_depth=4, learning_rate=0.05, subsample=0.8)
    production -> v2,  candidate -> v3

and the offline feature table ``data_dir/features.parquet``. All versions are
fitted and checked in memory before anything is written, so a failed check
leaves the disk as it was. Every version is then built in
``models_dir/.tmp-vN-<pid>/`` and renamed into place, so a reader sees a whole
version or none. An existing version is kept unless ``force``; an existing
alias too. The feature table is (re)written when it is missing or when any
version was built, so it always matches the newest artifacts.

Metrics and the prediction reference are computed from the ONNX outputs on
the holdout: what the service will answer, not what scikit-learn would.

Everything random derives from ``seed``: the same seed and sizes give the
same feature table, artifacts and manifests (bar ``created_at`` and library
versions).

Before a version is written, its ONNX graph must reproduce the fitted
pipeline within 1e-5 on the manifest's sample row, and within 1e-4 on every
holdout row except those lying exactly on a tree split threshold, where
float32 ONNX and float64 scikit-learn may legitimately branch differently
(``export.threshold_ties``). The sample is the first candidate event (see
``manifest.sample_candidates``) that is not such a tie, so it is usually,
not necessarily, the same for every version.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from app.errors import ArtifactError
from app.model.manifest import Manifest, Sample
from app.model.repository import set_alias, sha256_file
from app.model.runtime import OnnxModel
from app.training.data import FEATURES, generate_events, generate_users, model_frame, write_feature_table
from app.training.export import build_pipeline, export_onnx, threshold_ties
from app.training.manifest import build_manifest, feature_reference, prediction_reference, sample_candidates

log = logging.getLogger(__name__)

HOLDOUT_FRACTION = 0.2
SAMPLE_TOLERANCE = 1e-5
HOLDOUT_TOLERANCE = 1e-4
FEATURE_TABLE = "features.parquet"
ALIASES = {"production": "v2", "candidate": "v3"}

ESTIMATORS: dict[str, Callable[[int], BaseEstimator]] = {
    "v1": lambda seed: LogisticRegression(max_iter=1000, random_state=seed),
    "v2": lambda seed: GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=seed),
    "v3": lambda seed: GradientBoostingClassifier(
        n_estimators=150, max_depth=4, learning_rate=0.05, subsample=0.8, random_state=seed
    ),
}


class TrainingError(RuntimeError):
    """A trained artifact failed its own checks; nothing was written for it."""


@dataclass(frozen=True)
class Dataset:
    """The split events plus what every version shares: sample candidates, feature reference."""

    users: pd.DataFrame
    train: pd.DataFrame
    holdout: pd.DataFrame
    samples: list[tuple[dict[str, Any], dict[str, Any]]]
    reference: dict[str, dict[str, Any]]


def train(
    models_dir: Path,
    data_dir: Path,
    seed: int = 42,
    force: bool = False,
    *,
    n_users: int = 5000,
    n_events: int = 40_000,
) -> list[str]:
    """Train v1–v3 into ``models_dir``; return the versions written, in order."""
    models_dir, data_dir = Path(models_dir), Path(data_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    todo = [v for v in ESTIMATORS if force or not (models_dir / v).exists()]
    table = data_dir / FEATURE_TABLE
    if not todo and table.exists():
        log.info("all versions exist in %s; nothing to train (use force to retrain)", models_dir)
    else:
        dataset = prepare(seed, n_users, n_events)
        artifacts = {version: fit_version(version, dataset, seed) for version in todo}
        write_feature_table(dataset.users, table)
        for version, artifact in artifacts.items():
            write_version(models_dir, version, artifact)
    for alias, version in ALIASES.items():
        link = models_dir / alias
        if (force or not (link.is_symlink() or link.exists())) and (models_dir / version).is_dir():
            set_alias(models_dir, alias, version)
    return todo


def prepare(seed: int, n_users: int, n_events: int) -> Dataset:
    """Generate and split the data; choose the sample; bin the training features."""
    users = generate_users(n_users, seed)
    events = generate_events(users, n_events, seed)
    train_events, holdout = train_test_split(
        events, test_size=HOLDOUT_FRACTION, random_state=seed, stratify=events["label"]
    )
    return Dataset(users, train_events, holdout, sample_candidates(holdout), feature_reference(train_events))


@dataclass(frozen=True)
class Artifact:
    """A fitted, exported and checked version, not yet on disk."""

    pipeline: Pipeline
    onnx: bytes
    manifest: Manifest  # "files" still empty: it needs the written bytes


def fit_version(version: str, data: Dataset, seed: int) -> Artifact:
    """Fit one version, export it, check ONNX against the pipeline, compute metrics."""
    started = time.perf_counter()
    estimator = ESTIMATORS[version](seed)
    pipeline = build_pipeline(FEATURES, estimator)
    pipeline.fit(model_frame(data.train), data.train["label"].to_numpy())
    onnx = export_onnx(pipeline, FEATURES)
    try:
        model = OnnxModel(onnx, FEATURES, version=version)
    except ArtifactError as exc:
        raise TrainingError(exc.message) from None

    sample = _checked_sample(version, data, pipeline, model)

    holdout_frame = model_frame(data.holdout)
    y = data.holdout["label"].to_numpy()
    holdout_label, holdout_positive = model.predict_columns(holdout_frame)
    diff = np.abs(holdout_positive.astype(np.float64) - pipeline.predict_proba(holdout_frame)[:, 1])
    apart = np.flatnonzero(diff > HOLDOUT_TOLERANCE)
    unexplained = apart[~threshold_ties(pipeline, holdout_frame.iloc[apart])]
    if len(unexplained):
        raise TrainingError(
            f"{version}: ONNX and pipeline disagree on {len(unexplained)} holdout rows"
            f" (max diff {diff[unexplained].max():.3g}), not explained by split-threshold ties"
        )

    positive = np.clip(holdout_positive.astype(np.float64), 1e-7, 1 - 1e-7)
    metrics: dict[str, float | int] = {
        "roc_auc": round(float(roc_auc_score(y, positive)), 6),
        "accuracy": round(float(accuracy_score(y, holdout_label)), 6),
        "log_loss": round(float(log_loss(y, positive, labels=[0, 1])), 6),
        "n_train": len(data.train),
        "n_holdout": len(data.holdout),
    }
    manifest = build_manifest(
        version=version,
        estimator=type(estimator).__name__,
        features=FEATURES,
        sample=sample,
        reference={"features": data.reference, "prediction": prediction_reference(holdout_positive)},
        metrics=metrics,
        files={},
    )
    log.info(
        "%s %s: roc_auc=%.4f accuracy=%.4f in %.1fs (onnx/pipeline: %d holdout ties, max diff %.1e)",
        version,
        manifest.estimator,
        metrics["roc_auc"],
        metrics["accuracy"],
        time.perf_counter() - started,
        len(apart),
        float(diff.max()),
    )
    return Artifact(pipeline, onnx, manifest)


def _checked_sample(version: str, data: Dataset, pipeline: Pipeline, model: OnnxModel) -> Sample:
    """The manifest sample: the first candidate on which ONNX and the pipeline agree."""
    worst = 0.0
    for request, row in data.samples:
        frame = model_frame([row])
        label, positive = model.predict_columns(frame)
        expected = float(positive[0])
        diff = abs(expected - float(pipeline.predict_proba(frame)[0, 1]))
        if diff <= SAMPLE_TOLERANCE:
            return Sample(request=request, row=row, expected={"prediction": int(label[0]), "probability": expected})
        worst = max(worst, diff)
    raise TrainingError(f"{version}: ONNX and pipeline disagree on every sample candidate (by up to {worst:.3g})")


def write_version(models_dir: Path, version: str, artifact: Artifact) -> Path:
    """Write ``models_dir/version`` atomically: build aside, then rename into place."""
    target = models_dir / version
    tmp = models_dir / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        (tmp / "model.onnx").write_bytes(artifact.onnx)
        joblib.dump(artifact.pipeline, tmp / "pipeline.joblib")
        files = {name: sha256_file(tmp / name) for name in ("model.onnx", "pipeline.joblib")}
        manifest = artifact.manifest.model_copy(update={"files": files})
        (tmp / "manifest.json").write_text(manifest.to_json())
        for path in tmp.iterdir():
            _fsync(path)
        _fsync(tmp)
        if target.exists():
            # A directory cannot be renamed over a non-empty one: move the old
            # version aside first; the gap is two renames long.
            old = models_dir / f".old-{version}-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
        _fsync(models_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
