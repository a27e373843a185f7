"""Nothing outside the models directory is read: artifact files and version directories
that are symlinks leading out of it are refused in one line (ArtifactError).

The outside copies are byte-identical to the real artifacts, so the checksums
match: only the location check can refuse them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from app.errors import ArtifactError
from app.main import create_app
from app.model.pool import ModelPool
from app.model.repository import Repository
from harness import MODELSERVE
from tests.support.workspace import Workspace, serving

FILES = ["model.onnx", "manifest.json", "pipeline.joblib"]


def link_out(ws: Workspace, outside: Path, fname: str, version: str = "v2") -> None:
    """Replace ``version/fname`` with an absolute symlink to an identical copy outside the registry."""
    outside.mkdir(parents=True, exist_ok=True)
    target = outside / fname
    shutil.copy2(ws.models_dir / version / fname, target)
    (ws.models_dir / version / fname).unlink()
    os.symlink(target, ws.models_dir / version / fname)


def cli(ws: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **ws.env()}
    return subprocess.run([str(MODELSERVE), *args], env=env, capture_output=True, text=True, timeout=120, check=False)


class TestArtifactSymlinks:
    @pytest.mark.parametrize("fname", FILES)
    def test_artifact_linked_outside_is_refused(self, workspace: Workspace, tmp_path: Path, fname: str) -> None:
        """verify and load refuse a version whose artifact resolves outside the models directory."""
        link_out(workspace, tmp_path / "outside", fname)
        repo = Repository(workspace.models_dir)
        with pytest.raises(ArtifactError, match="outside the models directory") as exc:
            repo.verify("v2")
        assert fname in exc.value.message and "\n" not in exc.value.message
        with pytest.raises(ArtifactError):
            ModelPool(repo, warmup_iterations=1).load("v2")

    @pytest.mark.parametrize("fname", FILES)
    def test_relative_link_escaping_is_refused(self, workspace: Workspace, tmp_path: Path, fname: str) -> None:
        """A relative link climbing out (``../../outside/model.onnx``) is refused the same way."""
        outside = workspace.root / "outside"
        link_out(workspace, outside, fname)
        link = workspace.models_dir / "v2" / fname
        link.unlink()
        os.symlink(os.path.relpath(outside / fname, link.parent), link)
        with pytest.raises(ArtifactError, match="outside the models directory"):
            Repository(workspace.models_dir).verify("v2")

    def test_link_inside_the_registry_is_allowed(self, workspace: Workspace) -> None:
        """An artifact linked to an identical file inside the models directory still verifies."""
        shared = workspace.models_dir / ".shared"
        shared.mkdir()
        shutil.copy2(workspace.models_dir / "v2" / "model.onnx", shared / "model.onnx")
        (workspace.models_dir / "v2" / "model.onnx").unlink()
        os.symlink("../.shared/model.onnx", workspace.models_dir / "v2" / "model.onnx")
        assert Repository(workspace.models_dir).verify("v2").version == "v2"

    def test_artifact_that_is_not_a_regular_file_is_refused(self, workspace: Workspace) -> None:
        """A directory (or FIFO, device) in place of an artifact is refused, not opened."""
        path = workspace.models_dir / "v2" / "pipeline.joblib"
        path.unlink()
        os.mkfifo(path)  # opening it for the checksum would block forever
        with pytest.raises(ArtifactError, match="not a regular file"):
            Repository(workspace.models_dir).verify("v2")

    def test_server_refuses_to_start_on_it(self, workspace: Workspace, tmp_path: Path) -> None:
        """The production version with model.onnx linked outside: not ready, the reason in one line."""
        link_out(workspace, tmp_path / "outside", "model.onnx")
        with serving(create_app(workspace.settings())) as client:
            r = client.get("/health/ready")
        assert r.status_code == 503
        assert "outside the models directory" in r.json()["error"]

    def test_cli_verify_refuses_in_one_line(self, workspace: Workspace, tmp_path: Path) -> None:
        """`modelserve verify v2` exits non-zero with one error line naming the file."""
        link_out(workspace, tmp_path / "outside", "manifest.json")
        proc = cli(workspace, "verify", "v2")
        assert proc.returncode != 0
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "manifest.json" in lines[0] and "outside" in lines[0], proc.stderr


class TestVersionDirectorySymlink:
    def test_version_directory_linked_outside_is_refused(self, workspace: Workspace, tmp_path: Path) -> None:
        """A version directory that is itself a symlink out of the registry is refused, through an alias too."""
        outside = tmp_path / "outside-v2"
        shutil.copytree(workspace.models_dir / "v2", outside)
        shutil.rmtree(workspace.models_dir / "v2")
        os.symlink(outside, workspace.models_dir / "v2")
        repo = Repository(workspace.models_dir)
        with pytest.raises(ArtifactError, match="outside the models directory"):
            repo.verify("v2")
        with pytest.raises(ArtifactError, match="outside the models directory"):
            ModelPool(repo, warmup_iterations=1).load(repo.resolve("production"))
        with serving(create_app(workspace.settings())) as client:
            r = client.get("/health/ready")
        assert r.status_code == 503
        assert "outside the models directory" in r.json()["error"]

    def test_aliases_still_work(self, workspace: Workspace) -> None:
        """Aliases are symlinks to version directories inside the registry, by design."""
        repo = Repository(workspace.models_dir)
        assert repo.resolve("production") == "v2"
        assert repo.verify(repo.resolve("production")).version == "v2"
