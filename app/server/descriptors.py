"""The process's file descriptor limit, and how many connections fit under it.

Every connection is a descriptor. At the usual soft limit of 1,024 a flood of
connections that never finish their request used every descriptor: new
connections (probes included) were accepted and dropped at once, and the
alias poller could not open a directory (``EMFILE``). The soft limit is raised
to the hard one at start, and the connection cap is kept below it so that the
service always has descriptors left for its own files and sockets.
"""

from __future__ import annotations

import resource

# Descriptors kept back from connections: model files, the prediction log, the
# metrics files, Redis and upstream pools, the event loop's own. A running
# worker uses about 40; the rest is headroom.
RESERVED_DESCRIPTORS = 128
UNLIMITED_FALLBACK = 1 << 20  # Linux's default fs.nr_open: the most a soft limit can be when the hard one is unlimited


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; returns (before, after).

    Processes started afterwards (the ``--workers`` children) inherit it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_FALLBACK if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft, soft
        return soft, target
    return soft, soft


def connection_cap(configured: int, descriptor_limit: int, listeners: int = 1) -> int:
    """The configured cap, lowered so that connections leave ``RESERVED_DESCRIPTORS`` free.

    With more than one port (``listeners``: HTTP and gRPC), each gets an equal
    share of what is left, so a flood on one cannot take the other's descriptors.
    """
    if descriptor_limit == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, (descriptor_limit - RESERVED_DESCRIPTORS) // listeners))
