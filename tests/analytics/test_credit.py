"""The credit rules and the diminishing-returns formula, on small hand-built histories."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from meshclaw.analytics import (
    CreditRules,
    Cutoff,
    compute_credit,
    leaderboard,
    load_history,
)
from meshclaw.integrity.scope import Withholding
from tests.analytics._history import Org


def _scores(org: Org, tmp_path: Path, rules: CreditRules | None = None) -> dict[str, float]:
    history = load_history(org.write(tmp_path / "h.jsonl"), use_cache=False)
    board = leaderboard(compute_credit(history.tables, rules))
    return {e.id: e.score for e in board.entries}


def _status(org: Org, tmp_path: Path) -> dict[str, str]:
    history = load_history(org.write(tmp_path / "h.jsonl"), use_cache=False)
    credit = compute_credit(history.tables)
    return dict(credit.outcomes.select("id", "status").iter_rows())


def test_accepted_by_someone_else_earns_value_once(tmp_path: Path) -> None:
    org = Org()
    o = org.outcome("alice")
    org.feedback(o, "bob", "accepted")
    org.feedback(o, "carol", "accepted", hours=2)
    o2 = org.outcome("bob", value=2.5, type="deploy", beneficiary="alice")
    org.feedback(o2, "external", "accepted")
    assert _scores(org, tmp_path) == {"bob": 2.5, "alice": 1.0}


@pytest.mark.parametrize(
    ("verified", "beneficiary", "by", "status"),
    [
        (False, "bob", "bob", "unverified"),
        (True, "alice", "bob", "self"),
        (True, "bob", "alice", "unaccepted"),  # self-acceptance never counts
        (True, "bob", "system", "unaccepted"),  # system is not a person
    ],
)
def test_what_earns_nothing(
    tmp_path: Path, verified: bool, beneficiary: str, by: str, status: str
) -> None:
    org = Org()
    o = org.outcome("alice", verified=verified, beneficiary=beneficiary)
    org.feedback(o, by, "accepted")
    assert _status(org, tmp_path) == {o: status}
    assert _scores(org, tmp_path) == {}


@pytest.mark.parametrize(
    "verdict", ["reverted", "reopened", "rolled_back", "rejected", "cancelled"]
)
def test_undoing_after_acceptance_removes_credit(tmp_path: Path, verdict: str) -> None:
    org = Org()
    o = org.outcome("alice")
    org.feedback(o, "bob", "accepted", hours=1)
    org.feedback(o, "system", verdict, hours=30)
    assert _status(org, tmp_path) == {o: "undone"}
    assert _scores(org, tmp_path) == {}


def test_acceptance_after_an_undo_counts_and_order_not_file_position_decides(
    tmp_path: Path,
) -> None:
    org = Org()
    o = org.outcome("alice")
    # Written out of time order: the rejection (hour 1) precedes carol's acceptance (hour 5).
    org.feedback(o, "carol", "accepted", hours=5)
    org.feedback(o, "bob", "rejected", hours=1)
    assert _status(org, tmp_path) == {o: "credited"}


def test_diminishing_returns_per_type_per_week(tmp_path: Path) -> None:
    org = Org()
    for i in range(3):  # three tickets in one week
        org.feedback(org.outcome("alice", hours=i), "bob", "accepted", hours=i + 1)
    org.feedback(org.outcome("alice", type="deploy"), "bob", "accepted")  # another type
    org.feedback(org.outcome("alice", hours=24 * 7), "bob", "accepted", hours=24 * 7 + 1)
    expected = (1 + 1 / math.sqrt(2) + 1 / math.sqrt(3)) + 1 + 1  # week 1 tickets, deploy, week 2
    assert _scores(org, tmp_path) == {"alice": pytest.approx(round(expected, 6))}


def test_splitting_one_task_does_not_pay(tmp_path: Path) -> None:
    org = Org()
    whole = org.outcome("alice", type="doc_published")
    org.feedback(whole, "bob", "accepted")
    for i in range(5):  # the same work as five parts, each honestly a fifth
        part = org.outcome("bob", type="doc_published", beneficiary="alice", value=0.2, hours=i)
        org.feedback(part, "alice", "accepted", hours=i + 1)
    for i in range(5):  # ... or five parts of full value
        part = org.outcome("carol", type="doc_published", value=1.0, hours=i)
        org.feedback(part, "alice", "accepted", hours=i + 1)
    scores = _scores(org, tmp_path)
    assert scores["bob"] < scores["alice"] == 1.0
    assert scores["carol"] < 5 * scores["alice"] / 1.4  # far from 5x


def test_same_ref_earns_once_at_highest_value(tmp_path: Path) -> None:
    org = Org()
    for value in (0.5, 2.0, 1.0):
        o = org.outcome("alice", ref="ticket:OPS-12", value=value)
        org.feedback(o, "bob", "accepted")
    history = load_history(org.write(tmp_path / "h.jsonl"), use_cache=False)
    credit = compute_credit(history.tables)
    assert sorted(credit.outcomes["status"].to_list()) == ["credited", "duplicate", "duplicate"]
    assert _scores(org, tmp_path) == {"alice": 2.0}


def test_type_weights_and_withheld_credit(tmp_path: Path) -> None:
    org = Org()
    org.feedback(org.outcome("alice", type="deploy"), "bob", "accepted")
    org.feedback(org.outcome("bob", beneficiary="alice"), "alice", "accepted")
    history = load_history(org.write(tmp_path / "h.jsonl"), use_cache=False)
    held = frozenset({Withholding.everything("bob")})
    rules = CreditRules(weights={"deploy": 3.0}, default_weight=0.5, withheld=held)
    board = leaderboard(compute_credit(history.tables, rules))
    assert [(e.id, e.score, e.pending) for e in board.entries] == [
        ("alice", 3.0, 0.0),
        ("bob", 0.0, 0.5),
    ]


def test_week_boundary_is_the_cutoff() -> None:
    cutoff = Cutoff()
    assert cutoff.label() == "Friday 17:00 UTC"
    assert cutoff.week_end(0).strftime("%a %H:%M") == "Fri 17:00"
    with pytest.raises(ValueError):
        Cutoff(weekday=7)


def test_unknown_feedback_and_malformed_lines_are_reported(tmp_path: Path) -> None:
    org = Org()
    o = org.outcome("alice")
    org.feedback(o, "bob", "accepted")
    org.feedback("no-such-outcome", "bob", "accepted")
    path = org.write(tmp_path / "h.jsonl", extra_lines=["{not json", '{"v": 1, "kind": "run"}'])
    history = load_history(path, use_cache=False)
    assert history.report.skipped == 2
    assert [p.line for p in history.report.problems] == [len(org.events) + 1, len(org.events) + 2]
    credit = compute_credit(history.tables)
    assert credit.unknown_feedback.rows() == [
        (len(org.events), "e" + str(org.n), "no-such-outcome")
    ]
    assert {e.id: e.score for e in leaderboard(credit).entries} == {"alice": 1.0}


def test_columnar_cache_is_reused_until_the_file_changes(tmp_path: Path) -> None:
    org = Org()
    org.feedback(org.outcome("alice"), "bob", "accepted")
    path = org.write(tmp_path / "h.jsonl", extra_lines=["oops"])
    cache = tmp_path / "cache"
    first = load_history(path, cache_dir=cache)
    second = load_history(path, cache_dir=cache)
    assert (first.cached, second.cached) == (False, True)
    assert second.report.skipped == 1 and second.report.problems[0].line == len(org.events) + 1
    for name in ("outcomes", "feedback", "activity"):
        a, b = (getattr(h.tables, name).collect() for h in (first, second))
        assert a.sort(a.columns).equals(b.sort(b.columns)), name
    org.feedback(org.outcome("bob", beneficiary="alice"), "alice", "accepted")
    org.write(path)
    third = load_history(path, cache_dir=cache)
    assert not third.cached and third.report.skipped == 0


@pytest.mark.parametrize(("first", "second", "status"), [
    ("rejected", "accepted", "credited"),
    ("accepted", "rejected", "undone"),
])  # fmt: skip
def test_at_the_same_time_the_later_line_wins(
    tmp_path: Path, first: str, second: str, status: str
) -> None:
    org = Org()
    o = org.outcome("alice")
    org.feedback(o, "bob", first, hours=3)
    org.feedback(o, "carol", second, hours=3)
    assert _status(org, tmp_path) == {o: status}
