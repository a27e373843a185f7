"""``publish``: a fitted scikit-learn pipeline and held-out rows in, a served model version out.

Order of work: cheap refusals first (names, an existing version, the
files), then the schema, the conversion, the parity gate, metrics and the
sample, and only then the write (atomic) and the alias (verified, recorded).
A refusal at any point leaves the models directory as it was.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from app.errors import ArtifactError, PublishRefused
from app.model.manifest import Feature, Manifest, Outputs, Sample, Task
from app.model.reference import categorical_reference, numeric_reference
from app.model.repository import Repository, check_name
from app.model.runtime import OnnxModel
from app.publish import parity, tasks
from app.publish.artifact import write_version
from app.publish.convert import output_names, register_converters, to_onnx
from app.publish.mlflow import read_mlflow
from app.publish.sample import candidates
from app.publish.schema import build_features, feed_columns, text_columns
from app.publish.source import fitted_estimator, load_estimator, named_file, read_frame
from app.publish.steps import final_estimator
from app.publish.store import check_store_dtypes, read_store_table
from app.publish.summary import PublishSummary

LIBRARIES = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy")


def batch_columns(task: str, classes: list[int] | list[str] | None) -> list[str]:
    """The columns ``modelserve batch`` reads beside the features and writes after them
    (``app.jobs.batch.score.output_columns``): a feature of one of these names would be a second
    column of that name."""
    probabilities = [] if task == "regression" else ["probability"]
    if task == "multiclass_classification" and classes:
        probabilities += [f"probability_{c}" for c in classes]
    return ["request_id", "prediction", *probabilities, "model_version"]


def publish(
    pipeline: str | Path | Any | None = None,
    *,
    data: str | Path | pd.DataFrame,
    target: str,
    version: str,
    task: str = "auto",
    store_features: Sequence[str] = (),
    feature_table: str | Path | None = None,
    id_column: str | None = None,
    nullable: Sequence[str] = (),
    alias: str | None = None,
    tolerance: float = parity.DEFAULT_TOLERANCE,
    mlflow: str | Path | None = None,
    models_dir: str | Path | None = None,
    seed: int = 0,
    reference_data: pd.DataFrame | None = None,
    extra_metrics: Mapping[str, float | int] | None = None,
    replace: bool = False,
) -> PublishSummary:
    """Convert, check and write ``models_dir/version``; point ``alias`` at it when given.

    ``pipeline`` is a path to a joblib file or an already-fitted estimator
    object (how training calls it); ``mlflow`` a directory written by MLflow
    instead. ``data`` holds held-out rows with the ``target`` column, as a
    Parquet/CSV path or a DataFrame. ``models_dir`` and ``feature_table``
    default to the settings'. ``seed`` picks the parity sample of a large
    frame; ``reference_data`` (default: the held-out rows) is what the
    features' drift reference is computed from, e.g. the training rows.
    ``extra_metrics`` are recorded after the holdout metrics (training adds
    ``n_train``). ``replace`` overwrites an existing version instead of
    refusing it: only for the demo's retraining, versions are otherwise immutable.
    Raises ``PublishRefused`` (one line, naming the cause) with nothing written.
    """
    started = time.perf_counter()
    check_name(version, "version")
    if alias is not None:
        check_name(alias, "alias")
    if not tolerance > 0:
        raise PublishRefused(f"--tolerance must be positive, got {tolerance}")
    models_dir, feature_table = _defaults(models_dir, feature_table, need_table=bool(store_features))
    repository = Repository(models_dir)
    if not replace and ((models_dir / version).exists() or (models_dir / version).is_symlink()):
        raise PublishRefused(f"version {version!r} exists in {models_dir}; versions are immutable, publish a new one")
    if alias is not None and alias in repository.versions():
        raise PublishRefused(f"alias {alias!r} is the name of a version")

    model, signature = _load(pipeline, mlflow)
    frame = data if isinstance(data, pd.DataFrame) else read_frame(Path(data), text=text_columns(model))
    if target not in frame.columns:
        raise PublishRefused(
            f"target column {target!r} is not in the data (columns: {', '.join(map(str, frame.columns))})"
        )
    if id_column is not None and id_column not in frame.columns:
        raise PublishRefused(f"id column {id_column!r} is not in the data")
    if frame[target].isna().any():
        raise PublishRefused(f"target column {target!r} has {int(frame[target].isna().sum())} missing values")
    if len(frame) == 0:
        raise PublishRefused("the data has no rows")
    frame = frame.reset_index(drop=True)

    found_task = tasks.infer_task(model, task)
    classes = None if found_task == "regression" else tasks.class_labels(model)
    store = list(dict.fromkeys(store_features))
    table = None
    if store:
        if id_column is None:
            raise PublishRefused("--store-features needs --id-column: the column of the data holding the user id")
        assert feature_table is not None
        table = read_store_table(feature_table, store)
    features, fed = build_features(
        model,
        frame,
        exclude=[c for c in (target, id_column) if c is not None],
        nullable=nullable,
        store=store,
        store_nulls=[] if table is None else [c for c in store if table[c].isna().any()],
        signature=signature,
    )
    if table is not None:
        check_store_dtypes(table, features)
    batch = batch_columns(found_task, classes)
    clash = [f.name for f in features if f.name in batch]
    if clash:
        raise PublishRefused(
            f"feature(s) {', '.join(map(repr, clash))} take the name of a column batch scoring reads or writes"
            f" ({', '.join(batch)}); rename them before fitting"
        )

    graph = to_onnx(model, features)
    onnx = graph.SerializeToString()
    outputs = _outputs(output_names(graph, found_task), found_task, classes)
    try:
        runtime = OnnxModel(onnx, features, version=version, outputs=outputs, task=found_task)
    except ArtifactError as exc:
        raise PublishRefused(f"the converted model does not load in the service's runtime: {exc.message}") from None
    agreement = parity.check(
        model,
        runtime,
        frame,
        features=features,
        fed=fed,
        task=found_task,
        classes=classes,
        tolerance=tolerance,
        seed=seed,
    )
    scores = runtime.scores(runtime.feeds_from_columns(feed_columns(frame, features)))
    metrics = tasks.metrics(found_task, frame[target].to_numpy(), scores, classes)
    calibration = _calibration(found_task, frame[target].to_numpy(), scores, classes, metrics)
    metrics.update(extra_metrics or {})
    sample = _sample(model, runtime, frame, features, fed, id_column, table, found_task, classes, tolerance)
    estimator = final_estimator(model)
    manifest = Manifest(
        version=version,
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        task=found_task,
        estimator=type(estimator).__name__,
        features=features,
        outputs=outputs,
        sample=sample,
        reference={
            "features": feature_reference(frame if reference_data is None else reference_data, features),
            "prediction": tasks.prediction_reference(found_task, scores, classes),
        },
        metrics=metrics,
        parity=agreement.to_manifest(),
        files={},
        libraries=libraries(model),
        **calibration,
    )
    path = write_version(models_dir, manifest, onnx=onnx, pipeline=model, replace=replace)
    previous = repository.promote(version, alias) if alias is not None else None
    return PublishSummary(
        version=version,
        path=path,
        task=found_task,
        estimator=type(estimator).__name__,
        features=features,
        classes=classes,
        metrics=metrics,
        parity=agreement,
        seconds=time.perf_counter() - started,
        alias=alias,
        previous=previous,
    )


def _calibration(
    task: Task, y: Any, scores: Any, classes: list[int] | list[str] | None, metrics: dict[str, float | int]
) -> dict[str, Any]:
    """Binary models: the holdout Brier score and ECE (added to ``metrics``), and the manifest's ``calibration``.

    The label-free estimate of live quality needs probabilities that mean what
    they say; ``app.quality.calibration`` fits the map on these holdout rows
    when the model's own probabilities are off (identity otherwise).
    """
    if task != "binary_classification" or classes is None or scores.probabilities is None:
        return {}
    from app.quality.calibration import fit_map
    from app.quality.metrics import expected_calibration_error

    positive = (tasks.as_classes(y, classes) == classes[1]).astype(np.int64)
    p = scores.probabilities[:, 1].astype(np.float64)
    metrics["brier"] = round(float(np.mean((p - positive) ** 2)), 6)
    metrics["ece"] = round(expected_calibration_error(positive, p)(None), 6)
    return {"calibration": fit_map(positive, p)}


def _defaults(
    models_dir: str | Path | None, feature_table: str | Path | None, need_table: bool
) -> tuple[Path, Path | None]:
    if models_dir is not None and (feature_table is not None or not need_table):
        return Path(models_dir), None if feature_table is None else Path(feature_table)
    from app.settings import Settings

    settings = Settings()
    return (
        Path(models_dir) if models_dir is not None else settings.models_dir,
        Path(feature_table) if feature_table is not None else settings.feature_table,
    )


def _load(pipeline: Any, mlflow: str | Path | None) -> tuple[Any, dict[str, Any] | None]:
    if mlflow is not None:
        if pipeline is not None:
            raise PublishRefused("name either a pipeline file or an MLflow directory, not both")
        return read_mlflow(Path(mlflow))
    if pipeline is None:
        raise PublishRefused("name a pipeline file (joblib) or an MLflow directory (--mlflow)")
    if isinstance(pipeline, str | Path):
        return load_estimator(named_file(Path(pipeline), "pipeline file")), None
    return fitted_estimator(pipeline, "the pipeline object"), None


def _outputs(names: dict[str, str], task: Task, classes: list[int] | list[str] | None) -> Outputs:
    if task == "regression":
        return Outputs(label=None, probabilities=None, classes=None, positive_class=None, **names)
    assert classes is not None
    positive = classes[1] if task == "binary_classification" else None
    return Outputs(classes=classes, positive_class=positive, **names)


def _sample(
    model: Any,
    runtime: OnnxModel,
    frame: pd.DataFrame,
    features: list[Feature],
    fed: list[str],
    id_column: str | None,
    table: pd.DataFrame | None,
    task: Task,
    classes: list[int] | list[str] | None,
    tolerance: float,
) -> Sample:
    """The first candidate on which the service's single-row path and the pipeline agree."""
    for position, request, row in candidates(frame, features, id_column, table):
        scores = runtime.scores(runtime.feeds([row]))
        one = frame.iloc[[position]][fed].copy()
        for f in features:
            if f.source == "store":
                one[f.name] = pd.Series([row[f.name]], index=one.index, dtype=one[f.name].dtype)
        if task == "regression":
            assert scores.values is not None
            want = float(np.asarray(model.predict(one)).reshape(-1)[0])
            agrees = abs(float(scores.values[0]) - want) <= tolerance * max(abs(want), 1.0)
        else:
            assert scores.probabilities is not None
            agrees = bool(np.abs(scores.probabilities[0] - model.predict_proba(one)[0]).max() <= tolerance)
        if agrees:
            return Sample(request=request, row=row, expected=tasks.expected(task, scores, classes))
    raise PublishRefused("ONNX and the pipeline disagree on every sample candidate row")


def feature_reference(frame: pd.DataFrame, features: list[Feature]) -> dict[str, dict[str, Any]]:
    """Reference distribution of every feature over the held-out rows (what drift compares with)."""
    specs: dict[str, dict[str, Any]] = {}
    for f in features:
        column = frame[f.name]
        if f.dtype in ("float", "int"):
            specs[f.name] = numeric_reference(column.astype("float64"))
        elif f.dtype == "bool":
            specs[f.name] = categorical_reference(column, ("false", "true"))
        else:
            specs[f.name] = categorical_reference(column, f.categories or sorted({str(v) for v in column.dropna()}))
    return specs


def libraries(model: Any) -> dict[str, str]:
    """Versions of what built the artifact, with the estimator's own library when it is not scikit-learn."""
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = dist_version(name)
        except PackageNotFoundError:
            continue
    root = type(final_estimator(model)).__module__.split(".")[0]
    if root in register_converters():
        module = __import__(root)
        out[root] = str(getattr(module, "__version__", "?"))
        out["onnxmltools"] = dist_version("onnxmltools")
    return out
