"""The load-time check of the library versions a model was exported with."""

from __future__ import annotations

import json
import logging

import onnxruntime
import pytest

from app.errors import ArtifactError
from app.model.compat import LOCKED_EXPORTERS, library_warnings
from app.model.pool import ModelPool
from app.model.repository import Repository

LOCKED = {**LOCKED_EXPORTERS, "onnxruntime": "1.32.0", "numpy": "2.4.6"}


class TestLibraryWarnings:
    def test_versions_from_the_lock_pass(self):
        """The locked exporter pair and the same onnxruntime major raise nothing, whatever the patch level."""
        assert library_warnings(LOCKED, "1.32.0") == []
        assert library_warnings({**LOCKED, "onnxruntime": "1.18.1", "skl2onnx": "1.20.3"}, "1.32.0") == []

    def test_another_onnxruntime_major_names_both_versions(self):
        """A model exported with onnxruntime 2.x, served by 1.x, gets one message with both versions."""
        [message] = library_warnings({**LOCKED, "onnxruntime": "2.0.1"}, "1.32.0")
        assert "onnxruntime 2.0.1" in message and "onnxruntime 1.32.0" in message

    @pytest.mark.parametrize(("name", "version"), [("scikit-learn", "1.4.2"), ("skl2onnx", "1.17.0")])
    def test_an_exporter_pair_outside_the_lock_names_both_pairs(self, name, version):
        """A different scikit-learn or skl2onnx minor gets one message with the recorded and the locked pair."""
        [message] = library_warnings({**LOCKED, name: version}, "1.32.0")
        assert f"{name} {version}" in message
        assert all(f"{n} {v}" in message for n, v in LOCKED_EXPORTERS.items())

    def test_versions_not_recorded_are_not_guessed(self):
        """A manifest without a libraries table (a model published elsewhere) raises nothing."""
        assert library_warnings({}, "1.32.0") == []


def set_libraries(repository: Repository, version: str, **libraries: str) -> None:
    path = repository.version_dir(version) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["libraries"].update(libraries)
    path.write_text(json.dumps(manifest))


class TestLoad:
    def test_mismatch_is_logged_and_the_model_still_served(self, workspace, caplog):
        """A model from another onnxruntime major and exporter pair loads (its self-check passes) with warnings."""
        repository = Repository(workspace.models_dir)
        set_libraries(repository, "v1", onnxruntime="0.9.0", **{"scikit-learn": "1.3.0"})
        with caplog.at_level(logging.WARNING, logger="modelserve.models"):
            model = ModelPool(repository, warmup_iterations=1).load("v1")
        assert model.version == "v1"
        messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("onnxruntime 0.9.0" in m and f"onnxruntime {onnxruntime.__version__}" in m for m in messages)
        assert any("scikit-learn 1.3.0" in m and "the lock allows" in m for m in messages)

    def test_mismatch_with_a_failing_self_check_is_refused(self, workspace, caplog):
        """The warning comes first; the self-check still refuses a model whose output is wrong."""
        repository = Repository(workspace.models_dir)
        set_libraries(repository, "v1", onnxruntime="0.9.0")
        path = repository.version_dir("v1") / "manifest.json"
        manifest = json.loads(path.read_text())
        manifest["sample"]["expected"]["probability"] = 1.5
        path.write_text(json.dumps(manifest))
        with (
            caplog.at_level(logging.WARNING, logger="modelserve.models"),
            pytest.raises(ArtifactError, match="self-check"),
        ):
            ModelPool(repository, warmup_iterations=1).load("v1")
        assert any("onnxruntime 0.9.0" in r.getMessage() for r in caplog.records)

    def test_locked_versions_load_without_warnings(self, workspace, caplog):
        """The demo model, exported by this venv's libraries, loads without a version warning."""
        with caplog.at_level(logging.WARNING, logger="modelserve.models"):
            ModelPool(Repository(workspace.models_dir), warmup_iterations=1).load("v2")
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
