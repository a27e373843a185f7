"""Checks store-feature values from outside the process (Redis, the upstream API).

A value read back from Redis or answered by the upstream is input like any
request: it must be an object holding every store feature of the manifest,
each of its dtype by the request decoder's strict rules (an int is accepted
for a float, no bool for a number, floats finite in float32, ints in 64
bits, strings bounded, ``null`` only where nullable). Other names are
allowed and kept: the upstream may answer more features than this model uses.

Hand-written rather than a pydantic model: it runs on every Redis hit and
every upstream answer, and a handful of ``type()`` checks is all it takes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from app.model.decoder import FLOAT32_OVERFLOW, INT64_MAX, INT64_MIN, MAX_STRING
from app.model.manifest import Feature


def _float(v: Any) -> bool:
    """A number the model's float32 feed holds finite, as the request decoder bounds it."""
    return (type(v) is float or type(v) is int) and -FLOAT32_OVERFLOW < v < FLOAT32_OVERFLOW


def _int(v: Any) -> bool:
    return type(v) is int and INT64_MIN <= v <= INT64_MAX


def _bool(v: Any) -> bool:
    return type(v) is bool


def _string(v: Any) -> bool:
    return type(v) is str and len(v) <= MAX_STRING


def _scalar(v: Any) -> bool:
    """Names without a dtype (a caller that only knows names): any finite JSON scalar."""
    return _bool(v) or _int(v) or _float(v) or _string(v)


StoreFeatures = Sequence[Feature] | Sequence[str]

_CHECKS: dict[str, Callable[[Any], bool]] = {"float": _float, "int": _int, "bool": _bool, "string": _string}


class StoreSchema:
    """The manifest's store features as a validator of a whole feature object."""

    def __init__(self, features: StoreFeatures) -> None:
        self.rules: list[tuple[str, Callable[[Any], bool], bool]] = [
            (f, _scalar, True) if isinstance(f, str) else (f.name, _CHECKS[f.dtype], f.nullable) for f in features
        ]
        self.names = [name for name, _, _ in self.rules]

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not a valid feature object (the first problem found), or None."""
        if type(value) is not dict:
            return f"expected an object, got {type(value).__name__}"
        for name, check, nullable in self.rules:
            if name not in value:
                return f"{name}: missing"
            v = value[name]
            if v is None:
                if not nullable:
                    return f"{name}: null"
            elif not check(v):
                return f"{name}: invalid {type(v).__name__}"
        return None


def feature_names(features: StoreFeatures) -> list[str]:
    return [f if isinstance(f, str) else f.name for f in features]
