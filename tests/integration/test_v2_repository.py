"""The V2 repository extension in-process: the index behind the admin token, load/unload refused with 400."""

from __future__ import annotations

import pytest

from app.main import create_app
from tests.support.workspace import serving

TOKEN = "repository-admin-token-" + "x" * 16
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def client(trained):
    with serving(create_app(trained.settings(admin_token=TOKEN))) as c:
        yield c


def test_index_lists_versions_and_aliases(client):
    """Every version on disk under modelserve and every alias, READY where inference answers, with reasons."""
    r = client.post("/v2/repository/index", headers=AUTH)
    assert r.status_code == 200, r.text
    entries = {(e["name"], e["version"]): e for e in r.json()}
    assert entries[("modelserve", "v2")] == {"name": "modelserve", "version": "v2", "state": "READY", "reason": ""}
    assert entries[("production", "v2")]["state"] == "READY"
    assert entries[("candidate", "v3")]["state"] == "READY"
    assert (
        entries[("modelserve", "v1")]["state"] == "UNAVAILABLE"
        and "not loaded" in entries[("modelserve", "v1")]["reason"]
    )
    for (name, version), e in entries.items():
        if e["state"] == "READY":
            path = f"/v2/models/{name}/versions/{version}/ready"
            assert client.get(path).status_code == 200, path


def test_index_ready_filter(client):
    """{"ready": true} keeps only READY entries; a bad body is a 400 naming the field."""
    r = client.post("/v2/repository/index", headers=AUTH, json={"ready": True})
    assert r.status_code == 200 and r.json() and all(e["state"] == "READY" for e in r.json())
    r = client.post("/v2/repository/index", headers=AUTH, json={"ready": "yes"})
    assert r.status_code == 400 and "ready" in r.json()["error"]


def test_index_needs_the_admin_token(client, trained):
    """Without the token it is 401; with no token configured the index does not exist (404), like /admin."""
    assert client.post("/v2/repository/index").status_code == 401
    assert client.post("/v2/repository/index", headers={"authorization": "Bearer wrong"}).status_code == 401
    with serving(create_app(trained.settings())) as open_client:
        assert open_client.post("/v2/repository/index", headers=AUTH).status_code == 404


@pytest.mark.parametrize("action", ["load", "unload"])
def test_load_and_unload_not_supported(client, action):
    """load/unload answer 400 in the error shape, saying to promote with the CLI."""
    r = client.post(f"/v2/repository/models/production/{action}", json={})
    assert r.status_code == 400
    body = r.json()
    assert "modelserve promote" in body["error"] and body["detail"][0]["type"] == "not_supported"


def test_server_metadata_names_the_extension(client):
    """GET /v2 lists model_repository among the extensions."""
    assert "model_repository" in client.get("/v2").json()["extensions"]
