"""The batch job: chunks read ahead, scored, written and posted with their work overlapped."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow.parquet as pq

from app.jobs.batch.options import OUTPUT_FORMATS, BatchError, BatchOptions, Summary
from app.jobs.batch.parts import Parts, run_identity
from app.jobs.batch.post import sink_items
from app.jobs.batch.read import input_format, prefetched
from app.jobs.batch.score import ChunkResult, score_chunk
from app.model.pool import ModelPool
from app.model.repository import Repository
from app.settings import Settings
from app.telemetry import tracing

if TYPE_CHECKING:
    from app.features.server import FeatureServer
    from app.jobs.sink import Sink


def run_batch(settings: Settings, options: BatchOptions) -> Summary:
    """Run the job; traced (a span per chunk, per sink POST) when the OTEL_* variables ask for it."""
    owned = not tracing.enabled and tracing.setup()  # a service in this process keeps its own set-up
    try:
        return asyncio.run(_traced(settings, options))
    finally:
        if owned:
            tracing.shutdown()  # exports the job's spans before the process exits


async def _traced(settings: Settings, options: BatchOptions) -> Summary:
    with tracing.span("batch", attributes={"modelserve.input": str(options.input)}):
        return await _run(settings, options)


async def _run(settings: Settings, options: BatchOptions) -> Summary:
    began = time.perf_counter()
    fmt_in = input_format(options.input)
    fmt_out = OUTPUT_FORMATS.get(options.output.suffix.lower())
    if fmt_out is None:
        raise BatchError(f"cannot write {options.output.name}: use .parquet or .csv")
    if options.chunk_rows < 1 or options.sink_batch < 1 or options.sink_concurrency < 1:
        raise BatchError("--chunk-rows, --sink-batch and --sink-concurrency must be positive")
    rejects_path = options.rejects or options.output.with_name(options.output.name + ".rejects.jsonl")
    repository = Repository(settings.models_dir)
    version = repository.resolve(options.version or settings.alias)
    pool = ModelPool(repository, intra_op_threads=max(1, options.threads), warmup_iterations=1)
    model = await pool.load_async(version)
    features: FeatureServer | None = None
    if model.needs_store:
        from app.features.build import build_feature_server
        from app.telemetry.metrics import Metrics

        # A batch may look up thousands of users at once: give the bulk fetch time.
        s = settings.model_copy(update={"feature_budget_ms": max(settings.feature_budget_ms, 60_000.0)})
        features = await asyncio.to_thread(build_feature_server, s, Metrics(), model.store_features)
    identity = run_identity(options.input, version, options)
    run_id = hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
    options.output.parent.mkdir(parents=True, exist_ok=True)
    parts = Parts(options.output, fmt_out, identity, options.restart)
    if parts.discarded:
        print("note: a checkpoint of a different run was discarded; starting over", file=sys.stderr)
    summary = Summary(output=options.output, rejects=rejects_path, version=version)
    if options.sink:
        from app.jobs.sink import Sink  # httpx only when posting
    sink = (
        Sink(options.sink, concurrency=options.sink_concurrency, retries=options.sink_retries) if options.sink else None
    )
    total = pq.ParquetFile(options.input).metadata.num_rows if fmt_in == "parquet" else None
    bar = _progress(total, options.progress)
    io_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-io")
    slices = _slices(options)
    infer_pool = ThreadPoolExecutor(max_workers=slices, thread_name_prefix="batch-infer") if slices > 1 else None
    pending: list[asyncio.Future[None]] = []
    loop = asyncio.get_running_loop()
    count = 0
    try:
        async for index, start, table, checked in prefetched(options.input, fmt_in, options.chunk_rows, model):
            count = index + 1
            summary.chunks = count
            done = parts.done.get(index)
            if done is not None:
                pending.append(asyncio.ensure_future(loop.run_in_executor(io_pool, parts.replay, index)))
                summary.chunks_skipped += 1
                summary.rows_in += done["rows_in"]
                summary.rows_out += done["rows_out"]
                summary.rejected += done["rejected"]
                bar.update(table.num_rows)
                continue
            # The chunk's span is current while its completion task is made: the sink's POSTs are its children.
            attributes = {"modelserve.chunk": index, "modelserve.rows": table.num_rows}
            with tracing.span("batch chunk", attributes=attributes):
                result = await score_chunk(index, start, table, checked, model, features, infer_pool, slices)
                summary.rows_in += result.rows_in
                summary.rows_out += result.output.num_rows
                summary.rejected += len(result.rejects)
                for k, v in result.reasons.items():
                    summary.reasons[k] = summary.reasons.get(k, 0) + v
                written = loop.run_in_executor(io_pool, parts.write, result)
                items = []
                if sink is not None:
                    items = sink_items(run_id, result, result.kept, options.sink_batch)
                pending.append(asyncio.create_task(_complete(parts, result, written, sink, items)))
            bar.update(table.num_rows)
            while len(pending) > 2:  # bound memory: at most a few chunks in flight
                await pending.pop(0)
        for task in pending:
            await task
        pending.clear()
        await loop.run_in_executor(io_pool, parts.finish, count, options.output, rejects_path)
    finally:
        # Let chunks already in flight finish (and be checkpointed) even when one failed;
        # only an interrupt (cancellation) abandons them.
        await asyncio.gather(*pending, return_exceptions=True)
        bar.close()
        io_pool.shutdown(wait=True)
        if infer_pool is not None:
            infer_pool.shutdown(wait=True)
        parts.close()
        if sink is not None:
            summary.posts, summary.post_retries = sink.posts, sink.retried
            await sink.close()
        if features is not None:
            await features.close()
    summary.seconds = time.perf_counter() - began
    return summary


def _slices(options: BatchOptions) -> int:
    if options.slices is not None:
        return max(1, options.slices)
    return max(1, min(os.cpu_count() or 1, 2)) if options.threads <= 1 else 1


async def _complete(parts: Parts, result: ChunkResult, written: Any, sink: Sink | None, items: list[Any]) -> None:
    if sink is not None:
        await asyncio.gather(written, sink.post_all(items))
    else:
        await written
    parts.mark_done(result)


class _NoBar:
    def update(self, n: int) -> None:
        return None

    def close(self) -> None:
        return None


def _progress(total: int | None, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="rows", unit_scale=True, desc="batch", file=sys.stderr, disable=None)
