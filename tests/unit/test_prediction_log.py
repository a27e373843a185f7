"""The prediction log writer: format, batching, rotation, hashing, drops, flush on close."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.predictor import PredictionRecord
from app.telemetry.log_lines import (
    LINE_FIELDS,
    PREDICTION_FIELDS,
    hash_user_id,
    shadow_drops_line,
    shadow_line,
)
from app.telemetry.metrics import Metrics
from app.telemetry.prediction_log import PredictionLog


def record(i: int = 0, user: str | None = "u-00001") -> PredictionRecord:
    return PredictionRecord(
        request_id=f"r-{i}",
        model_version="v2",
        prediction=1,
        probability=0.75,
        user_id=user,
        features={"amount": 12.5, "device": "ios", "score": None, "first_purchase": True},
        request_features={"amount": 12.5},
        latency=0.0002,
        tier="table",
        variant=None,
        timestamp=1_700_000_000.0 + i,
    )


def lines(directory: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(directory.glob("predictions-*.jsonl")):
        out.extend(orjson.loads(line) for line in path.read_bytes().splitlines())
    return out


def orjson_lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class TestFormat:
    def test_prediction_record_becomes_one_json_line(self, tmp_path: Path) -> None:
        """A PredictionRecord is written as one line with every prediction field and kind=prediction."""
        plog = PredictionLog(tmp_path, Metrics())
        plog.listener(record(), None)
        plog.close_sync()
        [line] = lines(tmp_path)
        assert line == {
            "kind": "prediction",
            "timestamp": "2023-11-14T22:13:20Z",
            "request_id": "r-0",
            "model_version": "v2",
            "variant": None,
            "user_id": "u-00001",
            "features": {"amount": 12.5, "device": "ios", "score": None, "first_purchase": True},
            "prediction": 1,
            "probability": 0.75,
            "probabilities": None,
            "latency": 0.0002,
            "feature_tier": "table",
            "trace_id": None,
            "sample_rate": 1.0,
        }
        assert list(line) == ["kind", *(name for name, _ in PREDICTION_FIELDS)]

    def test_shadow_lines_follow_their_declared_fields(self) -> None:
        """shadow_line and shadow_drops_line give every declared field of their kind, in order."""
        ok = shadow_line(
            record(), timestamp=1.0, shadow_version="v3", outcome="ok", shadow_prediction=0, shadow_probability=0.5
        )
        failed = shadow_line(record(), timestamp=1.0, shadow_version="v3", outcome="timeout")
        drops = shadow_drops_line(timestamp=1.0, shadow_version="v3", dropped=4)
        for line, kind in ((ok, "shadow"), (failed, "shadow"), (drops, "shadow_drops")):
            assert list(line) == ["kind", *(name for name, _ in LINE_FIELDS[kind])] and line["kind"] == kind
        assert ok["abs_diff"] == 0.25 and ok["primary_probability"] == 0.75
        assert failed["shadow_probability"] is None and failed["abs_diff"] is None

    def test_shadow_records_are_written_alongside(self, tmp_path: Path) -> None:
        """submit() writes a dict as given, defaulting kind to shadow and stamping the time."""
        plog = PredictionLog(tmp_path, Metrics(), clock=FakeClock())
        plog.listener(record(), None)
        plog.submit({"kind": "shadow", "request_id": "r-0", "abs_diff": 0.01, "outcome": "ok"})
        plog.close_sync()
        first, second = lines(tmp_path)
        assert first["kind"] == "prediction"
        assert second == {
            "kind": "shadow",
            "request_id": "r-0",
            "abs_diff": 0.01,
            "outcome": "ok",
            "timestamp": "2023-11-14T22:13:20Z",
        }

    def test_batch_of_shadow_records_is_written_as_each_alone(self, tmp_path: Path) -> None:
        """submit_many() writes each dict in order as submit() would, a shared timestamp or not."""
        plog = PredictionLog(tmp_path, Metrics(), clock=FakeClock())
        recs = [{"request_id": f"r-{i}", "outcome": "ok", "timestamp": 1_700_000_000.0 + i // 2} for i in range(4)]
        plog.submit_many(recs)
        plog.close_sync()
        assert lines(tmp_path) == [
            {**r, "kind": "shadow", "timestamp": f"2023-11-14T22:13:2{i // 2}Z"} for i, r in enumerate(recs)
        ]

    def test_rows_of_a_batch_share_their_timestamp_and_others_keep_theirs(self, tmp_path: Path) -> None:
        """A batch's records, stamped alike, and records of other times each get their own time on their line."""
        plog = PredictionLog(tmp_path, Metrics())
        plog.listener_many([record(0), record(0), record(1)], None)
        plog.listener(record(0), None)
        plog.close_sync()
        stamps = [line["timestamp"] for line in lines(tmp_path)]
        assert stamps == [
            "2023-11-14T22:13:20Z",
            "2023-11-14T22:13:20Z",
            "2023-11-14T22:13:21Z",
            "2023-11-14T22:13:20Z",
        ]

    def test_file_name_carries_time_host_pid_and_sequence(self, tmp_path: Path) -> None:
        """Files are predictions-<UTC stamp>-<host>-<pid>-<seq>.jsonl so workers and pods never share one."""
        import os
        import socket

        plog = PredictionLog(tmp_path, Metrics(), clock=FakeClock())
        plog.listener(record(), None)
        plog.close_sync()
        expected = f"predictions-20231114T221320-{socket.gethostname()}-{os.getpid()}-1.jsonl"
        assert [p.name for p in plog.files] == [expected]


