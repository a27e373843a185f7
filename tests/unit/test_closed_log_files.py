"""Which log files no writer will append to again (what `compact` may take)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from app.telemetry.log_files import FOREIGN_GRACE_SECONDS, closed_files


def touch(directory: Path, name: str, age: float = 0.0) -> None:
    path = directory / name
    path.write_text("{}\n")
    when = time.time() - age
    os.utime(path, (when, when))


def closed(directory: Path, max_age: float = 3600) -> list[str]:
    return [p.name for p in closed_files(directory, time.time(), max_age)]


def test_newest_file_of_each_writer_is_open(tmp_path: Path) -> None:
    """Of one writer's files only the newest is open; other writers (prefix, host, pid) are apart."""
    touch(tmp_path, "predictions-20260101T000000-pod-a-1-1.jsonl")
    touch(tmp_path, "predictions-20260101T010000-pod-a-1-2.jsonl")
    touch(tmp_path, "predictions-20260101T000000-pod-a-2-1.jsonl")
    touch(tmp_path, "labels-20260101T000000-pod-a-1-1.jsonl")
    touch(tmp_path, "notes.txt")
    assert closed(tmp_path) == ["predictions-20260101T000000-pod-a-1-1.jsonl"]


def test_file_idle_past_rotation_age_and_grace_is_closed(tmp_path: Path) -> None:
    """A writer's newest file is closed once unwritten for longer than the rotation age plus the grace."""
    touch(tmp_path, "labels-20260101T000000-h-1-1.jsonl", age=100 + FOREIGN_GRACE_SECONDS + 5)
    touch(tmp_path, "labels-20260101T000000-h-2-1.jsonl", age=100 + FOREIGN_GRACE_SECONDS - 5)
    assert closed(tmp_path, max_age=100) == ["labels-20260101T000000-h-1-1.jsonl"]


def test_restarted_writer_with_the_same_pid_closes_the_old_files(tmp_path: Path) -> None:
    """A container restarted with pid 1 again: the earlier process's files sort before the new one's."""
    touch(tmp_path, "predictions-20260101T000000-pod-1-7.jsonl")
    touch(tmp_path, "predictions-20260101T020000-pod-1-1.jsonl")
    assert closed(tmp_path) == ["predictions-20260101T000000-pod-1-7.jsonl"]
