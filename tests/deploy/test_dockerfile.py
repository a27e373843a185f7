"""Dockerfile and .dockerignore.

There is no Docker engine in CI, so the image is checked three ways: hadolint,
assertions on the parsed stages, and a replay of the stages' commands outside
Docker (train in the models stage, copy into the runtime stage, start the
entrypoint with the runtime environment, probe it with the HEALTHCHECK command).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from app.cli import build_parser
from harness import free_port
from tests.deploy.conftest import REPO, VENV_BIN, dev_module, run, settings_env_names
from tests.deploy.dockerfile import Stage, parse_stages

BUILD_TOOLS = ("gcc", "g++", "build-essential", "make ", "apt-get", "apk ", "cargo", "rustc")


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return parse_stages()


@pytest.fixture(scope="module")
def runtime(stages) -> Stage:
    """The stage `docker build .` produces: the last one."""
    return list(stages.values())[-1]


class TestDockerfile:
    def test_hadolint_is_clean(self, hadolint):
        """hadolint reports nothing, not even info-level findings."""
        proc = run([hadolint, "--no-color", "--failure-threshold", "info", "Dockerfile"])
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def test_hadolint_is_not_vacuous(self, hadolint, tmp_path):
        """hadolint fails the same Dockerfile once an unpinned apt install is added."""
        bad = tmp_path / "Dockerfile"
        bad.write_text((REPO / "Dockerfile").read_text() + "RUN apt-get install -y curl\n")
        assert run([hadolint, "--no-color", bad]).returncode != 0

    def test_multi_stage_on_slim_python_311(self, stages, runtime):
        """Several stages, and the final image starts from a slim Python 3.11 base."""
        assert len(stages) >= 3
        base = stages.get(runtime.base)
        while base is not None:
            runtime = base
            base = stages.get(runtime.base)
        assert runtime.base.startswith("python:3.11-slim")

    def test_final_image_has_no_build_tools(self, stages, runtime):
        """No stage of the final image installs compilers or system packages, or runs pip."""
        lineage = [runtime]
        while lineage[-1].base in stages:
            lineage.append(stages[lineage[-1].base])
        for stage in lineage:
            for command in stage.values("RUN"):
                assert not any(tool in command for tool in BUILD_TOOLS), command
                assert "pip install" not in command, command

    def test_installs_only_from_hash_pinned_locks(self, stages):
        """Every pip install takes a lock with --require-hashes, or the package itself with --no-deps."""
        installs = [c for s in stages.values() for c in s.values("RUN") if "pip" in c and " install" in c]
        assert installs
        for command in installs:
            assert ("--require-hashes" in command and "-r requirements/" in command) or "--no-deps ." in command
        locks = {w for c in installs for w in shlex.split(c) if w.startswith(("requirements/", "/src/requirements/"))}
        assert {Path(lock).name for lock in locks} == {"runtime.txt", "publish.txt"}

    def test_runtime_venv_holds_base_and_jobs_only(self, stages, runtime):
        """The venv the runtime copies was built from the runtime lock; the publish extra is added only for training."""
        lineage = [runtime]
        while lineage[-1].base in stages:
            lineage.append(stages[lineage[-1].base])
        copies = [shlex.split(v) for stage in lineage for v in stage.values("COPY") if "/opt/venv" in v]
        source = stages[copies[0][0].removeprefix("--from=")]
        commands = " ".join(source.values("RUN"))
        assert "requirements/runtime.txt" in commands and "publish.txt" not in commands
        assert "--without-pip" in commands

    def test_runs_as_numeric_non_root_user(self, runtime):
        """USER is a numeric UID:GID other than root."""
        user = runtime.expand(runtime.values("USER")[-1])
        uid, _, gid = user.partition(":")
        assert uid.isdigit() and gid.isdigit() and int(uid) != 0

    def test_models_are_trained_at_build_and_copied_in(self, stages, runtime):
        """A stage runs `modelserve train`, and the final image copies its models to MODELSERVE_MODELS_DIR."""
        trainers = [s for s in stages.values() if any("modelserve train" in c for c in s.values("RUN"))]
        assert len(trainers) == 1
        copies = [shlex.split(v) for v in runtime.values("COPY") if v.startswith(f"--from={trainers[0].name}")]
        destinations = {c[-1] for c in copies}
        assert runtime.env["MODELSERVE_MODELS_DIR"] in destinations
        assert str(Path(runtime.env["MODELSERVE_FEATURE_TABLE"]).parent) in destinations

    def test_a_stage_without_models_exists_for_mounting(self, stages, runtime):
        """The stage before the final one serves without baked models, from the same MODELSERVE_MODELS_DIR."""
        bare = stages[runtime.base]
        assert not any("--from=" in v and "models" in v for v in bare.values("COPY"))
        assert bare.env["MODELSERVE_MODELS_DIR"] == runtime.env["MODELSERVE_MODELS_DIR"]

    def test_healthcheck_probes_liveness_with_python(self, runtime):
        """HEALTHCHECK calls /health/live with the image's Python (there is no curl)."""
        check = runtime.values("HEALTHCHECK")[-1]
        command = json.loads(check[check.index("CMD") + 3 :])
        assert command[0] == "python"
        assert "/health/live" in command[-1]
        assert "curl" not in check and "/health/ready" not in check

    def test_entrypoint_serves_with_settings_from_the_environment(self, runtime):
        """The image runs `modelserve serve` and sets only real MODELSERVE_* settings, listening on all interfaces."""
        assert json.loads(runtime.values("ENTRYPOINT")[-1]) == ["modelserve"]
        assert json.loads(runtime.values("CMD")[-1]) == ["serve"]
        assert build_parser().parse_args(json.loads(runtime.values("CMD")[-1])).command == "serve"
        names = {k for k in runtime.env if k.startswith("MODELSERVE_")}
        assert names <= settings_env_names()
        assert runtime.env["MODELSERVE_HOST"] == "0.0.0.0"
        assert runtime.values("EXPOSE")[-1] == runtime.env["MODELSERVE_PORT"]


