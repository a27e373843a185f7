"""Security checks: admin auth, tampered artifacts, no unpickling before a checksum,
a non-root image, and no secret in logs or error bodies."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from app.errors import ArtifactError
from app.main import create_app
from app.model.pool import ModelPool
from app.model.repository import Repository
from harness import MODELSERVE, ManagedProcess, ServerProcess, free_port, http_ok
from tests.support.redis_server import RedisServer
from tests.support.workspace import Workspace, sample, serving

REPO = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-admin-token-" + "x" * 16


def tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def evil_pickle(marker: Path) -> bytes:
    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    return pickle.dumps(Evil())


def cli(ws: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **ws.env()}
    return subprocess.run([str(MODELSERVE), *args], env=env, capture_output=True, text=True, timeout=120, check=False)


class TestAdminAuth:
    @pytest.fixture
    def client(self, trained: Workspace) -> Iterator[Any]:
        with serving(create_app(trained.settings(admin_token=TOKEN))) as c:
            yield c

    @pytest.mark.parametrize("path,method", [("/admin/models", "GET"), ("/admin/reload", "POST")])
    @pytest.mark.parametrize(
        "header",
        [
            None,
            "",
            "Bearer",
            "Bearer ",
            "Bearer wrong-token-of-some-length",
            f"Bearer {TOKEN[:-1]}",
            f"Bearer {TOKEN}x",
            f"Basic {TOKEN}",
            TOKEN,
            f"Bearer {TOKEN.upper()}",
        ],
    )
    def test_missing_or_wrong_token_is_401(self, client, path, method, header):
        """No token, a wrong one, a prefix, a longer one, another scheme: 401, and the token never echoed."""
        headers = {} if header is None else {"Authorization": header}
        r = client.request(method, path, headers=headers)
        assert r.status_code == 401, r.text
        assert r.headers.get("www-authenticate", "").lower().startswith("bearer")
        assert set(r.json()) == {"error", "detail"}
        assert TOKEN not in r.text and TOKEN[:12] not in r.text

    @pytest.mark.parametrize("path,method", [("/admin/models", "GET"), ("/admin/reload", "POST")])
    def test_right_token_is_200(self, client, path, method):
        """The configured bearer token opens both endpoints."""
        r = client.request(method, path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200, r.text
        assert TOKEN not in r.text

    def test_disabled_without_a_token(self, trained):
        """Without MODELSERVE_ADMIN_TOKEN the admin API does not exist, whatever is sent."""
        with serving(create_app(trained.settings())) as c:
            for header in ({}, {"Authorization": "Bearer "}, {"Authorization": f"Bearer {TOKEN}"}):
                assert c.get("/admin/models", headers=header).status_code == 404
                assert c.post("/admin/reload", headers=header).status_code == 404

    def test_short_token_refused_at_start_up(self, trained):
        """A guessable admin token (under 16 characters) is refused before anything starts."""
        with pytest.raises(ValueError, match="ADMIN_TOKEN"):
            trained.settings(admin_token="short")


class TestAdminTraversal:
    """The admin API takes no names: what it follows are alias links, and those are checked."""

    @pytest.mark.parametrize("target", ["../data", "/etc", "../../../tmp", "v1/../v2", "nonexistent"])
    def test_reload_refuses_a_planted_alias_outside_the_registry(self, workspace, target):
        """An alias link pointing outside the models directory is refused by reload; the old version serves."""
        with serving(create_app(workspace.settings(admin_token=TOKEN))) as c:
            link = workspace.models_dir / "production"
            link.unlink()
            os.symlink(target, link)
            r = c.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
            # Ignored (the link is not an alias) or refused: either way nothing outside is loaded.
            assert r.status_code in (200, 409), r.text
            desc = c.get("/admin/models", headers={"Authorization": f"Bearer {TOKEN}"}).json()
            assert desc["aliases"]["production"] == "v2"
            assert set(desc["loaded_versions"]) <= {"v2", "v3"}
            p = c.post("/predict", json=sample(workspace)["request"])
            assert p.status_code == 200 and p.json()["model_version"] == "v2"

    @pytest.mark.parametrize("version", ["../v2", "/etc/passwd", "..", "v1/../v2"])
    def test_flags_naming_a_path_are_refused(self, workspace, tmp_path, version):
        """A flags file whose version is a path is refused as a whole; the last good flags keep routing."""
        flags = tmp_path / "flags.json"
        flags.write_text(json.dumps({"flags": []}))
        with serving(create_app(workspace.settings(admin_token=TOKEN, flags_file=flags))) as c:
            flags.write_text(json.dumps({"flags": [{"name": "evil", "version": version, "percent": 100}]}))
            c.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
            desc = c.get("/admin/models", headers={"Authorization": f"Bearer {TOKEN}"}).json()
            assert desc["flags"] == []
            p = c.post("/predict", json=sample(workspace)["request"])
            assert p.status_code == 200 and p.json()["model_version"] == "v2"

    @pytest.mark.parametrize("name", ["../v1", "v1/../../x", "/tmp", "..", ".hidden", "a" * 65])
    def test_cli_rollback_and_verify_refuse_paths(self, workspace, name):
        """rollback --alias and verify refuse names that are paths, in one line, touching nothing."""
        for args in (("rollback", "--alias", name), ("verify", name)):
            proc = cli(workspace, *args)
            assert proc.returncode != 0
            assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
            assert "invalid" in proc.stderr
        assert os.readlink(workspace.models_dir / "production") == "v2"


class TestTamperedArtifacts:
    def test_tampered_candidate_is_not_loaded_and_primary_serves(self, workspace):
        """A candidate whose model changed is refused at load; the service is ready on the primary."""
        tamper(workspace.models_dir / "v3" / "model.onnx")
        app = create_app(workspace.settings(admin_token=TOKEN))
        with serving(app) as c:
            assert c.get("/health/ready").status_code == 200
            desc = c.get("/admin/models", headers={"Authorization": f"Bearer {TOKEN}"}).json()
            assert "v3" not in desc["loaded_versions"]
            assert any("checksum" in json.dumps(e) for e in desc["recent_errors"]), desc["recent_errors"]
            assert c.post("/predict", json=sample(workspace)["request"]).json()["model_version"] == "v2"

    def test_promote_then_reload_of_a_tampered_version_is_refused(self, workspace):
        """CLI promote refuses it; forcing the link by hand, the running service refuses it on reload."""
        tamper(workspace.models_dir / "v1" / "model.onnx")
        proc = cli(workspace, "promote", "v1")
        assert proc.returncode != 0 and "checksum mismatch" in proc.stderr
        with serving(create_app(workspace.settings(admin_token=TOKEN))) as c:
            link = workspace.models_dir / "production"
            link.unlink()
            os.symlink("v1", link)
            r = c.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 409 and "checksum mismatch" in r.text
            assert c.post("/predict", json=sample(workspace)["request"]).json()["model_version"] == "v2"


class TestNoUnpicklingBeforeChecksum:
    @pytest.fixture
    def evil(self, workspace: Workspace, tmp_path: Path) -> Path:
        marker = tmp_path / "pwned"
        (workspace.models_dir / "v1" / "pipeline.joblib").write_bytes(evil_pickle(marker))
        return marker

    def test_promote_never_unpickles(self, workspace, evil):
        """Promoting a version with a planted pickle fails on the checksum and runs nothing."""
        with pytest.raises(ArtifactError, match="checksum"):
            Repository(workspace.models_dir).promote("v1")
        assert cli(workspace, "promote", "v1").returncode != 0
        assert not evil.exists()

    def test_verify_never_unpickles(self, workspace, evil):
        """verify (registry and CLI) fails on the checksum and runs nothing."""
        with pytest.raises(ArtifactError, match="checksum"):
            Repository(workspace.models_dir).verify("v1")
        assert cli(workspace, "verify", "v1").returncode != 0
        assert not evil.exists()

    def test_serving_path_never_unpickles_even_with_a_matching_checksum(self, workspace, evil):
        """With the manifest rewritten to match the pickle, loading and serving still never unpickle it."""
        vdir = workspace.models_dir / "v1"
        manifest = json.loads((vdir / "manifest.json").read_text())
        manifest["files"]["pipeline.joblib"] = hashlib.sha256((vdir / "pipeline.joblib").read_bytes()).hexdigest()
        (vdir / "manifest.json").write_text(json.dumps(manifest))
        pool = ModelPool(Repository(workspace.models_dir), warmup_iterations=1)
        pool.load("v1")
        assert cli(workspace, "verify", "v1").returncode == 0
        with serving(create_app(workspace.settings(alias="v1"))) as c:
            assert c.post("/predict", json=sample(workspace)["request"]).status_code == 200
        assert not evil.exists()


def assert_json_lines(output: str) -> None:
    """Every line of a JSON-format server's output is one JSON object with the base fields."""
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines, "the server logged nothing"
    for line in lines:
        entry = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(entry), line


