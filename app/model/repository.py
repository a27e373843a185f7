"""Model versions and aliases on disk.

Layout::

    models/
      production -> v2      relative symlinks; the alias is the routing
      candidate  -> v3
      v2/ model.onnx  pipeline.joblib  manifest.json
      .history.jsonl        one line per alias change (promote / rollback) and per gate decision

Names of versions and aliases are validated before any path is built, and
every artifact file (``manifest.json``, ``model.onnx``, ``pipeline.joblib``)
is resolved before it is opened: it must be a regular file inside the models
directory, so a symlink leading out of it (from the file or from the version
directory itself) is refused, never read. Aliases are the only symlinks by
design, and they name a version directory inside. Checksums are verified
before an artifact is used; ``pipeline.joblib`` is only ever unpickled by
``load_pipeline`` after its sha256 matched the manifest.

Rollback semantics: ``rollback`` points the alias back at the target it had
before its most recent change, and records that as a change too, so two
rollbacks in a row return to where they started (like ``cd -``). Alias
changes hold an exclusive lock (``.aliases.lock``) from reading the alias to
recording the change, so concurrent promotions and rollbacks from several
processes leave one unbroken ``from -> to`` chain for rollback to follow.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.errors import ArtifactError, InvalidName, ModelNotFound, clip
from app.model.manifest import Manifest

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ARTIFACT_FILES = ("model.onnx", "pipeline.joblib")
MANIFEST_FILE = "manifest.json"
HISTORY_FILE = ".history.jsonl"
LOCK_FILE = ".aliases.lock"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_name(name: str, what: str = "name") -> str:
    """Refuse anything that is not a plain version/alias name (no '/', no '..')."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or name in {".", ".."}:
        raise InvalidName(f"invalid {what} {clip(repr(name))}: must match {NAME_RE.pattern}")
    return name


def set_alias(models_dir: Path, alias: str, version: str) -> None:
    """Point ``alias`` at ``version`` atomically (new relative link + rename)."""
    check_name(alias, "alias")
    check_name(version, "version")
    models_dir = Path(models_dir)
    tmp = models_dir / f".{alias}.tmp-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(version, tmp)
    os.replace(tmp, models_dir / alias)


@dataclass(frozen=True)
class VersionInfo:
    version: str
    aliases: tuple[str, ...]
    created_at: str
    estimator: str | None
    metrics: dict[str, Any]


