"""docker-compose.yml: validated against the Compose Specification's JSON schema
(as vendored by check-jsonschema), then checked for what the schema cannot see."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.rollout.flags import parse_flags
from tests.deploy.conftest import REPO, dev_executable, duration_seconds, load_yaml, run, settings_env_names
from tests.deploy.dockerfile import parse_stages

# uvicorn's graceful-shutdown timeout for in-flight requests (app/serve.py).
UVICORN_GRACEFUL_SECONDS = 30


@dataclass
class Mount:
    source: str
    target: str
    read_only: bool

    @property
    def is_bind(self) -> bool:
        return self.source.startswith((".", "/"))


def mounts(service: dict[str, Any]) -> list[Mount]:
    """A service's volumes, from the short `source:target[:ro]` syntax this file uses."""
    out = []
    for spec in service.get("volumes", []):
        source, target, *mode = spec.split(":")
        out.append(Mount(source, target, mode == ["ro"]))
    return out


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(REPO / "docker-compose.yml")


@pytest.fixture(scope="module")
def app(compose) -> dict[str, Any]:
    return compose["services"]["app"]


def check_schema(path: Path) -> Any:
    return run([dev_executable("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", path])


class TestCompose:
    def test_matches_the_compose_specification(self):
        """check-jsonschema validates the file against the Compose Specification schema."""
        proc = check_schema(REPO / "docker-compose.yml")
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def test_schema_check_rejects_a_broken_file(self, tmp_path):
        """The same check fails on a misspelt key, so a pass means something."""
        bad = tmp_path / "docker-compose.yml"
        bad.write_text((REPO / "docker-compose.yml").read_text().replace("stop_grace_period:", "stop_grace_periode:"))
        proc = check_schema(bad)
        assert proc.returncode != 0
        assert "stop_grace_periode" in proc.stdout + proc.stderr

    def test_services(self, compose):
        """The stack is the app, the log compactor, Redis, Prometheus, Jaeger and Grafana."""
        assert set(compose["services"]) == {"app", "compact", "redis", "prometheus", "jaeger", "grafana"}

    def test_references_resolve(self, compose):
        """Every depends_on names a service and every named volume is declared at the top level."""
        services, volumes = set(compose["services"]), set(compose.get("volumes", {}))
        for name, service in compose["services"].items():
            assert set(service.get("depends_on", [])) <= services, name
            for m in mounts(service):
                assert m.is_bind or m.source in volumes, f"{name}: {m.source}"

    def test_bind_mounts_exist(self, compose):
        """Every host path that a service mounts exists in the repository."""
        binds = [m for s in compose["services"].values() for m in mounts(s) if m.is_bind]
        assert binds
        for m in binds:
            assert (REPO / m.source).exists(), m.source

    def test_app_builds_a_stage_of_the_dockerfile(self, app):
        """The app is built from this repository's Dockerfile, at the final stage (models baked in)."""
        assert app["build"]["context"] == "."
        assert app["build"]["target"] == list(parse_stages())[-1]

    def test_app_waits_for_a_healthy_redis_it_points_at(self, compose, app):
        """The app starts after Redis answers PING and its Redis URL names that service."""
        assert app["depends_on"]["redis"]["condition"] == "service_healthy"
        assert app["environment"]["MODELSERVE_REDIS_URL"].startswith("redis://redis:6379/")
        assert "redis-cli" in compose["services"]["redis"]["healthcheck"]["test"]

    def test_app_environment_names_real_settings(self, app):
        """Every MODELSERVE_* variable given to the app is a field of app/settings.py."""
        names = {k for k in app["environment"] if k.startswith("MODELSERVE_")}
        assert names and names <= settings_env_names()

    def test_compact_runs_on_the_log_the_app_writes(self, compose, app):
        """The compactor runs `modelserve compact` on the app's log volume, at the same MODELSERVE_LOG_DIR."""
        compact = compose["services"]["compact"]
        assert "modelserve compact" in " ".join(compact["entrypoint"])
        log_dir = compact["environment"]["MODELSERVE_LOG_DIR"]
        assert log_dir == app["environment"]["MODELSERVE_LOG_DIR"]
        source = next(m for m in mounts(compact) if m.target == log_dir)
        assert source == next(m for m in mounts(app) if m.target == log_dir)
        assert set(compact["environment"]) <= settings_env_names()

    def test_app_is_hardened(self, app):
        """Read-only root with a tmpfs /tmp, no capabilities, no privilege escalation."""
        assert app["read_only"] is True
        assert "/tmp" in app["tmpfs"]
        assert app["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in app["security_opt"]

    def test_prediction_log_is_on_a_named_volume(self, app):
        """MODELSERVE_LOG_DIR is a named volume, the one place besides /tmp the read-only app writes to."""
        log_dir = app["environment"]["MODELSERVE_LOG_DIR"]
        mount = next(m for m in mounts(app) if m.target == log_dir)
        assert not mount.is_bind and not mount.read_only

    def test_stop_grace_covers_the_drain(self, app):
        """Docker waits for the drain plus uvicorn's in-flight timeout before SIGKILL."""
        grace = duration_seconds(app["stop_grace_period"])
        drain = float(app["environment"]["MODELSERVE_SHUTDOWN_DRAIN_SECONDS"])
        assert drain > 0
        assert grace >= drain + UVICORN_GRACEFUL_SECONDS

    def test_flags_file_is_accepted_by_the_service(self, app):
        """MODELSERVE_FLAGS_FILE is in a read-only mount of a repository file that the service's parser accepts."""
        flags = Path(app["environment"]["MODELSERVE_FLAGS_FILE"])
        mount = next(m for m in mounts(app) if flags.is_relative_to(m.target))
        assert mount.is_bind and mount.read_only
        path = REPO / mount.source / flags.relative_to(mount.target)
        assert parse_flags(path.read_text(), path.suffix)

    def test_app_exports_traces_to_jaeger_over_otlp_http(self, compose, app):
        """The app's OTLP endpoint is the Jaeger service's OTLP/HTTP port, with the protocol the app supports."""
        env = app["environment"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
        assert compose["services"]["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
        assert "jaeger" in app["depends_on"]

    def test_grafana_links_exemplars_to_jaeger(self, compose):
        """Prometheus keeps exemplars, its Grafana datasource sends their trace_id to the Jaeger datasource."""
        assert "--enable-feature=exemplar-storage" in compose["services"]["prometheus"]["command"]
        sources = load_yaml(REPO / "deploy/grafana/provisioning/datasources/prometheus.yml")["datasources"]
        by_uid = {s["uid"]: s for s in sources}
        (destination,) = by_uid["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
        assert destination == {"name": "trace_id", "datasourceUid": "jaeger"}
        assert by_uid["jaeger"]["type"] == "jaeger"
        assert by_uid["jaeger"]["url"] == "http://jaeger:16686"

    def test_prometheus_loads_config_and_rules_from_deploy(self, compose):
        """Prometheus reads deploy/prometheus (config and alerts.yml) read-only."""
        prom = compose["services"]["prometheus"]
        mount = next(m for m in mounts(prom) if m.target == "/etc/prometheus")
        assert (REPO / mount.source).resolve() == REPO / "deploy" / "prometheus"
        assert mount.read_only
        assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
