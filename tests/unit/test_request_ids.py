"""Request ids: 128 random bits as hex, read from the random source in batches, never shared across a fork."""

from __future__ import annotations

import os

import pytest

from app import predictor
from app.predictor import ID_BATCH, new_request_id


def test_ids_are_distinct_hex_of_128_bits() -> None:
    ids = [new_request_id() for _ in range(3 * ID_BATCH + 5)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_the_random_source_is_read_once_per_batch_not_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = []
    real = os.urandom

    def counted(n: int) -> bytes:
        reads.append(n)
        return real(n)

    monkeypatch.setattr(predictor.os, "urandom", counted)
    predictor._spare_ids.clear()
    ids = [new_request_id() for _ in range(2 * ID_BATCH)]
    assert reads == [16 * ID_BATCH, 16 * ID_BATCH]
    assert len(set(ids)) == len(ids)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_reuse_the_parents_spare_ids() -> None:
    new_request_id()  # the parent now holds spare ids
    spare = set(predictor._spare_ids)
    assert spare
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write, "".join(new_request_id() for _ in range(ID_BATCH)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        text = f.read()
    os.waitpid(pid, 0)
    child = {text[i : i + 32] for i in range(0, len(text), 32)}
    assert len(child) == ID_BATCH
    assert not child & spare
