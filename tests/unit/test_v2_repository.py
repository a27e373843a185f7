"""The repository extension's index and its request, as pure functions."""

from __future__ import annotations

import pytest

from app.errors import NotSupported, ValidationFailed
from app.v2.repository import NOT_LOADED, not_supported, parse_index_request, repository_index


def index(**overrides):
    args = {
        "versions": ["v1", "v2", "v3"],
        "aliases": {"production": "v2", "candidate": "v3"},
        "loaded": {"v2"},
        "serving": {"production": "v2", "candidate": "v3"},
        "refused": {},
    }
    return repository_index(**{**args, **overrides})


def test_versions_then_aliases_with_state():
    """Each version on disk under modelserve, then each alias; READY only where it answers inference."""
    assert index() == [
        {"name": "modelserve", "version": "v1", "state": "UNAVAILABLE", "reason": NOT_LOADED},
        {"name": "modelserve", "version": "v2", "state": "READY", "reason": ""},
        {"name": "modelserve", "version": "v3", "state": "UNAVAILABLE", "reason": NOT_LOADED},
        {"name": "candidate", "version": "v3", "state": "READY", "reason": ""},
        {"name": "production", "version": "v2", "state": "READY", "reason": ""},
    ]


def test_refused_alias_target_listed_beside_what_still_serves():
    """An alias moved to a version that failed to load lists the old one READY and the new one with the error."""
    got = index(
        aliases={"production": "v4"}, versions=["v2", "v4"], serving={"production": "v2"}, refused={"v4": "bad"}
    )
    assert got[-2:] == [
        {"name": "production", "version": "v2", "state": "READY", "reason": ""},
        {"name": "production", "version": "v4", "state": "UNAVAILABLE", "reason": "refused: bad"},
    ]
    assert got[1] == {"name": "modelserve", "version": "v4", "state": "UNAVAILABLE", "reason": "refused: bad"}


def test_not_ready_and_ready_filter():
    """While not ready nothing is READY (the reason says why); ready=true keeps only READY entries."""
    assert {e["reason"] for e in index(not_ready="not ready: warming up")} >= {"not ready: warming up"}
    assert all(e["state"] == "UNAVAILABLE" for e in index(not_ready="not ready: warming up"))
    assert [(e["name"], e["version"]) for e in index(ready_only=True)] == [
        ("modelserve", "v2"),
        ("candidate", "v3"),
        ("production", "v2"),
    ]
    assert index(ready_only=True, not_ready="draining") == []


@pytest.mark.parametrize(("body", "ready"), [(b"", False), (b"  ", False), (b"{}", False), (b'{"ready": true}', True)])
def test_index_request(body, ready):
    """The body is optional; ready is a JSON bool."""
    assert parse_index_request(body) is ready


@pytest.mark.parametrize("body", [b'{"ready": "yes"}', b'{"ready": 1}', b'{"readY": true}', b"[]", b"{"])
def test_bad_index_request_names_the_field(body):
    """A non-bool ready, an unknown key or a non-object is refused."""
    with pytest.raises(ValidationFailed):
        parse_index_request(body)


def test_load_unload_not_supported():
    """load/unload answer 400 saying to promote with the CLI."""
    err = not_supported("load", "production")
    assert isinstance(err, NotSupported) and err.status_code == 400
    assert "modelserve promote" in err.message
