"""Boards read an org's outcome history once, then only what is new: whatever order rows
arrive in, the frames held equal a fresh read, and credit is reused only while nothing
changed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from polars.testing import assert_frame_equal

from meshclaw.analytics._history import OutcomeHistory
from meshclaw.clock import utcnow
from meshclaw.integrity.scope import Withholding
from tests.analytics._insights import InsightsOrg, insights_org
from tests.conftest import World


def _same_as_a_fresh_read(org: InsightsOrg, cached: OutcomeHistory) -> None:
    org_id = org.alice.org_id
    held, fresh = cached.read(org_id), OutcomeHistory(org.world.platform.db).read(org_id)
    assert_frame_equal(held.outcomes, fresh.outcomes)
    assert_frame_equal(held.feedback, fresh.feedback)
    assert held.marks == fresh.marks


def test_new_outcomes_and_feedback_are_appended_in_order(
    database_url: str, make_world: Callable[..., World]
) -> None:
    org = insights_org(make_world, database_url)
    alice, bob = org.eng[0], org.eng[1]
    history = OutcomeHistory(org.world.platform.db)
    org.outcome(alice, bob, accept=True)
    first = history.read(alice.org_id)
    assert (first.outcomes.height, first.feedback.height) == (1, 1)

    later = [org.outcome(bob, alice, accept=True), org.outcome(alice, org.eng[2])]
    grown = history.read(alice.org_id)
    assert grown.outcomes["id"].to_list()[1:] == later
    assert grown.outcomes["line"].to_list() == [1, 2, 3]
    assert grown.feedback["line"].to_list() == [1, 2]
    _same_as_a_fresh_read(org, history)


def test_a_row_committed_late_with_an_older_time_is_not_missed(
    database_url: str, make_world: Callable[..., World]
) -> None:
    org = insights_org(make_world, database_url)
    alice, bob = org.eng[0], org.eng[1]
    history = OutcomeHistory(org.world.platform.db)
    org.outcome(alice, bob)
    history.read(alice.org_id)
    # Another worker's clock was behind: its outcome is older than the newest one held.
    late = org.outcome(bob, alice, at=utcnow() - timedelta(hours=1))
    held = history.read(alice.org_id)
    assert late in held.outcomes["id"].to_list()
    assert held.outcomes["id"].to_list()[0] == late  # (time, id) order, as a fresh read
    _same_as_a_fresh_read(org, history)


def test_credit_is_reused_until_history_or_rules_change(
    make_world: Callable[..., World],
) -> None:
    org = insights_org(make_world)
    alice, bob = org.eng[0], org.eng[1]
    analytics = org.world.platform.analytics
    org.outcome(alice, bob, accept=True)
    _, first = analytics.credit(alice.org_id, activity=False)
    _, again = analytics.credit(alice.org_id, activity=False)
    assert again is first  # nothing changed: the same result, not a recomputation

    org.world.platform.outcomes.feedback(bob, first.outcomes["id"][0], "reverted")
    _, after_revert = analytics.credit(alice.org_id, activity=False)
    assert after_revert is not first
    assert after_revert.outcomes["status"].to_list() == ["undone"]

    analytics.withheld = lambda org_id: frozenset({Withholding.everything(alice.user_id)})
    _, withheld = analytics.credit(alice.org_id, activity=False)
    assert withheld is not after_revert
