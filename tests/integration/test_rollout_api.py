"""Rollout through the HTTP API in-process: admin, hot reload, flags, shadow."""

from __future__ import annotations

import json
import shutil
import time

import pandas as pd
import pytest

from app.main import create_app
from app.model.repository import Repository, set_alias, sha256_file
from tests.integration.test_api import metric_value
from tests.support.workspace import sample, serving
from tests.unit.test_rollout_shadow import FakeCandidate, HangingCandidate, RaisingCandidate

TOKEN = "s3cret-admin-token-0123"


def wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.01)


def broken_version(ws, name="v9"):
    """A copy of v2 whose checksums match but whose self-check cannot (wrong expected output)."""
    src, dst = ws.models_dir / "v2", ws.models_dir / name
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m["version"] = name
    m["sample"]["expected"]["probability"] = 1.5
    m["files"] = {f: sha256_file(dst / f) for f in m["files"]}
    (dst / "manifest.json").write_text(json.dumps(m))


class FakeLog:
    def __init__(self):
        self.records = []

    def submit(self, record):
        self.records.append(record)


class TestAdminAuth:
    def test_disabled_without_token(self, trained):
        """No MODELSERVE_ADMIN_TOKEN: both endpoints are 404 like any unknown path."""
        with serving(create_app(trained.settings())) as c:
            assert c.get("/admin/models").status_code == 404
            r = c.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 404
            assert r.json() == {"error": "Not Found", "detail": []}

    def test_bearer_required(self, trained):
        """Missing or wrong bearer is 401 in the standard shape, never echoing the token; right is 200."""
        with serving(create_app(trained.settings(admin_token=TOKEN))) as c:
            for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": TOKEN},
                            {"Authorization": f"Basic {TOKEN}"}):  # fmt: skip
                r = c.get("/admin/models", headers=headers)
                assert r.status_code == 401
                assert r.json() == {"error": "missing or invalid bearer token", "detail": []}
                assert r.headers["www-authenticate"] == "Bearer"
                assert TOKEN not in r.text
            r = c.get("/admin/models", headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 200
            assert r.json()["aliases"] == {"production": "v2", "candidate": "v3"}
            assert TOKEN not in r.text


class TestHotReload:
    def test_promote_then_reload_swaps_and_updates_model_info(self, workspace):
        """POST /admin/reload follows a promotion at once; model_info moves from the old version to the new."""
        auth = {"Authorization": f"Bearer {TOKEN}"}
        body = sample(workspace)["request"]
        with serving(create_app(workspace.settings(admin_token=TOKEN))) as c:
            assert c.post("/predict", json=body).json()["model_version"] == "v2"
            Repository(workspace.models_dir).promote("v1")
            r = c.post("/admin/reload", headers=auth)
            assert r.status_code == 200, r.text
            assert r.json()["changed"] == [{"alias": "production", "from": "v2", "to": "v1"}]
            assert c.post("/predict", json=body).headers["x-model-version"] == "v1"
            text = c.get("/metrics").text
            assert metric_value(text, "modelserve_model_info", {"alias": "production", "version": "v1"}) == 1
            assert metric_value(text, "modelserve_model_info", {"alias": "production", "version": "v2"}) == 0
            Repository(workspace.models_dir).rollback()
            assert c.post("/admin/reload", headers=auth).status_code == 200
            assert c.post("/predict", json=body).json()["model_version"] == "v2"

    def test_refused_version_keeps_the_old_one(self, workspace):
        """A version failing its self-check is refused (409, counted, logged); the old one keeps serving."""
        broken_version(workspace)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with serving(create_app(workspace.settings(admin_token=TOKEN))) as c:
            set_alias(workspace.models_dir, "production", "v9")
            r = c.post("/admin/reload", headers=auth)
            assert r.status_code == 409
            assert r.json()["detail"][0]["loc"] == ["models", "production"]
            assert "self-check failed" in r.json()["detail"][0]["msg"]
            assert c.post("/predict", json=sample(workspace)["request"]).json()["model_version"] == "v2"
            assert metric_value(c.get("/metrics").text, "modelserve_model_load_errors_total") == 1
            models = c.get("/admin/models", headers=auth).json()
            assert models["aliases"]["production"] == "v2"
            assert models["recent_errors"][0]["version"] == "v9"

    def test_polling_follows_aliases(self, workspace):
        """With polling on, a promotion and the candidate's removal are followed without any call."""
        body = sample(workspace)["request"]
        with serving(create_app(workspace.settings(alias_poll_seconds=0.05))) as c:
            container = c.app.state.container
            Repository(workspace.models_dir).promote("v1")
            wait_for(lambda: c.post("/predict", json=body).json()["model_version"] == "v1")
            (workspace.models_dir / "candidate").unlink()
            wait_for(lambda: container.rollout.shadow.candidate is None)
            assert container.pool.aliases() == {"production": "v1"}

    def test_version_whose_store_features_the_table_lacks_is_refused(self, trained, task_models, tmp_path):
        """Promoting a version with store features the running compute source cannot give is refused (409),
        and the old one keeps serving: swapped in, every one of its predictions failed with a 500."""
        models = task_models.workspace(tmp_path, "m1")  # no store features
        shutil.copytree(trained.models_dir / "v2", models / "v2")  # store features age, income, ...
        table = tmp_path / "users.parquet"
        pd.DataFrame({"user_id": ["u-00001"], "tenure": [3]}).to_parquet(table)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        body = task_models.bodies(1)[0]
        settings = task_models.settings(models, feature_table=table, admin_token=TOKEN)
        with serving(create_app(settings)) as c:
            set_alias(models, "production", "v2")
            r = c.post("/admin/reload", headers=auth)
            assert r.status_code == 409, r.text
            assert r.json()["detail"][0]["loc"] == ["models", "production"]
            assert "lacks store features" in r.json()["detail"][0]["msg"]
            answer = c.post("/predict", json=body)
            assert answer.status_code == 200 and answer.json()["model_version"] == "m1"
            assert c.get("/admin/models", headers=auth).json()["aliases"]["production"] == "m1"


class TestFlags:
    def flags(self, ws, flags):
        path = ws.root / "flags.json"
        tmp = ws.root / "flags.json.tmp"
        tmp.write_text(json.dumps({"flags": flags}))
        tmp.replace(path)  # atomic, like a ConfigMap update
        return path

    def test_attribute_targeting_and_variant(self, workspace):
        """A flag sends matching users to its version and says so; others get the primary without a variant."""
        path = self.flags(workspace, [{"name": "de-v1", "version": "v1", "percent": 100, "match": {"country": "DE"}}])
        body = sample(workspace)["request"]
        with serving(create_app(workspace.settings(flags_file=path))) as c:
            r = c.post("/predict", json={**body, "attributes": {"country": "DE"}})
            assert r.status_code == 200, r.text
            assert (r.json()["model_version"], r.json()["variant"]) == ("v1", "de-v1")
            r = c.post("/predict", json={**body, "attributes": {"country": "US"}})
            assert r.json()["model_version"] == "v2" and "variant" not in r.json()
            assert c.post("/predict", json=body).json()["model_version"] == "v2"
            r = c.post("/predict", json={**body, "attributes": {"country": {"nested": 1}}})
            assert r.status_code == 422
            assert r.json()["detail"][0]["loc"][:3] == ["body", "attributes", "country"]
            text = c.get("/metrics").text
            assert metric_value(text, "modelserve_predictions_total", {"model_version": "v1"}) == 1
            # Only the versions named by aliases and flags are loaded.
            assert c.app.state.container.rollout.describe()["loaded_versions"] == ["v1", "v2", "v3"]

    def test_batch_rows_are_routed_each_and_each_logged_and_shadowed(self, workspace):
        """In a batch, a flag takes only the rows it serves; every row is answered, logged and shadowed once."""
        path = self.flags(workspace, [{"name": "de-v1", "version": "v1", "percent": 100, "match": {"country": "DE"}}])
        body = sample(workspace)["request"]
        countries = ["DE", "US", "US", "DE", "FR", "US"]
        instances = [{**body, "request_id": f"b-{i}", "attributes": {"country": c}} for i, c in enumerate(countries)]
        app = create_app(workspace.settings(flags_file=path))
        log = FakeLog()
        app.state.container.rollout.shadow.sink = log.submit
        with serving(app) as c:
            logged: list[str] = []
            c.app.state.container.predictor.listeners.append(lambda rec, model: logged.append(rec.request_id))
            shadow = c.app.state.container.rollout.shadow
            for batch in (instances, [{**i, "attributes": {"country": "US"}} for i in instances]):
                logged.clear()
                r = c.post("/predict/batch", json={"instances": batch})
                assert r.status_code == 200, r.text
                assert sorted(logged) == sorted(i["request_id"] for i in batch)
                answers = r.json()["predictions"]
                assert [a["request_id"] for a in answers] == [i["request_id"] for i in batch]
                for inst, answer in zip(batch, answers, strict=True):
                    one = c.post("/predict", json=inst).json()
                    assert {k: answer.get(k) for k in one if k != "request_id"} == {
                        k: v for k, v in one.items() if k != "request_id"
                    }
                    de = inst["attributes"]["country"] == "DE"
                    assert (answer["model_version"], answer.get("variant")) == (("v1", "de-v1") if de else ("v2", None))
            wait_for(lambda: sum(shadow.counts.values()) == 4 * len(instances))  # both batches and each /predict
            assert r.headers["x-model-version"] == "v2"
        shadowed = [rec["request_id"] for rec in log.records if rec["kind"] == "shadow"]
        assert sorted(set(shadowed)) == sorted(i["request_id"] for i in instances)

    def test_percentage_is_sticky_per_user(self, workspace):
        """The same user always lands on the same version; about the rollout share of users move."""
        path = self.flags(workspace, [{"name": "half", "version": "v1", "percent": 50}])
        body = sample(workspace)["request"]
        with serving(create_app(workspace.settings(flags_file=path))) as c:
            first = c.post("/predict", json=body).json()["model_version"]
            assert all(c.post("/predict", json=body).json()["model_version"] == first for _ in range(5))

    def test_reload_on_change_and_bad_file(self, workspace):
        """Edits are picked up by polling; a bad file keeps the last good flags and is counted."""
        path = self.flags(workspace, [{"name": "all-v1", "version": "v1", "percent": 100}])
        body = sample(workspace)["request"]
        with serving(create_app(workspace.settings(flags_file=path, flags_poll_seconds=0.05))) as c:
            assert c.post("/predict", json=body).json()["model_version"] == "v1"
            self.flags(workspace, [{"name": "all-v3", "version": "v3", "percent": 100}])
            wait_for(lambda: c.post("/predict", json=body).json().get("variant") == "all-v3")
            assert c.post("/predict", json=body).json()["model_version"] == "v3"
            path.write_text("flags: [")
            wait_for(lambda: metric_value(c.get("/metrics").text, "modelserve_flags_reload_errors_total") == 1)
            assert c.post("/predict", json=body).json()["variant"] == "all-v3"
            loaded = c.app.state.container.rollout.describe()["loaded_versions"]
            assert "v1" not in loaded  # no longer named by anything

    def test_invalid_flags_file_fails_start(self, workspace):
        """At start-up there is no last good file: an invalid one makes the service not ready."""
        path = workspace.root / "flags.json"
        path.write_text("{")
        app = create_app(workspace.settings(flags_file=path))
        with serving(app) as c:
            r = c.get("/health/ready")
            assert r.status_code == 503 and "not valid JSON" in r.json()["error"]


class TestShadow:
    def post_many(self, c, body, n):
        return [c.post("/predict", json={**body, "request_id": f"r-{i}"}).json() for i in range(n)]

    def test_candidate_results_logged_with_the_primary(self, workspace):
        """Every primary prediction is shadowed on v3 and recorded under its request id."""
        body = sample(workspace)["request"]
        app = create_app(workspace.settings())
        log = FakeLog()
        app.state.container.rollout.shadow.sink = log.submit  # the shadow's records, as the prediction log gets them
        with serving(app) as c:
            shadow = c.app.state.container.rollout.shadow
            answers = self.post_many(c, body, 20)
            wait_for(lambda: shadow.counts["ok"] == 20)
            text = c.get("/metrics").text
            assert metric_value(text, "modelserve_shadow_predictions_total", {"outcome": "ok"}) == 20
            assert metric_value(text, "modelserve_shadow_abs_diff_count") == 20
        shadows = [r for r in log.records if r["kind"] == "shadow"]
        assert sorted(r["request_id"] for r in shadows) == sorted(a["request_id"] for a in answers)
        rec = shadows[0]
        assert (rec["primary_version"], rec["shadow_version"], rec["outcome"]) == ("v2", "v3", "ok")
        assert rec["abs_diff"] == pytest.approx(abs(rec["shadow_probability"] - rec["primary_probability"]))
        assert all(a["model_version"] == "v2" for a in answers)

    @pytest.mark.parametrize("kind", ["raises", "hangs", "slow"])
    def test_failing_candidate_never_changes_answers(self, workspace, kind):
        """With a candidate that raises, hangs or is slow, the primary's answers are unchanged and every
        shadowed request is counted once."""
        body = sample(workspace)["request"]
        settings = workspace.settings(shadow_timeout_seconds=0.05, shadow_queue_size=4, shadow_batch_size=2)
        with serving(create_app(workspace.settings(shadow_enabled=False))) as c:
            baseline = [{k: a[k] for k in ("model_version", "prediction", "probability")} for a in
                        self.post_many(c, body, 30)]  # fmt: skip
        candidate = {"raises": RaisingCandidate(), "hangs": HangingCandidate(), "slow": FakeCandidate(delay=0.2)}[kind]
        app = create_app(settings)
        try:
            with serving(app) as c:
                shadow = c.app.state.container.rollout.shadow
                # The fake takes the primary's inputs, so the shadow does not refuse it as incompatible.
                candidate.signature = c.app.state.container.pool.get("production").manifest.input_signature()
                shadow.candidate = candidate
                t0 = time.perf_counter()
                answers = self.post_many(c, body, 30)
                elapsed = time.perf_counter() - t0
                assert [{k: a[k] for k in ("model_version", "prediction", "probability")} for a in answers] == baseline
                assert elapsed < 5  # 30 requests never waited for 30 timeouts of a hung/slow candidate
                if isinstance(candidate, HangingCandidate):
                    # Hung means past the timeout: the watchdog writes the running batches off first.
                    wait_for(lambda: shadow.counts["timeout"] >= 1)
                    candidate.release.set()
                wait_for(lambda: sum(shadow.counts.values()) == 30)
                text = c.get("/metrics").text
                counted = {
                    o: metric_value(text, "modelserve_shadow_predictions_total", {"outcome": o})
                    for o in ("ok", "error", "timeout", "dropped", "incompatible")
                }
                assert counted == shadow.counts
                if kind == "raises":
                    # The queue holds 4 and workers linger for a batch, so one may overflow:
                    # dropped, still counted once.
                    assert counted["error"] >= 1 and counted["error"] + counted["dropped"] == 30
                else:
                    assert counted["timeout"] >= 1 and counted["error"] == 0
                if kind == "hangs":
                    assert counted["dropped"] >= 1  # its threads were held, so the queue filled
        finally:
            if isinstance(candidate, HangingCandidate):
                candidate.release.set()
