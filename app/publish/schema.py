"""From a frame of held-out rows and a fitted pipeline to the manifest's features.

* Features are the columns the pipeline reads, in its ``feature_names_in_``
  order, less the columns a leading ``ColumnTransformer`` drops; the target
  and the id column are never features.
* dtype per column: bool, int, float, or string (object columns holding only
  strings). Datetimes, durations and object columns mixing types are refused,
  naming the column.
* nullable: the frame has a missing value there, or the caller said so
  (``--nullable``), or, for a store feature, the feature table has one. A
  string feature cannot be null: the runtime feeds strings as a string
  tensor, which has no null.
* categories of a string feature: the fitted ``OneHotEncoder`` /
  ``OrdinalEncoder`` categories, else the values seen in the frame.
* An MLflow signature, when present, decides numeric dtypes (``long`` → int,
  ``double`` → float, ...) where it agrees with the frame on string-ness.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, cast

import numpy as np
import pandas as pd
from pandas.api import types as ptypes
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

from app.errors import PublishRefused
from app.model.manifest import DType, Feature
from app.publish.steps import first_step, used_input_indices
from app.v2.types import USER_ID

MAX_FRAME_CATEGORIES = 1000


def column_dtype(series: pd.Series, name: str) -> DType:
    """The manifest dtype of a column; refuses what the service cannot carry."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return column_dtype(pd.Series(dtype.categories), name)
    if ptypes.is_bool_dtype(dtype):
        return "bool"
    if ptypes.is_integer_dtype(dtype):
        return "int"
    if ptypes.is_float_dtype(dtype):
        return "float"
    if ptypes.is_string_dtype(dtype) and not ptypes.is_object_dtype(dtype):
        return "string"
    if ptypes.is_object_dtype(dtype):
        kinds = {_kind(v) for v in series.dropna()}
        if len(kinds) == 1 and (kind := next(iter(kinds))) in ("bool", "int", "float", "string"):
            return cast(DType, kind)
        if kinds == {"int", "float"}:
            return "float"
        if not kinds:
            raise PublishRefused(f"column {name!r} holds no values; its type cannot be told")
        if len(kinds) == 1:
            raise PublishRefused(
                f"column {name!r} holds {kinds.pop()} values; convert them to a number, bool or string"
            )
        raise PublishRefused(f"column {name!r} mixes types ({', '.join(sorted(kinds))}); give it one type")
    raise PublishRefused(f"column {name!r} has unsupported dtype {dtype}; convert it to a number, bool or string")


def _kind(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, int | np.integer):
        return "int"
    if isinstance(value, float | np.floating):
        return "float"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def input_columns(model: Any, frame: pd.DataFrame, exclude: Collection[str]) -> tuple[list[str], list[str]]:
    """(columns the pipeline is fed, columns it uses): names from ``feature_names_in_``.

    A pipeline fitted on an array has no column names: then every frame column
    but ``exclude`` is an input, in frame order, and their count must match.
    """
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        fed = [str(c) for c in frame.columns if c not in exclude]
        if len(fed) != getattr(model, "n_features_in_", len(fed)):
            raise PublishRefused(
                f"the pipeline was fitted on {model.n_features_in_} unnamed columns and the frame has {len(fed)}"
                " besides target and id; fit it on a DataFrame so its inputs have names"
            )
        return fed, fed
    fed = [str(n) for n in names]
    missing = [n for n in fed if n not in frame.columns]
    if missing:
        raise PublishRefused(f"the data lacks column(s) {missing} that the pipeline was fitted on")
    indices = used_input_indices(model)
    used = fed if indices is None else [fed[i] for i in indices]
    for name in exclude:
        if name in used:
            raise PublishRefused(f"column {name!r} is the target or id column, yet the pipeline reads it")
    return fed, used


def encoder_categories(model: Any, fed: list[str]) -> dict[str, list[str]]:
    """Input column -> categories of the fitted encoder that reads it directly (after imputation)."""
    return {
        column: [str(c) for c in cats if not (c is None or (isinstance(c, float) and np.isnan(c)))]
        for column, cats in _encoded_columns(model, fed)
    }


def text_columns(model: Any) -> list[str]:
    """Inputs whose fitted encoder knows string categories: text, however their values look.

    A CSV reader would take a column of codes such as ``"1"`` or ``"02134"``
    for numbers (and drop the leading zero), and the encoder would never see
    its categories; such columns are read as text.
    """
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        return []
    return [
        column
        for column, cats in _encoded_columns(model, [str(n) for n in names])
        if any(isinstance(c, str) for c in cats)
    ]


