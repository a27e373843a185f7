"""Publish stores what the label-free quality estimate needs: a calibration map fitted on the holdout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.naive_bayes import GaussianNB

from app.model.repository import Repository
from app.publish import publish
from app.quality.calibration import apply_map
from tests.support import publish_data as data


def test_publish_stores_a_calibration_map_and_holdout_calibration_figures(tmp_path: Path) -> None:
    """A binary model's manifest holds Brier, ECE and a map that lowers its holdout ECE when it is not calibrated."""
    df = data.frame()
    holdout = data.holdout(df)
    path = tmp_path / "holdout.parquet"
    holdout.to_parquet(path)
    # naive Bayes on correlated one-hot inputs is overconfident: a model that needs the map
    pipeline = data.fit(GaussianNB(), "churned", df, dense=True)
    models = tmp_path / "models"
    publish(pipeline, data=path, target="churned", version="nb", models_dir=models)
    manifest = Repository(models).read_manifest("nb")
    calibration = manifest.calibration
    assert calibration is not None
    assert {"brier", "ece"} <= set(manifest.metrics)
    assert calibration["holdout_ece"] == manifest.metrics["ece"]
    assert calibration["method"] == "isotonic"
    assert calibration["holdout_ece_calibrated"] < calibration["holdout_ece"]
    assert np.all(np.diff(apply_map(calibration, np.linspace(0, 1, 50))) >= 0)
