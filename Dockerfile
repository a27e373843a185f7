# syntax=docker/dockerfile:1
#
# modelserve image. Stages:
#   build         virtualenv with the package, base + jobs extra, from requirements/runtime.txt
#                 (hash-pinned, wheels only); the venv has no pip of its own
#   models        adds the publish extra (requirements/publish.txt) and runs `modelserve train`:
#                 models/ (v1..v3, aliases) and data/features.parquet
#   runtime-bare  the service without models: mount them at /srv/modelserve/models
#   runtime       (default) runtime-bare with the trained models and feature table baked in
#
#   docker build -t modelserve .
#   docker build --target runtime-bare -t modelserve:bare .
#   docker run -p 8000:8000 -v "$PWD/models:/srv/modelserve/models:ro" modelserve
#
# Settings are MODELSERVE_* environment variables (app/settings.py); the defaults
# below point at the baked-in paths and can be overridden at `docker run -e`.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
# strip (binutils), for slim-venv.sh: uvloop's wheel ships its extension with
# debug symbols. Only this stage has it; the runtime stages copy the venv alone.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*
# The image's pip installs into the venv (--python), so the runtime carries no pip.
RUN python -m venv --without-pip /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, from the lock alone: editing app/ reuses this layer.
# slim-venv.sh then drops what nothing here loads (test suites, type stubs,
# pyarrow's headers, Flight and S3 libraries, onnxruntime's C API library,
# uvloop's debug symbols: ~120 MB). README "Install" has the sizes.
COPY requirements/runtime.txt requirements/publish.txt ./requirements/
COPY scripts/slim-venv.sh ./scripts/
RUN pip --python /opt/venv/bin/python install --no-cache-dir --require-hashes --only-binary=:all: \
        -r requirements/runtime.txt \
    && sh scripts/slim-venv.sh /opt/venv

COPY pyproject.toml README.md ./
COPY app ./app
# The import check proves the trimmed venv still runs every job.
RUN pip --python /opt/venv/bin/python install --no-cache-dir --no-deps . \
    && python -m compileall -q /opt/venv/lib \
    && python -c "import app.serve, app.jobs.batch, app.jobs.drift, app.jobs.query, app.features.table"

# ---------------------------------------------------------------------------
FROM build AS models

# Training needs the publish extra; this stage's venv is not the one the runtime copies.
RUN pip --python /opt/venv/bin/python install --no-cache-dir --require-hashes --only-binary=:all: \
        -r requirements/publish.txt
WORKDIR /srv/modelserve
ENV MODELSERVE_MODELS_DIR=/srv/modelserve/models \
    MODELSERVE_FEATURE_TABLE=/srv/modelserve/data/features.parquet
RUN modelserve train && modelserve verify

# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime-bare

ARG UID=10001
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MODELSERVE_HOST=0.0.0.0 \
    MODELSERVE_PORT=8000 \
    MODELSERVE_MODELS_DIR=/srv/modelserve/models \
    MODELSERVE_FEATURE_TABLE=/srv/modelserve/data/features.parquet \
    MODELSERVE_LOG_DIR=/var/lib/modelserve/predictions \
    MODELSERVE_LOG_FORMAT=json

# A numeric UID so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
# Models and code stay root-owned (read-only to the service); only the
# prediction log directory belongs to it.
RUN groupadd --system --gid "${UID}" modelserve \
    && useradd --system --uid "${UID}" --gid modelserve --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin modelserve \
    && mkdir -p /srv/modelserve/models /srv/modelserve/data /var/lib/modelserve/predictions \
    && chown "${UID}:${UID}" /var/lib/modelserve/predictions

COPY --from=build /opt/venv /opt/venv

WORKDIR /srv/modelserve
USER ${UID}:${UID}
# gRPC (Open Inference Protocol and gRPC health checking) when MODELSERVE_GRPC_PORT=8001
# is set, as compose and k8s do; HTTP on MODELSERVE_PORT.
EXPOSE 8001
EXPOSE 8000

# Liveness only: /health/live depends on nothing external. The slim image has no
# curl, so the check uses the interpreter that is already there.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('MODELSERVE_PORT', '8000') + '/health/live', timeout=2)"]

# Exec form: modelserve is PID 1 and receives SIGTERM itself (readiness 503, drain, flush).
ENTRYPOINT ["modelserve"]
CMD ["serve"]

# ---------------------------------------------------------------------------
FROM runtime-bare AS runtime

COPY --from=models /srv/modelserve/models /srv/modelserve/models
COPY --from=models /srv/modelserve/data /srv/modelserve/data
