"""The prediction service: decode → choose version → store features → infer.

Knows nothing of HTTP. After a prediction it hands a ``PredictionRecord`` to
each registered listener (shadow, prediction log); listeners must only
enqueue, never block, so nothing slow sits on the request path. A listener
registered with a batch form (``add_listener(one, many)``) gets a batch's
records of one version in one call instead of one call per row.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from app.errors import NonFiniteAnswer, UnknownUser
from app.features.server import FeatureServer
from app.model.answers import Answer
from app.model.decoder import Decoded
from app.model.pool import LoadedModel, ModelPool
from app.telemetry import logs, tracing
from app.telemetry.metrics import Metrics, observe_many


@dataclass(slots=True, kw_only=True)
class PredictionRecord:
    request_id: str
    model_version: str
    prediction: Any
    """The label (int or str) of a classifier, the value (float) of a regressor."""
    probability: float | None
    """Binary: of the positive class; multiclass: of the predicted label; regression: None."""
    user_id: str | None
    features: dict[str, Any]
    """The full model input (request + store features)."""
    request_features: dict[str, Any]
    latency: float
    tier: str | None
    variant: str | None = None
    """Name of the rollout flag that chose the version, if any."""
    timestamp: float = field(default_factory=time.time)
    probabilities: dict[str, float] | None = None
    """Multiclass only: every class's probability by class name, in the manifest's classes order."""
    trace_id: str | None = None
    """The request's OpenTelemetry trace id (hex); None when tracing is off."""
    trace: Any = None
    """The request's sampled span context while tracing is on (the shadow's span links to it)."""

    def response(self) -> dict[str, Any]:
        """The /predict answer: binary and multiclass carry ``probability``, multiclass ``probabilities`` too."""
        out = {
            "request_id": self.request_id,
            "model_version": self.model_version,
            "prediction": self.prediction,
        }
        if self.probability is not None:
            out["probability"] = self.probability
        if self.probabilities is not None:
            out["probabilities"] = self.probabilities
        if self.variant is not None:
            out["variant"] = self.variant
        return out


ID_BATCH = 256
"""Request ids read from the random source at once: ``os.urandom`` lets go of the GIL for its system
call, and on a request path that hands the interpreter to the log writer or the shadow thread, to
be waited back for; once per 256 requests instead of on every one."""
_spare_ids: list[str] = []
os.register_at_fork(after_in_child=_spare_ids.clear)  # a forked worker must never reuse its parent's ids


def new_request_id() -> str:
    """128 random bits as hex, like ``uuid4().hex`` without building a UUID object (hot path).

    Taken from ids read ``ID_BATCH`` at a time; ``list.pop`` is atomic, so threads may share them.
    """
    try:
        return _spare_ids.pop()
    except IndexError:
        _spare_ids.extend(new_request_ids(ID_BATCH))
        return _spare_ids.pop()


def new_request_ids(n: int) -> list[str]:
    """``n`` of ``new_request_id``, from one read of the random source (a batch's rows)."""
    h = os.urandom(16 * n).hex()
    return [h[i : i + 32] for i in range(0, 32 * n, 32)]


Listener = Callable[[PredictionRecord, LoadedModel], None]
BatchListener = Callable[[list[PredictionRecord], LoadedModel], None]
"""A listener's form for many records answered by one version (a batch), called once for all of them."""


class Chooser:
    """Chooses the model for a request; the default always answers with the primary alias."""

    def __init__(self, pool: ModelPool, primary: str = "production") -> None:
        self.pool = pool
        self.primary = primary

    def primary_model(self) -> LoadedModel:
        return self.pool.get(self.primary)

    def choose(self, decoded: Decoded, default: LoadedModel) -> tuple[LoadedModel, str | None]:
        return default, None

    def choose_many(
        self, instances: list[Decoded], default: LoadedModel
    ) -> list[tuple[LoadedModel, str | None]] | None:
        """``choose`` of each instance, or None when every one gets ``(default, None)``."""
        return None


