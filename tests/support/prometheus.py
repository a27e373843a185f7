"""A throwaway Prometheus server for one test: scrapes given targets, evaluates given rules.

    with PrometheusServer(tmp_path / "prom", targets=[srv.url], rule_files=[ALERTS]) as prom:
        prom.wait_scraped_after(time.time())      # a scrape that started after now
        prom.scalar('sum(modelserve_predictions_total{model_version="v2"})')

Debian's ``prometheus`` package provides the binary (``make system-deps``).
Scrape and evaluation intervals are 1 s; the TSDB lives in the work directory;
the web API listens on a free loopback port. Waits poll with deadlines
instead of sleeping, so a slow machine only makes a test slower.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from harness import ManagedProcess, free_port, http_ok

JOB = "modelserve"


def prometheus_binary() -> str:
    path = shutil.which("prometheus") or ("/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None)
    if path is None:
        pytest.skip("prometheus is not installed (make system-deps)")
    return path


class PrometheusServer(ManagedProcess):
    def __init__(
        self,
        workdir: Path,
        targets: list[str],
        rule_files: list[Path] | None = None,
        interval: str = "1s",
    ) -> None:
        binary = prometheus_binary()
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "prometheus.yml"
        config = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
            "rule_files": [str(p.resolve()) for p in rule_files or []],
            "scrape_configs": [
                {
                    "job_name": JOB,
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": [urlsplit(t).netloc for t in targets]}],
                }
            ],
        }
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        super().__init__(
            "prometheus",
            [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            log_path=workdir / "prometheus.log",
            ready=http_ok(self.url + "/-/ready"),
            cwd=workdir,
            ready_timeout=60.0,
            stop_timeout=15.0,
            poll_interval=0.1,
        )
        self.client = httpx.Client(base_url=self.url, timeout=10, trust_env=False)

    def stop(self, timeout: float | None = None) -> int | None:
        self.client.close()
        return super().stop(timeout)

    # --- HTTP API ----------------------------------------------------------------
    def api(self, path: str, **params: Any) -> Any:
        r = self.client.get(f"/api/v1/{path}", params=params)
        body = r.json()
        if r.status_code != 200 or body.get("status") != "success":
            raise AssertionError(f"GET /api/v1/{path} {params}: {r.status_code} {body}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query at the current time: the vector's samples (``metric`` and ``value``)."""
        data = self.api("query", query=promql)
        assert data["resultType"] == "vector", data
        return data["result"]  # type: ignore[no-any-return]

    def scalar(self, promql: str) -> float:
        """The value of a query that must return exactly one sample."""
        result = self.query(promql)
        assert len(result) == 1, f"{promql}: expected one sample, got {result}"
        return float(result[0]["value"][1])

    def last_scrape(self) -> float:
        """Unix time at which the most recent scrape of the service started (-inf before the first)."""
        result = self.query(f'timestamp(up{{job="{JOB}"}})')
        return min((float(s["value"][1]) for s in result), default=-math.inf)

    def wait_scraped_after(self, t: float, timeout: float = 30.0) -> float:
        """Wait for a successful scrape that started after unix time ``t``; its time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log_tail()}")
            scraped = self.last_scrape()
            if scraped > t and self.query(f'up{{job="{JOB}"}} == 1'):
                return scraped
            time.sleep(0.2)
        raise TimeoutError(f"no successful scrape after {t} within {timeout}s: {self.api('targets')}")

    def wait_until(self, promql: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait for a query to return a non-empty vector (e.g. ``modelserve_ready == 1``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(promql)
            if result:
                return result
            time.sleep(0.2)
        raise TimeoutError(f"{promql} still empty after {timeout}s")

    def alerting_rules(self) -> dict[str, dict[str, Any]]:
        """Every loaded alerting rule by name (``state``: inactive, pending or firing; ``health``)."""
        return {
            rule["name"]: rule
            for group in self.api("rules", type="alert")["groups"]
            for rule in group["rules"]
            if rule["type"] == "alerting"
        }
