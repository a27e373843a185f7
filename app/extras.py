"""Which optional install set (pyproject.toml's extras) provides which import.

The base install serves; a subcommand or source that imports from an extra
that is not installed fails with one line naming the extra to install.
"""

from __future__ import annotations

import importlib.util

from app.errors import ModelServeError

EXTRA_OF: dict[str, str] = {
    "duckdb": "jobs",
    "pyarrow": "jobs",
    "tqdm": "jobs",
    "sklearn": "publish",
    "skl2onnx": "publish",
    "onnx": "publish",
    "onnxmltools": "publish",
    "xgboost": "publish",
    "lightgbm": "publish",
    "joblib": "publish",
    "pandas": "publish",
}
"""Top-level module -> the extra whose install brings it."""


class MissingExtra(ModelServeError):
    """An import that only an extra provides is not installed."""

    def __init__(self, what: str, module: str, extra: str) -> None:
        install = f"pip install 'modelserve[{extra}]'"
        super().__init__(f"{what} needs the '{extra}' extra ({module} is not installed): {install}")
        self.extra = extra


def missing_extra(exc: ModuleNotFoundError, what: str) -> MissingExtra | None:
    """The one-line error for an ImportError of a module an extra provides, else None (a real bug)."""
    module = (exc.name or "").partition(".")[0]
    extra = EXTRA_OF.get(module)
    return MissingExtra(what, module, extra) if extra else None


def require(module: str, what: str) -> None:
    """Fail with the one-line error unless ``module`` (from an extra) can be imported."""
    try:
        found = importlib.util.find_spec(module) is not None
    except ImportError:  # a finder that refuses it: as good as absent
        found = False
    if not found:
        raise MissingExtra(what, module, EXTRA_OF[module])
