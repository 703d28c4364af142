"""Usage and outcome series per period and scope, and leaderboards with cost, under the
privacy tiers (``analytics.series``, ``analytics.boards``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from meshclaw.accounts.service import Caller
from meshclaw.analytics.boards import Boards
from meshclaw.analytics.series import UsageSeries, period_starts
from meshclaw.errors import NotFoundError, PermissionDenied, UserError
from tests.analytics._insights import InsightsOrg, insights_org
from tests.conftest import World

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
"""A Wednesday."""
USD = 1_000_000_000


@pytest.fixture
def org(make_world: Callable[..., World], database_url: str) -> InsightsOrg:
    return insights_org(make_world, database_url)


def reader(org: InsightsOrg) -> UsageSeries:
    platform = org.world.platform
    return UsageSeries(platform.db, platform.access, clock=lambda: NOW)


def test_period_starts_end_with_the_current_period() -> None:
    assert period_starts(date(2026, 3, 4), "day", 3) == [
        date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)
    ]  # fmt: skip
    assert period_starts(date(2026, 3, 4), "week", 2) == [date(2026, 2, 23), date(2026, 3, 2)]
    assert period_starts(date(2026, 2, 10), "month", 3) == [
        date(2025, 12, 1), date(2026, 1, 1), date(2026, 2, 1)
    ]  # fmt: skip


def test_cost_and_credited_outcomes_per_day_week_and_month(org: InsightsOrg) -> None:
    alice, eng0 = org.alice, org.eng[1]
    org.spend(alice, 2 * USD, NOW - timedelta(hours=1))
    org.spend(alice, 1 * USD, NOW - timedelta(days=1))  # Tuesday, same week
    org.spend(alice, 4 * USD, NOW - timedelta(days=40))  # January
    org.spend(alice, 9 * USD, NOW - timedelta(days=400))  # outside every window
    org.spend(eng0, 5 * USD, NOW)  # someone else's
    org.outcome(alice, eng0, accept=True, at=NOW - timedelta(hours=2))
    org.outcome(alice, eng0, at=NOW - timedelta(days=1))
    org.outcome(alice, eng0, accept=True, at=NOW - timedelta(days=40))

    day = reader(org).series(alice, "me", "day")
    assert len(day.points) == 30 and day.points[-1].start == date(2026, 3, 4)
    today, yesterday = day.points[-1], day.points[-2]
    assert (today.cost_usd, today.outcomes, today.credited) == (Decimal(2), 1, 1)
    assert (yesterday.cost_usd, yesterday.outcomes, yesterday.credited) == (Decimal(1), 1, 0)
    assert today.cost_per_outcome == Decimal(2) and yesterday.cost_per_outcome is None
    assert day.cost_usd == Decimal(3)  # January is outside 30 days

    week = reader(org).series(alice, "me", "week")
    assert week.points[-1].start == date(2026, 3, 2)
    assert (week.points[-1].cost_usd, week.points[-1].outcomes) == (Decimal(3), 2)
    assert week.points[-1].cost_per_outcome == Decimal(3)

    month = reader(org).series(alice, "me", "month")
    assert [p.start.month for p in month.points[-3:]] == [1, 2, 3]
    assert [(p.cost_usd, p.credited) for p in month.points[-3:]] == [
        (Decimal(4), 1), (Decimal(0), 0), (Decimal(3), 1)
    ]  # fmt: skip
    assert month.cost_usd == Decimal(7) and month.cost_per_outcome == Decimal("3.5")


def test_team_and_org_scopes_follow_the_tiers_and_k(org: InsightsOrg) -> None:
    w = org.world
    eng_team, ops_team = org.alice.team_id, w.bob.team_id
    for i, who in enumerate([*org.eng, org.lead, w.bob]):
        org.spend(who, (i + 1) * USD, NOW)
    series = reader(org)

    def keys(caller: Caller) -> list[str]:
        return [s.key for s in series.scopes(caller)]

    assert keys(org.alice) == ["me"]
    assert keys(org.lead) == ["me", f"team:{eng_team}"]
    assert keys(w.admin) == ["me", f"team:{eng_team}", "org"]  # ops has 1 person < k
    assert keys(org.auditor) == ["me", "org"]

    team = series.series(org.lead, f"team:{eng_team}", "week")
    assert team.points[-1].cost_usd == Decimal(1 + 2 + 3 + 4 + 5 + 6)
    assert series.series(w.admin, "org", "week").points[-1].cost_usd == Decimal(28)
    for caller, key in [
        (org.alice, "org"), (org.alice, f"team:{eng_team}"), (org.lead, f"team:{ops_team}"),
        (org.lead, "org"), (org.auditor, f"team:{eng_team}"),
    ]:  # fmt: skip
        with pytest.raises(PermissionDenied):
            series.series(caller, key, "week")
    with pytest.raises(PermissionDenied, match="smaller than 5"):
        series.series(w.admin, f"team:{ops_team}", "week")
    with pytest.raises(NotFoundError):
        series.series(w.admin, "team:tm_nope", "week")
    with pytest.raises(UserError, match="unknown period"):
        series.series(org.alice, "me", "year")
    with pytest.raises(UserError, match="unknown scope"):
        series.series(org.alice, "everyone", "week")


def test_boards_add_cost_and_names_and_list_only_opted_in_people(org: InsightsOrg) -> None:
    w = org.world
    platform = w.platform
    platform.analytics.update_settings(w.admin, individual_boards=True)
    org.spend(org.alice, 3 * USD)
    org.spend(org.eng[1], 1 * USD)
    org.spend(w.bob, 7 * USD)
    org.outcome(org.alice, org.eng[1], accept=True)
    org.outcome(org.eng[1], org.alice, accept=True)
    org.outcome(w.bob, org.alice, accept=True)  # ops is too small to be shown
    boards = Boards(platform.db, platform.analytics)

    (eng,) = boards.rows(org.alice, "team")
    assert (eng.name, eng.credited, eng.cost_usd) == ("eng", 2, Decimal(4))
    assert eng.value == 1.0 and eng.cost_per_outcome == Decimal(2)
    assert boards.rows(org.alice, "user") == []
    assert not boards.opted_in(org.eng[1])
    platform.analytics.opt_in(org.eng[1], True)
    (person,) = boards.rows(org.alice, "user")
    assert (person.name, person.credited, person.cost_usd) == ("eng0", 1, Decimal(1))
    assert boards.opted_in(org.eng[1])
    with pytest.raises(UserError):
        boards.rows(org.alice, "agent")
    platform.analytics.update_settings(w.admin, individual_boards=False)
    with pytest.raises(PermissionDenied, match="individual leaderboards are off"):
        boards.rows(org.alice, "user")
