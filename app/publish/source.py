"""Reading what the user hands to ``publish``: a pickled estimator and a frame of held-out rows.

Unpickling runs code, so ``publish`` unpickles only the file it was named:

* a pipeline path must be a regular file and not a symbolic link (a link
  could make a reviewed command line load a file from anywhere);
* an MLflow model's pickle must resolve to a file inside the MLflow
  directory it was named in (``app.publish.mlflow``).

A file that unpickles to anything but a fitted scikit-learn estimator with a
``predict`` method is refused.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import pandas as pd

from app.errors import PublishRefused


def named_file(path: Path, what: str, inside: Path | None = None) -> Path:
    """``path`` if it is a regular file that is not a link, or, with ``inside``, that resolves within it."""
    path = Path(path)
    if inside is not None:
        if not path.resolve().is_relative_to(Path(inside).resolve()):
            raise PublishRefused(f"{what} {path} resolves outside {inside}; publish reads only files inside it")
    elif path.is_symlink():
        raise PublishRefused(f"{what} {path} is a symbolic link; publish unpickles only the file it is named")
    if not path.is_file():
        raise PublishRefused(f"{what} {path} is not a file")
    return path


def load_estimator(path: Path, loader: str = "joblib") -> Any:
    """The fitted estimator pickled in ``path`` (``loader``: joblib, pickle or cloudpickle)."""
    path = Path(path)
    try:
        if loader == "joblib":
            import joblib

            obj = joblib.load(path)
        else:
            import pickle

            with open(path, "rb") as f:
                # cloudpickle writes ordinary pickles that need cloudpickle importable, no more.
                obj = pickle.load(f)
    except Exception as exc:
        raise PublishRefused(f"{path} is not a pickled scikit-learn estimator ({type(exc).__name__}: {exc})") from None
    return fitted_estimator(obj, str(path))


def fitted_estimator(obj: Any, where: str) -> Any:
    """``obj`` if it is a fitted scikit-learn estimator or pipeline that predicts."""
    from sklearn.base import BaseEstimator
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    if not isinstance(obj, BaseEstimator) or not hasattr(obj, "predict"):
        raise PublishRefused(f"{where} holds a {type(obj).__name__}, not a scikit-learn estimator or pipeline")
    try:
        check_is_fitted(obj)
    except NotFittedError:
        raise PublishRefused(f"{where} holds an unfitted {type(obj).__name__}; fit it before publishing") from None
    return obj


def read_frame(path: Path, text: Collection[str] = ()) -> pd.DataFrame:
    """Held-out rows from Parquet (``.parquet``/``.pq``) or CSV (``.csv``, the ``text`` columns read as strings)."""
    path = Path(path)  # data is parsed, never executed: a link is fine here
    if not path.is_file():
        raise PublishRefused(f"data file {path} is not a file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix == ".csv":
            return pd.read_csv(path, dtype=dict.fromkeys(text, str))
    except Exception as exc:
        raise PublishRefused(f"data file {path} cannot be read ({type(exc).__name__}: {exc})") from None
    raise PublishRefused(f"data file {path}: expected .parquet or .csv")
