"""The prediction log's failure accounting, recovery, retention and duplicate request ids."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from app.health import Health
from app.predictor import PredictionRecord
from app.settings import Settings
from app.telemetry.log_files import FOREIGN_GRACE_SECONDS
from app.telemetry.metrics import Metrics
from app.telemetry.prediction_log import PredictionLog


def record(i: int, request_id: str | None = None) -> PredictionRecord:
    return PredictionRecord(
        request_id=request_id or f"r-{i}",
        model_version="v2",
        prediction=1,
        probability=0.5,
        user_id="u-1",
        features={"amount": 1.5},
        request_features={"amount": 1.5},
        latency=0.001,
        tier="table",
    )


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def dropped(metrics: Metrics, reason: str) -> float:
    return metrics.log_dropped.labels(reason)._value.get()


class TestWriteFailures:
    def blocked_dir(self, tmp_path: Path) -> Path:
        """A log directory that cannot be created: its parent is a regular file (ENOTDIR)."""
        (tmp_path / "parent").write_text("not a directory")
        return tmp_path / "parent" / "log"

    def test_failed_writes_are_counted_and_reported(self, tmp_path: Path) -> None:
        """Records that cannot be written count as write_error drops; the log says why it is failing."""
        metrics = Metrics()
        plog = PredictionLog(self.blocked_dir(tmp_path), metrics, batch_size=5)
        for i in range(12):
            plog.listener(record(i))
        plog._drain()
        assert dropped(metrics, "write_error") == 12
        assert metrics.log_records._value.get() == 0
        assert metrics.log_write_errors.labels("ENOTDIR")._value.get() == 3  # one per batch
        assert metrics.log_writable._value.get() == 0
        assert plog.failure is not None and plog.failure.startswith("ENOTDIR")
        assert plog.readiness_failure() == f"prediction log cannot write: {plog.failure}"
        plog.close_sync()

    def test_probe_recovers_without_traffic(self, tmp_path: Path) -> None:
        """Once the directory can be written again, the probe clears the failure with nothing queued."""
        metrics = Metrics()
        directory = self.blocked_dir(tmp_path)
        plog = PredictionLog(directory, metrics)
        plog.listener(record(0))
        plog._drain()
        assert not plog.writable
        (tmp_path / "parent").unlink()
        plog._probe()
        assert plog.writable and plog.readiness_failure() is None
        assert metrics.log_writable._value.get() == 1
        assert list(directory.iterdir()) == []  # the probe leaves nothing behind
        plog.listener(record(1))
        plog.close_sync()
        assert metrics.log_records._value.get() == 1

    def test_no_empty_file_is_left_per_failed_attempt(self, tmp_path: Path) -> None:
        """A batch that could not be written leaves no empty file behind (no file per retry on a full disk)."""
        metrics = Metrics()
        plog = PredictionLog(tmp_path, metrics, batch_size=1)
        plog.listener(record(0))
        plog._drain()
        fd = plog._fd
        assert fd is not None
        os.close(fd)
        plog._fd = os.open(os.devnull, os.O_RDONLY)  # the next write fails with EBADF
        plog._size = 0
        path = plog._path
        assert path is not None
        path.write_bytes(b"")
        plog.listener(record(1))
        plog._drain()
        assert not path.exists()
        assert dropped(metrics, "write_error") == 1
        plog.close_sync()

    def test_unserialisable_record_is_counted(self, tmp_path: Path) -> None:
        """A record orjson cannot serialise is dropped with reason unserialisable; the others are written."""
        metrics = Metrics()
        plog = PredictionLog(tmp_path, metrics)
        plog.submit({"kind": "shadow", "bad": object()})
        plog.listener(record(1))
        plog.close_sync()
        assert dropped(metrics, "unserialisable") == 1
        assert metrics.log_records._value.get() == 1


class TestReadinessPolicy:
    def test_health_check_makes_not_ready_and_names_the_reason(self) -> None:
        """A failing readiness check turns a ready service not ready, with the check's reason."""
        failure: list[str] = []
        health = Health()
        health.mark_ready()
        health.checks.append(lambda: failure[0] if failure else None)
        assert health.is_ready and health.reason == "ready"
        failure.append("prediction log cannot write: ENOSPC")
        assert not health.is_ready
        assert health.reason == "prediction log cannot write: ENOSPC"
        health.start_draining()
        assert health.reason == "draining"

    def test_policy_setting_defaults_to_serve(self) -> None:
        """Keep serving and count is the default; not_ready is the opt-in."""
        assert Settings().log_failure_policy == "serve"
        assert Settings(log_failure_policy="not_ready").log_failure_policy == "not_ready"

    def test_container_adds_the_check_only_under_not_ready(self, tmp_path: Path) -> None:
        """The container wires the log's readiness check only when the policy asks for it."""
        from app.container import build_container

        base = {"models_dir": tmp_path, "log_dir": tmp_path / "log"}
        assert build_container(Settings(**base)).health.checks == []  # type: ignore[arg-type]
        c = build_container(Settings(**base, log_failure_policy="not_ready"))  # type: ignore[arg-type]
        assert c.prediction_log is not None
        assert c.health.checks == [c.prediction_log.readiness_failure]


