"""Store features for a chunk's users: one bulk lookup, spread to the rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app.features.base import Features
from app.model.pool import LoadedModel


class UserFeatures(Protocol):
    """What scoring needs of the feature server (``app.features.server.FeatureServer``)."""

    async def get_many(self, user_ids: Sequence[str]) -> dict[str, tuple[Features, str]]:
        """Features (and the tier that answered) of every known user among ``user_ids``."""
        ...


async def store_columns(
    features: UserFeatures, model: LoadedModel, users: pa.Array
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Store feature columns for ``users`` and a mask of the users the feature server knows.

    One hashing pass (``dictionary_encode``) gives the distinct users and each
    row's position among them; the feature values are laid out per distinct
    user once and spread to the rows with one NumPy ``take`` per column, so
    string values are shared, not copied per row.
    """
    encoded = pc.dictionary_encode(users)
    unique = encoded.dictionary.to_pylist()
    rows = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.intp)
    found = await features.get_many(unique)
    known = np.fromiter((u in found for u in unique), dtype=bool, count=len(unique))
    entries = [found.get(u) for u in unique]
    columns: dict[str, np.ndarray] = {}
    numeric = {f.name for f in model.manifest.features if f.dtype != "string"}
    for name in model.store_features:
        if name in numeric:
            values = np.array([e[0][name] if e is not None else np.nan for e in entries], dtype=np.float64)
        else:
            values = np.empty(len(entries), dtype=object)
            values[:] = [e[0][name] if e is not None else None for e in entries]
        columns[name] = values[rows] if len(values) else np.full(len(users), np.nan if name in numeric else None)
    return columns, known[rows] if len(known) else np.zeros(len(users), dtype=bool)
