"""Schemathesis against the service's own OpenAPI document, on a real server process.

The document served at ``/openapi.json`` includes the model's request schemas
(``PredictRequest``, ``BatchRequest``, ``Features``), so the generated bodies
are the ones clients would send, valid and deliberately invalid. Every
response must be documented (status and shape) and none may be a 5xx.
Operations documented to always refuse (the V2 repository extension's load
and unload: no 2xx answer) are not expected to accept valid data.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from harness import ServerProcess
from tests.support.workspace import Workspace

pytestmark = pytest.mark.e2e

TOKEN = "fuzz-" + secrets.token_hex(16)
EXAMPLES = 50


@pytest.fixture(scope="module")
def live(trained: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root: Path = tmp_path_factory.mktemp("fuzz")
    # Shedding is tested elsewhere: on a loaded machine a 50 ms queue limit would refuse valid cases (503).
    env = trained.env(
        MODELSERVE_ADMIN_TOKEN=TOKEN, MODELSERVE_LOG_DIR=str(root / "log"), MODELSERVE_MAX_QUEUE_MS="10000"
    )
    with ServerProcess(env, root / "server.log") as srv:
        srv.wait_ready()
        yield srv


def operations(live: ServerProcess) -> list[Any]:
    doc = httpx.get(live.url + "/openapi.json", timeout=10).json()
    assert {"PredictRequest", "BatchRequest", "Features"} <= set(doc["components"]["schemas"])
    schema = schemathesis.openapi.from_dict(doc)
    schema.config.update(base_url=live.url)
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_every_response_is_documented_and_never_5xx(live: ServerProcess, mode: GenerationMode) -> None:
    """Generated requests for every operation get documented answers in the documented shape, never a 5xx."""
    failures: dict[str, str] = {}
    for op in operations(live):
        headers = {"Authorization": f"Bearer {TOKEN}"} if op.path.startswith(("/admin", "/v2/repository")) else None
        never_succeeds = not any(str(status).startswith("2") for status in op.definition.raw.get("responses", {}))
        excluded = [positive_data_acceptance] if never_succeeds else None

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy(mode))
        def check(case: Any) -> None:
            case.call_and_validate(headers=headers, excluded_checks=excluded)  # noqa: B023  (runs inside this iteration)

        try:
            check()
        except Unsatisfiable:
            continue  # nothing to break: an operation without parameters has no invalid form
        except Exception as exc:  # collect every operation's failure, then report them together
            failures[op.label] = str(exc)[:1500]
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
