"""The ``--workers`` metrics directory: private, never a link followed, never a predictable path in /tmp.

Another user of the machine can create any name in /tmp before the service
starts. The default directory is made fresh and private (0700) and removed at
exit; a configured one that is a symbolic link is refused without touching
where it points.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from pathlib import Path

import httpx
import pytest

from harness import ServerProcess
from tests.support.workspace import Workspace

pytestmark = pytest.mark.e2e


def test_default_dir_is_private_fresh_and_removed(trained: Workspace, tmp_path: Path):
    """A link planted at the old predictable path is left alone; the real directory is 0700, ours, and removed."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    srv = ServerProcess(trained.env(), tmp_path / "server.log", args=["--workers", "2"])
    planted = Path(tempfile.gettempdir()) / f"modelserve-metrics-{srv.port}"
    if not planted.exists():  # the server has not got that far yet: plant it now, as another user would
        os.symlink(victim, planted)
    try:
        with srv:
            srv.wait_ready()
            assert httpx.get(srv.url + "/metrics").status_code == 200
            found = re.search(r"metrics directory (\S+)", srv.output())
            assert found, srv.output()
            path = Path(found.group(1))
            info = path.lstat()
            assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
            assert info.st_uid == os.getuid()
            assert path != planted
        assert srv.proc.returncode == 0, srv.output()
        assert not path.exists(), "the private metrics directory outlived the server"
        assert (victim / "keep.txt").read_text() == "precious"
    finally:
        if planted.is_symlink():
            planted.unlink()


def test_configured_dir_that_is_a_link_is_refused(trained: Workspace, tmp_path: Path):
    """MODELSERVE_METRICS_DIR pointing at a symbolic link: a one-line refusal, the target untouched."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    link = tmp_path / "metrics"
    os.symlink(victim, link)
    env = trained.env(MODELSERVE_METRICS_DIR=str(link))
    with ServerProcess(env, tmp_path / "server.log", args=["--workers", "2"]) as srv:
        code = srv.proc.wait(60)
        output = srv.output()
    assert code != 0
    assert "symbolic link" in output and "Traceback" not in output, output
    assert (victim / "keep.txt").read_text() == "precious"


def test_configured_dir_holding_other_files_is_refused_untouched(trained: Workspace, tmp_path: Path):
    """A directory holding anything but metrics files (a mistyped path, the working directory) is never emptied."""
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "keep.txt").write_text("precious")
    (victim / "counter_1.db").write_bytes(b"stale")
    env = trained.env(MODELSERVE_METRICS_DIR=str(victim))
    with ServerProcess(env, tmp_path / "server.log", args=["--workers", "2"]) as srv:
        code = srv.proc.wait(60)
        output = srv.output()
    assert code != 0
    assert "MODELSERVE_METRICS_DIR" in output and "refusing to empty it" in output, output
    assert "Traceback" not in output, output
    assert (victim / "keep.txt").read_text() == "precious"
    assert (victim / "sub").is_dir() and (victim / "counter_1.db").exists()


def test_empty_metrics_dir_value_never_empties_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """MODELSERVE_METRICS_DIR set but empty (or ``.``) names the working directory: it is left as it was."""
    from pydantic import ValidationError

    from app.serve import _prepare_metrics_dir
    from app.settings import Settings

    (tmp_path / "models").mkdir()
    (tmp_path / "README.md").write_text("keep")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODELSERVE_METRICS_DIR", "")
    with pytest.raises(ValidationError, match="empty"):
        Settings()
    monkeypatch.setenv("MODELSERVE_METRICS_DIR", ".")
    with pytest.raises(Exception, match="MODELSERVE_METRICS_DIR"):
        _prepare_metrics_dir(Settings())
    assert (tmp_path / "models").is_dir() and (tmp_path / "README.md").read_text() == "keep"
