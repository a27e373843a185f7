"""Per-user routing: the primary alias, unless a rollout flag takes the user."""

from __future__ import annotations

from app.model.decoder import Decoded
from app.model.pool import LoadedModel, ModelPool
from app.predictor import Chooser
from app.rollout.flags import Flag


class FlagChooser(Chooser):
    """``choose`` walks the flags in order; the first that serves the user wins.

    ``flags`` and ``models`` are replaced whole (one attribute store each), so a
    request sees either the old or the new set, never a mix of one flag list
    with a half-built model map; a flag whose version is not in ``models`` is
    skipped.
    """

    def __init__(self, pool: ModelPool, primary: str = "production") -> None:
        super().__init__(pool, primary)
        self.flags: tuple[Flag, ...] = ()
        self.models: dict[str, LoadedModel] = {}

    def choose(self, decoded: Decoded, default: LoadedModel) -> tuple[LoadedModel, str | None]:
        flags = self.flags
        if not flags or decoded.user_id is None:
            return default, None
        models = self.models
        for flag in flags:
            if flag.serves(decoded):
                model = models.get(flag.version)
                if model is not None:
                    return model, flag.name
        return default, None

    def choose_many(
        self, instances: list[Decoded], default: LoadedModel
    ) -> list[tuple[LoadedModel, str | None]] | None:
        if not self.flags:
            return None
        chosen = [self.choose(inst, default) for inst in instances]
        if all(model is default and variant is None for model, variant in chosen):
            return None
        return chosen
