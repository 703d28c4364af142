"""Credit withheld by integrity findings: only the credit a finding concerns (its period or
its outcome), pending review while open, out of the score once confirmed, back on dismissal;
and the offline findings file reads the same way the platform does."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from meshclaw.analytics import (
    CreditRules,
    compute_credit,
    leaderboard,
    load_history,
    withheld_from_findings,
)
from meshclaw.clock import utcnow
from meshclaw.ids import new_id
from meshclaw.integrity.scope import Period, Withholding
from tests.analytics._history import T0, Org
from tests.analytics._insights import insights_org
from tests.conftest import World

WEEK1 = Period(T0 - timedelta(hours=1), T0 + timedelta(days=4))
"""Monday 08:00 to Friday 09:00 of the first week: holds bob's early outcome only."""
LATE = 24 * 14
"""Hours after T0 of bob's later outcome (two weeks on)."""


def _org() -> tuple[Org, dict[str, str]]:
    org = Org()
    early = org.outcome("bob", beneficiary="alice", hours=0)
    org.feedback(early, "alice", "accepted", hours=1)
    late = org.outcome("bob", beneficiary="alice", hours=LATE)
    org.feedback(late, "alice", "accepted", hours=LATE + 1)
    mine = org.outcome("alice", beneficiary="bob", hours=2)
    org.feedback(mine, "bob", "accepted", hours=3)
    return org, {"early": early, "late": late, "alice": mine}


def _credit(tmp_path: Path, org: Org, *held: Withholding) -> Any:
    history = load_history(org.write(tmp_path / "h.jsonl"), use_cache=False)
    credit = compute_credit(history.tables, CreditRules(withheld=frozenset(held)))
    # The frame's join says what ``Withholding.covers`` says, outcome by outcome.
    for oid, user, ts, mark in credit.outcomes.select("id", "user", "ts", "held").iter_rows():
        covering = [w for w in held if w.covers(user, oid, ts)]
        expected = None
        if covering:
            expected = "confirmed" if any(w.confirmed for w in covering) else "pending_review"
        assert mark == expected, (oid, mark, expected)
    return credit


def _points(credit: Any) -> dict[str, tuple[float, float]]:
    return {
        oid: (round(points, 6), round(pending, 6))
        for oid, points, pending in credit.outcomes.select("id", "points", "pending").iter_rows()
    }


def _board(credit: Any) -> list[tuple[str, float, float, int]]:
    return [(e.id, e.score, e.pending, e.outcomes) for e in leaderboard(credit).entries]


def test_a_period_withholds_only_the_outcomes_in_it(tmp_path: Path) -> None:
    org, ids = _org()
    credit = _credit(tmp_path, org, Withholding(user="bob", periods=(WEEK1,)))
    points = _points(credit)
    assert points[ids["early"]] == (0.0, 1.0)  # in the finding's period: pending review
    assert points[ids["late"]] == (1.0, 0.0)  # later work is not in question
    assert points[ids["alice"]] == (1.0, 0.0)  # someone else's credit never is
    assert _board(credit) == [("alice", 1.0, 0.0, 1), ("bob", 1.0, 1.0, 2)]


def test_an_outcome_scope_withholds_that_outcome_of_that_person(tmp_path: Path) -> None:
    org, ids = _org()
    credit = _credit(
        tmp_path,
        org,
        Withholding(user="bob", outcomes=frozenset({ids["late"]})),
        Withholding(user="carol", outcomes=frozenset({ids["alice"]})),  # not carol's outcome
    )
    points = _points(credit)
    assert points[ids["late"]] == (0.0, 1.0)
    assert points[ids["early"]] == (1.0, 0.0)
    assert points[ids["alice"]] == (1.0, 0.0)


def test_a_confirmed_finding_keeps_its_credit_out_of_the_score_and_out_of_pending(
    tmp_path: Path,
) -> None:
    org, ids = _org()
    pending = Withholding(user="bob", periods=(WEEK1,))
    confirmed = Withholding(user="bob", periods=(WEEK1,), confirmed=True)
    credit = _credit(tmp_path, org, confirmed)
    assert _points(credit)[ids["early"]] == (0.0, 0.0)
    # bob's board row: the late outcome only; the confirmed one is neither score nor pending.
    assert _board(credit) == [("alice", 1.0, 0.0, 1), ("bob", 1.0, 0.0, 1)]
    # A confirmed finding and an open one over the same outcome: confirmed wins.
    both = _credit(tmp_path, org, pending, confirmed)
    assert _points(both)[ids["early"]] == (0.0, 0.0)
    # Dismissed: no withholding at all, every outcome scores.
    assert _board(_credit(tmp_path, org)) == [("bob", 2.0, 0.0, 2), ("alice", 1.0, 0.0, 1)]


def test_a_finding_without_a_scope_withholds_all_of_the_persons_credit(tmp_path: Path) -> None:
    org, _ = _org()
    credit = _credit(tmp_path, org, Withholding.everything("bob"))
    assert _board(credit) == [("alice", 1.0, 0.0, 1), ("bob", 0.0, 2.0, 2)]


def _doc(*findings: dict[str, Any], status: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "user": "bob",
        "flagged": True,
        "score": 0.9,
        "findings": list(findings),
    }
    if status is not None:
        entry["status"] = status
    return {"users": [entry, {"user": "alice", "flagged": False, "score": 0.0, "findings": []}]}