class TestUserIdHashing:
    def test_hash_mode_writes_hmac_and_never_the_key(self, tmp_path: Path) -> None:
        """With a key, user_id is HMAC-SHA256(key, user_id) in hex, and the key is nowhere in the file."""
        key = b"a-secret-key-of-some-length"
        plog = PredictionLog(tmp_path, Metrics(), user_id_mode="hash", user_id_key=key)
        plog.listener(record(user="u-00042"), None)
        plog.submit({"kind": "shadow", "user_id": "u-00042"})
        plog.close_sync()
        want = hmac.new(key, b"u-00042", hashlib.sha256).hexdigest()
        assert [line["user_id"] for line in lines(tmp_path)] == [want, want]
        assert hash_user_id("u-00042", key) == want
        raw = b"".join(p.read_bytes() for p in plog.files)
        assert key not in raw and b"u-00042" not in raw

    def test_plain_mode_keeps_user_id(self, tmp_path: Path) -> None:
        """The default writes user ids as sent (and None stays null)."""
        plog = PredictionLog(tmp_path, Metrics())
        plog.listener(record(user="u-7"), None)
        plog.listener(record(user=None), None)
        plog.close_sync()
        assert [line["user_id"] for line in lines(tmp_path)] == ["u-7", None]

    def test_hash_mode_needs_a_key(self, tmp_path: Path) -> None:
        """Hashing without a key is refused at construction."""
        with pytest.raises(ValueError):
            PredictionLog(tmp_path, Metrics(), user_id_mode="hash")

    def test_settings_refuse_hash_without_key(self) -> None:
        """The settings refuse hash mode with no (or a short) key at start-up."""
        from pydantic import ValidationError

        from app.settings import Settings

        with pytest.raises(ValidationError):
            Settings(log_user_id="hash")
        with pytest.raises(ValidationError):
            Settings(log_user_id="hash", log_user_id_key="short")
        s = Settings(log_user_id="hash", log_user_id_key="k" * 16)
        assert "k" * 16 not in repr(s)


class TestDrops:
    def test_full_queue_drops_and_counts(self, tmp_path: Path) -> None:
        """Beyond queue_size, records are dropped and counted, never blocking; the rest are written."""
        metrics = Metrics()
        plog = PredictionLog(tmp_path, metrics, queue_size=10, batch_size=1000)
        for i in range(25):  # writer not started: nothing drains the queue
            plog.listener(record(i), None)
        assert plog.pending == 10
        assert metrics.log_dropped.labels("queue_full")._value.get() == 15
        plog.close_sync()
        assert len(lines(tmp_path)) == 10
        assert metrics.log_records._value.get() == 10

    def test_batch_listener_queues_in_order_and_drops_what_does_not_fit(self, tmp_path: Path) -> None:
        """``listener_many`` keeps a batch's records in order up to queue_size, as ``listener`` per record would."""
        metrics = Metrics()
        plog = PredictionLog(tmp_path, metrics, queue_size=10, batch_size=1000)
        plog.listener(record(0), None)
        plog.listener_many([record(i) for i in range(1, 15)], None)
        assert plog.pending == 10
        assert metrics.log_dropped.labels("queue_full")._value.get() == 5
        plog.close_sync()
        assert [line["request_id"] for line in lines(tmp_path)] == [f"r-{i}" for i in range(10)]
        plog.listener_many([record(20), record(21)], None)
        assert metrics.log_dropped.labels("closed")._value.get() == 2

    def test_submit_after_close_is_dropped(self, tmp_path: Path) -> None:
        """Records arriving after close are counted as dropped, not lost silently."""
        metrics = Metrics()
        plog = PredictionLog(tmp_path, metrics)
        plog.close_sync()
        plog.submit({"kind": "shadow"})
        assert metrics.log_dropped.labels("closed")._value.get() == 1


