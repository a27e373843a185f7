"""Train the demo model versions and publish them as registry artifacts.

``train()`` writes, under ``models_dir``::

    v1/  LogisticRegression
    v2/  GradientBoostingClassifier(n_estimators=100, max_depth=3)
    v3/  GradientBoostingClassifier(n_estimators=150, max_depth=4, learning_rate=0.05, subsample=0.8)
    production -> v2,  candidate -> v3

and the offline feature table ``data_dir/features.parquet``. Training is a
thin demo on top of ``app.publish.publish``: it generates the data, fits the
pipelines and writes the feature table; each version is then published like
a user's own pipeline — converted, gated on parity with the service's
runtime on the holdout, and written atomically — with the store features
and ``user_id`` as the demo serves them. The holdout is what the metrics,
the prediction reference, the parity figures and the manifest sample come
from; the training rows give the feature reference.

Every version is fitted before anything is written, and each is checked
before it is written, so a refused version leaves its directory as it was
(the versions before it in order are already published). An existing
version is kept unless ``force``; an existing alias too. The feature table is
(re)written when it is missing or when any version is built, so it always
matches the newest artifacts.

Everything random derives from ``seed``: the same seed and sizes give the
same feature table, artifacts and manifests (bar ``created_at`` and library
versions).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from app.model.manifest import Feature
from app.model.repository import set_alias
from app.publish import publish
from app.training.data import (
    FEATURES,
    STORE_FEATURES,
    generate_events,
    generate_users,
    model_frame,
    write_feature_table,
)

log = logging.getLogger(__name__)

HOLDOUT_FRACTION = 0.2
HOLDOUT_TOLERANCE = 1e-4
FEATURE_TABLE = "features.parquet"
TARGET = "label"
ID_COLUMN = "user_id"
ALIASES = {"production": "v2", "candidate": "v3"}

ESTIMATORS: dict[str, Callable[[int], BaseEstimator]] = {
    "v1": lambda seed: LogisticRegression(max_iter=1000, random_state=seed),
    "v2": lambda seed: GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=seed),
    "v3": lambda seed: GradientBoostingClassifier(
        n_estimators=150, max_depth=4, learning_rate=0.05, subsample=0.8, random_state=seed
    ),
}


@dataclass(frozen=True)
class Dataset:
    """The users (the feature table) and the split events (``user_id``, the features, ``label``)."""

    users: pd.DataFrame
    train: pd.DataFrame
    holdout: pd.DataFrame


def train(
    models_dir: Path,
    data_dir: Path,
    seed: int = 42,
    force: bool = False,
    *,
    n_users: int = 5000,
    n_events: int = 40_000,
) -> list[str]:
    """Train v1–v3 into ``models_dir``; return the versions written, in order.

    Raises ``app.errors.PublishRefused`` when a version fails its checks.
    """
    models_dir, data_dir = Path(models_dir), Path(data_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    todo = [v for v in ESTIMATORS if force or not (models_dir / v).exists()]
    table = data_dir / FEATURE_TABLE
    if not todo and table.exists():
        log.info("all versions exist in %s; nothing to train (use force to retrain)", models_dir)
    else:
        dataset = prepare(seed, n_users, n_events)
        pipelines = {version: fit(version, dataset, seed) for version in todo}
        write_feature_table(dataset.users, table)  # publish resolves the store features through it
        for version, pipeline in pipelines.items():
            summary = publish(
                pipeline,
                data=dataset.holdout,
                target=TARGET,
                version=version,
                store_features=STORE_FEATURES,
                feature_table=table,
                id_column=ID_COLUMN,
                nullable=[f.name for f in FEATURES if f.nullable],
                tolerance=HOLDOUT_TOLERANCE,
                models_dir=models_dir,
                seed=seed,
                reference_data=dataset.train,
                extra_metrics={"n_train": len(dataset.train)},
                replace=force,
            )
            log.info(
                "%s %s: roc_auc=%.4f accuracy=%.4f, published in %.1fs (parity: %d threshold ties, max diff %.1e)",
                version,
                summary.estimator,
                summary.metrics["roc_auc"],
                summary.metrics["accuracy"],
                summary.seconds,
                summary.parity.threshold_ties,
                summary.parity.max_abs_prob_diff or 0.0,
            )
    for alias, version in ALIASES.items():
        link = models_dir / alias
        if (force or not (link.is_symlink() or link.exists())) and (models_dir / version).is_dir():
            set_alias(models_dir, alias, version)
    return todo


def prepare(seed: int, n_users: int, n_events: int) -> Dataset:
    """Generate the users and events and split the events into training rows and holdout."""
    users = generate_users(n_users, seed)
    events = generate_events(users, n_events, seed)
    train_events, holdout = train_test_split(
        events, test_size=HOLDOUT_FRACTION, random_state=seed, stratify=events[TARGET]
    )
    return Dataset(users, train_events, holdout)


def fit(version: str, data: Dataset, seed: int) -> Pipeline:
    """The demo pipeline of ``version``, fitted on the training rows."""
    pipeline = build_pipeline(FEATURES, ESTIMATORS[version](seed))
    return pipeline.fit(model_frame(data.train), data.train[TARGET].to_numpy())


def build_pipeline(features: Sequence[Feature], estimator: BaseEstimator) -> Pipeline:
    """``Pipeline([("preprocess", ColumnTransformer), ("model", estimator)])`` for ``features``.

    Numeric features (float, int, bool) are median-imputed and standardised;
    strings one-hot encoded over their declared categories (so the published
    features carry exactly those), unknown values ignored. String features
    are never nullable, so they are not imputed.
    """
    numeric = [f.name for f in features if f.dtype != "string"]
    strings = [f for f in features if f.dtype == "string"]
    encoder = OneHotEncoder(categories=[list(f.categories or ()) for f in strings], handle_unknown="ignore")
    preprocess = ColumnTransformer(
        [
            ("numeric", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric),
            ("strings", encoder, [f.name for f in strings]),
        ]
    )
    return Pipeline([("preprocess", preprocess), ("model", estimator)])
