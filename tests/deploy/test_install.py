"""Install sets: the hash-pinned locks, the one-line "install extra X" errors, and the base install serving.

The locks (requirements/*.txt) are made by ``make lock`` from pyproject.toml;
these tests check that they still match it and hold what each set promises.
The end-to-end test builds a venv from requirements/base.txt alone and serves
the demo model from it, with its store features from the upstream API.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from app.extras import EXTRA_OF
from app.model.compat import LOCKED_EXPORTERS
from tests.deploy.conftest import REPO, run

LOCKS = REPO / "requirements"
SETS = ("base", "runtime", "publish", "dev")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")

# Distributions each extra adds, and the top-level module each is imported as.
JOBS = {"duckdb": "duckdb", "pyarrow": "pyarrow", "tqdm": "tqdm"}
PUBLISH = {
    "scikit-learn": "sklearn",
    "skl2onnx": "skl2onnx",
    "onnx": "onnx",
    "onnxmltools": "onnxmltools",
    "xgboost-cpu": "xgboost",
    "lightgbm": "lightgbm",
    "joblib": "joblib",
    "pandas": "pandas",
}
# Heavy modules the extras bring in that serving must not import either.
EXTRA_MODULES = sorted({*JOBS.values(), *PUBLISH.values(), "scipy", "mlflow", "matplotlib"})


def pins(name: str) -> dict[str, str]:
    """Distribution name (normalised) -> pinned version, of one lock."""
    out = {}
    for line in (LOCKS / f"{name}.txt").read_text().splitlines():
        match = PIN.match(line)
        if match:
            out[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return out


def blocked_python(blocked: list[str], code: str) -> list[str]:
    """A command running ``code`` in this venv as if ``blocked`` (top-level modules) were not installed."""
    prelude = textwrap.dedent(
        f"""
        import importlib.abc, sys
        class Absent(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in {blocked!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None
        sys.meta_path.insert(0, Absent())
        """
    )
    return [sys.executable, "-c", prelude + code]


class TestLocks:
    def test_locks_were_made_from_this_pyproject(self):
        """Every lock records the hash of pyproject's current dependency tables (else: run `make lock`)."""
        proc = run([sys.executable, "scripts/lock.py", "--check"])
        assert proc.returncode == 0, proc.stderr

    def test_check_fails_once_the_dependencies_change(self, tmp_path):
        """The hash covers the dependency tables: adding a dependency changes it, editing elsewhere does not."""
        sys.path.insert(0, str(REPO / "scripts"))
        try:
            import lock
        finally:
            sys.path.remove(str(REPO / "scripts"))
        text = (REPO / "pyproject.toml").read_text()
        changed = tmp_path / "pyproject.toml"
        changed.write_text(text.replace('"mmh3>=4.1",', '"mmh3>=4.1",\n    "rich",'))
        assert lock.deps_hash(changed) != lock.deps_hash()
        changed.write_text(text.replace('description = "', 'description = "A '))
        assert lock.deps_hash(changed) == lock.deps_hash()

    @pytest.mark.parametrize("name", SETS)
    def test_every_requirement_is_pinned_with_hashes(self, name):
        """Each requirement is `name==version` followed by at least one sha256 hash (pip --require-hashes)."""
        text = (LOCKS / f"{name}.txt").read_text()
        entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1])
        requirements = [e for e in entries if e.strip() and not e.startswith("#")]
        assert requirements
        for entry in requirements:
            assert PIN.match(entry), entry.splitlines()[0]
            assert "--hash=sha256:" in entry, entry.splitlines()[0]

    def test_a_package_has_one_version_in_every_lock(self):
        """The smaller sets are pinned by the dev set, so the image, CI and a laptop run the same versions."""
        dev = pins("dev")
        for name in ("base", "runtime", "publish"):
            for dist, version in pins(name).items():
                assert dev.get(dist) == version, (name, dist)

    def test_each_set_holds_its_extras_and_no_others(self):
        """base has no extra's distribution; runtime adds jobs only; publish adds the exporters; dev has all."""
        base, runtime, publish, dev = (set(pins(n)) for n in SETS)
        assert not base & (set(JOBS) | set(PUBLISH) | {"scipy"})
        assert {"onnxruntime", "numpy", "fastapi", "uvicorn", "redis", "httpx"} <= base
        assert set(JOBS) <= runtime and not runtime & (set(PUBLISH) | {"scipy", "matplotlib"})
        assert set(JOBS) | set(PUBLISH) <= publish
        assert {"pytest", "mlflow-skinny", "uv"} <= dev and publish <= dev

    def test_the_tools_lock_is_uv_at_the_dev_version(self):
        """requirements/tools.txt, which `make install` bootstraps with pip, holds uv alone, as the dev set pins it."""
        tools = pins("tools")
        assert tools == {"uv": pins("dev")["uv"]}
        assert (LOCKS / "tools.txt").read_text().count("--hash=sha256:") >= 2  # a wheel per platform
        makefile = (REPO / "Makefile").read_text()
        assert "pip install -q --require-hashes -r requirements/tools.txt" in makefile
        assert "--require-hashes -r $(LOCK)" in makefile

    def test_xgboost_comes_without_the_gpu_libraries(self):
        """The publish set has xgboost-cpu (the same module) and no NCCL or other CUDA wheels."""
        publish = pins("publish")
        assert "xgboost-cpu" in publish and "xgboost" not in publish
        assert not [d for d in pins("dev") if d.startswith("nvidia-")]

    def test_the_load_time_check_knows_the_locked_exporters(self):
        """app.model.compat's exporter pair is the one requirements/publish.txt pins."""
        publish = pins("publish")
        assert {name: publish[name] for name in LOCKED_EXPORTERS} == LOCKED_EXPORTERS

    def test_the_extras_map_names_every_extra_module(self):
        """Each module of the jobs and publish extras maps to its extra in the one-line error."""
        assert {m: EXTRA_OF[m] for m in JOBS.values()} == dict.fromkeys(JOBS.values(), "jobs")
        assert {m: EXTRA_OF[m] for m in PUBLISH.values()} == dict.fromkeys(PUBLISH.values(), "publish")
        extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        declared = {re.split(r"[<>=\[ ]", d)[0] for name in ("jobs", "publish") for d in extras[name]}
        assert declared - {"modelserve"} == set(JOBS) | set(PUBLISH)


