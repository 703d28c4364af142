"""``/v1/audit`` in-process: role checks, paging, proofs, verify, export, redaction input."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from meshclaw.api.app import create_app
from meshclaw.audit.bundle import verify_bundle
from meshclaw.audit.checkpoint import Verifier
from meshclaw.audit.merkle import verify_inclusion
from tests.audit.conftest import AuditWorld, append_many


@pytest.fixture
def world(audit_world: Callable[..., AuditWorld]) -> AuditWorld:
    world = audit_world(checkpoint_every=10)
    append_many(world.platform, 25, org_id=world.org_id)
    return world


@pytest.fixture
def client(world: AuditWorld) -> Iterator[TestClient]:
    with TestClient(create_app(world.platform)) as client:
        yield client


def _auth(world: AuditWorld, who: str) -> dict[str, str]:
    caller = getattr(world, who)
    token = world.platform.accounts.issue_token(caller.user_id, "test")
    return {"Authorization": f"Bearer {token}"}


def test_roles_are_enforced_on_every_audit_route(client: TestClient, world: AuditWorld) -> None:
    assert client.get("/v1/audit/events").status_code == 401
    alice, admin = _auth(world, "alice"), _auth(world, "admin")
    for path in (
        "/v1/audit/events",
        "/v1/audit/verify",
        "/v1/audit/export",
        "/v1/audit/proofs/inclusion?seq=1",
    ):
        r = client.get(path, headers=alice)
        assert r.status_code == 403, path
        assert r.headers["content-type"] == "application/problem+json"
    assert client.get("/v1/audit/events", headers=admin).status_code == 403
    assert client.get("/v1/audit/verify", headers=admin).json()["ok"] is True
    r = client.post("/v1/audit/redact", json={"before": "2000-01-01T00:00:00Z"}, headers=alice)
    assert r.status_code == 403


def test_auditor_pages_proves_verifies_and_exports(
    client: TestClient, world: AuditWorld, tmp_path: Path
) -> None:
    h = _auth(world, "auditor")
    first = client.get("/v1/audit/events", params={"action": "tool.*", "limit": 3}, headers=h)
    assert first.status_code == 200
    body = first.json()
    assert [e["action"] for e in body["entries"]] == ["tool.write"] * 3
    second = client.get(
        "/v1/audit/events",
        params={"action": "tool.*", "limit": 3, "after": body["next_after"]},
        headers=h,
    ).json()
    assert second["entries"][0]["seq"] > body["entries"][-1]["seq"]
    assert client.get("/v1/audit/events", params={"limit": 0}, headers=h).status_code == 422

    vkey = client.get("/v1/audit/public-key", headers=h).json()["verifier_key"]
    verifier = Verifier.from_vkey(vkey)
    proof = client.get("/v1/audit/proofs/inclusion", params={"seq": 5}, headers=h).json()
    cp = verifier.open(proof["checkpoint"])
    assert verify_inclusion(
        4,
        cp.size,
        bytes.fromhex(proof["leaf_hash"]),
        [bytes.fromhex(p) for p in proof["proof"]],
        cp.root,
    )
    signed = client.post("/v1/audit/checkpoints", headers=h)
    assert signed.status_code == 201
    cons = client.get(
        "/v1/audit/proofs/consistency",
        params={"old": 10, "new": signed.json()["size"]},
        headers=h,
    )
    assert cons.status_code == 200 and cons.json()["proof"]

    # past the end of the log: a 400 naming the end, and no export recorded or signed
    signed_before = len(client.get("/v1/audit/checkpoints", headers=h).json())
    past = client.get("/v1/audit/export", params={"since_seq": 10**6}, headers=h)
    assert past.status_code == 400 and "past the end of the log" in past.json()["detail"]
    assert len(client.get("/v1/audit/checkpoints", headers=h).json()) == signed_before

    export = client.get("/v1/audit/export", params={"since_seq": 3}, headers=h)
    assert export.status_code == 200
    bundle = tmp_path / "b.jsonl"
    bundle.write_text(export.text)
    assert json.loads(export.text.splitlines()[0])["start_size"] == 2
    report = verify_bundle(bundle, verifier)
    assert report.ok, report.problem

    r = client.post(
        "/v1/audit/redact", json={"before": "2000-01-01T00:00:00Z"}, headers=_auth(world, "admin")
    )
    assert r.status_code == 200 and r.json()["redacted"] == 0
    r = client.post(
        "/v1/audit/redact", json={"before": "2999-01-01T00:00:00Z"}, headers=_auth(world, "admin")
    )
    assert r.status_code == 400 and "retention" in r.json()["detail"]
    assert client.get("/v1/audit/verify", headers=h).json()["ok"] is True


def test_an_auditor_pages_backwards_from_the_newest_record(
    client: TestClient, world: AuditWorld
) -> None:
    h = _auth(world, "auditor")
    forwards: list[int] = []
    after = 0
    while True:
        page = client.get(
            "/v1/audit/events", params={"action": "tool.*", "limit": 2, "after": after}, headers=h
        ).json()
        forwards += [e["seq"] for e in page["entries"]]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    backwards: list[int] = []
    before = 10**9  # past the head: the newest page first
    while before is not None:
        page = client.get(
            "/v1/audit/events", params={"action": "tool.*", "limit": 2, "before": before},
            headers=h,
        ).json()  # fmt: skip
        seqs = [e["seq"] for e in page["entries"]]
        assert seqs == sorted(seqs)  # each page reads oldest first
        backwards = seqs + backwards
        before = page["next_before"]
    assert backwards == forwards and len(forwards) >= 3
    both = client.get("/v1/audit/events", params={"after": 1, "before": 5}, headers=h)
    assert both.status_code == 400 and "before" in both.json()["detail"]
