"""A published document that is deleted later is an undone outcome, not a failing read.

An agent run writes a document with the org's built-in docs connector on a real WsgiDAV
share and earns a verified, accepted ``doc_published`` outcome. The scheduled re-check
reads it again through the gateway as the ended run (``Platform.recheck_outcomes``):
once the document is gone, the share's answer (``exists: false``) undoes the outcome
and its credit; while the share cannot be reached, the read fails and the outcome stays
due (the grace finding's path), never undone.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from meshclaw.clock import utcnow
from meshclaw.outcomes import InMemoryLookup
from meshclaw.outcomes.service import OutcomeInfo
from meshclaw.outcomes.types import DEFAULT_TYPES
from meshclaw.outcomes.verify import VERIFIERS, Evidence
from meshclaw.providers.scripted import ScriptedServer
from meshclaw.store.models import AuditEvent
from tests.conftest import World, agent_yaml
from tests.connectors.davpeers import DavShare, start_wsgidav

DOC = "handbook/deploys.md"
SPEC = (
    agent_yaml(tools=(("docs.write_document", "write"), ("docs.read_document", "read")),
               timeout=120)
    + "outcomes:\n  - {type: doc_published}\n"
)  # fmt: skip


@pytest.fixture
def share(tmp_path: Path) -> Iterator[DavShare]:
    with start_wsgidav(tmp_path / "dav") as dav:
        (dav.root / "handbook").mkdir()
        yield dav


def published(
    share: DavShare,
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    make_world: Callable[..., World],
    database_url: str | None = None,
) -> tuple[World, OutcomeInfo]:
    """Alice's agent wrote the page with the org's docs connector (her delegated share
    login from the vault); a reader outside the org accepted it."""
    write = {"path": DOC, "content": "# Deploys\nAsk in #deploys.\n"}
    model = scripted({"turns": [
        {"reply": {"tool_calls": [{"name": "docs.write_document", "arguments": write}]}},
        {"reply": {"content": "published"}},
    ]})  # fmt: skip
    world = make_world(model.base_url, database_url)
    platform, org = world.platform, world.alice.org_id
    platform.connector_admin.add(world.admin, "docs", {
        "command": sys.executable, "args": ["-m", "meshclaw.connectors.servers", "docs"],
        "env": {"MESHCLAW_DOCS_URL": share.url}, "credentials": "dav",
        "credential_env": {"MESHCLAW_DOCS_USERNAME": "username",
                           "MESHCLAW_DOCS_PASSWORD": "password"},
        "approval": "first_use",
    })  # fmt: skip
    login = {"username": share.username, "password": share.password}
    platform.vault.put("dav", login, org_id=org, user_id=world.alice.user_id)
    world.save_agent(SPEC)
    run = world.run("helper")
    assert run.status == "succeeded", run.error
    (outcome,) = platform.outcomes.list_outcomes(world.alice)
    assert (outcome.type, outcome.verified, outcome.ref) == ("doc_published", True, f"/{DOC}")
    token = platform.outcomes.link_for(outcome.id, "external:reader@example.org")
    assert platform.outcomes.feedback_by_link(token, "accepted").state == "credited"
    return world, outcome


def recheck(world: World) -> Any:
    """The re-checks due three days on, as the scheduler runs them."""
    hours = DEFAULT_TYPES["doc_published"].durability or timedelta()
    later: datetime = utcnow() + hours + timedelta(minutes=1)
    return asyncio.run(world.platform.recheck_outcomes(now=later))


def score(world: World) -> float:
    mine = world.platform.analytics.person(world.alice, world.alice.user_id)
    return float(mine["score"])


def test_a_deleted_document_undoes_its_outcome_and_its_credit(
    share: DavShare,
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    make_world: Callable[..., World],
    database_url: str,
) -> None:
    world, outcome = published(share, scripted, make_world, database_url)
    assert score(world) > 0

    (share.root / DOC).unlink()  # someone deletes the page on the share
    summary = recheck(world)

    assert (summary.checked, summary.undone) == (1, 1)
    after = world.platform.outcomes.get(world.alice, outcome.id)
    assert after.state == "undone"
    assert [(f.by, f.verdict) for f in after.feedback][-1] == ("system", "reverted")
    assert after.durability_due_at is None
    assert after.verification["durability"]["status"] == "undone"
    # What the read showed is kept with the result and in the audit record.
    assert after.verification["durability"]["reason"] == f"document /{DOC} was deleted"
    assert "recheck_failing" not in after.verification
    assert score(world) == 0
    with world.platform.db.session() as session:
        audited = session.execute(
            select(AuditEvent.outcome, AuditEvent.details).where(
                AuditEvent.action == "outcome.recheck"
            )
        ).all()
    assert [(o, d.get("reason")) for o, d in audited] == [
        ("undone", f"document /{DOC} was deleted")
    ]


def test_an_unreachable_share_is_a_failed_read_not_a_deletion(
    tmp_path: Path,
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    make_world: Callable[..., World],
) -> None:
    with start_wsgidav(tmp_path / "dav") as dav:
        (dav.root / "handbook").mkdir()
        world, outcome = published(dav, scripted, make_world)
    before = score(world)
    # The share's server is stopped: its port refuses connections.

    summary = recheck(world)

    assert (summary.checked, summary.undone) == (0, 0)
    after = world.platform.outcomes.get(world.alice, outcome.id)
    assert after.state == "credited" and after.feedback[-1].verdict == "accepted"
    assert after.durability_due_at is not None  # due again, after a back-off
    failing = after.verification["recheck_failing"]
    assert failing["tries"] == 1 and "cannot reach WebDAV" in failing["last_error"]
    assert after.verification["durability"]["status"] == "due"
    assert score(world) == before


async def _verify(record: dict[str, Any]) -> Any:
    path = f"/{DOC}"
    lookup = InMemoryLookup(answers={("docs.read_document", path): record})
    evidence = Evidence(type=DEFAULT_TYPES["doc_published"], tool="docs.write_document",
                        owner="alice", arguments={"path": DOC},
                        data={"path": path, "revision": '"r1"'})  # fmt: skip
    return await VERIFIERS["doc_published"].verify(evidence, lookup)


def test_a_document_gone_before_its_verification_read_is_not_verified_and_says_why() -> None:
    gone = asyncio.run(_verify({"path": f"/{DOC}", "exists": False}))
    there = asyncio.run(_verify({"path": f"/{DOC}", "exists": True, "etag": '"r1"',
                                 "content": "# Deploys"}))  # fmt: skip
    third_party = asyncio.run(_verify({"id": "kb-7", "published": True, "deleted": True}))

    assert (gone.verified, gone.detail) == (False, {"reason": f"document /{DOC} was deleted"})
    assert there.verified and there.detail == {"checked": f'/{DOC} is there at revision "r1"'}
    assert third_party.detail == {"reason": "document kb-7 was deleted"}