class TestMissingExtra:
    """The real CLI with an extra's modules made unimportable: one line naming the extra, exit non-zero."""

    @pytest.mark.parametrize(
        ("argv", "blocked", "extra"),
        [
            (["query", "SELECT 1", "--log-dir", "."], ["duckdb"], "jobs"),
            (["batch", "in.csv", "out.parquet"], ["pyarrow"], "jobs"),
            (["train"], ["sklearn", "skl2onnx"], "publish"),
        ],
    )
    def test_subcommand_names_the_extra(self, argv, blocked, extra, tmp_path):
        """A subcommand whose extra is missing says which one to install, in one line, without a traceback."""
        code = f"from app.cli import main; sys.exit(main({argv!r}))"
        env = {**os.environ, "MODELSERVE_MODELS_DIR": str(tmp_path / "models")}
        proc = subprocess.run(
            blocked_python(blocked, code), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode != 0
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert f"'{extra}' extra" in lines[0] and f"pip install 'modelserve[{extra}]'" in lines[0]
        assert lines[0].startswith(f"error: modelserve {argv[0]} needs")

    def test_feature_table_source_names_the_extra(self, trained, tmp_path):
        """Serving from the Parquet table without pyarrow fails at start-up with the extra to install."""
        env = {**os.environ, **trained.env(), "MODELSERVE_PORT": "0", "MODELSERVE_WARMUP_ITERATIONS": "1"}
        code = "from app.cli import main; sys.exit(main(['serve']))"
        proc = subprocess.run(
            blocked_python(["pyarrow"], code), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode != 0
        last = proc.stderr.strip().splitlines()[-1]
        assert "feature table" in last and "pip install 'modelserve[jobs]'" in last, proc.stderr
        assert "Traceback" not in proc.stderr


# Installed into the base venv as a .pth hook: every attempt to import a
# module of an extra is appended to $IMPORT_PROBE_FILE, even one that a
# try/except would swallow.
PROBE = """
import importlib.abc, os, sys
class _ExtrasProbe(importlib.abc.MetaPathFinder):
    watched = set(os.environ.get("IMPORT_PROBE_MODULES", "").split(","))
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.watched:
            with open(os.environ["IMPORT_PROBE_FILE"], "a") as f:
                f.write(name + "\\n")
        return None
if os.environ.get("IMPORT_PROBE_FILE"):
    sys.meta_path.insert(0, _ExtrasProbe())
"""


def lock_venv(name: str, venv: Path) -> Path:
    """A venv with requirements/<name>.txt (hashes required) and the package without dependencies.

    Built with uv (from the dev lock) when it is there, as `make install`
    does: it installs the same hash-checked files as pip, from its cache.
    """
    python = venv / "bin" / "python"
    lock = LOCKS / f"{name}.txt"
    uv = Path(sys.executable).parent / "uv"
    started = time.monotonic()
    if uv.is_file():
        steps = [
            [uv, "venv", "-q", "--allow-existing", "--python", sys.executable, venv],
            [uv, "pip", "install", "-q", "--python", python, "--require-hashes", "-r", lock],
            [uv, "pip", "install", "-q", "--python", python, "--no-deps", "-e", "."],
        ]
    else:
        steps = [
            [sys.executable, "-m", "venv", venv],
            [python, "-m", "pip", "install", "-q", "--require-hashes", "-r", lock],
            [python, "-m", "pip", "install", "-q", "--no-deps", "-e", "."],
        ]
    for step in steps:
        proc = run(step, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
    print(f"{name} venv built in {time.monotonic() - started:.1f} s")
    return venv


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory) -> Path:
    """The base install, with the import probe below in its site-packages."""
    venv = lock_venv("base", tmp_path_factory.mktemp("base-venv"))
    python = venv / "bin" / "python"
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    (site / "_extras_probe.py").write_text(PROBE)
    (site / "_extras_probe.pth").write_text("import _extras_probe\n")
    return venv


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory) -> Path:
    """The image's install set (base + jobs), as requirements/runtime.txt pins it."""
    return lock_venv("runtime", tmp_path_factory.mktemp("runtime-venv"))


@pytest.fixture
def upstream(trained, tmp_path):
    """The upstream feature API stub (this full venv), serving the trained feature table."""
    port = _free_port()
    log = open(tmp_path / "upstream.log", "wb")  # noqa: SIM115  (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.features.upstream_api", "--port", str(port), "--table", trained.feature_table],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(url + "/health", proc, tmp_path / "upstream.log", timeout=60)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not 200 in {timeout} s:\n{log.read_text()}")


@pytest.mark.e2e
class TestBaseInstall:
    def test_base_install_serves_without_any_extra(self, base_venv, trained, upstream, tmp_path):
        """The base venv's `modelserve serve` turns ready and predicts, and never tries to import an extra."""
        probe = tmp_path / "imports.txt"
        probe.touch()
        port = _free_port()
        env = {
            **os.environ,
            **trained.env(MODELSERVE_UPSTREAM_URL=upstream, MODELSERVE_LOG_DIR=str(tmp_path / "log")),
            # generous: the first call opens the connection, on a machine that may be busy
            "MODELSERVE_FEATURE_BUDGET_MS": "5000",
            "MODELSERVE_UPSTREAM_TIMEOUT_MS": "5000",
            "MODELSERVE_HOST": "127.0.0.1",
            "MODELSERVE_PORT": str(port),
            "IMPORT_PROBE_FILE": str(probe),
            "IMPORT_PROBE_MODULES": ",".join(EXTRA_MODULES),
        }
        env["MODELSERVE_FEATURE_TABLE"] = str(tmp_path / "no-such-table.parquet")
        log = tmp_path / "server.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [base_venv / "bin" / "modelserve", "serve"], env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT
            )
            try:
                url = f"http://127.0.0.1:{port}"
                _wait_for(url + "/health/ready", proc, log, timeout=60)
                sample = json.loads((trained.models_dir / "production" / "manifest.json").read_text())["sample"]
                response = httpx.post(url + "/predict", json=sample["request"], timeout=10)
                assert response.status_code == 200, response.text
                assert response.json()["probability"] == pytest.approx(sample["expected"]["probability"], abs=1e-5)
                assert httpx.get(url + "/metrics", timeout=10).status_code == 200
            finally:
                proc.terminate()
                proc.wait(timeout=30)
        assert probe.read_text() == "", f"serving tried to import extras: {sorted(set(probe.read_text().split()))}"
        assert "Traceback" not in log.read_text(), log.read_text()

    def test_base_install_has_no_extra_installed(self, base_venv, tmp_path):
        """None of the extras' modules can be found from the base venv, and the import probe sees every attempt."""
        probe = tmp_path / "imports.txt"
        code = f"import importlib.util as u; print([m for m in {EXTRA_MODULES!r} if u.find_spec(m)])"
        env = {**os.environ, "IMPORT_PROBE_FILE": str(probe), "IMPORT_PROBE_MODULES": ",".join(EXTRA_MODULES)}
        proc = run([base_venv / "bin" / "python", "-c", code], env=env)
        assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr
        assert sorted(probe.read_text().split()) == EXTRA_MODULES

    def test_base_install_jobs_name_their_extra(self, base_venv, tmp_path):
        """In the base venv, `modelserve drift` says in one line to install the jobs extra."""
        proc = run([base_venv / "bin" / "modelserve", "drift", "--log-dir", tmp_path], cwd=tmp_path)
        assert proc.returncode != 0
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert re.fullmatch(
            r"error: modelserve drift needs the 'jobs' extra \(\w+ is not installed\): "
            r"pip install 'modelserve\[jobs\]'",
            lines[0],
        ), lines[0]


