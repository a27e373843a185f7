"""Summarise a sampling profile: the functions a server spends its time in, by share.

    python -m bench.profile PROFILE.txt [--top 25] [--output bench/results/profile.md]

Reads py-spy's ``raw`` output (collapsed stacks: ``frame;frame;... count``,
one stack a line; ``py-spy record -f raw``). Prints two tables: *self* (the
function was on top of the stack: its own code) and *inclusive* (anywhere on
the stack: it or what it called). Idle samples (the event loop waiting in
``select``/``epoll``) are counted apart, so shares are of busy time.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

IDLE = re.compile(r"\b(select|poll|epoll_wait|_run_once|run_forever)\b.*\((uvloop|selectors|asyncio)")
IDLE_LEAVES = {
    "_worker (futures/thread.py)",
    "wait (threading.py)",
    "get (queue.py)",
    # newer py-spy names methods by class
    "Condition.wait (threading.py)",
    "Event.wait (threading.py)",
    "Queue.get (queue.py)",
    # uvloop polls in C: the loop's own frame is on top while it waits for sockets
    "Runner.run (asyncio/runners.py)",
    # the shadow worker's own lines are a loop around its callees; on top of the stack it is in time.sleep
    "Shadow._worker (rollout/shadow.py)",
}
"""Threads blocked waiting for work (the sampler cannot always tell they are idle)."""
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _name(frame: str) -> str:
    """``func (path/to/module.py:12)`` → ``func (to/module.py)``: one entry per function, not per line."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        parts = path.split("/")
        path = "/".join(parts[-2:])
    return f"{match['func']} ({path})"


def summarise(lines: Iterable[str]) -> tuple[int, int, Counter[str], Counter[str]]:
    """Total samples, idle samples, self samples and inclusive samples per function."""
    total = idle = 0
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in lines:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f and not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        names = [_name(f) for f in frames]
        if IDLE.search(frames[-1]) or frames[-1].startswith("<idle>") or names[-1] in IDLE_LEAVES:
            idle += count
            continue
        own[names[-1]] += count
        for name in set(names):
            inclusive[name] += count
    return total, idle, own, inclusive


def render(title: str, path: Path, top: int = 25) -> str:
    total, idle, own, inclusive = summarise(path.read_text().splitlines())
    busy = max(1, total - idle)
    out = [f"## {title}", "", f"{total} samples, {busy} busy ({busy / max(1, total):.0%}).", ""]
    for heading, counter in (("Self (own code)", own), ("Inclusive (with callees)", inclusive)):
        out += [f"### {heading}", "", "| share of busy | function |", "|--:|:--|"]
        out += [f"| {n / busy:.1%} | `{name}` |" for name, n in counter.most_common(top)]
        out.append("")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--title", default="Profile")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    text = render(args.title, args.profile, args.top)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
