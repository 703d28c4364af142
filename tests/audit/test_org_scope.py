"""The audit log never crosses orgs: org B's people never see, prove or redact org A's
records, and what spans the whole tree (verify, checkpoints, consistency) shows no record."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from meshclaw.api.app import create_app
from meshclaw.audit.bundle import verify_bundle
from meshclaw.audit.checkpoint import Verifier
from meshclaw.audit.merkle import verify_inclusion
from meshclaw.audit.sink import AuditRecord
from meshclaw.clock import utcnow
from meshclaw.store.models import AuditEvent
from tests.audit.conftest import AuditWorld

SECRET = "agent:acme-payroll"
"""The resource of org A's records: must never reach org B."""


@dataclass
class TwoOrgs:
    world: AuditWorld
    client: TestClient
    globex_id: str
    headers: dict[str, dict[str, str]]
    """By who: dave (acme auditor), root (acme admin), gus (globex auditor), mallory."""
    acme_seqs: list[int]
    globex_seqs: list[int]

    def get(self, who: str, path: str, **params: Any) -> Any:
        return self.client.get(path, params=params, headers=self.headers[who])

    def post(self, who: str, path: str, body: Any = None) -> Any:
        return self.client.post(path, json=body, headers=self.headers[who])

    def acme_ids(self) -> set[str]:
        """What of org A must never appear in an answer to org B."""
        w = self.world
        return {w.org_id, w.alice.user_id, w.admin.user_id, w.auditor.user_id, SECRET}


def _append(world: AuditWorld, org_id: str, actor: str, resource: str, n: int) -> list[int]:
    with world.platform.db.session() as session:
        for i in range(n):
            world.platform.audit.append(session, AuditRecord(
                action="agent.create", resource=f"{resource}/{i}", outcome="ok", org_id=org_id,
                actor_user_id=actor, details={"i": i},
            ))  # fmt: skip
    with world.platform.db.session() as session:
        seqs = select(AuditEvent.seq).where(AuditEvent.resource.like(f"{resource}/%"))
        return list(session.scalars(seqs.order_by(AuditEvent.seq)))


@pytest.fixture
def orgs(audit_world: Callable[..., AuditWorld]) -> Iterator[TwoOrgs]:
    world = audit_world(checkpoint_every=0, min_retention_days=0)
    accounts = world.platform.accounts
    globex = accounts.create_org("globex")
    gus = accounts.create_user(globex.id, "gus", role="auditor")
    mallory = accounts.create_user(globex.id, "mallory", role="platform_admin")
    users = {"dave": world.auditor.user_id, "root": world.admin.user_id, "gus": gus.id,
             "mallory": mallory.id}  # fmt: skip
    headers = {
        who: {"Authorization": f"Bearer {accounts.issue_token(user_id, 't')}"}
        for who, user_id in users.items()
    }
    acme = _append(world, world.org_id, world.alice.user_id, SECRET, 4)
    theirs = _append(world, globex.id, gus.id, "agent:globex", 4)
    with TestClient(create_app(world.platform)) as client:
        yield TwoOrgs(world, client, globex.id, headers, acme, theirs)


def _no_acme(orgs: TwoOrgs, text: str) -> None:
    leaked = sorted(i for i in orgs.acme_ids() if i in text)
    assert not leaked, f"org B was shown org A's {leaked}"


def test_org_b_never_reads_or_proves_org_a_records(orgs: TwoOrgs) -> None:
    assert orgs.post("gus", "/v1/audit/checkpoints").status_code == 201
    events = orgs.get("gus", "/v1/audit/events", limit=1000)
    assert events.status_code == 200
    assert {e["org_id"] for e in events.json()["entries"]} <= {orgs.globex_id, None}
    _no_acme(orgs, events.text)

    # another org's record answers exactly as a record that does not exist
    acme_seq = orgs.acme_seqs[0]
    foreign = orgs.get("gus", "/v1/audit/proofs/inclusion", seq=acme_seq)
    missing = orgs.get("gus", "/v1/audit/proofs/inclusion", seq=1_000_000)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["detail"] == missing.json()["detail"].replace("1000000", str(acme_seq))
    _no_acme(orgs, foreign.text)

    verifier = Verifier.from_vkey(orgs.get("gus", "/v1/audit/public-key").json()["verifier_key"])
    for who, seq in (("gus", orgs.globex_seqs[0]), ("dave", acme_seq)):
        proof = orgs.get(who, "/v1/audit/proofs/inclusion", seq=seq)
        assert proof.status_code == 200, proof.text
        body = proof.json()
        cp = verifier.open(body["checkpoint"])
        path = [bytes.fromhex(p) for p in body["proof"]]
        assert verify_inclusion(seq - 1, cp.size, bytes.fromhex(body["leaf_hash"]), path, cp.root)


