"""Durable per-chunk parts, the checkpoint that lets a rerun skip done chunks, and the final files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from app.jobs.batch.options import BatchOptions
from app.jobs.batch.score import ChunkResult

CHECKPOINT = "checkpoint.json"


class Parts:
    """Durable per-chunk parts (Arrow IPC, cheap to write) + the final file, written in chunk order.

    The final output is streamed as chunks arrive (no second pass on a clean
    run); on a resumed run the parts of chunks done earlier are streamed into
    it again, in their place, so the final file is always written in order
    from start to end.
    """

    def __init__(self, output: Path, fmt: str, identity: dict[str, Any], restart: bool) -> None:
        self.dir = output.with_name(output.name + ".parts")
        self.fmt = fmt
        self.identity = identity
        self.done: dict[int, dict[str, int]] = {}
        self.discarded = False
        path = self.dir / CHECKPOINT
        if path.is_file() and not restart:
            state = orjson.loads(path.read_bytes())
            if state.get("identity") == identity:
                self.done = {int(k): v for k, v in state.get("done", {}).items()}
            else:
                self.discarded = True
        if (restart or self.discarded) and self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.final = self.dir / f"output.{'parquet' if fmt == 'parquet' else 'csv'}.tmp"
        self._parquet: pq.ParquetWriter | None = None
        self._csv: Any = None
        self._schema: pa.Schema | None = None

    def part(self, index: int) -> Path:
        return self.dir / f"part-{index:06d}.arrow"

    def rejects(self, index: int) -> Path:
        return self.dir / f"rejects-{index:06d}.jsonl"

    def write(self, result: ChunkResult) -> None:
        """Make the chunk durable, then append it to the final file (io thread, chunk order)."""
        part = self.part(result.index)
        tmp = part.with_name(part.name + ".tmp")
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, result.output.schema) as writer:
            writer.write_table(result.output)
        rej = self.rejects(result.index)
        tmp_rej = rej.with_name(rej.name + ".tmp")
        tmp_rej.write_bytes(b"".join(result.rejects))
        os.replace(tmp_rej, rej)
        os.replace(tmp, part)
        self._append(result.output)

    def replay(self, index: int) -> None:
        """Append a chunk done by an earlier run to the final file (io thread, chunk order)."""
        with pa.memory_map(str(self.part(index)), "r") as source:
            self._append(pa.ipc.open_file(source).read_all())

    def _append(self, table: pa.Table) -> None:
        if self._schema is None:
            self._schema = table.schema
            if self.fmt == "parquet":
                # Dictionary pages only for text columns: a number column rarely repeats enough
                # to keep one, and building it first then falling back doubles the write cost.
                text = [
                    f.name
                    for f in table.schema
                    if pa.types.is_dictionary(f.type) or pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
                ]
                self._parquet = pq.ParquetWriter(self.final, table.schema, compression="snappy", use_dictionary=text)
            else:
                self._csv = pacsv.CSVWriter(str(self.final), _csv_ready(table).schema)
        elif table.schema != self._schema:
            table = table.cast(self._schema)
        if self._parquet is not None:
            self._parquet.write_table(table)
        elif self._csv is not None:
            self._csv.write_table(_csv_ready(table))

    def mark_done(self, result: ChunkResult) -> None:
        self.done[result.index] = {
            "rows_in": result.rows_in,
            "rows_out": result.output.num_rows,
            "rejected": len(result.rejects),
        }
        state = {"identity": self.identity, "done": {str(k): v for k, v in sorted(self.done.items())}}
        tmp = self.dir / (CHECKPOINT + ".tmp")
        tmp.write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2))
        os.replace(tmp, self.dir / CHECKPOINT)

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None
        if self._csv is not None:
            self._csv.close()
            self._csv = None

    def finish(self, count: int, output: Path, rejects: Path) -> None:
        """Move the final file into place, join the rejects, remove the parts."""
        self.close()
        if self._schema is None:  # an empty input
            pq.write_table(pa.table({}), self.final) if self.fmt == "parquet" else self.final.write_bytes(b"")
        tmp_rej = rejects.with_name(f".{rejects.name}.tmp-{os.getpid()}")
        with open(tmp_rej, "wb") as out:
            for i in range(count):
                with open(self.rejects(i), "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        os.replace(self.final, output)
        os.replace(tmp_rej, rejects)
        shutil.rmtree(self.dir)


def _csv_ready(table: pa.Table) -> pa.Table:
    cols = []
    for col in table.columns:
        cols.append(col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col)
    return pa.table(cols, names=table.column_names)


def run_identity(path: Path, version: str, options: BatchOptions) -> dict[str, Any]:
    st = path.stat()
    return {
        "input": str(path.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "version": version,
        "chunk_rows": options.chunk_rows,
        "sink": options.sink,
        "sink_batch": options.sink_batch,
    }
