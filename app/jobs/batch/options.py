"""What a batch run is asked to do (``BatchOptions``) and what it did (``Summary``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from app.errors import ModelServeError

INPUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
OUTPUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


class BatchError(ModelServeError):
    pass


@dataclass
class BatchOptions:
    input: Path
    output: Path
    version: str | None = None
    rejects: Path | None = None
    chunk_rows: int = 100_000
    threads: int = 1
    slices: int | None = None
    """Inference threads per chunk (``None``: one per CPU, up to 2, when ``threads`` is 1)."""
    sink: str | None = None
    sink_batch: int = 1000
    sink_concurrency: int = 32
    sink_retries: int = 6
    restart: bool = False
    progress: bool = True


@dataclass
class Summary:
    rows_in: int = 0
    rows_out: int = 0
    rejected: int = 0
    chunks: int = 0
    chunks_skipped: int = 0
    posts: int = 0
    post_retries: int = 0
    seconds: float = 0.0
    output: Path | None = None
    rejects: Path | None = None
    version: str = ""
    reasons: dict[str, int] = field(default_factory=dict)

    def render(self) -> str:
        rate = self.rows_in / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"scored {self.rows_in:,} rows with {self.version} in {self.seconds:.2f} s ({rate:,.0f} rows/s): "
            f"{self.rows_out:,} written to {self.output}, {self.rejected:,} rejected"
            + (f" (see {self.rejects})" if self.rejected else ""),
        ]
        if self.chunks_skipped:
            lines.append(f"resumed: {self.chunks_skipped} of {self.chunks} chunks were done by an earlier run")
        if self.posts or self.post_retries:
            lines.append(f"sink: {self.posts} POSTs, {self.post_retries} retries")
        for reason, n in sorted(self.reasons.items(), key=lambda kv: -kv[1])[:5]:
            lines.append(f"  {n:>9,}  {reason}")
        return "\n".join(lines)
