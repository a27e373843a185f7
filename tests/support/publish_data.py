"""A small churn-like data set and the pipelines a data scientist might fit on it (for the publish tests).

``frame()`` has a user id, an int, a float, a string, a nullable float and a
bool column, plus three targets: ``churned`` (0/1), ``segment`` (three
string labels) and ``spend`` (a float). Pipelines are fitted on the first
rows with every non-target column, the user id included (a leading
ColumnTransformer drops it), and published with the rest as held-out rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

TARGETS = ("churned", "segment", "spend")
NUMERIC = ["age", "income", "score", "mobile"]
STRINGS = ["plan"]
N_TRAIN = 900


def frame(n: int = 1500, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "pro", "team"], n)
    score = rng.random(n)
    score[rng.random(n) < 0.15] = np.nan
    age = rng.integers(18, 80, n)
    income = rng.lognormal(10.5, 0.5, n)
    mobile = rng.random(n) < 0.5
    logit = 3 * (np.nan_to_num(score, nan=0.5) - 0.5) + 0.8 * (plan == "basic") - 0.02 * (age - 45) + 0.4 * mobile
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    segment = np.where(income > 45_000, "gold", np.where(age < 35, "young", "core")).astype(object)
    flip = rng.random(n) < 0.1
    segment[flip] = rng.choice(["gold", "young", "core"], int(flip.sum()))
    spend = 20 + income / 1000 + 15 * (plan == "team") + rng.normal(0, 5, n)
    return pd.DataFrame(
        {
            "user_id": [f"u-{i:05d}" for i in range(n)],
            "age": age,
            "income": income,
            "plan": pd.Series(plan, dtype=object),
            "score": score,
            "mobile": mobile,
            "churned": churned,
            "segment": segment,
            "spend": spend,
        }
    )


def inputs(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=list(TARGETS))


def preprocess(scale: bool = True, dense: bool = False) -> ColumnTransformer:
    numeric: Any = (
        Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
        if scale
        else "passthrough"
    )
    return ColumnTransformer(
        [
            ("numeric", numeric, NUMERIC),
            ("strings", OneHotEncoder(handle_unknown="ignore", sparse_output=not dense), STRINGS),
        ]
    )


def fit(estimator: Any, target: str, df: pd.DataFrame, *, scale: bool = True, dense: bool = False) -> Pipeline:
    """``Pipeline([preprocess, model])`` fitted on the training rows of ``df``."""
    train = df.iloc[:N_TRAIN]
    pipeline = Pipeline([("preprocess", preprocess(scale, dense)), ("model", estimator)])
    return pipeline.fit(inputs(train), train[target])


def holdout(df: pd.DataFrame) -> pd.DataFrame:
    return df.iloc[N_TRAIN:].reset_index(drop=True)


def feature_table(df: pd.DataFrame) -> pd.DataFrame:
    """What the service's feature store holds per user: age and income."""
    return df[["user_id", "age", "income"]]


class Doubler(BaseEstimator, TransformerMixin):
    """A transformer skl2onnx has never heard of."""

    def fit(self, X: Any, y: Any = None) -> Doubler:
        return self

    def transform(self, X: Any) -> Any:
        return np.asarray(X, dtype=np.float64) * 2
