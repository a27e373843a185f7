"""A model directory written by MLflow (``mlflow.sklearn.save_model`` / ``log_model``).

Read without importing MLflow: ``MLmodel`` is YAML naming the sklearn
flavour's pickle (``pickled_model``, ``serialization_format`` pickle or
cloudpickle) and, optionally, a column signature whose types decide the
features' numeric dtypes. The pickle must resolve inside the directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from app.errors import PublishRefused
from app.model.manifest import DType
from app.publish.source import load_estimator, named_file

SIGNATURE_TYPES: dict[str, DType] = {
    "double": "float",
    "float": "float",
    "long": "int",
    "integer": "int",
    "boolean": "bool",
    "string": "string",
}


def read_mlflow(directory: Path) -> tuple[Any, dict[str, DType] | None]:
    """(the fitted estimator, column name -> dtype from the signature, or None without one)."""
    directory = Path(directory)
    spec_path = directory / "MLmodel"
    if not spec_path.is_file():
        raise PublishRefused(f"{directory} is not an MLflow model directory (no MLmodel file)")
    try:
        spec = yaml.safe_load(spec_path.read_text())
    except yaml.YAMLError as exc:
        raise PublishRefused(f"{spec_path} is not valid YAML ({exc.__class__.__name__})") from None
    flavors = spec.get("flavors") if isinstance(spec, dict) else None
    flavor = flavors.get("sklearn") if isinstance(flavors, dict) else None
    if not isinstance(flavor, dict) or "pickled_model" not in flavor:
        names = ", ".join(flavors) if isinstance(flavors, dict) else "none"
        raise PublishRefused(f"{directory} has no sklearn flavour in MLmodel (flavours: {names})")
    fmt = flavor.get("serialization_format", "cloudpickle")
    if fmt not in ("pickle", "cloudpickle"):
        raise PublishRefused(f"{directory}: serialization_format {fmt!r} is not supported (pickle or cloudpickle)")
    path = named_file(directory / str(flavor["pickled_model"]), "MLflow model file", inside=directory)
    return load_estimator(path, loader=fmt), _signature(spec.get("signature"))


def _signature(signature: Any) -> dict[str, DType] | None:
    if not isinstance(signature, dict) or not signature.get("inputs"):
        return None
    try:
        inputs = json.loads(signature["inputs"])
    except (TypeError, json.JSONDecodeError):
        return None
    out: dict[str, DType] = {}
    for column in inputs if isinstance(inputs, list) else []:
        name, kind = column.get("name"), SIGNATURE_TYPES.get(column.get("type", ""))
        if isinstance(name, str) and kind is not None:
            out[name] = kind
    return out or None
