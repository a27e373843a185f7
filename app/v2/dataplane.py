"""The Open Inference Protocol (V2, REST) data plane: resolve a model name, describe it, infer.

Knows nothing of HTTP; ``app/api/routes/v2.py`` translates. What the protocol
leaves to the server is decided here:

Names and versions
    ``modelserve`` (``MODEL_NAME``) is the service's model: without a version
    it is routed exactly like ``/predict`` (primary alias, then rollout flags
    per user). An alias that is loaded (``production``, ``candidate``) is also
    a model name and pins that alias's model. ``versions/{v}`` picks a loaded
    version: under ``modelserve`` any loaded one, under an alias only the one
    the alias points at. Anything else is 404.

Inputs
    One tensor per ``request`` feature of the manifest, named after it, plus a
    ``user_id`` BYTES tensor when the model has ``store`` features (they are
    then fetched through the same feature server as ``/predict``). Shapes
    ``[N]`` or ``[N, 1]``, every input the same ``N``; data flat or nested
    as the shape says. Datatypes by manifest dtype (``DATATYPES``, the first
    is what metadata advertises)::

        float   FP32 (FP64 accepted)        int   INT64 (any INT*/UINT*)
        bool    BOOL                        string  BYTES (UTF-8)

    Values are then checked by the manifest-generated decoder, so the rules
    are those of ``/predict``: no string for a number, no bool for a number,
    finite floats only, JSON ``null`` only for nullable features. NaN in a
    float tensor of a nullable feature is missing, like ``null`` (the only
    way a binary tensor or a numpy array says it); NaN elsewhere and ±Inf
    everywhere are refused. Missing, unknown and duplicate inputs are
    refused. The Triton binary tensor extension
    (``Inference-Header-Content-Length``, the default of ``tritonclient``)
    is accepted for inputs; answers are always JSON.

Outputs
    The same answers as ``/predict``, by task (``types.outputs_of``):
    classifiers ``label`` (INT64 ``[N]``, BYTES for string classes) and
    ``probability`` (FP32 ``[N]``: the positive class's for binary, the
    predicted label's for multiclass); multiclass also ``probabilities``
    (FP32 ``[N, K]``, the class names in the output's ``parameters.classes``);
    regression ``prediction`` (FP32 ``[N]``). ``outputs`` in the request
    selects and orders them (output parameters such as ``binary_data`` are
    ignored). Request and input ``parameters`` are accepted and ignored.
    ``id`` is echoed; without one a fresh id is answered, and it (suffixed
    ``:i`` for row ``i`` of a batch) is the prediction log's request id.

Errors are ``ValidationFailed`` (the route answers 400, the protocol's status),
``ModelNotFound`` (404) and ``NotReady`` (503), each naming what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from app.errors import ModelNotFound, NonFiniteAnswer, NotReady, UnknownUser, clip
from app.model.decoder import Decoded
from app.model.pool import LoadedModel, ModelPool
from app.predictor import PredictionRecord, Predictor, new_request_id
from app.telemetry import tracing
from app.v2.codec import decode_one, decode_rows, one_row_json, read_columns, user_row_loc
from app.v2.types import (
    DATATYPES,
    MODEL_NAME,
    PLATFORM,
    USER_ID,
    InferRequest,
    outputs_of,
    parse_request,
    requested_outputs,
)


class Target(NamedTuple):
    """What a ``/v2/models/{name}[/versions/{v}]`` path names (a named tuple: one is built per request)."""

    name: str
    model: LoadedModel
    """The model answering metadata (the primary when routed)."""
    pinned: bool
    """False: route per instance like /predict; True: always ``model``."""


class _Plan(NamedTuple):
    """A version's V2 inputs and outputs."""

    features: dict[str, tuple[str, ...]]
    """Accepted datatypes per request feature."""
    inputs: list[str]
    """Every input the model takes (``user_id`` first when it needs one)."""
    nullable: frozenset[str]
    types: dict[str, str]
    """Datatype per output."""
    outputs: tuple[str, ...]
    """The output names in answer order."""


