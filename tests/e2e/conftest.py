"""Fixtures the end-to-end tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.test_tracing import Receiver


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """An OTLP/HTTP trace receiver (the REST tracing tests' own) for a module's server to export to."""
    yield from Receiver.running()