@pytest.mark.e2e
class TestRuntimeInstall:
    """The jobs in the image's install set: pandas and matplotlib are not in it, and no job needs them."""

    def test_runtime_install_has_neither_pandas_nor_matplotlib(self, runtime_venv):
        code = "import importlib.util as u; print([m for m in ('pandas', 'matplotlib') if u.find_spec(m)])"
        assert run([runtime_venv / "bin" / "python", "-c", code]).stdout.strip() == "[]"

    def test_log_jobs_run_from_the_runtime_install(self, runtime_venv, trained, tmp_path):
        """drift (with its HTML report), monitor, evaluate and query read a real log from the runtime venv."""
        from tests.integration.test_jobs_logs import write_log

        log_dir = tmp_path / "log"
        write_log(trained, log_dir, 400, seed=5, shift={"amount": 3.0})
        modelserve = [runtime_venv / "bin" / "modelserve", "--models-dir", trained.models_dir]
        html = tmp_path / "drift.html"
        drift = run([*modelserve, "drift", "--log-dir", log_dir, "--json", "--html", html], cwd=tmp_path)
        assert drift.returncode in (0, 3), drift.stderr  # 3: the shifted feature alerts
        features = json.loads(drift.stdout)["features"]
        assert html.read_text().count("<svg ") == len(features)
        assert any(f["status"] == "alert" for f in features)
        for argv in (["monitor", "--log-dir", log_dir], ["evaluate", "--log-dir", log_dir]):
            proc = run([*modelserve, *argv], cwd=tmp_path)
            assert "Traceback" not in proc.stderr and "not installed" not in proc.stderr, proc.stderr
            assert proc.stdout.strip(), proc.stderr
        query = run([*modelserve, "query", "SELECT count(*) AS n FROM predictions", "--log-dir", log_dir], cwd=tmp_path)
        assert query.returncode == 0 and "400" in query.stdout, query.stderr