EXCLUDED = [
    ".venv/bin/python",
    "models/production/model.onnx",
    "data/features.parquet",
    "logs/predictions.jsonl",
    ".git/HEAD",
    ".pytest_cache/v/cache/nodeids",
    ".mypy_cache/3.11/app.json",
    "tests/conftest.py",
    "requirements/dev.txt",
    "scripts/lock.py",
    "app/__pycache__/main.cpython-311.pyc",
]
INCLUDED = [
    "pyproject.toml",
    "README.md",
    "requirements/runtime.txt",
    "requirements/publish.txt",
    "scripts/slim-venv.sh",
    "app/__init__.py",
    "app/main.py",
    "app/telemetry/metrics.py",
]


@pytest.fixture(scope="module")
def context(tmp_path_factory) -> set[str]:
    """What `docker build` would send from a checkout holding all the paths above.

    Computed by the Docker SDK's .dockerignore matcher, on a scratch tree so
    that the answer does not depend on what this checkout happens to hold.
    """
    exclude_paths = dev_module("docker.utils.build").exclude_paths
    root = tmp_path_factory.mktemp("context")
    for path in EXCLUDED + INCLUDED:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("")
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return set(exclude_paths(str(root), [p.strip() for p in lines if p.strip() and not p.startswith("#")]))


