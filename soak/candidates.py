"""Candidate versions that fail in a running process, built as real, checksummed artifacts.

Both pass everything a version must pass to be loaded (checksums, manifest,
warm-up, the self-check on their own sample) and then misbehave in the shadow:

* ``raising``: the candidate was trained on a renamed input (``amount`` ->
  ``amount_usd``) that the serving path does not supply, so every shadow run
  raises (a KeyError building its feed) - the way a candidate with a new
  feature fails before its feature is rolled out.
* ``slow``: the candidate's graph carries an input-dependent chain of dense
  matrix products whose result is added as an exact zero to the
  probabilities, so its answers equal the source version's but each run takes
  far longer than the shadow timeout - a hung candidate, from the service's
  point of view.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _copy(models_dir: Path, source: str, name: str) -> tuple[Path, dict[str, Any]]:
    dst = models_dir / name
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(models_dir / source, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["version"] = name
    return dst, manifest


def _save(dst: Path, model: onnx.ModelProto, manifest: dict[str, Any]) -> None:
    onnx.save(model, dst / "model.onnx")
    manifest["files"]["model.onnx"] = hashlib.sha256((dst / "model.onnx").read_bytes()).hexdigest()
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2))


def make_raising(models_dir: Path, source: str, name: str, old: str = "amount", new: str = "amount_usd") -> Path:
    dst, manifest = _copy(models_dir, source, name)
    model = onnx.load(dst / "model.onnx")
    for inp in model.graph.input:
        if inp.name == old:
            inp.name = new
    for node in model.graph.node:
        node.input[:] = [new if x == old else x for x in node.input]
    for f in manifest["features"]:
        if f["name"] == old:
            f["name"] = new
    sample = manifest["sample"]
    sample["row"] = {new if k == old else k: v for k, v in sample["row"].items()}
    feats = sample["request"].get("features", {})
    sample["request"]["features"] = {new if k == old else k: v for k, v in feats.items()}
    ref = manifest.get("reference", {}).get("features", {})
    if old in ref:
        ref[new] = ref.pop(old)
    _save(dst, model, manifest)
    return dst


def make_slow(models_dir: Path, source: str, name: str, size: int = 512, products: int = 96) -> Path:
    """``products`` dense ``size``x``size`` products per run (about ``products * size**3`` multiply-adds)."""
    dst, manifest = _copy(models_dir, source, name)
    model = onnx.load(dst / "model.onnx")
    g = model.graph
    probs = manifest["outputs"]["probabilities"]
    for node in g.node:
        node.output[:] = ["probs_raw" if x == probs else x for x in node.output]
    # Depends on an input, so constant folding cannot compute it once at load time.
    weights = np.full((size, size), 1.0 / size, dtype=np.float32)  # keeps every value equal to the input sum
    g.initializer.extend(
        [
            numpy_helper.from_array(weights, "slow_w"),
            numpy_helper.from_array(np.array([size, size], dtype=np.int64), "slow_shape"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "slow_zero"),
        ]
    )
    nodes = [
        helper.make_node("ReduceSum", ["amount"], ["slow_s"], keepdims=0),
        helper.make_node("Expand", ["slow_s", "slow_shape"], ["slow_x0"]),
    ]
    for i in range(products):
        nodes.append(helper.make_node("MatMul", [f"slow_x{i}", "slow_w"], [f"slow_x{i + 1}"]))
    nodes += [
        helper.make_node("ReduceMax", [f"slow_x{products}"], ["slow_m"], keepdims=0),
        helper.make_node("Mul", ["slow_m", "slow_zero"], ["slow_z"]),  # 0 for any finite input
        helper.make_node("Add", ["probs_raw", "slow_z"], [probs]),
    ]
    g.node.extend(nodes)
    _ = TensorProto  # the graph's dtypes are all float32
    _save(dst, model, manifest)
    return dst