def _dockerfile_stages(text: str) -> list[dict[str, Any]]:
    """Stages of a Dockerfile: base, name, ARG defaults and USER lines (continuations joined)."""
    text = re.sub(r"\\\n", " ", text)
    global_args: dict[str, str] = {}
    stages: list[dict[str, Any]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append({"base": parts[0], "name": name, "args": {}, "users": []})
        elif word == "ARG":
            key, _, default = rest.partition("=")
            (stages[-1]["args"] if stages else global_args)[key.strip()] = default.strip().strip('"')
        elif word == "USER" and stages:
            stages[-1]["users"].append(rest.strip())
    return stages


class TestImageRunsAsNonRoot:
    def test_final_stage_user_is_numeric_and_not_root(self):
        """The image's last stage runs as a numeric non-root UID:GID (inherited through its base stages)."""
        dockerfile = REPO / "Dockerfile"
        if not dockerfile.exists():
            pytest.skip("no Dockerfile in this tree")
        stages = _dockerfile_stages(dockerfile.read_text())
        by_name = {s["name"]: s for s in stages if s["name"]}
        stage: dict[str, Any] | None = stages[-1]
        args: dict[str, str] = {}
        user = None
        while stage is not None:
            args = {**stage["args"], **args}
            if stage["users"] and user is None:
                user = stage["users"][-1]
            stage = by_name.get(stage["base"])
        assert user is not None, "no USER in the final stage or its bases"
        resolved = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), user)
        uid, _, gid = resolved.partition(":")
        assert uid.isdigit() and int(uid) != 0, resolved
        assert not gid or (gid.isdigit() and int(gid) != 0), resolved

    def test_every_k8s_pod_runs_as_non_root(self):
        """Every pod template in k8s/ is non-root, and every container drops privilege escalation."""
        files = sorted((REPO / "k8s").rglob("*.yaml")) if (REPO / "k8s").is_dir() else []
        if not files:
            pytest.skip("no k8s manifests in this tree")
        pods = 0
        for f in files:
            for doc in yaml.safe_load_all(f.read_text()):
                if not isinstance(doc, dict):
                    continue
                text = json.dumps(doc)
                assert '"privileged": true' not in text, f
                assert '"runAsUser": 0' not in text and '"runAsNonRoot": false' not in text, f
                spec = _pod_spec(doc)
                if spec is None or "containers" not in spec:
                    continue
                pods += 1
                pod_ctx = spec.get("securityContext", {})
                for c in spec["containers"] + spec.get("initContainers", []):
                    ctx = {**pod_ctx, **c.get("securityContext", {})}
                    assert ctx.get("runAsNonRoot") is True, (f, c["name"])
                    assert int(ctx.get("runAsUser", 1)) != 0, (f, c["name"])
                    assert c.get("securityContext", {}).get("allowPrivilegeEscalation") is False, (f, c["name"])
        assert pods >= 1


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}:
        return (spec.get("template") or {}).get("spec")
    if kind == "CronJob":
        return (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec")
    return None


@pytest.mark.e2e
@pytest.mark.redis
class TestNoSecretsInLogsOrErrors:
    REDIS_PASSWORD = "redis-pw-" + "q7" * 12

    @pytest.fixture
    def redis_with_password(self, tmp_path: Path) -> Iterator[RedisServer]:
        with RedisServer(tmp_path / "redis", password=self.REDIS_PASSWORD) as redis:
            yield redis

    @pytest.mark.parametrize("log_format", ["text", "json"])
    def test_token_and_redis_password_never_leak(self, workspace, tmp_path, redis_with_password, log_format):
        """Errors of every kind (bad auth, bad input, Redis down, bad Redis password) never show either secret."""
        redis = redis_with_password
        env = workspace.env(
            MODELSERVE_ADMIN_TOKEN=TOKEN,
            MODELSERVE_REDIS_URL=f"redis://:{self.REDIS_PASSWORD}@127.0.0.1:{redis.port}/0",
            MODELSERVE_MEMORY_MAX_AGE_SECONDS="0",
            MODELSERVE_LOG_LEVEL="debug",
            MODELSERVE_LOG_FORMAT=log_format,
            MODELSERVE_LOG_DIR=str(tmp_path / "log"),
        )
        bodies: list[str] = []
        good = sample(workspace)["request"]
        with ServerProcess(env, tmp_path / "server.log") as srv:
            srv.wait_ready()
            c = httpx.Client(base_url=srv.url, timeout=10, trust_env=False)
            bodies += [c.post("/predict", json=good).text for _ in range(5)]
            for header in ("Bearer nope", f"Bearer {TOKEN[:-2]}", f"Basic {TOKEN}", ""):
                bodies.append(c.get("/admin/models", headers={"Authorization": header}).text)
            bodies.append(c.get("/admin/models", headers={"Authorization": f"Bearer {TOKEN}"}).text)
            bodies.append(c.post("/predict", content=b"{", headers={"content-type": "application/json"}).text)
            bodies.append(c.post("/predict", json={**good, "features": {"amount": "x"}}).text)
            bodies.append(c.post("/predict", json={**good, "user_id": "nobody"}).text)
            bodies.append(c.get("/nowhere").text)
            redis.kill()  # Redis down: lookups fail, the breaker opens, errors are logged
            for _ in range(30):
                bodies.append(c.post("/predict", json=good).text)
            bodies.append(c.get("/metrics").text)
            bodies.append(c.get("/health/ready").text)
            bodies.append(c.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"}).text)
            srv.signal(signal.SIGTERM)
            srv.proc.wait(30)
            output = srv.output()
        logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "log").glob("*.jsonl"))
        assert "redis" in output.lower() or "breaker" in output.lower(), "Redis going down left no trace in the log"
        if log_format == "json":
            assert_json_lines(output)
        for secret in (TOKEN, self.REDIS_PASSWORD):
            for where, text in (("server output", output), ("prediction log", logs), ("bodies", "\n".join(bodies))):
                assert secret not in text, f"secret found in {where}"
                assert secret[:10] not in text, f"secret prefix found in {where}"

    @pytest.mark.parametrize("log_format", ["text", "json"])
    def test_wrong_redis_password_is_reported_without_it(self, workspace, tmp_path, redis_with_password, log_format):
        """A Redis URL with the wrong password degrades to compute and the log names no password."""
        port = redis_with_password.port
        wrong = "wrong-pw-" + "z9" * 10
        env = workspace.env(
            MODELSERVE_REDIS_URL=f"redis://:{wrong}@127.0.0.1:{port}/0",
            MODELSERVE_MEMORY_MAX_AGE_SECONDS="0",
            MODELSERVE_LOG_LEVEL="debug",
            MODELSERVE_LOG_FORMAT=log_format,
        )
        with ServerProcess(env, tmp_path / "server.log") as srv:
            srv.wait_ready()
            for _ in range(10):
                r = httpx.post(srv.url + "/predict", json=sample(workspace)["request"], timeout=10, trust_env=False)
                assert r.status_code == 200, r.text
                assert wrong not in r.text
            srv.signal(signal.SIGTERM)
            srv.proc.wait(30)
            output = srv.output()
        assert wrong not in output and self.REDIS_PASSWORD not in output


