"""Whether a model was exported with libraries this install is known to serve alike.

The manifest records the versions it was exported with (``libraries``). A
different onnxruntime major version, or a scikit-learn/skl2onnx pair other
than the locked one (``requirements/publish.txt``), may change numerics: the
load logs a warning naming both versions, and the self-check decides whether
the model is served.
"""

from __future__ import annotations

from collections.abc import Mapping

LOCKED_EXPORTERS: dict[str, str] = {"scikit-learn": "1.9.1", "skl2onnx": "1.20.0"}
"""The exporter pair pinned in requirements/publish.txt (a test keeps them equal)."""


def onnxruntime_version() -> str:
    import onnxruntime  # already imported by the runtime that loads the model

    return str(onnxruntime.__version__)


def _release(version: str, parts: int) -> tuple[str, ...]:
    return tuple(version.split("+")[0].split(".")[:parts])


def library_warnings(libraries: Mapping[str, str], onnxruntime_version: str) -> list[str]:
    """One message per recorded library version this install may not serve alike."""
    out: list[str] = []
    exported = libraries.get("onnxruntime")
    if exported and _release(exported, 1) != _release(onnxruntime_version, 1):
        out.append(f"exported with onnxruntime {exported}, serving with onnxruntime {onnxruntime_version}")
    for name, locked in LOCKED_EXPORTERS.items():
        got = libraries.get(name)
        if got and _release(got, 2) != _release(locked, 2):
            pair = ", ".join(f"{n} {libraries.get(n, '?')}" for n in LOCKED_EXPORTERS)
            want = ", ".join(f"{n} {v}" for n, v in LOCKED_EXPORTERS.items())
            out.append(f"exported with {pair}; the lock allows {want}")
            break
    return out
