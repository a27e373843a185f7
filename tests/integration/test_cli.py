"""The `modelserve` command: registry subcommands, one-line errors, no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

MODELSERVE = Path(sys.executable).parent / "modelserve"


def run(ws, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **ws.env()}
    return subprocess.run([str(MODELSERVE), *args], env=env, capture_output=True, text=True, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for n in needles:
        assert n in lines[0]


class TestRegistryCommands:
    def test_versions_lists_aliases(self, workspace):
        """versions shows every version with the aliases pointing at it."""
        proc = run(workspace, "versions")
        assert proc.returncode == 0, proc.stderr
        lines = {line.split()[0]: line for line in proc.stdout.splitlines()[1:]}
        assert set(lines) == {"v1", "v2", "v3"}
        assert "production" in lines["v2"] and "candidate" in lines["v3"]

    def test_versions_of_a_missing_models_dir_is_an_error(self, workspace, tmp_path):
        """A mistyped --models-dir is one error line, not an empty table and exit 0."""
        missing = tmp_path / "no-such-models"
        proc = run(workspace, "--models-dir", str(missing), "versions")
        assert_one_line_error(proc, "no models directory", str(missing))

    def test_promote_rollback_verify(self, workspace):
        """promote and rollback move the alias; verify checks every version."""
        assert run(workspace, "promote", "v1").returncode == 0
        assert os.readlink(workspace.models_dir / "production") == "v1"
        proc = run(workspace, "rollback")
        assert proc.returncode == 0 and "v1 -> v2" in proc.stdout
        proc = run(workspace, "verify")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count(": ok") == 3

    @pytest.mark.parametrize("name", ["../data", "..", "v1/../v2", "/etc/passwd", "v1%2f..", ""])
    def test_traversal_refused(self, workspace, name):
        """Version names that could leave the models directory are refused in one line."""
        assert_one_line_error(run(workspace, "promote", name), "invalid")
        assert os.readlink(workspace.models_dir / "production") == "v2"

    def test_a_long_refused_name_is_echoed_clipped(self, workspace):
        """The refusal quotes the start of a 5,000-character name, not all of it."""
        proc = run(workspace, "promote", "v" + "x" * 5000)
        assert_one_line_error(proc, "invalid version 'vxxx", "…")
        assert len(proc.stderr) < 300

    def test_alias_traversal_refused(self, workspace):
        """Alias names are validated like versions."""
        assert_one_line_error(run(workspace, "promote", "v1", "--alias", "../../tmp/x"), "invalid alias")

    def test_tampered_refused(self, workspace):
        """promote and verify refuse a version whose artifact changed."""
        (workspace.models_dir / "v3" / "pipeline.joblib").write_bytes(b"\x80\x04evil")
        assert_one_line_error(run(workspace, "promote", "v3"), "checksum mismatch", "pipeline.joblib")
        assert_one_line_error(run(workspace, "verify", "v3"), "checksum mismatch")
        assert os.readlink(workspace.models_dir / "production") == "v2"

    def test_unknown_version(self, workspace):
        """An unknown version is a clear error."""
        assert_one_line_error(run(workspace, "promote", "v42"), "unknown version")

    def test_rollback_without_history(self, workspace):
        """rollback with nothing to return to says so."""
        assert_one_line_error(run(workspace, "rollback"), "nothing to roll back")

    def test_missing_registry(self, workspace, tmp_path):
        """Every registry command on a models directory that does not exist is one line, nothing created."""
        env = {**os.environ, **workspace.env(), "MODELSERVE_MODELS_DIR": str(tmp_path / "absent")}
        for args, needle in ((["rollback"], "no models directory"), (["promote", "v1"], "unknown version")):
            proc = subprocess.run([str(MODELSERVE), *args], env=env, capture_output=True, text=True, timeout=60)
            assert_one_line_error(proc, needle)
        assert not (tmp_path / "absent").exists()

    def test_rollback_skips_history_lines_that_are_not_entries(self, workspace):
        """A history line that is JSON but not an object (a hand edit, a foreign tool) is skipped like a
        torn line: rollback was 'error: AttributeError' for it."""
        assert run(workspace, "promote", "v3").returncode == 0
        with open(workspace.models_dir / ".history.jsonl", "a") as f:
            f.write('"x"\n[1, 2]\n42\nnull\n{"alias": "production", "to": 7}\n')
        proc = run(workspace, "rollback")
        assert proc.returncode == 0, proc.stderr
        assert os.readlink(workspace.models_dir / "production") == "v2"

    def test_bad_setting(self, workspace):
        """An invalid setting in the environment is one line naming it."""
        env = {**os.environ, **workspace.env(), "MODELSERVE_PORT": "not-a-port"}
        proc = subprocess.run([str(MODELSERVE), "versions"], env=env, capture_output=True, text=True, timeout=60)
        assert_one_line_error(proc, "MODELSERVE_PORT")

    @pytest.mark.parametrize(
        ("env", "needles"),
        [
            ({"MODELSERVE_WORKERS": "0"}, ["MODELSERVE_WORKERS", "greater than or equal to 1"]),
            ({"MODELSERVE_MAX_QUEUE_MS": "nan"}, ["MODELSERVE_MAX_QUEUE_MS"]),
            ({"MODELSERVE_MODELS_DIR": ""}, ["MODELSERVE_MODELS_DIR", "empty"]),
            ({"MODELSERVE_METRICS_DIR": "", "MODELSERVE_WORKERS": "2"}, ["MODELSERVE_METRICS_DIR", "empty"]),
            ({"MODELSERVE_HOST": ""}, ["MODELSERVE_HOST", "empty"]),
            ({"MODELSERVE_LOG_DIR": " "}, ["MODELSERVE_LOG_DIR", "empty"]),
            ({"MODELSERVE_REDIS_URL": "http://:hunter2hunter2@cache:6379"}, ["MODELSERVE_REDIS_URL", "redis://"]),
            ({"MODELSERVE_UPSTREAM_URL": "ftp://user:hunter2hunter2@features"}, ["MODELSERVE_UPSTREAM_URL", "http"]),
            ({"MODELSERVE_UPSTREAM_URL": "features.internal"}, ["MODELSERVE_UPSTREAM_URL", "without a scheme"]),
            ({"MODELSERVE_UPSTREAM_URL": "https://"}, ["MODELSERVE_UPSTREAM_URL", "host"]),
            # A flush interval past the thread wait's range ended the log writer: every record lost, probes at 200.
            ({"MODELSERVE_LOG_FLUSH_SECONDS": "inf"}, ["MODELSERVE_LOG_FLUSH_SECONDS", "finite"]),
            ({"MODELSERVE_LOG_FLUSH_SECONDS": "1e10"}, ["MODELSERVE_LOG_FLUSH_SECONDS", "3650 days"]),
            ({"MODELSERVE_MAX_QUEUE_MS": "1e300"}, ["MODELSERVE_MAX_QUEUE_MS", "3650 days"]),
            ({"MODELSERVE_SELFCHECK_TOLERANCE": "inf"}, ["MODELSERVE_SELFCHECK_TOLERANCE", "finite"]),
            # Past a C int, onnxruntime refused it at start-up with a three-line TypeError naming no setting.
            ({"MODELSERVE_ORT_INTRA_OP_THREADS": "99999999999999999999"}, ["MODELSERVE_ORT_INTRA_OP_THREADS", "256"]),
            (
                {"MODELSERVE_REDIS_URL": "redis://127.0.0.1:1", "MODELSERVE_REDIS_TIMEOUT_MS": "200"},
                ["MODELSERVE_REDIS_TIMEOUT_MS", "205 ms", "MODELSERVE_FEATURE_BUDGET_MS (100 ms)"],
            ),
        ],
        ids=lambda v: "-".join(v) if isinstance(v, dict) else None,
    )
    def test_serve_refuses_a_bad_setting_naming_its_variable(self, workspace, env, needles):
        """`serve` with a bad value: exit 2 and one line naming the variable, never a password from a URL."""
        proc = subprocess.run(
            [str(MODELSERVE), "serve", "--port", "0"],
            env={**os.environ, **workspace.env(), **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert_one_line_error(proc, *needles)
        assert proc.returncode == 2 and "hunter2" not in proc.stderr

    def test_every_command_has_help(self, workspace):
        """Each subcommand answers --help."""
        for cmd in ["serve", "train", "versions", "promote", "rollback", "verify"]:
            proc = run(workspace, cmd, "--help")
            assert proc.returncode == 0 and "usage:" in proc.stdout


class TestWindows:
    @pytest.mark.parametrize(
        "args",
        [
            ("drift", "--since", "9999999d"),
            ("drift", "--since", "99999999999999999999999h"),
            ("evaluate", "--since", "9999999d"),
            ("shadow-report", "--since", "9999999d"),
            ("gate", "v3", "--since", "9999999d"),
            ("monitor", "--window", "9999999d"),
        ],
        ids=lambda a: a[0],
    )
    def test_window_beyond_the_calendar_is_a_clear_error(self, workspace, tmp_path, args):
        """A look-back window reaching before year 1 is refused naming the option and the limit,
        not an OverflowError."""
        (tmp_path / "log").mkdir()
        proc = run(workspace, *args, "--log-dir", str(tmp_path / "log"))
        assert_one_line_error(proc, f"invalid {args[-2]} {args[-1]!r}", "at most")
        assert "OverflowError" not in proc.stderr

    @pytest.mark.parametrize("windows", ["100000000", "0"])
    def test_monitor_windows_bounded(self, workspace, tmp_path, windows):
        """monitor looks back --window × --windows: at least one window, and not before year 1."""
        (tmp_path / "log").mkdir()
        proc = run(workspace, "monitor", "--windows", windows, "--log-dir", str(tmp_path / "log"))
        assert_one_line_error(proc, f"invalid --windows {windows}")


class TestClosedOutput:
    def test_reader_gone_is_quiet(self, workspace):
        """Output piped into a reader that has gone (``modelserve query ... | head``) ends the command
        quietly with SIGPIPE's status, not with an error line about a broken pipe."""
        read_end, write_end = os.pipe()
        os.close(read_end)
        env = {**os.environ, **workspace.env()}
        proc = subprocess.run(
            [str(MODELSERVE), "versions"], env=env, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120
        )
        os.close(write_end)
        assert proc.stderr == ""
        assert proc.returncode == 141
