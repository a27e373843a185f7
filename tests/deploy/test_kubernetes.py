"""k8s/: the kustomize base and overlays, rendered by kubectl's kustomize and checked
against the Kubernetes API schemas, then against what the service needs."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cli import build_parser
from app.rollout.flags import parse_flags
from tests.deploy.conftest import REPO, dev_module, run, settings_env_names
from tests.deploy.dockerfile import image_uid

OVERLAYS = ["base", "overlays/dev", "overlays/production"]
# The oldest Kubernetes minor these manifests target, and the newest schemas shipped.
SCHEMA_VERSIONS = ["1.30.0", "latest"]
# uvicorn's graceful-shutdown timeout for in-flight requests (app/serve.py), and a
# budget for the lifespan shutdown (shadow queue drain, prediction log flush).
UVICORN_GRACEFUL_SECONDS = 30
FLUSH_SECONDS = 5


def render(kubectl: Path, overlay: str) -> list[dict[str, Any]]:
    proc = run([kubectl, "kustomize", REPO / "k8s" / overlay])
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(kubectl: Path) -> dict[str, list[dict[str, Any]]]:
    return {overlay: render(kubectl, overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="module")
def prod(rendered) -> list[dict[str, Any]]:
    return rendered["overlays/production"]


@pytest.fixture(scope="module")
def dev(rendered) -> list[dict[str, Any]]:
    return rendered["overlays/dev"]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    if obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        return spec["template"]["spec"]
    return None


def workloads(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for d in docs:
        spec = pod_spec(d)
        if spec is not None:
            yield f"{d['kind']}/{d['metadata']['name']}", spec


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    return pod_spec(deployment)["containers"][0]  # type: ignore[index]


def settings(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The settings ConfigMap (its generated name carries a hash suffix)."""
    cms = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("modelserve-settings-")]
    assert len(cms) == 1
    return cms[0]["data"]


def env_of(docs: list[dict[str, Any]], c: dict[str, Any]) -> dict[str, str]:
    """A container's environment: its envFrom ConfigMaps, then its literal env (which wins)."""
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        name = source["configMapRef"]["name"]
        env.update(next(d["data"] for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name))
    env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
    return env


def mount_for(c: dict[str, Any], path: str) -> dict[str, Any]:
    """The volume mount that holds `path` (the deepest one)."""
    mounts = [m for m in c.get("volumeMounts", []) if Path(path).is_relative_to(m["mountPath"])]
    assert mounts, f"{path} is on no volume"
    return max(mounts, key=lambda m: len(m["mountPath"]))


class TestRenderAndSchemas:
    @pytest.mark.parametrize("overlay", OVERLAYS)
    def test_kustomize_renders(self, rendered, overlay):
        """kubectl kustomize renders the base and each overlay."""
        assert rendered[overlay]

    @pytest.mark.parametrize("version", SCHEMA_VERSIONS)
    @pytest.mark.parametrize("overlay", OVERLAYS)
    def test_every_object_matches_the_kubernetes_schema(self, rendered, overlay, version):
        """Each rendered object validates strictly (no unknown fields) against the API schema."""
        kv = dev_module("kubernetes_validate")
        version = kv.latest_version() if version == "latest" else version
        errors = []
        for obj in rendered[overlay]:
            try:
                kv.validate(obj, version, strict=True)
            except (kv.ValidationError, kv.SchemaNotFoundError) as exc:
                errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {getattr(exc, 'message', exc)}")
        assert errors == []

    def test_schema_check_rejects_a_broken_deployment(self, prod):
        """The same validation fails on a misspelt probe field, so a pass means something."""
        kv = dev_module("kubernetes_validate")
        broken = copy.deepcopy(find(prod, "Deployment", "modelserve"))
        probe = container(broken)["readinessProbe"]
        probe["periodSecond"] = probe.pop("periodSeconds")
        with pytest.raises(kv.ValidationError):
            kv.validate(broken, kv.latest_version(), strict=True)

    @pytest.mark.parametrize("overlay", ["overlays/dev", "overlays/production"])
    def test_overlay_puts_everything_in_its_namespace(self, rendered, overlay):
        """Every namespaced object lands in the overlay's Namespace, which the overlay creates."""
        docs = rendered[overlay]
        namespace = find(docs, "Namespace")["metadata"]["name"]
        assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {namespace}