class TestRotation:
    def test_rotates_by_size(self, tmp_path: Path) -> None:
        """A file that reached max_bytes is closed and the next batch opens a new one."""
        plog = PredictionLog(tmp_path, Metrics(), max_bytes=4096, batch_size=10)
        for i in range(200):
            plog.listener(record(i), None)
        plog.close_sync()
        assert len(plog.files) > 3
        sizes = [p.stat().st_size for p in plog.files]
        assert all(s < 4096 + 10 * 400 for s in sizes)  # at most one batch past the limit
        written = [line["request_id"] for p in plog.files for line in orjson_lines(p)]
        assert written == [f"r-{i}" for i in range(200)]

    def test_rotates_by_age(self, tmp_path: Path) -> None:
        """A file older than max_age_seconds is not written to again."""
        clock = FakeClock()
        plog = PredictionLog(tmp_path, Metrics(), max_age_seconds=60, clock=clock)
        plog.listener(record(1), None)
        plog._drain()
        clock.now += 61
        plog.listener(record(2), None)
        plog._drain()
        plog.close_sync()
        assert len(plog.files) == 2
        assert plog.files[0].name != plog.files[1].name


class TestWriter:
    async def test_background_writer_flushes_on_close(self, tmp_path: Path) -> None:
        """With the writer thread running, close() writes every queued record before returning."""
        metrics = Metrics()
        plog = PredictionLog(tmp_path, metrics, flush_seconds=0.05, batch_size=50)
        plog.start()
        for i in range(5000):
            plog.listener(record(i), None)
            if i % 500 == 0:
                await asyncio.sleep(0)
        await plog.close()
        assert len(lines(tmp_path)) == 5000
        assert metrics.log_records._value.get() == 5000
        assert sum(metrics.log_dropped.labels(r)._value.get() for r in ("queue_full", "write_error")) == 0

    async def test_writer_writes_without_close(self, tmp_path: Path) -> None:
        """Queued records reach the disk within flush_seconds, before any shutdown."""
        plog = PredictionLog(tmp_path, Metrics(), flush_seconds=0.02)
        plog.start()
        plog.listener(record(), None)
        for _ in range(100):
            await asyncio.sleep(0.02)
            if lines(tmp_path):
                break
        assert len(lines(tmp_path)) == 1
        await plog.close()


class TestLinesInBulk:
    """The writer serialises a batch in one call and cuts it into lines: the same bytes as one call per record."""

    def test_a_batch_is_written_as_one_line_per_record_byte_for_byte(self, tmp_path: Path) -> None:
        plog = PredictionLog(tmp_path, Metrics())
        shadows = [
            shadow_line(record(i), timestamp=1_700_000_000.5 + i, shadow_version="v3", outcome="ok") for i in range(100)
        ]
        items: list[Any] = [x for i in range(100) for x in (record(i), shadows[i])]
        expected = b"".join(
            orjson.dumps(plog._to_dict(x), option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_UTC_Z) for x in items
        )
        for x in items:
            plog.submit(x) if isinstance(x, dict) else plog.listener(x)
        plog.close_sync()
        assert b"".join(p.read_bytes() for p in plog.files) == expected

    def test_records_holding_what_looks_like_a_line_boundary_stay_whole(self, tmp_path: Path) -> None:
        """A string holding ``},{"kind":`` (its quotes escaped) or a record nesting such objects is one line."""
        plog = PredictionLog(tmp_path, Metrics())
        tricky = record(1)
        tricky.features = {"note": '},{"kind":"prediction"}', "device": "}\n{"}
        nested = {"kind": "shadow", "request_id": "n", "extra": [{"kind": 1}, {"kind": 2}]}
        for item in (record(0), tricky, nested, record(2)):
            plog.submit(item) if isinstance(item, dict) else plog.listener(item)
        plog.close_sync()
        got = lines(tmp_path)
        assert [x["request_id"] for x in got] == ["r-0", "r-1", "n", "r-2"]
        assert got[1]["features"] == tricky.features and got[2]["extra"] == nested["extra"]

    def test_kind_leads_every_line_whatever_the_submitted_order(self, tmp_path: Path) -> None:
        plog = PredictionLog(tmp_path, Metrics())
        plog.submit({"request_id": "a", "timestamp": 1_700_000_000.0})  # no kind: a shadow record
        plog.submit({"request_id": "b", "kind": "shadow_drops", "timestamp": 1_700_000_000.0})
        plog.listener(record(0))
        plog.close_sync()
        raw = [line for p in plog.files for line in p.read_bytes().splitlines()]
        assert all(line.startswith(b'{"kind":') for line in raw)
        assert [(x["kind"], x["request_id"]) for x in lines(tmp_path)] == [
            ("shadow", "a"),
            ("shadow_drops", "b"),
            ("prediction", "r-0"),
        ]
