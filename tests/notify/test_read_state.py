"""Read state: each recipient marks their own copy of a notification read or unread (or
all of theirs read); nobody else can, not even who may read the org's, and another
org's notification is not found. The ``unread`` filter and counts, the org view's
``recipient`` filter, and the migration that gives existing notifications their inbox
rows. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import select

from meshclaw.accounts.service import Caller
from meshclaw.errors import NotFoundError, PermissionDenied, UserError
from meshclaw.notify.models import NotificationRecipient
from meshclaw.notify.outbox import enqueue
from meshclaw.store.db import alembic_config, make_engine
from tests.conftest import World
from tests.notify.test_notification_reading import add, seeded


@pytest.fixture
def world(make_world: Callable[..., World], database_url: str) -> World:
    return make_world(database_url=database_url)


def unread_ids(world: World, who: Caller) -> list[str]:
    return [n.id for n in world.platform.notifications.find(who, unread=True).notifications]


def test_a_recipient_marks_her_copy_read_and_unread_again(world: World) -> None:
    _, _, ids = seeded(world)
    service = world.platform.notifications
    alice, bob = world.alice, world.bob
    before = service.find(alice)
    assert [n.read for n in before.notifications] == [False, False, False]
    assert (before.unread, service.unread_count(alice), service.unread_count(bob)) == (3, 3, 2)

    marked = service.mark_read(alice, ids["both"])
    assert marked.id == ids["both"] and marked.read is True and marked.read_at is not None
    assert marked.subject == "both" and sorted(marked.recipient_handles) == ["alice", "bob"]
    again = service.mark_read(alice, ids["both"])
    assert again.read_at == marked.read_at  # marking it read again keeps when it was read
    assert service.unread_count(alice) == 2
    # Bob's copy of the same notification is his own: still unread.
    assert service.unread_count(bob) == 2 and ids["both"] in unread_ids(world, bob)
    mine = {n.id: n.read for n in service.find(alice).notifications}
    assert mine == {ids["alice_new"]: False, ids["both"]: True, ids["alice_old"]: False}

    unmarked = service.mark_read(alice, ids["both"], read=False)
    assert (unmarked.read, unmarked.read_at) == (False, None)
    assert service.unread_count(alice) == 3


def test_unread_filter_and_counts_combine_with_status_and_paging(world: World) -> None:
    _, _, ids = seeded(world)
    service = world.platform.notifications
    service.mark_read(world.alice, ids["alice_new"])
    page = service.find(world.alice, unread=True, limit=1)
    assert [n.id for n in page.notifications] == [ids["both"]]
    assert (page.total, page.unread, page.next_offset) == (2, 2, 1)
    assert unread_ids(world, world.alice) == [ids["both"], ids["alice_old"]]
    everything = service.find(world.alice)
    assert (everything.total, everything.unread) == (3, 2)
    sent = service.find(world.alice, status="sent", unread=True)
    assert [n.id for n in sent.notifications] == [ids["alice_old"]] and sent.unread == 1
    assert service.find(world.alice, status="pending", unread=True).total == 0


def test_read_all_marks_only_the_callers_own(world: World) -> None:
    _, mallory, ids = seeded(world)
    service = world.platform.notifications
    assert service.mark_all_read(world.alice) == 3
    assert service.unread_count(world.alice) == 0 and unread_ids(world, world.alice) == []
    assert service.mark_all_read(world.alice) == 0  # nothing left to mark
    assert unread_ids(world, world.bob) == [ids["both"], ids["bob"]]
    assert service.unread_count(mallory) == 1
    # An admin's "all" is hers only: she is no recipient here, so nothing changes.
    assert service.mark_all_read(world.admin) == 0
    assert service.unread_count(world.bob) == 2


def test_read_all_through_the_newest_seen_leaves_later_ones_unread(world: World) -> None:
    _, _, ids = seeded(world)
    service = world.platform.notifications
    org, alice, bob = world.alice.org_id, world.alice.user_id, world.bob.user_id
    seen = service.find(world.alice)  # the page as drawn: alice new, both, alice old
    assert seen.notifications[0].id == ids["alice_new"]
    arrived = add(world, org, [alice, bob], "arrived after the page", 5)
    assert service.mark_all_read(world.alice, through=seen.notifications[0].id) == 3
    assert unread_ids(world, world.alice) == [arrived]
    assert unread_ids(world, world.bob) == [arrived, ids["both"], ids["bob"]]  # his own

    # A bound in the middle marks it and those before it, not those after it.
    service.mark_read(world.alice, ids["alice_new"], read=False)
    service.mark_read(world.alice, ids["alice_old"], read=False)
    assert service.mark_all_read(world.alice, through=ids["both"]) == 1  # alice old
    assert unread_ids(world, world.alice) == [arrived, ids["alice_new"]]
    assert service.mark_all_read(world.alice) == 2  # no bound: every one, as before
    assert unread_ids(world, world.alice) == []


def test_read_all_through_orders_like_the_list_when_times_tie(world: World) -> None:
    seeded(world)
    service = world.platform.notifications
    org, alice = world.alice.org_id, world.alice.user_id
    # Same created_at: the list orders by id next, and so does the bound.
    first, second = sorted(add(world, org, [alice], f"tie {n}", 7) for n in range(2))
    listed = [n.id for n in service.find(world.alice, limit=2).notifications]
    assert listed == [second, first]
    assert service.mark_all_read(world.alice, through=first) == 4  # first + the seeded 3
    assert unread_ids(world, world.alice) == [second]
    assert service.mark_all_read(world.alice, through=second) == 1


def test_read_all_through_someone_elses_is_not_found_and_marks_nothing(world: World) -> None:
    _, mallory, ids = seeded(world)
    service = world.platform.notifications
    for who, through in [
        (world.alice, ids["bob"]),  # a colleague's
        (world.admin, ids["alice_new"]),  # may read the org's, still not hers
        (world.alice, ids["globex"]),  # another org's
        (mallory, ids["alice_new"]),
        (world.alice, "ntf_nothing"),
    ]:
        with pytest.raises(NotFoundError) as raised:
            service.mark_all_read(who, through=through)
        assert str(raised.value) == f"no notification {through!r} addressed to you"
    assert service.unread_count(world.alice) == 3 and service.unread_count(mallory) == 1


def test_the_unread_inbox_counts_and_names_the_newest_unread(world: World) -> None:
    auditor, _, ids = seeded(world)
    service = world.platform.notifications
    inbox = service.unread_inbox(world.alice)
    assert inbox is not None and (inbox.count, inbox.newest) == (3, ids["alice_new"])
    service.mark_read(world.alice, ids["alice_new"])
    inbox = service.unread_inbox(world.alice)
    assert inbox is not None and (inbox.count, inbox.newest) == (2, ids["both"])
    empty = service.unread_inbox(auditor)
    assert empty is not None and (empty.count, empty.newest) == (0, None)


def test_nobody_marks_someone_elses_and_another_orgs_is_not_found(world: World) -> None:
    auditor, mallory, ids = seeded(world)
    service = world.platform.notifications
    attempts = [
        (world.bob, ids["alice_new"]),  # a colleague's
        (world.admin, ids["alice_new"]),  # may read the org's, still not hers to mark
        (auditor, ids["both"]),
        (mallory, ids["alice_new"]),  # another org's admin
        (world.alice, ids["globex"]),  # another org's, by id
        (world.alice, "ntf_nothing"),
    ]
    for who, notification_id in attempts:
        for read in (True, False):
            with pytest.raises(NotFoundError) as raised:
                service.mark_read(who, notification_id, read=read)
            # The same words whether it exists or not: nothing is revealed.
            assert str(raised.value) == f"no notification {notification_id!r} addressed to you"
    assert service.unread_count(world.alice) == 3 and service.unread_count(mallory) == 1


def test_the_org_view_shows_the_callers_read_state_and_filters_by_recipient(
    world: World,
) -> None:
    auditor, mallory, ids = seeded(world)
    org = world.alice.org_id
    for_audrey = add(world, org, [auditor.user_id, world.bob.user_id], "for audrey", 6)
    service = world.platform.notifications
    page = service.find(auditor, scope="org")
    reads = {n.id: n.read for n in page.notifications}
    assert reads[for_audrey] is False and reads[ids["alice_new"]] is None  # not hers
    assert page.unread == 1 and service.find(auditor, scope="org", unread=True).total == 1
    service.mark_read(auditor, for_audrey)
    assert service.find(auditor, scope="org").unread == 0

    bobs = [for_audrey, ids["both"], ids["bob"]]
    for name in ("bob", world.bob.user_id, " bob "):
        found = service.find(world.admin, scope="org", recipient=name)
        assert [n.id for n in found.notifications] == bobs and found.total == 3
    failed = service.find(auditor, scope="org", recipient="bob", status="failed")
    assert [n.id for n in failed.notifications] == [ids["bob"]]
    with pytest.raises(UserError, match="nobody in your org has the handle or user id 'zed'"):
        service.find(world.admin, scope="org", recipient="zed")
    # Another org's person is nobody here, by handle or by id.
    for name in ("mallory", mallory.user_id):
        with pytest.raises(UserError, match="nobody in your org"):
            service.find(world.admin, scope="org", recipient=name)
    with pytest.raises(UserError, match="use it with scope org"):
        service.find(world.admin, recipient="bob")
    # Who may not read the org's learns nothing, not even whether the name exists.
    for name in ("bob", "zed"):
        with pytest.raises(PermissionDenied, match=r"notification\.read denied"):
            service.find(world.alice, scope="org", recipient=name)


def test_only_people_of_the_org_get_an_inbox_row(world: World) -> None:
    _, mallory, _ = seeded(world)
    with world.platform.db.session() as session:
        row = enqueue(
            session, org_id=world.alice.org_id, kind="budget.soft_cap", resource="budget:b9",
            recipients=[world.alice.user_id, mallory.user_id, "usr_gone", world.alice.user_id],
            subject="mixed", body="b",
        )  # fmt: skip
        notification_id = row.id
    with world.platform.db.session() as session:
        inbox = session.scalars(
            select(NotificationRecipient.user_id).where(
                NotificationRecipient.notification_id == notification_id
            )
        ).all()
    assert inbox == [world.alice.user_id]
    (view,) = [n for n in world.platform.notifications.find(world.admin, scope="org").notifications
               if n.id == notification_id]  # fmt: skip
    # Delivery still reads the list as written.
    assert sorted(view.recipients) == sorted([world.alice.user_id, mallory.user_id, "usr_gone"])
    assert world.platform.notifications.unread_count(mallory) == 1  # only globex's own


def test_the_migration_gives_existing_notifications_unread_inbox_rows(database_url: str) -> None:
    when = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    orgs = sa.table("orgs", *(sa.column(c) for c in ("id", "name", "created_at")),
                    sa.column("settings", sa.JSON))  # fmt: skip
    users = sa.table("users", *(sa.column(c) for c in (
        "id", "org_id", "handle", "display_name", "role", "created_at")))  # fmt: skip
    notifications = sa.table(
        "notifications",
        *(sa.column(c) for c in ("id", "org_id", "kind", "resource", "subject", "body",
                                 "status", "attempts", "due_at", "created_at")),
        sa.column("recipients", sa.JSON),
    )  # fmt: skip
    inbox = sa.table(
        "notification_recipients",
        *(sa.column(c) for c in ("notification_id", "user_id", "org_id", "read_at")),
    )
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(database_url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "notify_0001")
            conn.execute(orgs.insert(), [{"id": o, "name": o, "settings": {}, "created_at": when}
                                         for o in ("org_a", "org_b")])  # fmt: skip
            conn.execute(users.insert(), [
                {"id": u, "org_id": o, "handle": u, "display_name": "", "role": "employee",
                 "created_at": when}
                for u, o in (("usr_a1", "org_a"), ("usr_a2", "org_a"), ("usr_b1", "org_b"))
            ])  # fmt: skip
            conn.execute(notifications.insert(), [
                {"id": i, "org_id": o, "kind": "budget.soft_cap", "resource": "budget:x",
                 "subject": i, "body": "", "status": "sent", "attempts": 1, "due_at": when,
                 "created_at": when, "recipients": people}
                for i, o, people in (
                    ("ntf_1", "org_a", ["usr_a1", "usr_a2"]),
                    # Someone gone, and an id of another org: neither gets a row.
                    ("ntf_2", "org_a", ["usr_a2", "usr_gone", "usr_b1"]),
                    ("ntf_3", "org_b", ["usr_b1"]),
                    ("ntf_4", "org_b", []),
                )
            ])  # fmt: skip
            command.upgrade(cfg, "notify_read_state_0001")
            rows = conn.execute(
                sa.select(inbox).order_by(inbox.c.notification_id, inbox.c.user_id)
            ).all()
            assert [tuple(r) for r in rows] == [
                ("ntf_1", "usr_a1", "org_a", None),
                ("ntf_1", "usr_a2", "org_a", None),
                ("ntf_2", "usr_a2", "org_a", None),
                ("ntf_3", "usr_b1", "org_b", None),
            ]
            command.downgrade(cfg, "notify_0001")
            assert "notification_recipients" not in sa.inspect(conn).get_table_names()
    finally:
        engine.dispose()