def _encoded_columns(model: Any, fed: list[str]) -> list[tuple[str, Any]]:
    """(input column, its fitted encoder's raw categories) for every column an encoder reads directly."""
    out: list[tuple[str, Any]] = []
    head = first_step(model)
    routes: list[tuple[Any, list[str]]] = []
    if isinstance(head, ColumnTransformer):
        indices = getattr(head, "_transformer_to_input_indices", {})
        for name, trans, _ in getattr(head, "transformers_", ()):
            if not isinstance(trans, str) and name in indices:
                routes.append((trans, [fed[int(i)] for i in indices[name]]))
    else:
        routes.append((head, fed))
    for trans, columns in routes:
        encoder = _leading_encoder(trans)
        if encoder is not None and len(encoder.categories_) == len(columns):
            out += zip(columns, encoder.categories_, strict=True)
    return out


def _leading_encoder(trans: Any) -> OneHotEncoder | OrdinalEncoder | None:
    # An encoder behind column-preserving steps (imputers) still sees the input columns.
    from sklearn.impute import SimpleImputer

    steps = [s for _, s in trans.steps] if isinstance(trans, Pipeline) else [trans]
    for step in steps:
        if isinstance(step, OneHotEncoder | OrdinalEncoder):
            return step
        if not isinstance(step, SimpleImputer) or getattr(step, "add_indicator", False):
            return None
    return None


def build_features(
    model: Any,
    frame: pd.DataFrame,
    *,
    exclude: Collection[str],
    nullable: Collection[str] = (),
    store: Collection[str] = (),
    store_nulls: Collection[str] = (),
    signature: Mapping[str, DType] | None = None,
) -> tuple[list[Feature], list[str]]:
    """(the manifest features, the columns the pipeline is fed)."""
    fed, used = input_columns(model, frame, exclude)
    if USER_ID in used:
        # The name of the user id a request carries, and of V2's user_id input (always BYTES).
        raise PublishRefused(
            f"the pipeline reads a column {USER_ID!r}, the name of the user id requests carry; rename it, or"
            f" drop it in the pipeline (a leading ColumnTransformer) and give --id-column {USER_ID}"
        )
    for name in nullable:
        if name not in used:
            raise PublishRefused(f"--nullable {name!r} is not an input of the pipeline (inputs: {', '.join(used)})")
    for name in store:
        if name not in used:
            raise PublishRefused(
                f"--store-features {name!r} is not an input of the pipeline (inputs: {', '.join(used)})"
            )
    categories = encoder_categories(model, fed)
    features = []
    for name in used:
        series = frame[name]
        dtype = column_dtype(series, name)
        if signature and name in signature:
            dtype = _signed(dtype, signature[name], name)
        is_nullable = bool(series.isna().any()) or name in nullable or name in store_nulls
        cats = None
        if dtype == "string":
            if is_nullable:
                raise PublishRefused(
                    f"string column {name!r} has missing values; string features cannot be null"
                    " (fill them, e.g. with 'missing', in the frame and the training data)"
                )
            cats = categories.get(name) or _frame_categories(series)
        try:
            features.append(
                Feature(
                    name=name,
                    dtype=dtype,
                    source="store" if name in store else "request",
                    nullable=is_nullable,
                    categories=cats,
                )
            )
        except ValueError:
            raise PublishRefused(
                f"column name {name!r} is not a valid feature name (a letter or _ first, then letters, digits"
                " or _, at most 64 characters): rename the column before fitting"
            ) from None
    return features, fed


def _signed(seen: DType, signed: DType, name: str) -> DType:
    if (seen == "string") != (signed == "string"):
        raise PublishRefused(f"column {name!r} is {seen} in the data but {signed} in the model signature")
    return signed


def _frame_categories(series: pd.Series) -> list[str] | None:
    values = sorted({str(v) for v in series.dropna()})
    return values if len(values) <= MAX_FRAME_CATEGORIES else None


def feed_columns(frame: pd.DataFrame, features: list[Feature]) -> dict[str, np.ndarray]:
    """Feature columns as the service holds them: numbers float64 with NaN for null, strings as str objects."""
    out: dict[str, np.ndarray] = {}
    for f in features:
        series = frame[f.name]
        if f.dtype == "string":
            out[f.name] = np.asarray([str(v) for v in series], dtype=object)
        else:
            out[f.name] = series.to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def native(value: Any, dtype: DType) -> Any:
    """A frame value as the JSON a client would send (NaN and NA → None)."""
    if value is None or value is pd.NA or (isinstance(value, float | np.floating) and np.isnan(value)):
        return None
    if dtype == "float":
        return float(value)
    if dtype == "int":
        return int(value)
    if dtype == "bool":
        return bool(value)
    return str(value)
