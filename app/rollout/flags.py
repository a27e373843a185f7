"""Rollout flags: which users a model version serves, read from a file.

A flags file (JSON, or YAML when it ends in ``.yaml``/``.yml``)::

    flags:
      - name: gbm-v3            # the bucketing group and the response's "variant"
        version: v3             # a model version directory (not an alias)
        percent: 10             # 0..100 of the users that match
        match:                  # optional: every key must match, any listed value
          country: [DE, FR]
          cohort: beta
      - name: beta-testers
        version: v1
        percent: 100
        enabled: false          # kept in the file, ignored

Rules, in order: flags are tried top to bottom and the first one that matches
the user and whose bucket is on wins; a request without a ``user_id`` is never
in a rollout; a flag whose version could not be loaded is skipped (the user
falls through to the next flag, then to the primary).

Attributes for ``match`` come from the request's optional top-level
``attributes`` object first, then from its request features by name. Store
features are not used: the version is chosen before they are fetched (the
version decides which store features are needed). Values compare as strings,
booleans as ``true``/``false``, so ``cohort: 3`` matches ``"cohort": 3`` and
``"cohort": "3"``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.errors import ModelServeError
from app.model.decoder import Decoded
from app.model.repository import NAME_RE
from app.rollout.bucketing import normalized_bucket

Scalar = str | int | bool


class FlagsError(ModelServeError):
    """A flags file that cannot be read or is invalid."""


def attribute_text(value: Any) -> str | None:
    """The string an attribute value compares as (``None`` never matches)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class FlagSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(pattern=NAME_RE.pattern)
    version: str = Field(pattern=NAME_RE.pattern)
    percent: Annotated[int, Field(ge=0, le=100)]
    match: dict[Annotated[str, Field(min_length=1, max_length=64)], Scalar | list[Scalar]] = {}
    enabled: bool = True

    @field_validator("match")
    @classmethod
    def _non_empty_lists(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key, values in v.items():
            if isinstance(values, list) and not values:
                raise ValueError(f"match.{key}: empty list matches nobody")
        return v


class FlagsDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    flags: list[FlagSpec] = Field(default_factory=list, max_length=100)

    @field_validator("flags")
    @classmethod
    def _unique(cls, v: list[FlagSpec]) -> list[FlagSpec]:
        seen: set[str] = set()
        for f in v:
            if f.name in seen:
                raise ValueError(f"duplicate flag name {f.name!r}")
            seen.add(f.name)
        return v


@dataclass(frozen=True, slots=True)
class Flag:
    name: str
    version: str
    percent: int
    match: tuple[tuple[str, frozenset[str]], ...] = ()

    def matches(self, decoded: Decoded) -> bool:
        """Attribute targeting only (the percentage is checked by ``serves``)."""
        if not self.match:
            return True
        attributes = decoded.attributes or {}
        for key, allowed in self.match:
            value = attributes[key] if key in attributes else decoded.features.get(key)
            if attribute_text(value) not in allowed:
                return False
        return True

    def serves(self, decoded: Decoded) -> bool:
        """True when this flag routes the request's user to its version."""
        if decoded.user_id is None or self.percent <= 0 or not self.matches(decoded):
            return False
        return normalized_bucket(decoded.user_id, self.name) <= self.percent

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "percent": self.percent,
            "match": {k: sorted(v) for k, v in self.match},
        }


def _flag(spec: FlagSpec) -> Flag:
    match = tuple(
        (key, frozenset(t for t in (attribute_text(x) for x in (v if isinstance(v, list) else [v])) if t is not None))
        for key, v in spec.match.items()
    )
    return Flag(spec.name, spec.version, spec.percent, match)


def _load_yaml(text: str | bytes) -> Any:
    import yaml  # only a YAML flags file needs it; importing it costs every start-up ~30 ms

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None


def parse_flags(text: str | bytes, suffix: str = ".json") -> tuple[Flag, ...]:
    """Enabled flags from a document's text; ``FlagsError`` says what is wrong."""
    is_yaml = suffix.lower() in (".yaml", ".yml")
    try:
        raw = _load_yaml(text) if is_yaml else json.loads(text)
    except ValueError as exc:
        raise FlagsError(f"not valid {'YAML' if is_yaml else 'JSON'}: {exc}") from None
    except RecursionError:  # both parsers recurse per level: a deep enough document overflows the stack
        raise FlagsError(f"not valid {'YAML' if is_yaml else 'JSON'}: nested too deeply") from None
    if raw is None:
        raw = {}
    try:
        doc = FlagsDocument.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<document>"
        raise FlagsError(f"{exc.error_count()} error(s), first at {where}: {first['msg']}") from None
    return tuple(_flag(s) for s in doc.flags if s.enabled)


def load_flags(path: Path) -> tuple[Flag, ...]:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise FlagsError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_flags(text, path.suffix)