OFF_LOOP_BYTES = 256 * 1024
"""Batch bodies larger than this are decoded in a thread (a few ms of work at this size)."""


class Predictor:
    def __init__(self, chooser: Chooser, features: FeatureServer, metrics: Metrics) -> None:
        self.chooser = chooser
        self.features = features
        self.metrics = metrics
        self.listeners: list[Listener] = []
        self._many: dict[Listener, BatchListener] = {}
        self._by_version: dict[str, tuple[Any, Any]] = {}

    def add_listener(self, listener: Listener, many: BatchListener | None = None) -> None:
        """Call ``listener`` after each prediction; ``many`` instead, once, for a batch's records of one version."""
        self.listeners.append(listener)
        if many is not None:
            self._many[listener] = many

    def _observe(self, version: str, seconds: float, n: int = 1) -> None:
        # Cache the labelled children: .labels() costs a lock and a dict build per call.
        pair = self._by_version.get(version)
        if pair is None:
            pair = (self.metrics.predictions.labels(version), self.metrics.prediction_latency.labels(version))
            self._by_version[version] = pair
        pair[0].inc(n)
        exemplar = tracing.exemplar() if tracing.enabled else None
        if exemplar is not None:  # one latency sample per prediction, so counts agree with predictions_total
            for _ in range(n):
                pair[1].observe(seconds, exemplar)
        else:
            observe_many(pair[1], seconds, n)

    async def predict(self, body: bytes) -> PredictionRecord:
        t0 = time.perf_counter()
        primary = self.chooser.primary_model()
        with tracing.span("decode"):
            decoded = primary.decoder.decode(body)
            model, variant = self.chooser.choose(decoded, primary)
            if model.decoder is not primary.decoder:
                decoded = model.decoder.decode(body)
        request_id = decoded.request_id or new_request_id()
        # For the service's log lines from here on; the request runs in its own task, so nothing to reset.
        logs.request_id.set(request_id)
        logs.model_version.set(model.version)
        row = decoded.features
        tier = None
        if model.needs_store:
            assert decoded.user_id is not None  # the decoder requires it when store features exist
            with tracing.span("features") as span:
                store, tier = await self.features.get(decoded.user_id)
                if span is not tracing.NOOP:  # off, or a request the sampler dropped: no attributes to build
                    span.set_attributes(self.features.lookup_attributes(tier))
            row = {**store, **row}
        with tracing.span("inference") as span:
            answer = _answer_one(model, row, ("body", "features"))
            if span is not tracing.NOOP:  # one write: each takes the span's lock and checks the value
                span.set_attributes({"modelserve.model_version": model.version, "modelserve.rows": 1})
        record = _record_one(decoded, request_id, model, variant, row, tier, answer, t0)
        if tracing.enabled:
            record.trace = tracing.annotate_prediction(model.version, variant)
        return self._done(record, model)

    async def predict_instance(
        self, inst: Decoded, pinned: LoadedModel | None = None, loc: tuple[str, ...] = ("instances",)
    ) -> PredictionRecord:
        """``predict_instances`` of one instance, answered as directly as ``predict`` answers a body.

        The same routing, checks and errors as a one-instance batch (an unknown user is
        ``[*loc, 0, "user_id"]``); no list, grouping or per-version bookkeeping around one row.
        """
        t0 = time.perf_counter()
        primary = pinned or self.chooser.primary_model()
        model, variant = (pinned, None) if pinned else self.chooser.choose(inst, primary)
        if model.decoder is not primary.decoder:
            model.decoder.validate_python({"user_id": inst.user_id, "features": inst.features}, (*loc, 0))
        row = inst.features
        tier = None
        if model.needs_store:
            try:
                if not inst.user_id:
                    raise UnknownUser("no user id")
                with tracing.span("features") as span:
                    store, tier = await self.features.get(inst.user_id)
                    if span is not tracing.NOOP:
                        span.set_attributes(self.features.lookup_attributes(tier))
            except UnknownUser:
                raise UnknownUser(  # as predict_instances names it
                    "unknown user(s) in 1 instance(s)",
                    [{"loc": [*loc, 0, "user_id"], "msg": "unknown user", "type": "unknown_user"}],
                ) from None
            row = {**store, **row}
        with tracing.span("inference") as span:  # the same children as predict and predict_instances
            answer = _answer_one(model, row, (*loc, 0, "features"))
            if span is not tracing.NOOP:
                span.set_attributes({"modelserve.model_version": model.version, "modelserve.rows": 1})
        request_id = inst.request_id or new_request_id()
        return self._done(_record_one(inst, request_id, model, variant, row, tier, answer, t0), model)

    def _done(self, record: PredictionRecord, model: LoadedModel) -> PredictionRecord:
        self._observe(model.version, record.latency)
        for listener in self.listeners:
            listener(record, model)
        return record

    def _lookup_attributes(self, stores: dict[str, tuple[Any, str]], users: int) -> dict[str, Any]:
        """A batch lookup's span attributes: as one lookup's when one tier answered them all, else every tier."""
        tiers = sorted({tier for _, tier in stores.values()})
        attributes: dict[str, Any] = {"modelserve.users": users}
        if len(tiers) == 1:
            attributes.update(self.features.lookup_attributes(tiers[0]))
        else:
            attributes["modelserve.feature.tier"] = ",".join(tiers)
        return attributes

    async def predict_batch(self, body: bytes) -> list[PredictionRecord]:
        decoder = self.chooser.primary_model().decoder
        if len(body) > OFF_LOOP_BYTES:
            # An 8 MB batch takes seconds to validate; on the loop it would stall every other request and the probes.
            instances = await asyncio.to_thread(decoder.decode_batch, body)
        else:
            instances = decoder.decode_batch(body)
        return await self.predict_instances(instances, loc=("body", "instances"))

    async def predict_instances(
        self,
        instances: list[Decoded],
        pinned: LoadedModel | None = None,
        loc: tuple[str, ...] = ("instances",),
    ) -> list[PredictionRecord]:
        """Decoded instances, vectorised: each routed like /predict, or all answered by ``pinned``.

        Instances are grouped by the version chosen for them so each group is
        one inference run. Unknown users are named as ``[*loc, i, "user_id"]``.
        When nothing splits them (no flag takes any of them, or ``pinned``),
        the rows go through as one group without a per-row routing pass.
        """
        if not instances:
            return []
        t0 = time.perf_counter()
        trace_id = logs.current_trace_id()
        primary = pinned or self.chooser.primary_model()
        chosen = None if pinned else self.chooser.choose_many(instances, primary)
        groups: dict[tuple[str, str | None], tuple[LoadedModel, str | None, list[int]]] = {}
        if chosen is None:
            groups[(primary.version, None)] = (primary, None, list(range(len(instances))))
        else:
            for i, (model, variant) in enumerate(chosen):
                if model.decoder is not primary.decoder:
                    inst = instances[i]
                    model.decoder.validate_python({"user_id": inst.user_id, "features": inst.features}, (*loc, i))
                group = groups.get((model.version, variant))
                if group is None:
                    group = groups[(model.version, variant)] = (model, variant, [])
                group[2].append(i)
        stores = await self._stores(instances, groups.values(), loc)
        records: list[PredictionRecord | None] = [None] * len(instances)
        fresh = new_request_ids(len(instances))
        now = time.time()
        for model, variant, idx in groups.values():
            members = [instances[i] for i in idx]
            if model.needs_store:
                found = [stores[inst.user_id] for inst in members]  # type: ignore[index]  # all found (_stores)
                rows = [
                    {**store, **inst.features} if store else inst.features
                    for inst, (store, _) in zip(members, found, strict=True)
                ]
                tiers: list[str | None] = [tier for _, tier in found]
            else:
                rows = [inst.features for inst in members]
                tiers = [None] * len(members)
            with tracing.span("inference") as span:
                try:
                    answers = model.answer(rows)
                except NonFiniteAnswer as exc:  # rows of the group, as instances of the request
                    bad = [idx[j] for j in exc.rows]
                    raise NonFiniteAnswer(bad).at([(*loc, i, "features") for i in bad]) from None
                if span is not tracing.NOOP:
                    span.set_attributes({"modelserve.model_version": model.version, "modelserve.rows": len(rows)})
            latency = time.perf_counter() - t0
            version = model.version
            for i, inst, row, tier, (prediction, probability, probabilities) in zip(
                idx, members, rows, tiers, answers, strict=True
            ):
                records[i] = PredictionRecord(
                    request_id=inst.request_id or fresh[i],
                    model_version=version,
                    prediction=prediction,
                    probability=probability,
                    probabilities=probabilities,
                    user_id=inst.user_id,
                    features=row,
                    request_features=inst.features,
                    latency=latency,
                    tier=tier,
                    variant=variant,
                    trace_id=trace_id,
                    timestamp=now,
                )
            self._observe(version, latency, len(idx))
        out: list[PredictionRecord] = records  # type: ignore[assignment]  # every index is in one group
        if len(groups) == 1:
            ((model, _, _),) = groups.values()
            for listener in self.listeners:
                many = self._many.get(listener)
                if many is not None:
                    many(out, model)
                else:
                    for rec in out:
                        listener(rec, model)
        else:  # in instance order, as each was answered
            models = [chosen[i][0] for i in range(len(out))] if chosen is not None else [primary] * len(out)
            for rec, model in zip(out, models, strict=True):
                for listener in self.listeners:
                    listener(rec, model)
        return out

    async def _stores(
        self,
        instances: list[Decoded],
        groups: Iterable[tuple[LoadedModel, str | None, list[int]]],
        loc: tuple[str, ...],
    ) -> dict[str, tuple[dict[str, Any], str]]:
        """Store features of every user whose version needs them; ``UnknownUser`` naming each row without."""
        wanted = [i for model, _, idx in groups if model.needs_store for i in idx]
        if not wanted:
            return {}
        users = [u for i in wanted if (u := instances[i].user_id)]
        stores: dict[str, tuple[dict[str, Any], str]] = {}
        if users:
            with tracing.span("features") as span:
                stores = await self.features.get_many(users)
                if span is not tracing.NOOP:
                    span.set_attributes(self._lookup_attributes(stores, len(users)))
        missing = sorted(i for i in wanted if instances[i].user_id not in stores)
        if missing:
            raise UnknownUser(
                f"unknown user(s) in {len(missing)} instance(s)",
                [{"loc": [*loc, i, "user_id"], "msg": "unknown user", "type": "unknown_user"} for i in missing],
            )
        return stores