def test_log_wide_answers_show_counts_and_hashes_only(orgs: TwoOrgs) -> None:
    first = orgs.post("mallory", "/v1/audit/checkpoints").json()["size"]
    _append(orgs.world, orgs.world.org_id, orgs.world.alice.user_id, SECRET + "-later", 2)
    second = orgs.post("mallory", "/v1/audit/checkpoints").json()["size"]
    for who in ("gus", "mallory"):
        for path, params in (
            ("/v1/audit/verify", {}),
            ("/v1/audit/checkpoints", {}),
            ("/v1/audit/proofs/consistency", {"old": first, "new": second}),
        ):
            answer = orgs.get(who, path, **params)
            assert answer.status_code == 200, (who, path, answer.text)
            _no_acme(orgs, answer.text)
    # a broken record of org A: org B learns where the log breaks, not what the record was
    with orgs.world.platform.db.session() as session:
        event = session.get(AuditEvent, orgs.acme_seqs[1])
        assert event is not None
        event.details = {"i": 99}
    report = orgs.get("gus", "/v1/audit/verify")
    assert report.status_code == 200 and report.json()["ok"] is False
    assert report.json()["problem"]["seq"] == orgs.acme_seqs[1]
    _no_acme(orgs, report.text)


def test_org_b_redacts_only_its_own_records_and_every_view_still_verifies(
    orgs: TwoOrgs, tmp_path: Path
) -> None:
    before = utcnow().isoformat()
    redacted = orgs.post("mallory", "/v1/audit/redact", {"before": before})
    assert redacted.status_code == 200, redacted.text
    with orgs.world.platform.db.session() as session:
        rows = {e.seq: e for e in session.scalars(select(AuditEvent))}
    assert all(rows[s].redacted_at is None and rows[s].resource.startswith(SECRET)
               for s in orgs.acme_seqs)  # fmt: skip
    assert all(rows[s].redacted_at is not None for s in orgs.globex_seqs)
    assert redacted.json()["redacted"] == sum(
        1 for e in rows.values() if e.org_id == orgs.globex_id and e.redacted_at is not None
    )
    assert orgs.get("dave", "/v1/audit/verify").json()["ok"] is True

    # each org's export verifies offline: its own redactions are covered by its own
    # audit.redact record; the other org's records are withheld, redacted or not
    verifier = Verifier.from_vkey(orgs.get("gus", "/v1/audit/public-key").json()["verifier_key"])
    for who in ("dave", "gus"):
        export = orgs.get(who, "/v1/audit/export")
        assert export.status_code == 200
        bundle = tmp_path / f"{who}.jsonl"
        bundle.write_text(export.text)
        report = verify_bundle(bundle, verifier)
        assert report.ok, (who, report.problem)
        lines = [json.loads(line) for line in export.text.splitlines()[1:]]
        bodies = {line["seq"]: line["body"] for line in lines if line.get("type") == "record"}
        own, other = (orgs.acme_seqs, orgs.globex_seqs) if who == "dave" else (orgs.globex_seqs, [])
        assert {bodies[s] for s in other} <= {"withheld"}
        assert {bodies[s] for s in own} == ({"present"} if who == "dave" else {"redacted"})
    _no_acme(orgs, orgs.get("gus", "/v1/audit/export").text)

    # then org A applies its own retention: the whole log still verifies
    assert (
        orgs.post("root", "/v1/audit/redact", {"before": utcnow().isoformat()}).status_code == 200
    )
    report = orgs.get("dave", "/v1/audit/verify").json()
    assert report["ok"] is True and report["redacted"] >= len(orgs.acme_seqs + orgs.globex_seqs)


def test_refusals_are_cedar_decisions(orgs: TwoOrgs) -> None:
    reading = orgs.get("mallory", "/v1/audit/events")
    assert reading.status_code == 403
    assert "audit.read denied" in reading.json()["detail"]
    redacting = orgs.post("gus", "/v1/audit/redact", {"before": "2000-01-01T00:00:00Z"})
    assert redacting.status_code == 403
    assert "audit.redact denied" in redacting.json()["detail"]


def test_a_withheld_record_is_still_vouched_for_by_the_signed_roots(
    orgs: TwoOrgs, tmp_path: Path
) -> None:
    verifier = Verifier.from_vkey(orgs.get("gus", "/v1/audit/public-key").json()["verifier_key"])
    lines = orgs.get("gus", "/v1/audit/export").text.splitlines()
    victim = next(i for i, line in enumerate(lines) if '"body":"withheld"' in line)
    record = json.loads(lines[victim])
    assert set(record) == {"type", "seq", "body", "leaf_hash"}  # nothing of org A's record
    # a version 1 bundle (withheld records with their headers) is still read
    header = json.loads(lines[0]) | {"v": 1}
    old = [json.dumps(header), *lines[1:victim], json.dumps(record | {"org_id": "x"}),
           *lines[victim + 1 :]]  # fmt: skip
    (tmp_path / "v1.jsonl").write_text("\n".join(old) + "\n")
    assert verify_bundle(tmp_path / "v1.jsonl", verifier).ok
    record["leaf_hash"] = "00" * 32
    lines[victim] = json.dumps(record)
    bundle = tmp_path / "altered.jsonl"
    bundle.write_text("\n".join(lines) + "\n")
    report = verify_bundle(bundle, verifier)
    assert not report.ok and report.problem is not None
    assert report.problem.kind == "checkpoint" and report.problem.range is not None
    assert report.problem.range[0] <= record["seq"] <= report.problem.range[1]
