"""Writing a version directory: ``model.onnx``, ``pipeline.joblib`` and ``manifest.json`` with their checksums.

Built in ``models_dir/.tmp-<version>-<pid>/``, synced, then renamed into
place, so a reader sees a whole version or none. Versions are immutable: an
existing one is refused unless ``replace`` (the demo's retraining), which
moves the old one aside first.

``manifest.json`` is ``Manifest.to_json()``: output fields that do not apply
to the task are left out, and reading it back gives the same manifest.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from app.errors import PublishRefused
from app.model.manifest import Manifest
from app.model.repository import ARTIFACT_FILES, check_name, sha256_file


def write_version(models_dir: Path, manifest: Manifest, *, onnx: bytes, pipeline: Any, replace: bool = False) -> Path:
    """Write ``models_dir/<manifest.version>`` atomically; ``manifest.files`` is filled in here."""
    import joblib

    version = check_name(manifest.version, "version")
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / version
    if not replace and (target.exists() or target.is_symlink()):
        raise PublishRefused(f"version {version!r} exists in {models_dir}; versions are immutable, publish a new one")
    tmp = models_dir / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        (tmp / "model.onnx").write_bytes(onnx)
        joblib.dump(pipeline, tmp / "pipeline.joblib")
        files = {name: sha256_file(tmp / name) for name in ARTIFACT_FILES}
        (tmp / "manifest.json").write_text(manifest.model_copy(update={"files": files}).to_json())
        for path in tmp.iterdir():
            _fsync(path)
        _fsync(tmp)
        if target.exists() and replace:
            # A directory cannot be renamed over a non-empty one: move the old
            # version aside first; the gap is two renames long.
            old = models_dir / f".old-{version}-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            # rename() onto an existing empty directory would succeed: check once more.
            if target.exists() or target.is_symlink():
                raise PublishRefused(f"version {version!r} appeared in {models_dir} while publishing")
            os.rename(tmp, target)
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
