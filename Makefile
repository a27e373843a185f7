# modelserve — the two commands a newcomer needs are `make run` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
LOCK    := requirements/dev.txt
HOST    ?= 127.0.0.1
PORT    ?= 8000
PYTEST_ARGS ?=

.PHONY: install lock lock-upgrade run test unit integration e2e lint bench models soak clean system-deps proto

install: $(STAMP)

# Everything (base + jobs + publish + dev) from the hash-pinned lock; the
# package itself without dependencies, so nothing unpinned gets in. pip
# installs only uv (requirements/tools.txt, hash-pinned); uv installs the lock,
# with hashes required, from its package cache (~/.cache/uv) when it can.
UV      := $(BIN)/uv pip install -q --python $(BIN)/python
$(STAMP): $(LOCK) requirements/tools.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes -r requirements/tools.txt
	$(UV) --require-hashes -r $(LOCK)
	$(UV) --no-deps -e .
	touch $(STAMP)

# Relock every install set (requirements/*.txt) after editing pyproject.toml's
# dependencies, keeping the pins that still fit; lock-upgrade moves them all.
lock: install
	$(BIN)/python scripts/lock.py

lock-upgrade: install
	$(BIN)/python scripts/lock.py --upgrade

# The gRPC (Open Inference Protocol) modules, committed next to their .proto;
# run after editing it. Paths from the repository root make the generated
# imports absolute (``from app.rpc import ...``).
proto: install
	$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. app/rpc/grpc_predict_v2.proto

# Binaries the integration tests start themselves (redis-server, wrk, promtool, prometheus).
system-deps:
	@bash scripts/system-deps.sh

models/production: | $(STAMP)
	$(BIN)/modelserve train

models: install
	$(BIN)/modelserve train --force

# The prediction log goes to logs/ (query it with `modelserve query`, `modelserve drift`).
run: install models/production
	MODELSERVE_LOG_DIR=$${MODELSERVE_LOG_DIR:-logs} $(BIN)/modelserve serve --host $(HOST) --port $(PORT)

test: install system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: install
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

integration: install system-deps
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

e2e: install system-deps
	$(BIN)/python -m pytest tests/e2e tests/deploy tests/reliability $(PYTEST_ARGS)

lint: install
	$(BIN)/python scripts/lock.py --check
	$(BIN)/ruff check app tests bench soak harness
	$(BIN)/ruff format --check app tests bench soak harness
	$(BIN)/mypy app harness
	PATH=$(CURDIR)/$(BIN):$$PATH bash scripts/lint-deploy.sh

# Each suite prints a Markdown table (also written under bench/results/).
bench: install system-deps models/production
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.features
	$(BIN)/python -m bench.rollout
	$(BIN)/python -m bench.jobs
	$(BIN)/python -m bench.v2
	$(BIN)/python -m bench.batch
	$(BIN)/python -m bench.overload $(if $(PYSPY),--profile)

# A real server under sustained load while faults are injected (see RELIABILITY.md);
# `make test` runs the short form.
soak: install system-deps
	$(BIN)/python -m soak.run $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
