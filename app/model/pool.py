"""Loaded models: verify → load → warm up → self-check, and the alias map.

Repository semantics follow MLServer: a version is not served until it has
loaded, warmed up and matched its manifest sample; on a swap the new version
is fully ready before the alias points at it, and a version that fails keeps
the old one serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.errors import ArtifactError, NonFiniteAnswer, NotReady
from app.model.answers import BINARY, REGRESSION, Answers
from app.model.compat import library_warnings, onnxruntime_version
from app.model.decoder import Decoder
from app.model.manifest import Manifest
from app.model.repository import Repository
from app.model.runtime import OnnxModel

log = logging.getLogger("modelserve.models")


@dataclass
class LoadedModel:
    version: str
    manifest: Manifest
    runtime: OnnxModel
    decoder: Decoder
    store_features: tuple[str, ...]
    loaded_at: float = field(default_factory=time.time)
    answers: Answers = field(init=False)
    """Turns this model's scores into answers (any task)."""
    int_binary: bool = field(init=False)
    """A binary model with int classes: the request path's fast case (``runtime.predict_one``)."""

    def __post_init__(self) -> None:
        self.answers = Answers(self.manifest)
        self.int_binary = self.manifest.task == BINARY and not self.answers.string_labels

    @property
    def task(self) -> str:
        return self.manifest.task

    def answer(self, rows: list[dict[str, Any]]) -> list[Any]:
        """``(prediction, probability, probabilities)`` per row, whatever the task (``app.model.answers``);
        ``NonFiniteAnswer`` naming the rows whose answer has ±inf or NaN."""
        scores = self.runtime.scores(self.runtime.feeds(rows))
        numbers = scores.values if scores.values is not None else scores.probabilities
        if numbers is not None and not np.isfinite(numbers).all():
            finite = np.isfinite(numbers.reshape(len(numbers), -1)).all(axis=1)
            raise NonFiniteAnswer(np.flatnonzero(~finite).tolist())
        return self.answers.rows(scores)

    @property
    def needs_store(self) -> bool:
        return bool(self.store_features)


def self_check(model: LoadedModel, tolerance: float) -> None:
    """Run the manifest sample row; refuse the model unless it gives the expected output.

    The expected output was computed by onnxruntime at publish (or training)
    time on the same float32 inputs, so anything beyond float32 noise means a
    different model, a different runtime behaviour or a broken artifact. The
    tolerance (default 1e-4) is absolute on probabilities (the positive
    class's for binary, every class's for multiclass) and relative on a
    regression value (``|got - want| <= tolerance * max(|want|, 1)``).
    """
    expected = model.manifest.sample.expected
    ((label, probability, probabilities),) = model.answer([model.manifest.sample.row])
    if model.task == REGRESSION:
        want = float(expected["prediction"])
        ok = math.isfinite(label) and abs(label - want) <= tolerance * max(abs(want), 1.0)
        if not ok:
            raise ArtifactError(f"{model.version}: self-check failed (expected {want:.6g}, got {label:.6g})")
        return
    want_label = expected["label"] if "label" in expected else expected["prediction"]
    if model.task == BINARY:
        want_probs = [float(expected["probability"])]
        got_probs = [float(probability)] if probability is not None else [math.nan]
    else:
        want_probs = [float(p) for p in expected["probabilities"]]
        got_probs = list((probabilities or {}).values())
    close = len(got_probs) == len(want_probs) and all(
        math.isfinite(g) and abs(g - w) <= tolerance for g, w in zip(got_probs, want_probs, strict=True)
    )
    if label != want_label or not close:
        want_text = "/".join(f"{p:.6f}" for p in want_probs)
        got_text = "/".join(f"{p:.6f}" for p in got_probs)
        raise ArtifactError(
            f"{model.version}: self-check failed (expected {want_label}/{want_text}, got {label}/{got_text})"
        )


class ModelPool:
    """Loads versions from the repository and keeps alias -> loaded model."""

    def __init__(
        self,
        repository: Repository,
        *,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        warmup_iterations: int = 20,
        tolerance: float = 1e-4,
        max_batch: int = 1000,
    ) -> None:
        self.repository = repository
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads
        self.warmup_iterations = warmup_iterations
        self.tolerance = tolerance
        self.max_batch = max_batch
        self.by_alias: dict[str, LoadedModel] = {}
        self.by_version: dict[str, LoadedModel] = {}

    def load(self, version: str) -> LoadedModel:
        """A ready model: checksums verified, session built, warmed up and self-checked."""
        if version in self.by_version:
            return self.by_version[version]
        manifest = self.repository.verify(version)
        for warning in library_warnings(manifest.libraries, onnxruntime_version()):
            log.warning("%s: %s", version, warning)
        path = self.repository.version_dir(version) / "model.onnx"
        runtime = OnnxModel.from_manifest(path, manifest, self.intra_op_threads, self.inter_op_threads)
        decoder = self._decoder_for(manifest)
        model = LoadedModel(version, manifest, runtime, decoder, tuple(f.name for f in manifest.store_features))
        feeds = runtime.feeds([manifest.sample.row])
        for _ in range(self.warmup_iterations):
            runtime.scores(feeds)
        runtime.scores(runtime.feeds([manifest.sample.row] * 64))  # warm the batch path too
        self_check(model, self.tolerance)
        log.info("loaded %s (%s)", version, manifest.estimator)
        return model

    async def load_async(self, version: str) -> LoadedModel:
        """``load(version)`` off the event loop, in a daemon thread of its own.

        Not ``asyncio.to_thread``: the loop's executor threads are joined when
        the process exits, so a SIGTERM during a long load or warm-up stopped
        the server but left the process running until the load finished (a pod
        then waits for SIGKILL). A daemon thread is abandoned at exit; a load
        runs rarely, so a thread per load costs nothing that matters.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[LoadedModel] = loop.create_future()

        def settle(result: LoadedModel | None, error: BaseException | None) -> None:
            if future.done():  # the awaiting task was cancelled meanwhile
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]

        def run() -> None:
            try:
                result, error = self.load(version), None
            except BaseException as exc:  # handed to the awaiting task, whatever it is
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting any more
                loop.call_soon_threadsafe(settle, result, error)

        threading.Thread(target=run, name=f"modelserve-load-{version}", daemon=True).start()
        return await future

    def _decoder_for(self, manifest: Manifest) -> Decoder:
        # Versions with the same input signature share one decoder.
        for other in self.by_version.values():
            if other.decoder.signature == manifest.input_signature():
                return other.decoder
        return Decoder(manifest, max_batch=self.max_batch)

    def assign(self, alias: str, model: LoadedModel) -> LoadedModel | None:
        """Point ``alias`` at an already-loaded model (one dict store: atomic for readers)."""
        self.by_version[model.version] = model
        previous = self.by_alias.get(alias)
        self.by_alias[alias] = model
        self._forget_unused()
        return previous

    def keep(self, versions: set[str]) -> None:
        """Drop loaded versions no alias uses and ``versions`` does not name."""
        self._forget_unused(versions)

    def _forget_unused(self, extra: set[str] | None = None) -> None:
        used = {m.version for m in self.by_alias.values()} | (extra or set())
        for v in list(self.by_version):
            if v not in used:
                del self.by_version[v]

    def get(self, alias: str) -> LoadedModel:
        try:
            return self.by_alias[alias]
        except KeyError:
            raise NotReady(f"no model loaded for alias {alias!r}") from None

    def aliases(self) -> dict[str, str]:
        return {alias: m.version for alias, m in self.by_alias.items()}
