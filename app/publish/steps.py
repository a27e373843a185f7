"""Walking a fitted scikit-learn pipeline: its steps by path, its final estimator, its column routing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline


def final_estimator(model: Any) -> Any:
    """The last step of a (possibly nested) pipeline, or the model itself."""
    while isinstance(model, Pipeline):
        model = model.steps[-1][1]
    return model


def walk(model: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every step and sub-transformer with its path (``"preprocess/numeric/scale"``), outermost first.

    A pipeline is not a step of its own: its steps are.
    """
    if isinstance(model, Pipeline):
        for name, step in model.steps:
            yield from walk(step, f"{path}/{name}" if path else name)
        return
    yield path or type(model).__name__, model
    if isinstance(model, ColumnTransformer):
        for name, trans, _ in getattr(model, "transformers_", model.transformers):
            if not isinstance(trans, str):  # "drop" and "passthrough" are not steps
                yield from walk(trans, f"{path}/{name}")


def describe(path: str, step: Any) -> str:
    """``'preprocess/numeric/scale' (StandardScaler)``."""
    return f"'{path}' ({type(step).__module__}.{type(step).__name__})"


def first_step(model: Any) -> Any:
    """The step that receives the input frame."""
    while isinstance(model, Pipeline):
        model = model.steps[0][1]
    return model


def used_input_indices(model: Any) -> list[int] | None:
    """Indices into ``feature_names_in_`` that reach the estimator, or None for all of them.

    Only a leading ``ColumnTransformer`` with ``remainder="drop"`` can leave
    input columns unused.
    """
    ct = first_step(model)
    if not isinstance(ct, ColumnTransformer) or not hasattr(ct, "transformers_"):
        return None
    indices = getattr(ct, "_transformer_to_input_indices", None)
    if indices is None:  # an older scikit-learn: treat every column as used
        return None
    used: set[int] = set()
    for name, trans, _ in ct.transformers_:
        if isinstance(trans, str) and trans == "drop":
            continue
        used.update(int(i) for i in indices.get(name, ()))
    return sorted(used)