class Repository:
    """Versions and aliases under one models directory."""

    def __init__(self, models_dir: Path) -> None:
        self.root = Path(models_dir)

    # --- reading -----------------------------------------------------------
    def version_dir(self, version: str) -> Path:
        check_name(version, "version")
        path = self.root / version
        if path.is_symlink():
            if not self._inside(path.resolve()):
                raise ArtifactError(f"{version}: version directory resolves outside the models directory")
            raise ModelNotFound(f"unknown version {version!r} in {self.root} (it is an alias)")
        if not path.is_dir():
            raise ModelNotFound(f"unknown version {version!r} in {self.root}")
        return path

    def artifact(self, version: str, fname: str) -> Path:
        """The resolved path of one artifact file, refused unless a regular file inside the models directory."""
        path = self.version_dir(version) / fname
        if not path.exists() and not path.is_symlink():
            raise ArtifactError(f"{version}: {fname} is missing")
        real = path.resolve()
        if not self._inside(real):
            raise ArtifactError(f"{version}: {fname} resolves outside the models directory")
        try:
            mode = real.stat().st_mode
        except OSError:
            raise ArtifactError(f"{version}: {fname} is missing (dangling link)") from None
        if not stat.S_ISREG(mode):
            raise ArtifactError(f"{version}: {fname} is not a regular file")
        return real

    def _inside(self, real: Path) -> bool:
        return real.is_relative_to(self.root.resolve())

    def aliases(self) -> dict[str, str]:
        """Alias name -> version, for every symlink in the models directory."""
        out: dict[str, str] = {}
        if not self.root.is_dir():
            return out
        for entry in sorted(self.root.iterdir()):
            if entry.is_symlink() and NAME_RE.fullmatch(entry.name):
                target = os.readlink(entry)
                if NAME_RE.fullmatch(target):
                    out[entry.name] = target
        return out

    def resolve(self, name: str) -> str:
        """A version name for ``name``, which may be an alias or a version."""
        check_name(name)
        path = self.root / name
        if path.is_symlink():
            target = os.readlink(path)
            if not NAME_RE.fullmatch(target):
                raise ArtifactError(f"alias {name!r} points outside the models directory: {target!r}")
            return target
        if path.is_dir():
            return name
        raise ModelNotFound(f"unknown version or alias {name!r} in {self.root}")

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and not p.is_symlink() and NAME_RE.fullmatch(p.name) and (p / "manifest.json").is_file()
        )

    def read_manifest(self, version: str) -> Manifest:
        path = self.artifact(version, MANIFEST_FILE)
        try:
            return Manifest.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise ArtifactError(f"{version}: manifest.json is missing") from None
        except ValidationError as exc:
            raise ArtifactError(f"{version}: invalid manifest.json ({exc.error_count()} errors)") from None

    def verify(self, version: str) -> Manifest:
        """Manifest of ``version`` after every artifact's sha256 matched it."""
        manifest = self.read_manifest(version)
        if manifest.version != version:
            raise ArtifactError(f"{version}: manifest names version {manifest.version!r}")
        for fname in ARTIFACT_FILES:
            expected = manifest.files.get(fname)
            if expected is None:
                raise ArtifactError(f"{version}: manifest has no checksum for {fname}")
            path = self.artifact(version, fname)
            actual = sha256_file(path)
            if actual != expected:
                raise ArtifactError(
                    f"{version}: checksum mismatch for {fname} (expected {expected[:12]}…, got {actual[:12]}…)"
                )
        return manifest

    def describe(self) -> list[VersionInfo]:
        by_version: dict[str, list[str]] = {}
        for alias, version in self.aliases().items():
            by_version.setdefault(version, []).append(alias)
        out = []
        for v in self.versions():
            try:
                m = self.read_manifest(v)
                created, est, metrics = m.created_at, m.estimator, m.metrics
            except ArtifactError:
                created, est, metrics = "?", None, {}
            out.append(VersionInfo(v, tuple(by_version.get(v, ())), created, est, metrics))
        return out

    def load_pipeline(self, version: str) -> Any:
        """The joblib pipeline, unpickled only after its checksum matched."""
        self.verify(version)
        import joblib  # only the training-side checks need it

        return joblib.load(self.artifact(version, "pipeline.joblib"))

    # --- changing ----------------------------------------------------------
    def promote(self, version: str, alias: str = "production") -> str | None:
        """Point ``alias`` at ``version`` after verifying it; returns the previous target."""
        check_name(alias, "alias")
        if alias in self.versions():
            raise InvalidName(f"alias {alias!r} is the name of a version")
        self.verify(version)
        with self._changing():
            previous = self.aliases().get(alias)
            set_alias(self.root, alias, version)
            self._record("promote", alias, previous, version)
        return previous

    def rollback(self, alias: str = "production") -> str:
        """Point ``alias`` back at its previous target; returns the version now served."""
        check_name(alias, "alias")
        with self._changing():
            current = self.aliases().get(alias)
            previous = None
            for entry in reversed(self.history()):
                if entry.get("alias") == alias and entry.get("to") == current:
                    previous = entry.get("from")
                    break
            if not previous:
                raise ArtifactError(f"nothing to roll back to for alias {alias!r}")
            self.verify(previous)
            set_alias(self.root, alias, previous)
            self._record("rollback", alias, current, previous)
        return previous

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """Hold the registry's alias lock (other processes' promote/rollback wait for it)."""
        if not self.root.is_dir():
            raise ArtifactError(f"no models directory at {self.root}")
        with open(self.root / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def history(self) -> list[dict[str, Any]]:
        path = self.root / HISTORY_FILE
        if not path.is_file():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict):  # a torn line or a hand edit's "x" is no entry
                out.append(entry)
        return out

    def record_gate(self, alias: str, version: str, decision: str, figures: dict[str, Any]) -> None:
        """Write a promotion-gate decision to the history (it has no ``to``, so rollback never follows it)."""
        check_name(alias, "alias")
        self._append(
            {"ts": time.time(), "action": "gate", "alias": alias, "version": version, "decision": decision, **figures}
        )

    def _record(self, action: str, alias: str, previous: str | None, version: str) -> None:
        self._append({"ts": time.time(), "action": action, "alias": alias, "from": previous, "to": version})

    def _append(self, entry: dict[str, Any]) -> None:
        with open(self.root / HISTORY_FILE, "a") as f:
            f.write(json.dumps(entry) + "\n")
