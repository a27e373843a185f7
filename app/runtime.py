"""onnxruntime, and only here: load a session, build feeds, predict a batch.

Feeds are built in manifest order from already-validated values: one input
per feature, shape ``[N, 1]``; numbers (float, int and bool) as float32 with
``None`` as NaN (the pipeline's imputer fills it), strings as object arrays.
That mapping is the contract with ``app.training`` (see its export).

Threads: the default intra-op pool spins a thread per core waiting for work,
which steals the other core from the HTTP worker for ~µs-sized models, so the
pool size is explicit and spinning is turned off.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from app.errors import ArtifactError
from app.manifest import Manifest

NUMERIC = frozenset({"float", "int", "bool"})


class OnnxModel:
    """One loaded ``model.onnx`` with its manifest's feature order."""

    def __init__(self, path: Path, manifest: Manifest, intra_op_threads: int = 1, inter_op_threads: int = 1) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = inter_op_threads
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ArtifactError(f"{manifest.version}: model.onnx does not load: {exc}") from None
        self.version = manifest.version
        self.columns = [(f.name, f.dtype in NUMERIC) for f in manifest.features]
        inputs = {i.name for i in self.session.get_inputs()}
        missing = [name for name, _ in self.columns if name not in inputs]
        if missing or len(inputs) != len(self.columns):
            raise ArtifactError(f"{manifest.version}: model inputs {sorted(inputs)} do not match the manifest features")
        outs = [o.name for o in self.session.get_outputs()]
        if manifest.outputs.label not in outs or manifest.outputs.probabilities not in outs:
            raise ArtifactError(f"{manifest.version}: model outputs {outs} lack label/probabilities")
        self._outputs = [manifest.outputs.label, manifest.outputs.probabilities]
        self._positive = manifest.outputs.classes.index(manifest.outputs.positive_class)

    def feeds(self, rows: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
        """Input tensors for rows holding every feature by name."""
        out: dict[str, np.ndarray] = {}
        n = len(rows)
        for name, numeric in self.columns:
            col = [row[name] for row in rows]
            if numeric:
                out[name] = np.array(col, dtype=np.float32).reshape(n, 1)
            else:
                out[name] = np.array(col, dtype=object).reshape(n, 1)
        return out

    def feeds_from_columns(self, columns: dict[str, Sequence[Any]]) -> dict[str, np.ndarray]:
        """Input tensors from whole columns (batch scoring): one array per feature."""
        out: dict[str, np.ndarray] = {}
        for name, numeric in self.columns:
            col = columns[name]
            if numeric:
                out[name] = np.asarray(col, dtype=np.float32).reshape(-1, 1)
            else:
                out[name] = np.asarray(col, dtype=object).reshape(-1, 1)
        return out

    def run(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(labels [N], positive-class probabilities [N])."""
        labels, probs = self.session.run(self._outputs, feeds)
        return labels, probs[:, self._positive]

    def predict(self, rows: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        return self.run(self.feeds(rows))
