"""Reading the outbox: ``GET /v1/notifications`` and ``NotificationService.find``.

Everyone reads the notifications addressed to them; the org's platform admins and
auditors read the org's (``notification.read`` on the ``Org``), never another org's;
status filters and paging are applied in SQL, newest first."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from meshclaw.accounts.service import Caller
from meshclaw.api.app import create_app
from meshclaw.errors import PermissionDenied, UserError
from meshclaw.notify.models import Notification
from meshclaw.notify.outbox import enqueue
from tests.conftest import World

BASE = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def add(world: World, org_id: str, recipients: list[str], subject: str, minute: int,
        status: str = "pending", error: str | None = None) -> str:  # fmt: skip
    with world.platform.db.session() as session:
        row = enqueue(
            session, org_id=org_id, kind="budget.soft_cap", resource="budget:b1",
            recipients=recipients, subject=subject, body=f"body of {subject}",
        )  # fmt: skip
        session.flush()
        session.execute(
            update(Notification)
            .where(Notification.id == row.id)
            .values(created_at=BASE + timedelta(minutes=minute), status=status, last_error=error)
        )
        return row.id


def seeded(world: World) -> tuple[Caller, Caller, dict[str, str]]:
    """Notifications of acme (alice's, bob's, one for both) and one of globex."""
    accounts = world.platform.accounts
    auditor = accounts.caller_for(accounts.create_user(world.alice.org_id, "audrey",
                                                       role="auditor"))  # fmt: skip
    globex = accounts.create_org("globex")
    mallory = accounts.caller_for(accounts.create_user(globex.id, "mallory",
                                                       role="platform_admin"))  # fmt: skip
    org, alice, bob = world.alice.org_id, world.alice.user_id, world.bob.user_id
    ids = {
        "alice_old": add(world, org, [alice], "alice old", 1, "sent"),
        "bob": add(world, org, [bob], "bob only", 2, "failed", "ConnectError: chat down"),
        "both": add(world, org, [alice, bob], "both", 3, "unsent", "no channel"),
        "alice_new": add(world, org, [alice], "alice new", 4),
        "globex": add(world, globex.id, [mallory.user_id], "globex", 5),
    }
    return auditor, mallory, ids


def test_everyone_reads_their_own_newest_first(make_world: Callable[..., World]) -> None:
    world = make_world()
    _, mallory, ids = seeded(world)
    service = world.platform.notifications
    mine = service.find(world.alice)
    assert [n.id for n in mine.notifications] == [ids["alice_new"], ids["both"], ids["alice_old"]]
    assert (mine.total, mine.next_offset, mine.scope) == (3, None, "mine")
    both = mine.notifications[1]
    assert sorted(both.recipient_handles) == ["alice", "bob"]
    assert dict(zip(both.recipients, both.recipient_handles, strict=True)) == {
        world.alice.user_id: "alice", world.bob.user_id: "bob",
    }  # fmt: skip
    assert (both.status, both.last_error) == ("unsent", "no channel")
    assert [n.id for n in service.find(world.bob).notifications] == [ids["both"], ids["bob"]]
    assert [n.id for n in service.find(mallory).notifications] == [ids["globex"]]


def test_status_filter_and_paging(make_world: Callable[..., World]) -> None:
    world = make_world()
    _, _, ids = seeded(world)
    service = world.platform.notifications
    first = service.find(world.alice, limit=2)
    assert [n.id for n in first.notifications] == [ids["alice_new"], ids["both"]]
    assert (first.total, first.next_offset) == (3, 2)
    rest = service.find(world.alice, limit=2, offset=2)
    assert [n.id for n in rest.notifications] == [ids["alice_old"]] and rest.next_offset is None
    sent = service.find(world.alice, status="sent")
    assert [n.id for n in sent.notifications] == [ids["alice_old"]] and sent.total == 1
    with pytest.raises(UserError, match="status must be one of pending, sent, failed, unsent"):
        service.find(world.alice, status="lost")
    with pytest.raises(UserError, match=r"limit must be 1\.\.200"):
        service.find(world.alice, limit=0)


def test_the_orgs_notifications_are_for_its_admins_and_auditors(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    auditor, mallory, ids = seeded(world)
    service = world.platform.notifications
    acme = [ids["alice_new"], ids["both"], ids["bob"], ids["alice_old"]]
    for reader in (world.admin, auditor):
        page = service.find(reader, scope="org")
        assert [n.id for n in page.notifications] == acme and page.scope == "org"
    assert [
        n.id for n in service.find(world.admin, scope="org", status="failed").notifications
    ] == [ids["bob"]]
    with pytest.raises(PermissionDenied, match=r"notification\.read denied"):
        service.find(world.alice, scope="org")
    assert [n.id for n in service.find(mallory, scope="org").notifications] == [ids["globex"]]


def test_the_api_pages_filters_and_refuses_with_reasons(make_world: Callable[..., World]) -> None:
    world = make_world()
    _, _, ids = seeded(world)
    accounts = world.platform.accounts
    alice = {"Authorization": f"Bearer {accounts.issue_token(world.alice.user_id, 't')}"}
    root = {"Authorization": f"Bearer {accounts.issue_token(world.admin.user_id, 't')}"}
    with TestClient(create_app(world.platform)) as client:
        mine = client.get("/v1/notifications", params={"limit": 1}, headers=alice)
        assert mine.status_code == 200, mine.text
        body = mine.json()
        assert [n["id"] for n in body["notifications"]] == [ids["alice_new"]]
        assert (body["total"], body["next_offset"], body["scope"]) == (3, 1, "mine")
        assert body["notifications"][0]["recipient_handles"] == ["alice"]
        org = client.get("/v1/notifications", params={"scope": "org", "status": "unsent"},
                         headers=root)  # fmt: skip
        assert [n["id"] for n in org.json()["notifications"]] == [ids["both"]]
        refused = client.get("/v1/notifications", params={"scope": "org"}, headers=alice)
        assert refused.status_code == 403
        assert "notification.read denied" in refused.json()["detail"]
        bad = client.get("/v1/notifications", params={"status": "lost"}, headers=alice)
        assert bad.status_code == 422 and bad.json()["errors"][0]["path"] == "query.status"
        assert client.get("/v1/notifications").status_code == 401