@pytest.mark.e2e
class TestNoUpstreamCredentialsInLogs:
    # httpx logs every request's full URL, userinfo included, at INFO: serve() keeps it at WARNING.
    @pytest.mark.parametrize("log_format", ["text", "json"])
    def test_upstream_url_password_never_logged(self, workspace, tmp_path, log_format):
        """Credentials in MODELSERVE_UPSTREAM_URL never reach the log, even at debug level on every call."""
        password = "upstream-pw-" + "k3" * 10
        port = free_port()
        args = ["-m", "app.features.upstream_api", "--port", str(port), "--table", str(workspace.feature_table)]
        upstream = ManagedProcess(
            "upstream API",
            [str(Path(MODELSERVE).parent / "python"), *args],
            log_path=tmp_path / "upstream.log",
            ready=http_ok(f"http://127.0.0.1:{port}/health"),
            ready_timeout=30,
        )
        with upstream:
            env = workspace.env(
                MODELSERVE_UPSTREAM_URL=f"http://svc:{password}@127.0.0.1:{port}",
                MODELSERVE_MEMORY_MAX_AGE_SECONDS="0",
                # What is logged is under test, not speed: a loaded test machine must not turn calls into 503s.
                MODELSERVE_FEATURE_BUDGET_MS="5000",
                MODELSERVE_UPSTREAM_TIMEOUT_MS="2000",
                MODELSERVE_LOG_LEVEL="debug",
                MODELSERVE_LOG_FORMAT=log_format,
            )
            with ServerProcess(env, tmp_path / "server.log") as srv:
                srv.wait_ready()
                for _ in range(5):
                    r = httpx.post(srv.url + "/predict", json=sample(workspace)["request"], timeout=10, trust_env=False)
                    assert r.status_code == 200, r.text
                upstream.kill()  # now every call fails: errors are logged too
                for _ in range(5):
                    r = httpx.post(srv.url + "/predict", json=sample(workspace)["request"], timeout=10, trust_env=False)
                    assert password not in r.text
                srv.signal(signal.SIGTERM)
                srv.proc.wait(30)
                output = srv.output()
        assert "127.0.0.1" in output, "the upstream calls left no trace at debug level"
        assert password not in output
        if log_format == "json":
            assert_json_lines(output)
