"""``meshclaw notifications ...`` end to end: the real Typer app on the world's SQLite
store, as alice (her own), bob, and the platform admin (the org's)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import Result

from tests.cli.conftest import WorldCli
from tests.conftest import World
from tests.notify.test_notification_reading import seeded


@pytest.fixture
def ids(world: World) -> dict[str, str]:
    return seeded(world)[2]


def ok_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def flat(text: str) -> str:
    return " ".join(text.split())


def test_listing_mine_unread_and_paging(world_cli: WorldCli, ids: dict[str, str]) -> None:
    page = ok_json(world_cli("notifications", "list", "--json"))
    assert [n["id"] for n in page["notifications"]] == [ids["alice_new"], ids["both"],
                                                         ids["alice_old"]]  # fmt: skip
    assert (page["total"], page["unread"], page["scope"]) == (3, 3, "mine")
    assert all(n["read"] is False for n in page["notifications"])
    first = ok_json(world_cli("notifications", "list", "--limit", "1", "--status", "unsent",
                             "--json"))  # fmt: skip
    assert [n["id"] for n in first["notifications"]] == [ids["both"]]
    assert first["next_offset"] is None
    table = world_cli("notifications", "list", "--limit", "2")
    assert table.exit_code == 0, table.output
    text = flat(table.stdout)
    assert "alice new" in text and "alice old" not in text
    assert "3 notification(s), 3 unread; next page: --offset 2" in text
    bad = world_cli("notifications", "list", "--status", "lost")
    assert bad.exit_code == 2 and "status must be one of pending, sent, failed, unsent" in flat(
        bad.stderr
    )
    assert world_cli("notifications", "list", "--limit", "0").exit_code == 2


def test_marking_read_unread_and_all(
    world_cli: WorldCli, world: World, ids: dict[str, str]
) -> None:
    marked = ok_json(world_cli("notifications", "read", ids["alice_new"], ids["both"], "--json"))
    assert [n["id"] for n in marked["notifications"]] == [ids["alice_new"], ids["both"]]
    assert all(n["read"] for n in marked["notifications"]) and marked["not_found"] == []
    unread = ok_json(world_cli("notifications", "list", "--unread", "--json"))
    assert [n["id"] for n in unread["notifications"]] == [ids["alice_old"]]
    again = world_cli("notifications", "unread", ids["both"])
    assert again.exit_code == 0 and f"{ids['both']}: unread" in flat(again.stdout)
    assert world.platform.notifications.unread_count(world.alice) == 2
    # Another person's, or another org's, is not found; the rest are still marked.
    mixed = world_cli("notifications", "read", ids["bob"], ids["alice_old"], ids["globex"])
    assert mixed.exit_code == 2
    assert f"{ids['alice_old']}: read" in flat(mixed.stdout)
    for other in (ids["bob"], ids["globex"]):
        assert f"no notification '{other}' addressed to you" in flat(mixed.stderr)
    assert world.platform.notifications.unread_count(world.bob) == 2  # bob's untouched
    everything = ok_json(world_cli("notifications", "read", "--all", "--json"))
    assert everything == {"marked": 1, "unread": 0}
    told = world_cli("notifications", "read", "--all")
    assert told.exit_code == 0 and "marked 0 notification(s) read; 0 unread" in told.stdout
    for wrong in (("notifications", "read"), ("notifications", "read", "--all", ids["both"])):
        refused = world_cli(*wrong)
        assert refused.exit_code == 2 and "or pass --all" in flat(refused.stderr)


def test_marking_all_read_up_to_the_newest_listed(
    world_cli: WorldCli, world: World, ids: dict[str, str]
) -> None:
    # Listed newest first: alice_new, both, alice_old. Up to "both": the newest stays.
    done = ok_json(world_cli("notifications", "read", "--all", "--through", ids["both"], "--json"))
    assert done == {"marked": 2, "unread": 1}
    unread = ok_json(world_cli("notifications", "list", "--unread", "--json"))
    assert [n["id"] for n in unread["notifications"]] == [ids["alice_new"]]
    stray = world_cli("notifications", "read", "--all", "--through", ids["bob"])
    assert stray.exit_code == 2 and "addressed to you" in flat(stray.stderr)
    alone = world_cli("notifications", "read", ids["alice_new"], "--through", ids["both"])
    assert alone.exit_code == 2 and "--through goes with --all" in flat(alone.stderr)


def test_the_org_view_and_its_recipient_filter(
    world_cli: WorldCli, world: World, ids: dict[str, str]
) -> None:
    org = ok_json(world_cli("notifications", "list", "--org", "--json", who=world.admin))
    assert org["scope"] == "org" and org["total"] == 4
    assert all(n["read"] is None for n in org["notifications"])  # none is root's
    bobs = ok_json(world_cli("notifications", "list", "--recipient", "bob", "--json",
                            who=world.admin))  # fmt: skip
    assert [n["id"] for n in bobs["notifications"]] == [ids["both"], ids["bob"]]
    table = world_cli("notifications", "list", "--recipient", "bob", who=world.admin)
    assert table.exit_code == 0, table.output
    text = flat(table.stdout)
    assert ids["bob"] in text and ids["alice_new"] not in text
    assert "2 notification(s), 0 unread" in text
    unknown = world_cli("notifications", "list", "--recipient", "zed", who=world.admin)
    assert unknown.exit_code == 2
    assert "nobody in your org has the handle or user id 'zed'" in flat(unknown.stderr)
    refused = world_cli("notifications", "list", "--org")
    assert refused.exit_code == 2 and "notification.read denied" in flat(refused.stderr)
