"""Alias changes from several processes at once (two operators, a pipeline and a person) stay one history.

Each promote or rollback reads the alias, moves it and appends ``from -> to``
to the history; rollback follows that chain. Run concurrently without a lock,
a promotion could record a ``from`` another had already replaced, and a later
rollback went to a version that was not the one served before.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
from pathlib import Path

from app.model.repository import Repository
from tests.support.workspace import Workspace

ROUNDS = 15


def _promote_many(root: str, version: str, barrier: mp.synchronize.Barrier) -> None:
    repo = Repository(Path(root))
    barrier.wait()
    for _ in range(ROUNDS):
        repo.promote(version, "racey")


def test_concurrent_promotions_leave_an_unbroken_history(workspace: Workspace) -> None:
    ctx = mp.get_context("fork")
    versions = ["v1", "v2", "v3", "v1"]
    barrier = ctx.Barrier(len(versions))
    procs = [ctx.Process(target=_promote_many, args=(str(workspace.models_dir), v, barrier)) for v in versions]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * len(procs)
    repo = Repository(workspace.models_dir)
    history = [e for e in repo.history() if e.get("alias") == "racey"]
    assert len(history) == ROUNDS * len(versions)
    broken = [(a, b) for a, b in itertools.pairwise(history) if b["from"] != a["to"]]
    assert broken == []
    assert history[-1]["to"] == repo.aliases()["racey"]
