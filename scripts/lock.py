"""Hash-pinned lock files for each install set, from pyproject.toml (``make lock``).

    python scripts/lock.py             relock, keeping every pin that still fits
    python scripts/lock.py --upgrade   relock at the newest versions that fit
    python scripts/lock.py --check     exit 1 if pyproject's dependency tables changed since the last lock

Each set is one ``uv pip compile`` of pyproject.toml with its extras, for
Python 3.11 on every platform (``--universal``: the Docker image may be
arm64, a laptop macOS), with the hashes of every file of each pinned version.
The dev set is resolved first and pins the others, so a package has one
version in every lock. Each lock's first line records a hash of the tables it
was made from; ``--check`` (run by ``make lint``) compares it with
pyproject.toml, so a dependency edit without a relock fails CI.

``requirements/tools.txt`` holds uv alone, at the dev set's version and with
its hashes: ``make install`` installs it with pip into a fresh venv, then
installs a set's lock with it (uv keeps a package cache; pip here does not).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCKS = REPO / "requirements"
PYTHON = "3.11"
SETS: dict[str, tuple[str, ...]] = {
    "dev": ("dev",),  # make install, CI: everything
    "base": (),  # modelserve serve and the admin CLI
    "runtime": ("jobs",),  # the Docker image: serving and the offline jobs
    "publish": ("publish",),  # training and publishing models (includes jobs)
}
"""Lock name -> extras; dev first, since it pins the others."""
TOOLS = ("uv",)
"""requirements/tools.txt: what installs the locks, pinned by the dev set."""
HEADER = "# pyproject-deps-sha256: "
CONSTRAINT_NOTE = re.compile(r"^\s+#\s+-c ")


def deps_hash(pyproject: Path = REPO / "pyproject.toml") -> str:
    """A hash of everything in pyproject.toml that decides what a lock holds."""
    data = tomllib.loads(pyproject.read_text())
    project = data["project"]
    tables = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
    }
    return hashlib.sha256(json.dumps(tables, sort_keys=True).encode()).hexdigest()


def recorded_hash(lock: Path) -> str | None:
    if not lock.is_file():
        return None
    first = lock.read_text().partition("\n")[0]
    return first[len(HEADER) :].strip() if first.startswith(HEADER) else None


def stale_locks() -> list[str]:
    """Names of the locks not made from the current pyproject.toml."""
    current = deps_hash()
    return [name for name in (*SETS, "tools") if recorded_hash(LOCKS / f"{name}.txt") != current]


def uv() -> str:
    found = shutil.which("uv", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        sys.exit("lock: uv not found; it comes with the dev extra (make install)")
    return found


def compile_set(
    name: str, extras: tuple[str, ...], pins: Path | None, extra_args: list[str], source: str = "pyproject.toml"
) -> None:
    out = LOCKS / f"{name}.txt"
    cmd = [uv(), "pip", "compile", source, "--quiet", "--universal", "--python-version", PYTHON]
    cmd += ["--generate-hashes", "--custom-compile-command", "make lock", "-o", str(out)]
    for extra in extras:
        cmd += ["--extra", extra]
    if pins is not None:
        cmd += ["--constraint", str(pins)]
    subprocess.run(cmd + extra_args, cwd=REPO, check=True)
    # "via -c <temp file>" notes would change on every run
    body = "".join(line for line in out.read_text().splitlines(keepends=True) if not CONSTRAINT_NOTE.match(line))
    out.write_text(f"{HEADER}{deps_hash()}\n{body}")


def pins_of(lock: Path, into: Path) -> Path:
    """``name==version`` lines (no hashes, no markers) of a lock, as a constraints file."""
    lines = [
        line.split(";")[0].split()[0]
        for line in lock.read_text().splitlines()
        if line and not line.startswith((" ", "#")) and "==" in line
    ]
    into.write_text("\n".join(lines) + "\n")
    return into


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that the locks match pyproject.toml")
    parser.add_argument("--upgrade", action="store_true", help="move every pin to the newest version that fits")
    args, extra = parser.parse_known_args()
    if args.check:
        stale = stale_locks()
        if stale:
            print(
                f"lock: requirements/{{{','.join(stale)}}}.txt were not made from this pyproject.toml; run `make lock`",
                file=sys.stderr,
            )
            return 1
        print("lock: every lock matches pyproject.toml")
        return 0
    LOCKS.mkdir(exist_ok=True)
    if args.upgrade:
        extra = ["--upgrade", *extra]
    with tempfile.TemporaryDirectory() as tmp:
        pins: Path | None = None
        for name, extras in SETS.items():
            compile_set(name, extras, pins, extra)
            if pins is None:
                pins = pins_of(LOCKS / f"{name}.txt", Path(tmp) / "pins.txt")
                extra = [a for a in extra if a != "--upgrade"]  # the others follow dev's pins
        tools = Path(tmp) / "tools.in"
        tools.write_text("\n".join(TOOLS) + "\n")
        compile_set("tools", (), pins, [*extra, "--no-annotate"], source=str(tools))
    print(f"lock: wrote {', '.join(f'requirements/{n}.txt' for n in (*SETS, 'tools'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