def _answer_one(model: LoadedModel, row: dict[str, Any], loc: tuple[str | int, ...]) -> Answer:
    """``(prediction, probability, probabilities)`` of one row; ``NonFiniteAnswer`` at ``loc``."""
    if model.int_binary:  # the common case stays as lean as it always was
        label, p = model.runtime.predict_one(row)
        if p != p:  # NaN (a clipped probability is never infinite)
            raise NonFiniteAnswer([0]).at([loc])
        return int(label), p, None
    try:
        answer: Answer = model.answer([row])[0]
    except NonFiniteAnswer as exc:
        raise exc.at([loc]) from None
    return answer


def _record_one(
    decoded: Decoded,
    request_id: str,
    model: LoadedModel,
    variant: str | None,
    row: dict[str, Any],
    tier: str | None,
    answer: Answer,
    t0: float,
) -> PredictionRecord:
    prediction, probability, probabilities = answer
    return PredictionRecord(
        request_id=request_id,
        model_version=model.version,
        prediction=prediction,
        probability=probability,
        user_id=decoded.user_id,
        features=row,
        request_features=decoded.features,
        latency=time.perf_counter() - t0,
        tier=tier,
        variant=variant,
        probabilities=probabilities,
        trace_id=logs.current_trace_id(),  # any active span: ours, or an outer instrumentation's
    )