class TestProbesAndShutdown:
    def test_probe_paths(self, prod):
        """Start-up waits for /health/ready (the model loads in the background); liveness uses /health/live;
        readiness asks the gRPC health service, which answers from the same state as /health/ready."""
        c = container(find(prod, "Deployment", "modelserve"))
        assert c["startupProbe"]["httpGet"]["path"] == "/health/ready"
        assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
        assert "grpc" in c["readinessProbe"] and "service" not in c["readinessProbe"]["grpc"]

    def test_probes_hit_the_serving_port(self, prod):
        """Every probe targets the container port the service listens on (MODELSERVE_PORT, MODELSERVE_GRPC_PORT)."""
        c = container(find(prod, "Deployment", "modelserve"))
        port = next(p for p in c["ports"] if p["name"] == "http")
        assert str(port["containerPort"]) == settings(prod)["MODELSERVE_PORT"]
        for probe in ("startupProbe", "livenessProbe"):
            assert c[probe]["httpGet"]["port"] in ("http", port["containerPort"])
        grpc_port = next(p for p in c["ports"] if p["name"] == "grpc")
        assert str(grpc_port["containerPort"]) == settings(prod)["MODELSERVE_GRPC_PORT"]
        assert c["readinessProbe"]["grpc"]["port"] == grpc_port["containerPort"]

    def test_liveness_never_depends_on_readiness_or_redis(self, prod):
        """Liveness does not point at readiness, Redis or any exec command."""
        probe = container(find(prod, "Deployment", "modelserve"))["livenessProbe"]
        assert "exec" not in probe and "tcpSocket" not in probe and "grpc" not in probe
        assert "ready" not in probe["httpGet"]["path"]
        assert "redis" not in yaml.safe_dump(probe).lower()

    def test_startup_probe_allows_for_model_load(self, prod):
        """The startup probe waits at least a minute for load, warm-up and self-check."""
        probe = container(find(prod, "Deployment", "modelserve"))["startupProbe"]
        assert probe["periodSeconds"] * probe["failureThreshold"] >= 60

    def test_grace_period_covers_prestop_drain_and_in_flight_work(self, prod):
        """terminationGracePeriodSeconds >= preStop sleep + drain + uvicorn's in-flight timeout + flush."""
        deployment = find(prod, "Deployment", "modelserve")
        c = container(deployment)
        command = c["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep"
        pre_stop = float(command[1])
        drain = float(settings(prod)["MODELSERVE_SHUTDOWN_DRAIN_SECONDS"])
        assert pre_stop > 0 and drain > 0
        grace = pod_spec(deployment)["terminationGracePeriodSeconds"]  # type: ignore[index]
        assert grace >= pre_stop + drain + UVICORN_GRACEFUL_SECONDS + FLUSH_SECONDS

    def test_rollout_never_drops_below_capacity(self, prod):
        """Rolling updates add a pod before removing one."""
        strategy = find(prod, "Deployment", "modelserve")["spec"]["strategy"]
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0


class TestSecurity:
    @pytest.mark.parametrize("overlay", OVERLAYS)
    def test_every_pod_meets_the_restricted_pod_security_standard(self, rendered, overlay):
        """Non-root, no privilege escalation, all capabilities dropped, RuntimeDefault seccomp, read-only root."""
        for name, spec in workloads(rendered[overlay]):
            pod_ctx = spec.get("securityContext", {})
            for c in spec["containers"]:
                ctx = {**pod_ctx, **c.get("securityContext", {})}
                assert ctx.get("runAsNonRoot") is True, name
                assert ctx.get("runAsUser", 0) != 0, name
                assert ctx.get("allowPrivilegeEscalation") is False, name
                assert ctx.get("capabilities", {}).get("drop") == ["ALL"], name
                assert ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
                assert ctx.get("readOnlyRootFilesystem") is True, name
            assert not any("hostPath" in v for v in spec.get("volumes", [])), name

    def test_service_runs_as_the_image_user(self, prod):
        """The pod's UID is the numeric non-root user the Dockerfile creates."""
        for name, spec in workloads(prod):
            if spec["containers"][0]["image"].split(":")[0].endswith("modelserve"):
                assert spec["securityContext"]["runAsUser"] == image_uid(), name

    def test_no_service_account_token(self, prod):
        """The service never calls the Kubernetes API, so no token is mounted."""
        for name, spec in workloads(prod):
            assert spec.get("automountServiceAccountToken") is False, name

    @pytest.mark.parametrize("overlay", OVERLAYS)
    def test_every_path_the_service_writes_is_a_volume(self, rendered, overlay):
        """With a read-only root, /tmp, the metrics multiprocess dir and the prediction log are mounts."""
        docs = rendered[overlay]
        c = container(find(docs, "Deployment", "modelserve"))
        env = env_of(docs, c)
        for path in ("/tmp", env["MODELSERVE_METRICS_DIR"], env["MODELSERVE_LOG_DIR"]):
            assert not mount_for(c, path).get("readOnly"), path

    def test_metrics_dir_is_below_its_mount(self, prod):
        """The service deletes and recreates MODELSERVE_METRICS_DIR at start, which a mount point refuses."""
        c = container(find(prod, "Deployment", "modelserve"))
        metrics_dir = env_of(prod, c)["MODELSERVE_METRICS_DIR"]
        assert mount_for(c, metrics_dir)["mountPath"] != metrics_dir

    def test_resources_are_bounded(self, prod):
        """Every container requests CPU and memory and has a memory limit."""
        for name, spec in workloads(prod):
            for c in spec["containers"]:
                assert {"cpu", "memory"} <= set(c["resources"]["requests"]), name
                assert "memory" in c["resources"]["limits"], name


class TestSettingsAndFlags:
    @pytest.mark.parametrize("overlay", OVERLAYS)
    def test_settings_are_real_settings(self, rendered, overlay):
        """Every MODELSERVE_* key in the settings ConfigMap is a field of app/settings.py."""
        keys = {k for k in settings(rendered[overlay]) if k.startswith("MODELSERVE_")}
        assert keys and keys - settings_env_names() == set()

    @pytest.mark.parametrize("overlay", OVERLAYS)
    def test_tracing_settings_are_standard_and_off_until_an_endpoint(self, rendered, overlay):
        """OTEL_* keys are standard OpenTelemetry variables; the cluster-specific endpoint is left to set."""
        keys = {k for k in settings(rendered[overlay]) if k.startswith("OTEL_")}
        assert keys <= {
            "OTEL_SERVICE_NAME",
            "OTEL_TRACES_SAMPLER",
            "OTEL_TRACES_SAMPLER_ARG",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_RESOURCE_ATTRIBUTES",
        }
        assert settings(rendered[overlay])["OTEL_TRACES_SAMPLER"].startswith("parentbased_")

    def test_settings_are_accepted_by_the_service(self, prod, monkeypatch):
        """The service's Settings class loads the production ConfigMap without error."""
        from app.settings import Settings

        for key, value in settings(prod).items():
            monkeypatch.setenv(key, value)
        s = Settings()
        assert s.host == "0.0.0.0" and s.port == 8000

    def test_settings_change_rolls_the_deployment(self, prod):
        """Pods reference the hash-suffixed settings ConfigMap, so a change starts a rollout."""
        c = container(find(prod, "Deployment", "modelserve"))
        assert re.fullmatch(r"modelserve-settings-[a-z0-9]{10}", c["envFrom"][0]["configMapRef"]["name"])

    def test_flags_file_is_mounted_live_from_its_configmap(self, prod):
        """MODELSERVE_FLAGS_FILE is a key of the flags ConfigMap, mounted as a directory so updates arrive."""
        deployment = find(prod, "Deployment", "modelserve")
        flags = Path(settings(prod)["MODELSERVE_FLAGS_FILE"])
        c = container(deployment)
        mount = next(m for m in c["volumeMounts"] if m["mountPath"] == str(flags.parent))
        assert "subPath" not in mount
        volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"])  # type: ignore[index]
        cm = find(prod, "ConfigMap", volume["configMap"]["name"])
        assert flags.name in cm["data"]

    @pytest.mark.parametrize("overlay", OVERLAYS)
    def test_flags_file_is_accepted_by_the_service(self, rendered, overlay):
        """The service's own flags parser accepts the ConfigMap's flags file."""
        flags = Path(settings(rendered[overlay])["MODELSERVE_FLAGS_FILE"])
        cm = find(rendered[overlay], "ConfigMap", "modelserve-flags")
        assert parse_flags(cm["data"][flags.name], flags.suffix)


class TestScalingAndAvailability:
    def test_service_selects_the_api_pods_on_the_http_port(self, prod):
        """The Service selects the Deployment's pods and targets the named http port."""
        svc = find(prod, "Service", "modelserve")
        labels = find(prod, "Deployment", "modelserve")["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= labels.items()
        assert svc["spec"]["ports"][0]["targetPort"] == "http"

    def test_hpa_owns_the_replica_count(self, prod):
        """The Deployment leaves replicas to the HPA, which targets it."""
        deployment = find(prod, "Deployment", "modelserve")
        hpa = find(prod, "HorizontalPodAutoscaler", "modelserve")
        assert "replicas" not in deployment["spec"]
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "modelserve"}
        assert hpa["spec"]["minReplicas"] >= 2

    def test_hpa_scales_on_cpu_and_per_pod_request_rate(self, prod):
        """Production scales on CPU utilisation and on a Pods metric averaged per pod."""
        metrics = find(prod, "HorizontalPodAutoscaler", "modelserve")["spec"]["metrics"]
        types = {m["type"]: m for m in metrics}
        assert types["Resource"]["resource"]["name"] == "cpu"
        assert types["Pods"]["pods"]["target"]["type"] == "AverageValue"

    def test_pdb_covers_the_api_pods(self, prod):
        """The disruption budget selects the Deployment's pods and allows drains."""
        pdb = find(prod, "PodDisruptionBudget", "modelserve")
        labels = find(prod, "Deployment", "modelserve")["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert pdb["spec"]["maxUnavailable"] >= 1


class TestJobs:
    def test_monitor_cronjob(self, prod):
        """The CronJob runs `modelserve monitor` over seven daily windows, never overlapping, without retries."""
        cron = find(prod, "CronJob", "modelserve-monitor")
        c = pod_spec(cron)["containers"][0]  # type: ignore[index]
        assert c["args"] == ["monitor", "--window", "1d", "--windows", "7"]
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
        assert cron["spec"]["jobTemplate"]["spec"]["backoffLimit"] == 0

    def test_monitor_reads_the_log_the_service_writes(self, prod):
        """The monitor job mounts the same prediction-log claim, at the same MODELSERVE_LOG_DIR."""
        deployment = find(prod, "Deployment", "modelserve")
        cron = find(prod, "CronJob", "modelserve-monitor")

        def log_volume(spec: dict[str, Any]) -> tuple[str, str]:
            c = spec["containers"][0]
            mount = mount_for(c, env_of(prod, c)["MODELSERVE_LOG_DIR"])
            volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
            return volume["persistentVolumeClaim"]["claimName"], mount["mountPath"]

        serving, monitor = log_volume(pod_spec(deployment)), log_volume(pod_spec(cron))  # type: ignore[arg-type]
        assert serving == monitor
        find(prod, "PersistentVolumeClaim", serving[0])

    def test_compact_cronjob_writes_the_log_the_service_writes(self, prod):
        """`modelserve compact` runs hourly, never overlapping, on the serving pods' log claim, mounted writable."""
        deployment = find(prod, "Deployment", "modelserve")
        cron = find(prod, "CronJob", "modelserve-compact")
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
        spec = pod_spec(cron)
        c = spec["containers"][0]  # type: ignore[index]
        assert c["args"] == ["compact"]
        log_dir = env_of(prod, c)["MODELSERVE_LOG_DIR"]
        assert log_dir == env_of(prod, container(deployment))["MODELSERVE_LOG_DIR"]
        mount = mount_for(c, log_dir)
        assert not mount.get("readOnly", False)
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])  # type: ignore[index]
        assert volume["persistentVolumeClaim"]["claimName"] == "modelserve-prediction-log"

    def test_batch_job_is_indexed_and_sharded_by_completion_index(self, prod):
        """The batch Job is Indexed and each index reads and writes its own shard."""
        job = find(prod, "Job", "modelserve-batch")
        args = pod_spec(job)["containers"][0]["args"]  # type: ignore[index]
        assert job["spec"]["completionMode"] == "Indexed"
        assert job["spec"]["completions"] >= 2
        positional = [a for a in args if not a.startswith("-")]
        assert positional[0] == "batch" and len(positional) == 3
        src, dst = positional[1:]
        assert "$(JOB_COMPLETION_INDEX)" in src and "$(JOB_COMPLETION_INDEX)" in dst and src != dst

    def test_batch_job_does_not_start_on_apply(self, prod):
        """The batch Job is created suspended; an operator starts a run."""
        assert find(prod, "Job", "modelserve-batch")["spec"]["suspend"] is True


