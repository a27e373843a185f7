"""Seeded synthetic data shaped like a checkout-conversion product.

``FEATURES`` (``app.model.manifest.Feature`` values) is the single
description of the model input: its order is the model input order, and the
manifest, the offline feature table, the training frame and the ONNX inputs
are all derived from it.

Three tables come out of a seed:

* users — ``user_id`` (``"u-00042"``) plus the *store* features (a per-user
  profile the server fetches from its feature tiers);
* events — one row per checkout: the user's store features joined with the
  *request* features the client sends, plus a binary ``label`` drawn from a
  noisy logistic function with interactions and thresholds (so a boosted
  model beats a linear one, but not by much);
* requests — valid ``/predict`` bodies with the same request-feature
  distributions as the events (``generate_requests``).

Float features are continuous, deliberately not rounded to cents or to a
few decimals: a tree splits halfway between two training values, and on a
grid of values a later value can land exactly on that midpoint, where float32
ONNX and float64 scikit-learn may send it different ways. Integer features
keep that (rare) ambiguity; see the parity gate's threshold ties
(``app.publish.parity``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from app.model.manifest import DType, Feature

COUNTRIES: dict[str, float] = {"US": 0.34, "IN": 0.2, "GB": 0.15, "DE": 0.12, "BR": 0.11, "FR": 0.08}
DEVICES: dict[str, float] = {"ios": 0.42, "android": 0.36, "web": 0.22}

FEATURES: tuple[Feature, ...] = (
    Feature(name="age", dtype="int", source="store"),
    Feature(name="income", dtype="float", source="store"),
    Feature(name="days_since_signup", dtype="int", source="store"),
    Feature(name="country", dtype="string", source="store", categories=tuple(sorted(COUNTRIES))),
    Feature(name="amount", dtype="float", source="request"),
    Feature(name="device", dtype="string", source="request", categories=tuple(sorted(DEVICES))),
    Feature(name="score", dtype="float", source="request", nullable=True),
    Feature(name="first_purchase", dtype="bool", source="request"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
STORE_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.source == "store")
REQUEST_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.source == "request")

SCORE_NULL_RATE = 0.15
SHIFTABLE = ("amount", "score", "first_purchase")

_PANDAS_DTYPES: dict[DType, str] = {"float": "float64", "int": "int64", "bool": "bool", "string": "object"}
_ARROW_TYPES: dict[DType, pa.DataType] = {
    "float": pa.float64(),
    "int": pa.int64(),
    "bool": pa.bool_(),
    "string": pa.string(),
}


def user_id(i: int) -> str:
    return f"u-{i:05d}"


def generate_users(n: int = 5000, seed: int = 42) -> pd.DataFrame:
    """The user table: ``user_id`` plus the store features, one row per user."""
    rng = np.random.default_rng([seed, 0])
    age = np.clip(np.rint(rng.normal(39.0, 13.0, n)), 18, 90).astype(np.int64)
    income = rng.lognormal(np.log(42_000.0), 0.55, n)
    days = np.floor(rng.exponential(420.0, n)).astype(np.int64)
    country = rng.choice(list(COUNTRIES), size=n, p=list(COUNTRIES.values()))
    frame = pd.DataFrame(
        {
            "user_id": [user_id(i) for i in range(n)],
            "age": age,
            "income": income,
            "days_since_signup": days,
            "country": country.astype(object),
        }
    )
    return frame.astype({"user_id": object, **_pandas_dtypes(STORE_FEATURES)})


def generate_events(users: pd.DataFrame, n: int = 40_000, seed: int = 42) -> pd.DataFrame:
    """Checkout events: ``user_id``, every feature in ``FEATURES`` order, ``label``.

    ``score`` is NaN where the client sent null.
    """
    rng = np.random.default_rng([seed, 1])
    rows = users.iloc[rng.integers(0, len(users), n)].reset_index(drop=True)
    request = _draw_request_features(rng, rows["days_since_signup"].to_numpy(), None)
    frame = pd.concat([rows, pd.DataFrame(request)], axis=1)
    frame["label"] = _draw_label(rng, frame)
    return frame[["user_id", *FEATURE_NAMES, "label"]].astype(_pandas_dtypes(FEATURE_NAMES))


def generate_requests(
    n: int,
    seed: int,
    users_df: pd.DataFrame,
    shift: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """``n`` valid ``/predict`` bodies for users of ``users_df``.

    Request features follow the training distributions. ``shift`` maps a
    request feature to a multiplicative factor, for drift experiments:

    * ``amount``: every amount is multiplied by the factor;
    * ``score``: every non-null score is multiplied, then clipped to [0, 1];
    * ``first_purchase``: the probability of ``true`` is multiplied, then
      clipped to [0, 1].

    The same ``seed`` draws the same users and the same underlying random
    numbers with or without a shift, so a shifted set differs from the
    unshifted one only in the shifted feature. Other keys raise ``ValueError``.
    """
    unknown = set(shift or {}) - set(SHIFTABLE)
    if unknown:
        raise ValueError(f"cannot shift {sorted(unknown)}; shiftable: {list(SHIFTABLE)}")
    rng = np.random.default_rng([seed, 2])
    picked = rng.integers(0, len(users_df), n)
    ids = users_df["user_id"].to_numpy()[picked]
    days = users_df["days_since_signup"].to_numpy()[picked]
    request = _draw_request_features(rng, days, shift)
    return [
        {
            "user_id": str(ids[i]),
            "features": {
                "amount": float(request["amount"][i]),
                "device": str(request["device"][i]),
                "score": None if np.isnan(request["score"][i]) else float(request["score"][i]),
                "first_purchase": bool(request["first_purchase"][i]),
            },
        }
        for i in range(n)
    ]


def model_frame(rows: Sequence[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Model input rows as a DataFrame: ``FEATURES`` order, training dtypes, None → NaN."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    return frame[list(FEATURE_NAMES)].astype(_pandas_dtypes(FEATURE_NAMES))


def write_feature_table(users: pd.DataFrame, path: Path) -> None:
    """Write ``user_id`` + store features to parquet atomically, with exact types."""
    columns = ["user_id", *STORE_FEATURES]
    dtypes = {f.name: f.dtype for f in FEATURES}
    schema = pa.schema([("user_id", pa.string())] + [(c, _ARROW_TYPES[dtypes[c]]) for c in STORE_FEATURES])
    table = pa.Table.from_pydict({c: users[c].tolist() for c in columns}, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _pandas_dtypes(names: Sequence[str]) -> dict[str, str]:
    by_name = {f.name: f for f in FEATURES}
    return {n: _PANDAS_DTYPES[by_name[n].dtype] for n in names}


def _draw_request_features(
    rng: np.random.Generator, days_since_signup: np.ndarray, shift: Mapping[str, float] | None
) -> dict[str, np.ndarray]:
    """Request features for users with the given tenure; draws in a fixed order."""
    shift = shift or {}
    n = len(days_since_signup)
    amount = rng.lognormal(np.log(38.0), 0.9, n) * shift.get("amount", 1.0)
    amount = np.maximum(amount, 0.01)
    device = rng.choice(list(DEVICES), size=n, p=list(DEVICES.values()))
    score = np.clip(rng.beta(2.2, 2.8, n) * shift.get("score", 1.0), 0.0, 1.0)
    score[rng.random(n) < SCORE_NULL_RATE] = np.nan
    # New users are far more likely to be making their first purchase.
    p_first = 0.08 + 0.6 * np.exp(-days_since_signup / 60.0)
    first = rng.random(n) < np.clip(p_first * shift.get("first_purchase", 1.0), 0.0, 1.0)
    return {"amount": amount, "device": device.astype(object), "score": score, "first_purchase": first}


_COUNTRY_EFFECT = {"US": 0.25, "GB": 0.1, "DE": 0.05, "FR": -0.1, "IN": -0.35, "BR": -0.2}
_DEVICE_EFFECT = {"ios": 0.3, "android": 0.0, "web": -0.15}


def _draw_label(rng: np.random.Generator, frame: pd.DataFrame) -> np.ndarray:
    """Noisy logistic ground truth with interactions and thresholds."""
    log_amount = np.log(frame["amount"].to_numpy() / 38.0)
    log_income = np.log(frame["income"].to_numpy() / 42_000.0)
    age = frame["age"].to_numpy().astype(np.float64)
    days = frame["days_since_signup"].to_numpy().astype(np.float64)
    score = frame["score"].to_numpy()
    first = frame["first_purchase"].to_numpy().astype(np.float64)
    web = (frame["device"].to_numpy() == "web").astype(np.float64)
    logit = (
        -0.9
        + np.where(np.isnan(score), 0.0, 4.0 * (np.nan_to_num(score, nan=0.5) - 0.45))
        - 0.7 * log_amount
        + 1.2 * log_income * (log_amount > 0.5)  # well-off users still buy big baskets
        - 0.0015 * (age - 38.0) ** 2
        + 0.8 * (1.0 - np.exp(-days / 200.0))
        - 0.5 * first
        - 1.0 * first * web  # first-time web checkouts are abandoned most
        + frame["device"].map(_DEVICE_EFFECT).to_numpy(dtype=np.float64)
        + frame["country"].map(_COUNTRY_EFFECT).to_numpy(dtype=np.float64)
        + rng.normal(0.0, 0.3, len(frame))
    )
    converted: np.ndarray = rng.random(len(frame)) < 1.0 / (1.0 + np.exp(-logit))
    return converted.astype(np.int64)
