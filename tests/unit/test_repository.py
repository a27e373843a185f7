"""Versions and aliases on disk: validation, checksums, promote and rollback."""

from __future__ import annotations

import os
import pickle

import pytest

from app.errors import ArtifactError, InvalidName, ModelNotFound
from app.model.repository import Repository, check_name


class TestNames:
    @pytest.mark.parametrize("name", ["v1", "v2.1", "prod_2026-01", "A", "x" * 64])
    def test_valid(self, name):
        """Plain names up to 64 characters pass."""
        assert check_name(name) == name

    @pytest.mark.parametrize(
        "name",
        [
            "",
            "..",
            ".",
            "../v1",
            "v1/..",
            "/etc/passwd",
            "v1/model.onnx",
            ".hidden",
            "-v",
            "x" * 65,
            "v 1",
            "v1\n",
            "ü",
        ],
    )
    def test_refused(self, name):
        """Traversal, separators, hidden names and oversize names are refused."""
        with pytest.raises(InvalidName):
            check_name(name)

    def test_registry_never_builds_paths_from_bad_names(self, workspace):
        """Every registry entry point refuses a traversal before touching the disk."""
        reg = Repository(workspace.models_dir)
        for call in (reg.verify, reg.version_dir, reg.resolve, reg.load_pipeline):
            with pytest.raises(InvalidName):
                call("../data")
        with pytest.raises(InvalidName):
            reg.promote("v1", alias="../production")


class TestChecksums:
    def test_verify_ok(self, workspace):
        """Untouched artifacts verify."""
        reg = Repository(workspace.models_dir)
        assert reg.verify("v2").version == "v2"

    @pytest.mark.parametrize("fname", ["model.onnx", "pipeline.joblib"])
    def test_tampered_artifact_refused(self, workspace, fname):
        """A single changed byte in any artifact fails verification."""
        path = workspace.models_dir / "v1" / fname
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        with pytest.raises(ArtifactError, match="checksum mismatch"):
            Repository(workspace.models_dir).verify("v1")

    def test_pickle_not_loaded_before_checksum(self, workspace, tmp_path):
        """A malicious pipeline.joblib is never unpickled when its checksum does not match."""
        marker = tmp_path / "pwned"

        class Evil:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))

        (workspace.models_dir / "v1" / "pipeline.joblib").write_bytes(pickle.dumps(Evil()))
        with pytest.raises(ArtifactError):
            Repository(workspace.models_dir).load_pipeline("v1")
        assert not marker.exists()

    def test_missing_file(self, workspace):
        """A missing artifact is an error naming the file."""
        (workspace.models_dir / "v3" / "model.onnx").unlink()
        with pytest.raises(ArtifactError, match=r"model\.onnx"):
            Repository(workspace.models_dir).verify("v3")

    def test_unknown_version(self, workspace):
        """An unknown version is ModelNotFound."""
        with pytest.raises(ModelNotFound):
            Repository(workspace.models_dir).verify("v99")


class TestPromote:
    def test_promote_and_rollback(self, workspace):
        """promote swaps the link and records it; rollback returns to the previous target."""
        reg = Repository(workspace.models_dir)
        assert reg.aliases()["production"] == "v2"
        assert reg.promote("v3") == "v2"
        assert os.readlink(workspace.models_dir / "production") == "v3"  # relative link
        assert reg.rollback() == "v2"
        assert reg.aliases()["production"] == "v2"
        actions = [(h["action"], h["from"], h["to"]) for h in reg.history()]
        assert actions == [("promote", "v2", "v3"), ("rollback", "v3", "v2")]

    def test_promote_refuses_tampered(self, workspace):
        """A version whose files fail their checksums is never promoted."""
        (workspace.models_dir / "v1" / "model.onnx").write_bytes(b"not a model")
        reg = Repository(workspace.models_dir)
        with pytest.raises(ArtifactError):
            reg.promote("v1")
        assert reg.aliases()["production"] == "v2"
        assert reg.history() == []

    def test_rollback_without_history(self, workspace):
        """Rolling back an alias that never changed is a clear error."""
        with pytest.raises(ArtifactError, match="nothing to roll back"):
            Repository(workspace.models_dir).rollback("production")

    def test_swap_is_atomic(self, workspace):
        """The alias always resolves while it is being swapped repeatedly."""
        import threading

        reg = Repository(workspace.models_dir)
        stop = threading.Event()
        seen: set[str] = set()
        errors: list[Exception] = []

        def reader():
            while not stop.is_set():
                try:
                    seen.add(os.readlink(workspace.models_dir / "production"))
                except OSError as exc:
                    errors.append(exc)

        t = threading.Thread(target=reader)
        t.start()
        for i in range(200):
            reg.promote("v3" if i % 2 == 0 else "v2")
        stop.set()
        t.join()
        assert errors == []
        assert seen <= {"v2", "v3"}

    def test_alias_cannot_shadow_a_version(self, workspace):
        """An alias may not take the name of an existing version directory."""
        with pytest.raises(InvalidName):
            Repository(workspace.models_dir).promote("v3", alias="v1")