class V2Service:
    def __init__(
        self,
        pool: ModelPool,
        primary_alias: str,
        max_batch: int,
        aliases: Callable[[], Mapping[str, LoadedModel]] | None = None,
    ) -> None:
        """``aliases`` gives every loaded alias by name; the default is the pool's, which leaves out the
        shadowed candidate (it is not part of readiness), so the container passes the rollout's."""
        self.pool = pool
        self.primary_alias = primary_alias
        self.max_batch = max_batch
        self.aliases = aliases or (lambda: self.pool.by_alias)
        self._plans: dict[str, _Plan] = {}
        self._routed: Target | None = None
        """The last ``modelserve`` target without a version: the same until the primary model changes."""

    # --- names --------------------------------------------------------------
    def resolve(self, name: str, version: str | None) -> Target:
        if name == MODEL_NAME:
            model = self.pool.get(self.primary_alias)  # NotReady while starting
            if version is None:
                routed = self._routed
                if routed is None or routed.model is not model:
                    routed = self._routed = Target(name, model, False)
                return routed
            pinned = self.pool.by_version.get(version)
            if pinned is None:
                raise ModelNotFound(f"model {name!r} has no loaded version {clip(version)!r}", _loc("version", version))
            return Target(name, pinned, True)
        loaded = self.aliases()
        aliased = loaded.get(name)
        if aliased is None:
            if name == self.primary_alias:
                raise NotReady(f"model {name!r} is not loaded yet")
            raise ModelNotFound(
                f"unknown model {clip(name)!r}; serving {', '.join([MODEL_NAME, *sorted(loaded)])}",
                _loc("name", name),
            )
        if version is not None and version != aliased.version:
            raise ModelNotFound(
                f"model {name!r} serves version {aliased.version!r}, not {clip(version)!r}", _loc("version", version)
            )
        return Target(name, aliased, True)

    def metadata(self, target: Target) -> dict[str, Any]:
        manifest = target.model.manifest
        classes = target.model.answers.classes
        inputs = [{"name": USER_ID, "datatype": "BYTES", "shape": [-1]}] if target.model.needs_store else []
        inputs += [
            {"name": f.name, "datatype": DATATYPES[f.dtype][0], "shape": [-1]} for f in manifest.request_features
        ]
        return {
            "name": target.name,
            # Under ``modelserve`` every loaded version, under an alias the one it points at.
            "versions": sorted(self.pool.by_version) if target.name == MODEL_NAME else [target.model.version],
            "platform": PLATFORM,
            "inputs": inputs,
            "outputs": [
                {"name": o, "datatype": t, "shape": [-1, len(classes)] if o == "probabilities" else [-1]}
                for o, t in _outputs(target.model).items()
            ],
            "parameters": {
                "version": target.model.version,
                "task": manifest.task,
                "store_features": [f.name for f in manifest.store_features],
                "nullable": [f.name for f in manifest.request_features if f.nullable],
                "positive_class": manifest.outputs.positive_class,
                "classes": classes or None,
            },
        }

    # --- inference ------------------------------------------------------------
    async def infer(
        self, predictor: Predictor, target: Target, body: bytes, header_length: int | None = None
    ) -> dict[str, Any]:
        """The V2 response for a request body (JSON, or JSON + binary tensors)."""
        if header_length is None:  # the common request first: one row of JSON tensors, read in one pass
            model = target.model
            plan = self._plans.get(model.version) or self._plan(model)
            plain = one_row_json(body, plan.features, model.needs_store)
            if plain is not None:
                request, values, user = plain
                wanted = requested_outputs(request, plan.outputs) if "outputs" in request else plan.outputs
                request_id = request.get("id") or new_request_id()
                with tracing.span("decode"):
                    instance = decode_one(model.decoder, values, request_id, user)
                try:
                    record = await predictor.predict_instance(instance, model if target.pinned else None)
                except UnknownUser as exc:
                    raise _unknown_users(exc) from None
                except NonFiniteAnswer as exc:
                    raise _non_finite_rows(exc) from None
                return _one_answer(target.name, model, record, request_id, plan.types, wanted)
        return await self.infer_request(predictor, target, parse_request(body, header_length), body, header_length)

    async def infer_request(
        self,
        predictor: Predictor,
        target: Target,
        request: InferRequest,
        body: bytes = b"",
        header_length: int | None = None,
        before_inference: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """The V2 response for a request already parsed (gRPC builds one from its message).

        Binary tensors are read from ``body`` from ``header_length`` on. ``before_inference``
        runs once the rows are decoded, just before the model does (a deadline check).
        """
        model = target.model
        plan = self._plans.get(model.version) or self._plan(model)
        wanted = requested_outputs(request, plan.outputs) if "outputs" in request else plan.outputs
        request_id = request.get("id") or new_request_id()
        features = plan.features
        with tracing.span("decode"):
            columns, n = read_columns(
                request, body, header_length, features, plan.inputs, self.max_batch, plan.nullable
            )
            instances = decode_rows(model.decoder, columns, n, request_id, features)
        return await self.answer(predictor, target, instances, request_id, wanted, before_inference)

    async def answer(
        self,
        predictor: Predictor,
        target: Target,
        instances: list[Decoded],
        request_id: str,
        wanted: tuple[str, ...],
        before_inference: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """The V2 response for decoded rows: ``wanted`` outputs, in that order (the request's, or ``outputs_of``)."""
        types = self.output_types(target.model)[0]
        if before_inference is not None:
            before_inference()
        return await self._answer(predictor, target, instances, request_id, types, wanted)

    async def _answer(
        self,
        predictor: Predictor,
        target: Target,
        instances: list[Decoded],
        request_id: str,
        types: dict[str, str],
        wanted: tuple[str, ...],
    ) -> dict[str, Any]:
        """Infer the decoded rows and answer the outputs ``wanted``."""
        model = target.model
        pinned = model if target.pinned else None
        try:
            if len(instances) == 1:  # the common request: one row, answered as directly as /predict answers it
                records = [await predictor.predict_instance(instances[0], pinned)]
            else:
                records = await predictor.predict_instances(instances, pinned)
        except UnknownUser as exc:
            raise _unknown_users(exc) from None
        except NonFiniteAnswer as exc:
            raise _non_finite_rows(exc) from None
        if len(records) == 1:
            return _one_answer(target.name, model, records[0], request_id, types, wanted)
        n = len(records)
        outputs = []
        for name in wanted:
            out: dict[str, Any] = {"name": name, "datatype": types[name], "shape": [n]}
            if name == "probabilities":
                # Routed rows all come from models of the primary's task and classes (rollout refuses others).
                out["shape"] = [n, len(model.answers.keys)]
                out["data"] = [p for r in records for p in (r.probabilities or {}).values()]
                out["parameters"] = {"classes": model.answers.classes}
            elif name == "probability":
                out["data"] = [r.probability for r in records]
            else:  # label, prediction
                out["data"] = [r.prediction for r in records]
            outputs.append(out)
        return {
            "model_name": target.name,
            "model_version": records[0].model_version
            if n == 1
            else ",".join(sorted({r.model_version for r in records})),
            "id": request_id,
            "outputs": outputs,
        }

    def output_types(self, model: LoadedModel) -> tuple[dict[str, str], tuple[str, ...]]:
        """(datatype per output, the output names in answer order), once per version."""
        plan = self._plans.get(model.version) or self._plan(model)
        return plan.types, plan.outputs

    def inputs_of(self, model: LoadedModel) -> tuple[dict[str, tuple[str, ...]], list[str], frozenset[str]]:
        """(accepted datatypes per request feature, input names, nullable features), once per version."""
        plan = self._plans.get(model.version) or self._plan(model)
        return plan.features, plan.inputs, plan.nullable

    def _plan(self, model: LoadedModel) -> _Plan:
        """What a version's requests and answers look like, worked out once per version."""
        request = model.manifest.request_features
        features = {f.name: DATATYPES[f.dtype] for f in request}
        types = _outputs(model)
        plan = _Plan(
            features,
            [*([USER_ID] if model.needs_store else []), *features],
            frozenset(f.name for f in request if f.nullable),
            types,
            tuple(types),
        )
        self._plans[model.version] = plan
        return plan


def _unknown_users(exc: UnknownUser) -> UnknownUser:
    """The predictor's unknown-user error with each row named as the ``user_id`` input's."""
    return UnknownUser(exc.message, [user_row_loc(d) for d in exc.detail])


def _non_finite_rows(exc: NonFiniteAnswer) -> NonFiniteAnswer:
    """The predictor's non-finite-answer error naming the whole row's inputs: the row of every input tensor."""
    return exc.at([["body", "inputs", "data", i] for i in exc.rows])


def _one_answer(
    name: str,
    model: LoadedModel,
    record: PredictionRecord,
    request_id: str,
    types: dict[str, str],
    wanted: Sequence[str],
) -> dict[str, Any]:
    """``_answer``'s response for one row: the same outputs, without a pass over a list of records per output."""
    outputs = []
    for output in wanted:
        if output == "probability":
            data: list[Any] = [record.probability]
        elif output == "probabilities":
            probabilities = list((record.probabilities or {}).values())
            outputs.append(
                {
                    "name": output,
                    "datatype": types[output],
                    "shape": [1, len(model.answers.keys)],
                    "data": probabilities,
                    "parameters": {"classes": model.answers.classes},
                }
            )
            continue
        else:  # label, prediction
            data = [record.prediction]
        outputs.append({"name": output, "datatype": types[output], "shape": [1], "data": data})
    return {"model_name": name, "model_version": record.model_version, "id": request_id, "outputs": outputs}


def _outputs(model: LoadedModel) -> dict[str, str]:
    return outputs_of(model.task, model.answers.string_labels)


def _loc(kind: str, value: str) -> list[dict[str, Any]]:
    return [{"loc": ["path", kind], "msg": f"no such model {kind} {clip(value)!r}", "type": "not_found"}]