def rotated_files(directory: Path, clock: FakeClock, n: int, *, size: int) -> PredictionLog:
    """A log that wrote ``n`` files (one batch each, a minute apart); the last stays open."""
    plog = PredictionLog(directory, Metrics(), max_bytes=size, batch_size=1000, clock=clock)
    for i in range(n):
        for j in range(size // 120 + 1):
            plog.listener(record(i * 1000 + j))
        plog._drain()
        assert plog.files[-1].stat().st_size >= size
        os.utime(plog.files[-1], (clock.now, clock.now))
        clock.now += 60
    return plog


class TestRetention:
    def test_bytes_limit_deletes_oldest_rotated_files_never_the_open_one(self, tmp_path: Path) -> None:
        """Over the byte limit the oldest rotated files go first; the open file stays even when over alone."""
        clock = FakeClock()
        plog = rotated_files(tmp_path, clock, 5, size=4096)
        files = list(plog.files)
        plog.retention_bytes = sum(p.stat().st_size for p in files[2:])
        plog.apply_retention()
        assert [p.exists() for p in files] == [False, False, True, True, True]
        assert plog._metrics.log_files_deleted.labels("bytes")._value.get() == 2
        plog.retention_bytes = 1
        plog.apply_retention()
        assert [p.exists() for p in files] == [False, False, False, False, True]
        assert plog._path == files[-1]
        plog.close_sync()

    def test_age_limit_deletes_old_rotated_files(self, tmp_path: Path) -> None:
        """Rotated files older than retention_seconds are deleted; younger ones stay."""
        clock = FakeClock()
        plog = rotated_files(tmp_path, clock, 4, size=4096)
        files = list(plog.files)  # mtimes: now-240, -180, -120, -60 (open)
        plog.retention_seconds = 150
        plog.apply_retention()
        assert [p.exists() for p in files] == [False, False, True, True]
        assert plog._metrics.log_files_deleted.labels("age")._value.get() == 2
        plog.close_sync()

    def test_another_writers_recent_file_is_kept(self, tmp_path: Path) -> None:
        """A file of another process is only deleted once it must have been closed (older than its rotation age)."""
        clock = FakeClock()
        plog = PredictionLog(tmp_path, Metrics(), max_age_seconds=3600, retention_bytes=1, clock=clock)
        recent = tmp_path / "predictions-20231114T000000-otherhost-1-1.jsonl"
        old = tmp_path / "predictions-20231113T000000-otherhost-1-1.jsonl"
        for path, age in ((recent, 60.0), (old, 3600 + FOREIGN_GRACE_SECONDS + 1)):
            path.write_bytes(b'{"kind":"prediction"}\n')
            os.utime(path, (clock.now - age, clock.now - age))
        plog.apply_retention()
        assert recent.exists() and not old.exists()

    def test_rotation_applies_retention(self, tmp_path: Path) -> None:
        """A size rotation deletes what the byte limit no longer allows at once, bounding a fast writer."""
        plog = PredictionLog(tmp_path, Metrics(), max_bytes=4096, batch_size=10, retention_bytes=3 * 4096)
        for i in range(2000):
            plog.listener(record(i))
        plog.close_sync()
        total = sum(p.stat().st_size for p in tmp_path.glob("predictions-*.jsonl"))
        assert total <= 3 * 4096 + 2 * 10 * 200
        assert len(list(tmp_path.glob("predictions-*.jsonl"))) < len(plog.files) + 5

    def test_retention_is_off_by_default(self) -> None:
        """Nothing is deleted unless a retention setting is given."""
        s = Settings()
        assert (s.log_retention_seconds, s.log_retention_bytes) == (0, 0)


class TestDuplicateRequestIds:
    def test_repeated_request_id_is_counted_and_both_are_written(self, tmp_path: Path) -> None:
        """A request id seen again within the window is counted; both records are still logged."""
        metrics = Metrics()
        plog = PredictionLog(tmp_path, metrics)
        for rid in ["a", "b", "a", "c", "a"]:
            plog.listener(record(0, request_id=rid))
        plog.close_sync()
        assert metrics.duplicate_request_ids._value.get() == 2
        lines = [orjson.loads(x) for p in plog.files for x in p.read_bytes().splitlines()]
        assert [x["request_id"] for x in lines] == ["a", "b", "a", "c", "a"]

    def test_window_is_bounded(self, tmp_path: Path) -> None:
        """Only the last duplicate_window ids are remembered; shadow records never count."""
        metrics = Metrics()
        plog = PredictionLog(tmp_path, metrics, duplicate_window=2)
        for rid in ["a", "b", "c", "a"]:  # "a" was forgotten when "c" arrived
            plog.listener(record(0, request_id=rid))
        plog.submit({"kind": "shadow", "request_id": "c"})
        plog.close_sync()
        assert metrics.duplicate_request_ids._value.get() == 0
        assert len(plog._recent_ids) == 2

    def test_window_slides_over_many_records(self, tmp_path: Path) -> None:
        """Long after the window first filled, it still holds exactly the last ids, and a repeat keeps its place."""
        metrics = Metrics()
        plog = PredictionLog(tmp_path, metrics, duplicate_window=3)
        for i in range(1000):
            plog._check_duplicate(f"r{i}")
        for rid in ["r997", "r999", "r996", "r1000", "r997", "r998"]:
            plog._check_duplicate(rid)
        # r997 and r999 repeat; r996 had been forgotten; then r997 and r998 have been pushed out: new again.
        assert metrics.duplicate_request_ids._value.get() == 2
        assert sorted(plog._recent_ids) == ["r1000", "r997", "r998"]
