"""A model without store features serves with no feature table on disk.

A published pipeline that reads only request features never looks a user
up, so the offline table (``MODELSERVE_FEATURE_TABLE``, default
``data/features.parquet``) it would be the compute source of is not needed:
a registry of such models serves from an empty directory. A model that has
store features still refuses to start without its table.
"""

from __future__ import annotations

from app.main import create_app
from tests.support.workspace import Workspace, serving


def test_model_without_store_features_serves_without_a_table(task_models, tmp_path):
    models = task_models.workspace(tmp_path, "m1")
    settings = task_models.settings(models, feature_table=tmp_path / "absent" / "features.parquet")
    with serving(create_app(settings)) as c:
        ready = c.get("/health/ready")
        assert ready.status_code == 200, ready.text
        r = c.post("/predict", json=task_models.bodies(1)[0])
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == "m1"


def test_model_with_store_features_still_needs_its_table(trained: Workspace, tmp_path):
    settings = trained.settings(feature_table=tmp_path / "absent.parquet")
    with serving(create_app(settings)) as c:
        ready = c.get("/health/ready")
    assert ready.status_code == 503
    assert "absent.parquet" in ready.text