def _finding(status: str | None = None, **scope: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"detector": "no_outcome_runs", "evidence": {"scope": scope}}
    if status is not None:
        out["status"] = status
    return out


def test_the_offline_findings_file_carries_scope_and_status(tmp_path: Path) -> None:
    org, ids = _org()
    week = WEEK1.to_json()
    assert withheld_from_findings(_doc(_finding(periods=[week]))) == {
        Withholding(user="bob", periods=(WEEK1,))
    }
    assert withheld_from_findings(_doc(_finding("confirmed", periods=[week]))) == {
        Withholding(user="bob", periods=(WEEK1,), confirmed=True)
    }
    assert withheld_from_findings(_doc(_finding("dismissed", periods=[week]))) == frozenset()
    assert withheld_from_findings(_doc(_finding(periods=[week]), status="dismissed")) == set()
    only = withheld_from_findings(_doc(_finding(outcomes=[ids["late"]])))
    assert only == {Withholding(user="bob", outcomes=frozenset({ids["late"]}))}
    # A flagged person listed without findings (a hand-written file): all their credit.
    bare = {"users": [{"user": "bob", "flagged": True}]}
    assert withheld_from_findings(bare) == {Withholding.everything("bob")}
    credit = _credit(tmp_path, org, *withheld_from_findings(_doc(_finding(periods=[week]))))
    assert _points(credit)[ids["early"]] == (0.0, 1.0)
    assert _points(credit)[ids["late"]] == (1.0, 0.0)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"users": {}}, '"users" list'),
        ({"users": [{"flagged": True}]}, '"user" string'),
        (
            {"users": [{"user": "bob", "flagged": True, "findings": {}}]},
            '"findings" must be a list',
        ),
        (_doc({"detector": "x", "evidence": []}), '"evidence" object'),
        (_doc(_finding(periods=[{"from": "yesterday", "until": "today"}])), "ISO 8601"),
        (
            _doc(_finding(periods=[{"from": "2026-03-02T09:00:00Z", "until": "2026-03-01"}])),
            '"from" before "until"',
        ),
        (_doc(_finding(outcomes="o1")), "list of outcome ids"),
    ],
)
def test_a_malformed_findings_file_is_refused_with_a_reason(
    doc: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        withheld_from_findings(doc)


def test_the_platform_boards_withhold_only_the_findings_period(
    make_world: Callable[..., World],
) -> None:
    """On the platform: a finding about alice's first week holds back that week's outcome
    (pending review on her numbers and her team's board row); her later outcome counts.
    Confirmed, it stays out of the score without being shown as pending; dismissed, it
    is back."""
    from meshclaw.integrity.models import IntegrityFinding

    org = insights_org(make_world)
    alice, eng1 = org.alice, org.eng[1]
    week_ago = utcnow() - timedelta(days=10)
    org.outcome(alice, eng1, accept=True, at=week_ago)
    org.outcome(alice, eng1, accept=True)
    period = Period(week_ago - timedelta(days=1), week_ago + timedelta(days=1))
    fid = new_id("fnd")
    with org.world.platform.db.session() as session:
        session.add(
            IntegrityFinding(
                id=fid, org_id=alice.org_id, subject=alice.user_id, detector="no_outcome_runs",
                status="open", strength=0.9, score=0.9, source="test",
                evidence={"example_runs": ["r1"], "scope": {"periods": [period.to_json()]}},
            )
        )  # fmt: skip
    analytics = org.world.platform.analytics

    def numbers() -> tuple[float, float, float, float]:
        mine = analytics.person(alice, alice.user_id)
        (team,) = analytics.team_board(alice).entries
        return mine["score"], mine["pending_review"], team.score, team.pending

    assert numbers() == (0.5, 0.5, 0.5, 0.5)  # a mail weighs 0.5 by default
    with org.world.platform.db.session() as session:
        row = session.get(IntegrityFinding, fid)
        assert row is not None
        row.status = "confirmed"
    assert numbers() == (0.5, 0.0, 0.5, 0.0)
    with org.world.platform.db.session() as session:
        row = session.get(IntegrityFinding, fid)
        assert row is not None
        row.status = "dismissed"
    assert numbers() == (1.0, 0.0, 1.0, 0.0)


def test_the_leaderboard_command_withholds_only_the_findings_scope(tmp_path: Path) -> None:
    """``meshclaw leaderboard --findings``: bob's first-week outcome is pending review, his
    later one scores; a malformed scope is refused with its reason (exit 2)."""
    from typer.testing import CliRunner

    from meshclaw.cli.main import app

    org, _ = _org()
    events = org.write(tmp_path / "h.jsonl")
    findings = tmp_path / "findings.json"
    findings.write_text(json.dumps(_doc(_finding(periods=[WEEK1.to_json()]))))
    args = ["leaderboard", str(events), "--findings", str(findings), "--no-cache"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    bob = next(line for line in done.stdout.splitlines() if " bob " in line)
    assert "1.000" in bob and "1.000 pending review" in bob
    done = CliRunner().invoke(app, [*args, "--json"])
    assert json.loads(done.stdout)["entries"] == [
        {"rank": 1, "user": "alice", "score": 1.0},
        {"rank": 2, "user": "bob", "score": 1.0},
    ]
    findings.write_text(json.dumps(_doc(_finding(periods=[{"from": "soon", "until": "later"}]))))
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2
    assert "--findings" in done.stderr and "ISO 8601" in done.stderr
