"""Published model versions of every task, built once, and served from private models directories.

``build(root)`` fits on ``publish_data.frame()`` and publishes, through
``app.publish.publish``, into ``root/models``:

* ``m1``: multiclass LogisticRegression on ``segment`` (string labels core/gold/young);
* ``m2``: the same task and inputs, more strongly regularised (a shadow candidate of m1);
* ``r1``: Ridge regression on ``spend``; ``r2`` the same fit under another name.

No store features: the pipelines drop ``user_id``, so requests carry only
``features``. ``TaskModels.workspace(dir, production=..., candidate=...)``
copies the versions into a models directory of its own with those aliases,
for a test to serve (``settings``/``env``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression, Ridge

from app.model.repository import set_alias
from app.publish import publish
from app.settings import Settings
from tests.support import publish_data as data

REQUEST_FEATURES = ("age", "income", "plan", "score", "mobile")
TARGETS = {"m1": "segment", "m2": "segment", "r1": "spend", "r2": "spend"}


@dataclass
class TaskModels:
    root: Path
    frame: pd.DataFrame
    pipelines: dict[str, Any] = field(default_factory=dict)

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def feature_table(self) -> Path:
        return self.root / "features.parquet"

    def holdout(self, n: int | None = None) -> pd.DataFrame:
        rows = data.holdout(self.frame)
        return rows if n is None else rows.head(n)

    def bodies(self, n: int = 40) -> list[dict[str, Any]]:
        """/predict bodies of the first ``n`` held-out rows (NaN as null), with request ids."""
        rows = self.holdout(n)
        return [
            {
                "request_id": f"t-{i}",
                "features": {name: json_value(rows.iloc[i][name]) for name in REQUEST_FEATURES},
            }
            for i in range(len(rows))
        ]

    def expected(self, version: str, n: int = 40) -> tuple[np.ndarray, np.ndarray | None]:
        """The pipeline's own answers on the first ``n`` held-out rows: (predict, predict_proba or None)."""
        pipeline = self.pipelines[version]
        x = data.inputs(self.holdout(n))
        probs = pipeline.predict_proba(x) if hasattr(pipeline, "predict_proba") else None
        return pipeline.predict(x), probs

    def workspace(self, directory: Path, production: str, candidate: str | None = None) -> Path:
        """A models directory of its own holding every version, ``production`` (and ``candidate``) pointed."""
        models = directory / "models"
        shutil.copytree(self.models_dir, models, symlinks=True)
        set_alias(models, "production", production)
        if candidate is not None:
            set_alias(models, "candidate", candidate)
        return models

    def settings(self, models: Path, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "models_dir": models,
            "feature_table": self.feature_table,
            "warmup_iterations": 2,
            "alias_poll_seconds": 0,
        }
        values.update(overrides)
        return Settings(**values)

    def env(self, models: Path, **overrides: str) -> dict[str, str]:
        return {
            "MODELSERVE_MODELS_DIR": str(models),
            "MODELSERVE_FEATURE_TABLE": str(self.feature_table),
            **overrides,
        }


def build(root: Path) -> TaskModels:
    df = data.frame()
    out = TaskModels(root, df)
    root.mkdir(parents=True, exist_ok=True)
    data.feature_table(df).to_parquet(out.feature_table)
    holdout = data.holdout(df)
    ridge = data.fit(Ridge(alpha=1.0), "spend", df)
    out.pipelines = {
        "m1": data.fit(LogisticRegression(max_iter=500), "segment", df),
        "m2": data.fit(LogisticRegression(max_iter=500, C=0.05), "segment", df),
        "r1": ridge,
        "r2": ridge,
    }
    for version, pipeline in out.pipelines.items():
        publish(pipeline, data=holdout, target=TARGETS[version], version=version, models_dir=out.models_dir)
    return out


def json_value(value: Any) -> Any:
    """A frame value as a client sends it (NaN as null, numpy scalars as Python ones)."""
    if isinstance(value, float) and np.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value
