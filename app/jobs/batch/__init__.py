"""``modelserve batch INPUT OUTPUT``: score a file with the same model, rules and features as /predict.

Input: Parquet, CSV or JSONL (by extension) with ``user_id``, the request
features and optionally ``request_id``. Output: Parquet or CSV with those
columns plus the task's answer columns and ``model_version``, in input
order: ``prediction`` and ``probability`` for classifiers (multiclass adds
``probability_<class>`` per class), ``prediction`` alone for regression
(``score.output_columns``). Rows that fail validation (:mod:`app.jobs.validate`, the decoder's
rules) or whose user is unknown go to the rejects file (JSONL: ``row``, the
0-based input row; ``errors`` in the API's detail shape; ``input``) and are
counted: rows in = rows out + rejects.

The input is read in chunks of ``chunk_rows``; each chunk is validated on
whole columns, its users' store features come from the feature server in one
``get_many``, the model runs once per chunk, and the chunk's output and rejects
are written as part files in ``OUTPUT.parts/``. A chunk counts as done (in
``OUTPUT.parts/checkpoint.json``) once its parts are on disk and, with
``--sink``, all its POSTs succeeded; a rerun after an interruption skips
done chunks, so nothing is written or posted twice. (A chunk whose POSTs
were only partly accepted when the run stopped is sent again under the same
``Idempotency-Key`` values, so a sink that honours them stores it once.) When every chunk is done
the parts are joined into OUTPUT and the rejects file, and the directory is
removed. A checkpoint from a different input, model or chunk size is
discarded (the job starts over) and says so.

Work is overlapped: the next chunk is read and validated in a thread while
the current one is scored, parts are written by a writer thread, and POSTs
of earlier chunks proceed while later chunks are scored.

Modules: ``options`` (what is asked, what was done), ``read`` (chunks and
their validation), ``store`` and ``score`` (features and the model),
``parts`` (part files, checkpoint, final files), ``post`` (sink payloads),
``run`` (the job).
"""

from app.jobs.batch.options import BatchError, BatchOptions, Summary
from app.jobs.batch.post import sink_items
from app.jobs.batch.run import run_batch
from app.jobs.batch.score import ChunkResult, score_chunk

_sink_items = sink_items  # the name bench/jobs.py imports

__all__ = ["BatchError", "BatchOptions", "ChunkResult", "Summary", "run_batch", "score_chunk", "sink_items"]
