"""``app.rpc.tensors`` (``rpc_tensors_cases.py``), run in a fresh process.

Importing ``app.rpc``'s generated messages here would break the ``tritonclient``
tests of the same session (both define the ``inference`` messages in protobuf's
default pool), so the cases run under their own ``pytest``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CASES = Path(__file__).with_name("rpc_tensors_cases.py")


def test_rpc_tensors_cases():
    """Every case of ``rpc_tensors_cases.py`` passes (and there are some)."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(CASES), "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "no tests ran" not in done.stdout
