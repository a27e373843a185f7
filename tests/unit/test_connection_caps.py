"""How the descriptor limit is shared between the HTTP and the gRPC ports."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest

from app.rpc.limits import connection_options
from app.server.descriptors import RESERVED_DESCRIPTORS, connection_cap
from app.settings import Settings


@pytest.fixture
def soft_limit_4096() -> Iterator[None]:
    """A soft descriptor limit of 4,096 (a common hard limit) for the test, restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip("hard descriptor limit below 4096")
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_two_ports_share_what_the_limit_leaves():
    """One port takes what the reserve leaves (up to the setting); two take half each."""
    room = 4096 - RESERVED_DESCRIPTORS
    assert connection_cap(4096, 4096) == room
    assert connection_cap(4096, 4096, listeners=2) == room // 2
    assert connection_cap(100, 4096, listeners=2) == 100
    assert connection_cap(4096, resource.RLIM_INFINITY, listeners=2) == 4096


def test_grpc_cap_is_its_share_when_the_limit_binds(soft_limit_4096):
    """Under a 4,096 limit with the default 4,096 connections the gRPC port gets half the room, not one."""
    options = dict(connection_options(Settings(grpc_port=0, max_connections=4096)))
    assert options["grpc.max_allowed_incoming_connections"] == (4096 - RESERVED_DESCRIPTORS) // 2