class TestCommands:
    @pytest.mark.parametrize("overlay", OVERLAYS)
    def test_every_modelserve_command_parses(self, rendered, overlay):
        """The args of every container running the image are accepted by the real `modelserve` parser."""
        parser = build_parser()
        commands = []
        for _, spec in workloads(rendered[overlay]):
            for c in spec["containers"]:
                if c["image"].split(":")[0].endswith("modelserve"):
                    commands.append(c["args"][0])
                    parser.parse_args(c["args"])  # exits (SystemExit) on a bad command line
        assert sorted(commands) == ["batch", "compact", "monitor", "serve"]


class TestDevOverlay:
    def test_dev_runs_redis_and_points_the_service_at_it(self, dev):
        """The dev overlay adds a Redis Deployment and Service, and MODELSERVE_REDIS_URL names that Service."""
        redis = find(dev, "Deployment", "redis")
        svc = find(dev, "Service", "redis")
        assert svc["spec"]["selector"].items() <= redis["spec"]["template"]["metadata"]["labels"].items()
        port = svc["spec"]["ports"][0]["port"]
        assert settings(dev)["MODELSERVE_REDIS_URL"].startswith(f"redis://redis:{port}/")

    def test_api_service_does_not_select_redis(self, dev):
        """The modelserve Service and PDB select only the API pods, not Redis."""
        redis_labels = find(dev, "Deployment", "redis")["spec"]["template"]["metadata"]["labels"]
        for kind in ("Service", "PodDisruptionBudget"):
            obj = find(dev, kind, "modelserve")
            selector = obj["spec"].get("selector", {})
            selector = selector.get("matchLabels", selector)
            assert not selector.items() <= redis_labels.items(), kind

    def test_production_has_no_in_cluster_redis(self, prod):
        """Redis in the cluster is a development convenience only."""
        assert not [d for d in prod if d["metadata"]["name"] == "redis"]
