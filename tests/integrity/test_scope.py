"""What a scan finding concerns: the person's period, or a deadline burst's weeks; scopes
merge when a pending finding is refreshed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from meshclaw.integrity.scope import (
    Period,
    Withholding,
    merge_scope,
    scan_scope,
    withholding_of,
)

FIRST = datetime(2026, 1, 5, 9, 30, 15, 500_000, tzinfo=UTC)
LAST = datetime(2026, 1, 23, 16, 0, 0, tzinfo=UTC)


def test_a_scan_finding_concerns_the_period_the_scan_saw_of_the_person() -> None:
    scope = scan_scope("no_outcome_runs", {"example_runs": ["r1"]}, FIRST, LAST)
    assert scope == {"periods": [{"from": "2026-01-05T09:30:15Z", "until": "2026-01-23T16:00:01Z"}]}
    held = withholding_of("u1", "no_outcome_runs", {"scope": scope}, "open")
    assert held is not None and not held.confirmed
    assert held.covers("u1", "o1", FIRST) and held.covers("u1", "o1", LAST)
    assert not held.covers("u1", "o1", LAST + timedelta(seconds=2))  # later work counts
    assert not held.covers("u2", "o1", LAST)  # nobody else's


def test_a_deadline_burst_concerns_the_weeks_it_names() -> None:
    weeks = [{"cutoff": "2026-01-09T17:00:00Z"}, {"cutoff": "2026-01-23T17:00:00Z"}]
    scope = scan_scope("deadline_burst", {"weeks": weeks}, FIRST, LAST)
    assert scope == {
        "periods": [
            {"from": "2026-01-02T17:00:00Z", "until": "2026-01-09T17:00:00Z"},
            {"from": "2026-01-16T17:00:00Z", "until": "2026-01-23T17:00:00Z"},
        ]
    }
    held = withholding_of("u1", "deadline_burst", {"scope": scope}, "confirmed")
    assert held is not None and held.confirmed
    in_between = datetime(2026, 1, 13, 12, tzinfo=UTC)  # the week between the bursts
    assert not held.covers("u1", "o1", in_between)
    assert held.covers("u1", "o1", datetime(2026, 1, 23, 16, 59, tzinfo=UTC))


def test_a_refreshed_scope_keeps_what_was_held_and_dismissal_restores() -> None:
    old = {"share": 0.7, "scope": {"periods": [Period(FIRST, LAST).to_json()]}}
    later = Period(LAST + timedelta(days=7), LAST + timedelta(days=14))
    new = {"share": 0.8, "scope": {"periods": [later.to_json()]}}
    merged = merge_scope(old, new)
    assert merged["share"] == 0.8
    held = withholding_of("u1", "split_tasks", merged, None)
    assert held == Withholding(user="u1", periods=(Period(FIRST, LAST), later))
    assert merge_scope(None, new) == new
    assert withholding_of("u1", "split_tasks", merged, "dismissed") is None
