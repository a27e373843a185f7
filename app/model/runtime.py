"""onnxruntime, and only here: load a session, build feeds, predict a batch.

Feeds are built in manifest order from already-validated values: one input
per feature, shape ``[N, 1]``; numbers (float, int and bool) as float32 with
``None`` as NaN (the pipeline's imputer fills it), strings as object arrays.
That mapping is the contract with ``app.publish`` (see its conversion).

Threads: the default intra-op pool spins a thread per core waiting for work,
which steals the other core from the HTTP worker for ~µs-sized models, so the
pool size is explicit and spinning is turned off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from app.errors import ArtifactError
from app.model.manifest import Feature, Manifest, Outputs

NUMERIC = frozenset({"float", "int", "bool"})
_ONE_FLOAT = np.zeros((1, 1), dtype=np.float32)
_ONE_OBJECT = np.empty((1, 1), dtype=object)
"""Never written, like ``_ONE_FLOAT``: each one-row feed is a copy of one of them."""
_NAN = float("nan")


@dataclass(frozen=True)
class Scores:
    """What a model of any task answers for N rows.

    Classifiers: ``labels`` [N] and ``probabilities`` [N, K] in the manifest's
    ``classes`` order; regressors: ``values`` [N]. The other fields are None.
    """

    labels: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    values: np.ndarray | None = None


class OnnxModel:
    """One loaded ONNX model with its features' order and types.

    Used by the service (``from_manifest``) and by training, which records
    the expected output of the manifest sample through this same code.
    """

    def __init__(
        self,
        model: Path | bytes,
        features: Sequence[Feature],
        *,
        version: str = "",
        outputs: Outputs | None = None,
        task: str = "binary_classification",
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
    ) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = inter_op_threads
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        opts.log_severity_level = 3
        source = str(model) if isinstance(model, Path) else model
        try:
            self.session = ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ArtifactError(f"{version}: model.onnx does not load: {exc}") from None
        outputs = outputs or Outputs()
        self.version = version
        self.columns = [(f.name, f.dtype in NUMERIC) for f in features]
        if self.input_names != [name for name, _ in self.columns]:
            raise ArtifactError(f"{version}: model inputs {self.input_names} do not match the features")
        self._binding = getattr(self.session, "_sess", None)
        """The compiled session under onnxruntime's Python wrapper (see ``_session_run``)."""
        outs = [o.name for o in self.session.get_outputs()]
        self.task = task
        self._positive: int | None = None
        if task == "regression":
            if outputs.prediction not in outs:
                raise ArtifactError(f"{version}: model outputs {outs} lack prediction {outputs.prediction!r}")
            self._outputs = [outputs.prediction]
            return
        if outputs.label not in outs or outputs.probabilities not in outs:
            raise ArtifactError(f"{version}: model outputs {outs} lack label/probabilities")
        self._outputs = [outputs.label, outputs.probabilities]
        if outputs.classes is not None and outputs.positive_class is not None:
            self._positive = list(outputs.classes).index(outputs.positive_class)

    @classmethod
    def from_manifest(
        cls, path: Path, manifest: Manifest, intra_op_threads: int = 1, inter_op_threads: int = 1
    ) -> OnnxModel:
        return cls(
            path,
            manifest.features,
            version=manifest.version,
            outputs=manifest.outputs,
            task=manifest.task,
            intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads,
        )

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    def describe(self) -> dict[str, Any]:
        """Names, element types and shapes of the graph's inputs and outputs."""
        return {
            "inputs": [(i.name, i.type, i.shape) for i in self.session.get_inputs()],
            "outputs": [(o.name, o.type, o.shape) for o in self.session.get_outputs()],
        }

    def feeds(self, rows: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
        """Input tensors for rows holding every feature by name."""
        out: dict[str, np.ndarray] = {}
        n = len(rows)
        if n == 1:  # the /predict case: skip the per-column list and reshape
            row = rows[0]
            for name, numeric in self.columns:
                # A copy of a 1-by-1 array, then the value set in: a third less than np.array([[v]]), and the
                # same tensor (float32; None, a nullable feature's missing value, is NaN either way).
                value = row[name]
                if numeric:
                    cell = _ONE_FLOAT.copy()
                    cell[0, 0] = _NAN if value is None else value
                else:
                    cell = _ONE_OBJECT.copy()
                    cell[0, 0] = value
                out[name] = cell
            return out
        for name, numeric in self.columns:
            col = [row[name] for row in rows]
            if numeric:
                out[name] = np.array(col, dtype=np.float32).reshape(n, 1)
            else:
                out[name] = np.array(col, dtype=object).reshape(n, 1)
        return out

    def feeds_from_columns(self, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> dict[str, np.ndarray]:
        """Input tensors from whole columns (batch scoring): one array per feature."""
        out: dict[str, np.ndarray] = {}
        for name, numeric in self.columns:
            col = columns[name]
            if numeric:
                out[name] = np.asarray(col, dtype=np.float32).reshape(-1, 1)
            else:
                out[name] = np.asarray(col, dtype=object).reshape(-1, 1)
        return out

    def _session_run(self, feeds: dict[str, np.ndarray]) -> Any:
        """The session's outputs for ``feeds``, straight from its binding when there is one.

        ``InferenceSession.run`` checks the feed's names, OrtValue ownership and
        graph capture on every call before it calls the binding: ~2 µs, a
        twentieth of a one-row request. The feeds built here hold exactly the
        model's inputs as numpy arrays (the constructor checked the names), and
        the binding still refuses a missing or unknown input itself.
        """
        if self._binding is not None:
            return self._binding.run(self._outputs, feeds, None)
        return self.session.run(self._outputs, feeds)

    def run(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(labels [N], positive-class probabilities [N]); binary models only."""
        positive = self._positive_class()
        labels, probs = self._session_run(feeds)
        return labels, _probability(probs[:, positive])

    def _positive_class(self) -> int:
        """The positive class's column of the probabilities; binary models only."""
        if self._positive is None:
            raise ArtifactError(f"{self.version}: a {self.task} model has no positive class; use scores()")
        return self._positive

    def scores(self, feeds: dict[str, np.ndarray]) -> Scores:
        """Labels and the full probability matrix, or regression values, for any task."""
        if self.task == "regression":
            (values,) = self._session_run(feeds)
            return Scores(values=np.asarray(values).reshape(-1))
        labels, probs = self._session_run(feeds)
        return Scores(labels=np.asarray(labels).reshape(-1), probabilities=_probability(np.asarray(probs)))

    def predict(self, rows: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        return self.run(self.feeds(rows))

    def predict_one(self, row: dict[str, Any]) -> tuple[Any, float]:
        """``predict`` of one row as (label, positive-class probability): the request path's binary case.

        The probability is clipped to [0, 1] as a Python float: ``np.clip`` on a
        one-element array costs ~2 µs, a twentieth of a request. NaN stays NaN.
        """
        positive = self._positive_class()
        labels, probs = self._session_run(self.feeds([row]))
        p = float(probs[0, positive])
        return labels[0], 0.0 if p < 0.0 else 1.0 if p > 1.0 else p

    def predict_columns(self, columns: Any) -> tuple[np.ndarray, np.ndarray]:
        """Predict whole columns (a DataFrame or a mapping of name -> sequence)."""
        return self.run(self.feeds_from_columns({name: columns[name] for name, _ in self.columns}))

    def score_columns(self, columns: Any) -> Scores:
        """``scores`` of whole columns (a DataFrame or a mapping of name -> sequence)."""
        return self.scores(self.feeds_from_columns({name: columns[name] for name, _ in self.columns}))


def _probability(probs: np.ndarray) -> np.ndarray:
    """``probs`` within [0, 1], in place: float32 sums of tree shares reach ``1.0000001``."""
    return np.clip(probs, 0.0, 1.0, out=probs) if probs.flags.writeable else np.clip(probs, 0.0, 1.0)
