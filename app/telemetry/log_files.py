"""Log file names, and which files no writer will append to again.

Every writer (``app.telemetry.prediction_log``) writes files named::

    <dir>/predictions-<UTC yyyymmddTHHMMSS>-<host>-<pid>-<seq>.jsonl

(``labels-`` for the label log; host and pid keep writers apart: several
workers, and several pods sharing one log volume, where every container's
pid is 1). ``writer_of`` parses such a name and ``closed_files`` says which
files no writer will append to again: the same notion retention uses before
it deletes another writer's file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

FILE_PREFIX = "predictions-"
LABEL_FILE_PREFIX = "labels-"
FILE_SUFFIX = ".jsonl"
LOG_FILE_PREFIXES = (FILE_PREFIX, LABEL_FILE_PREFIX)
"""Every writer's file prefix in a log directory: prediction (and shadow) lines, label lines."""


# Rotated files of another writer sharing the directory are deleted only once older
# than its rotation age plus this: by then that writer has certainly closed them.
FOREIGN_GRACE_SECONDS = 60.0


def writer_of(name: str) -> tuple[str, tuple[str, int]] | None:
    """``(writer, (stamp, seq))`` of a log file name, or None if it is not one.

    The writer is the prefix with host and pid (``predictions-…-<host>-<pid>``
    without stamp and seq): its files sort by ``(stamp, seq)``, newest last.
    """
    prefix = next((p for p in LOG_FILE_PREFIXES if name.startswith(p)), None)
    if prefix is None or not name.endswith(FILE_SUFFIX):
        return None
    rest = name[len(prefix) : -len(FILE_SUFFIX)]
    stamp, _, host_pid_seq = rest.partition("-")
    host_pid, _, seq = host_pid_seq.rpartition("-")
    if not (stamp and host_pid and seq.isdigit()):
        return None
    return prefix + host_pid, (stamp, int(seq))


def closed_files(directory: Path, now: float, max_age_seconds: float) -> list[Path]:
    """The log files of ``directory`` no writer will append to again, oldest name first.

    A file is closed when a newer file of the same writer (prefix, host and
    pid) exists, or when it was last written longer ago than the rotation
    age plus ``FOREIGN_GRACE_SECONDS`` (its writer rotates it at its next
    wake-up) — the same notion retention uses for other writers' files.
    """
    newest: dict[str, tuple[str, int]] = {}
    found: list[tuple[Path, str, tuple[str, int], float]] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    for entry in entries:
        parsed = writer_of(entry.name)
        if parsed is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        writer, order = parsed
        found.append((Path(entry.path), writer, order, st.st_mtime))
        if writer not in newest or order > newest[writer]:
            newest[writer] = order
    grace = max_age_seconds + FOREIGN_GRACE_SECONDS
    closed = [p for p, w, order, mtime in found if order < newest[w] or now - mtime > grace]
    return sorted(closed, key=lambda p: p.name)
