"""Probabilities answered are within [0, 1], whatever float32 rounding the graph does.

A random forest's ONNX graph adds each tree's share in float32: twenty trees
that agree sum to ``1.0000001``. Such a value reaching clients breaks a
``0 <= p <= 1`` check and ``log(1 - p)``. A published forest of twenty
trees, binary and multiclass, is served and every path's probabilities are
checked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier

from app.main import create_app
from app.model.repository import set_alias
from app.publish import publish
from app.settings import Settings
from tests.support.workspace import serving

N_TRAIN = 300


def frame(classes: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 2))
    y = np.digitize(x[:, 0], np.linspace(-1, 1, classes + 1)[1:-1])
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": y})


def served(tmp_path: Path, classes: int) -> tuple[Settings, pd.DataFrame]:
    df = frame(classes)
    forest = RandomForestClassifier(n_estimators=20, random_state=0)
    forest.fit(df[["a", "b"]].iloc[:N_TRAIN], df["y"].iloc[:N_TRAIN])
    models = tmp_path / "models"
    holdout = df.iloc[N_TRAIN:]
    publish(forest, data=holdout, target="y", version="f1", models_dir=models, feature_table=tmp_path / "t.parquet")
    set_alias(models, "production", "f1")
    settings = Settings(
        models_dir=models, feature_table=tmp_path / "t.parquet", warmup_iterations=1, alias_poll_seconds=0
    )
    return settings, holdout


def probabilities(answer: dict) -> list[float]:
    return [answer["probability"], *(answer.get("probabilities") or {}).values()]


@pytest.mark.parametrize("classes", [2, 3], ids=["binary", "multiclass"])
def test_every_answered_probability_is_within_0_and_1(tmp_path, classes):
    settings, holdout = served(tmp_path, classes)
    rows = [{"features": {"a": float(a), "b": float(b)}} for a, b in zip(holdout["a"], holdout["b"], strict=True)]
    with serving(create_app(settings)) as c:
        one = [c.post("/predict", json=r).json() for r in rows[:50]]
        batch = c.post("/predict/batch", json={"instances": rows}).json()["predictions"]
        v2 = c.post(
            "/v2/models/modelserve/infer",
            json={
                "inputs": [
                    {"name": "a", "datatype": "FP64", "shape": [len(rows)], "data": holdout["a"].tolist()},
                    {"name": "b", "datatype": "FP64", "shape": [len(rows)], "data": holdout["b"].tolist()},
                ]
            },
        ).json()
    answered = [p for a in one + batch for p in probabilities(a)]
    answered += [p for o in v2["outputs"] if o["name"] != "label" for p in o["data"]]
    assert max(answered) == 1.0  # the forest is sure of some rows: what float32 made 1.0000001
    assert all(0.0 <= p <= 1.0 for p in answered), max(answered)