class TestDockerignore:
    @pytest.mark.parametrize("path", EXCLUDED)
    def test_excluded(self, context, path):
        """Virtualenvs, models, data, logs, git, caches and tests stay out of the build context."""
        assert path not in context

    @pytest.mark.parametrize("path", INCLUDED)
    def test_included(self, context, path):
        """pyproject.toml, README.md, the locks the image installs from and the app package reach the build."""
        assert path in context

    def test_everything_the_dockerfile_copies_is_in_the_context(self, context, stages):
        """Every COPY source taken from the build context (no --from) survives .dockerignore."""
        sources = [
            source
            for stage in stages.values()
            for parts in map(shlex.split, stage.values("COPY"))
            if not any(p.startswith("--from=") for p in parts)
            for source in parts[:-1]
        ]
        assert sources
        for source in sources:
            assert source in context or any(c.startswith(source + "/") for c in context), source


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def host(root: Path, image_path: str) -> Path:
    """Where an absolute path of an image's filesystem lives in the replay."""
    return root / image_path.lstrip("/")


def replay_environment(root: Path, image_env: dict[str, str], **extra: str) -> dict[str, str]:
    """A stage's ENV with absolute paths moved under `root`, and this venv on PATH."""
    env = dict(os.environ)
    for key, value in image_env.items():
        if key != "PATH":
            env[key] = str(host(root, value)) if value.startswith("/") else value
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def image_root(tmp_path_factory, stages, runtime) -> Path:
    """The final image's filesystem, replayed: the models stage runs in its own root, the runtime copies from it."""
    models_stage = next(s for s in stages.values() if any("modelserve train" in c for c in s.values("RUN")))
    build_root = tmp_path_factory.mktemp("models-stage")
    image = tmp_path_factory.mktemp("runtime-stage")
    workdir = host(build_root, models_stage.values("WORKDIR")[-1])
    workdir.mkdir(parents=True, exist_ok=True)
    command = next(c for c in models_stage.values("RUN") if "modelserve train" in c)
    env = replay_environment(build_root, models_stage.env)
    proc = subprocess.run(["sh", "-c", command], cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    copies = [shlex.split(v) for v in runtime.values("COPY") if v.startswith(f"--from={models_stage.name} ")]
    assert copies
    for _, src, dst in copies:
        shutil.copytree(host(build_root, src), host(image, dst), symlinks=True)
    return image


@pytest.mark.e2e
class TestImageRecipe:
    """The stages' commands, replayed outside Docker with image paths moved under a temp dir."""

    def test_build_stage_produces_what_the_runtime_copies(self, image_root, runtime):
        """After `modelserve train`, the runtime's models dir has the production alias and the feature table exists."""
        models = host(image_root, runtime.env["MODELSERVE_MODELS_DIR"])
        assert (models / "production").is_symlink()
        assert (models / "production" / "model.onnx").is_file()
        assert host(image_root, runtime.env["MODELSERVE_FEATURE_TABLE"]).is_file()

    def test_entrypoint_starts_healthy_and_ready_and_stops_on_sigterm(self, image_root, runtime):
        """ENTRYPOINT+CMD with the image's environment passes the HEALTHCHECK, turns ready, and exits on SIGTERM."""
        port = str(free_port())
        env = replay_environment(image_root, runtime.env, MODELSERVE_PORT=port, MODELSERVE_HOST="127.0.0.1")
        Path(env["MODELSERVE_LOG_DIR"]).mkdir(parents=True, exist_ok=True)
        check = runtime.values("HEALTHCHECK")[-1]
        healthcheck = json.loads(check[check.index("CMD") + 3 :])
        assert subprocess.run(healthcheck, env=env, capture_output=True, timeout=10).returncode != 0

        command = json.loads(runtime.values("ENTRYPOINT")[-1]) + json.loads(runtime.values("CMD")[-1])
        workdir = host(image_root, runtime.values("WORKDIR")[-1])
        workdir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            deadline = time.monotonic() + 60  # the HEALTHCHECK's start period
            while subprocess.run(healthcheck, env=env, capture_output=True, timeout=10).returncode != 0:
                assert proc.poll() is None and time.monotonic() < deadline, "never healthy"
                time.sleep(0.5)
            while http_status(f"http://127.0.0.1:{port}/health/ready") != 200:
                assert proc.poll() is None and time.monotonic() < deadline, "never ready"
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=40) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            output = proc.communicate()[0]
        assert "Traceback" not in output, output
