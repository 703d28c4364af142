"""Findings lifecycle on a real store: record, review, audit, withhold, no re-raise."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from meshclaw.errors import ConflictError, PermissionDenied, UserError
from meshclaw.events import ReadReport
from meshclaw.integrity import Finding, ScanResult, UserResult
from meshclaw.integrity.findings import FindingsService, evidence_ids
from meshclaw.integrity.scope import Period, Withholding
from meshclaw.store.models import AuditEvent


def result(*people: tuple[str, list[tuple[str, dict[str, Any]]]]) -> ScanResult:
    users = []
    for user, findings in people:
        fs = [Finding(detector=d, user=user, strength=0.8, evidence=e) for d, e in findings]
        users.append(UserResult(user=user, flagged=bool(fs), score=0.8 if fs else 0.0, findings=fs))
    return ScanResult(users=users, report=ReadReport(), threshold=0.5)


@pytest.fixture
def world(make_world: Callable[..., Any]) -> Any:
    return make_world()


def test_record_review_and_audit(world: Any) -> None:
    service: FindingsService = world.platform.findings
    scan = result(
        ("u7", [("no_outcome_runs", {"example_runs": ["r1", "r2"], "share": 0.7})]),
        ("u8", []),
    )
    summary = service.record(world.admin, scan, source="scan:events.jsonl")
    assert (summary.opened, summary.updated, summary.suppressed) == (1, 0, 0)
    [finding] = service.queue(world.admin)
    assert (finding.subject, finding.detector, finding.status) == ("u7", "no_outcome_runs", "open")
    # No scope recorded with this evidence: all of u7's credit waits.
    assert service.withheld(world.admin.org_id) == {Withholding.everything("u7")}
    # The same scan again updates the open finding instead of duplicating it.
    assert service.record(world.admin, scan, source="scan:events.jsonl").updated == 1
    moved = service.move(world.admin, finding.id, "start")
    assert moved.status == "under_review" and moved.reviewed_by == world.admin.user_id
    with pytest.raises(UserError, match="reason"):
        service.move(world.admin, finding.id, "dismiss")
    done = service.move(world.admin, finding.id, "dismiss", reason="on-call week, checked")
    assert done.status == "dismissed" and done.reason == "on-call week, checked"
    assert service.withheld(world.admin.org_id) == frozenset()
    with pytest.raises(ConflictError):
        service.move(world.admin, finding.id, "confirm", reason="too late")
    with world.platform.db.session() as session:
        actions = session.scalars(
            select(AuditEvent.action)
            .where(AuditEvent.action.like("integrity.%"))
            .order_by(AuditEvent.seq)
        ).all()
    assert actions == [
        "integrity.finding.open", "integrity.finding.under_review", "integrity.finding.dismissed",
    ]  # fmt: skip


def test_a_confirmed_finding_keeps_the_credit_withheld(world: Any) -> None:
    """Confirming is the reviewer agreeing with the finding: the credit stays withheld (and
    the platform agrees with the offline path); only dismissing restores it."""
    from meshclaw.analytics import withheld_from_findings

    service: FindingsService = world.platform.findings
    scan = result(("u7", [("self_accepted", {"example_outcomes": ["o1"]})]), ("u9", []))
    service.record(world.admin, scan, source="scan:events.jsonl")
    [finding] = service.queue(world.admin)
    confirmed = service.move(world.admin, finding.id, "confirm", reason="accepted own tickets")
    assert confirmed.status == "confirmed"
    assert service.withheld(world.admin.org_id) == {Withholding.everything("u7", confirmed=True)}
    assert service.queue(world.admin) == []  # no longer waiting for a reviewer
    offline = {"users": [{"user": "u7", "flagged": True, "status": "confirmed"}]}
    assert withheld_from_findings(offline) == service.withheld(world.admin.org_id)


def test_a_dismissed_pattern_is_raised_again_only_with_new_evidence(world: Any) -> None:
    service: FindingsService = world.platform.findings
    first = result(("u7", [("cron_churn", {"agents": [{"agent": "ag-1", "runs": 40}]})]))
    service.record(world.admin, first, source="week 1")
    [finding] = service.queue(world.admin)
    service.move(world.admin, finding.id, "dismiss", reason="a monitor we asked for")
    again = service.record(world.admin, first, source="week 1 again")
    assert (again.opened, again.suppressed) == (0, 1)
    more = result(("u7", [("cron_churn", {"agents": [{"agent": "ag-1", "runs": 90}]})]))
    assert service.record(world.admin, more, source="week 2").suppressed == 1
    new = result(("u7", [("cron_churn", {"agents": [{"agent": "ag-2", "runs": 30}]})]))
    assert service.record(world.admin, new, source="week 3").opened == 1


def test_people_see_their_own_findings_and_only_reviewers_review(world: Any) -> None:
    service: FindingsService = world.platform.findings
    scan = result(
        (world.alice.user_id, [("self_addressed", {"example_outcomes": ["o1"]})]),
        (world.bob.user_id, [("split_tasks", {"example_runs": ["r9"]})]),
    )
    with pytest.raises(PermissionDenied):
        service.record(world.alice, scan, source="x")
    service.record(world.admin, scan, source="x")
    mine = service.queue(world.alice)
    assert [f.subject for f in mine] == [world.alice.user_id]
    assert len(service.queue(world.admin)) == 2
    with pytest.raises(PermissionDenied):
        service.move(world.alice, mine[0].id, "dismiss", reason="not me")
    with pytest.raises(UserError):
        service.queue(world.admin, ["pending"])


def test_evidence_ids_collects_what_a_reviewer_can_open(tmp_path: Path) -> None:
    evidence = {
        "example_runs": ["r1", "r2"],
        "clusters": [{"example_runs": ["r3"], "runs": 9}],
        "agents": [{"agent": "ag-1", "runs": 3}],
        "group": ["u1", "u2"],
        "share": 0.5,
    }
    assert evidence_ids(evidence) == {"r1", "r2", "r3", "ag-1", "u1", "u2"}


def _at(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 1, day, hour, tzinfo=UTC)


def _scope(*periods: tuple[datetime, datetime]) -> dict[str, Any]:
    return {"periods": [Period(a, b).to_json() for a, b in periods]}


def test_withholding_covers_only_what_each_finding_concerns(world: Any) -> None:
    """Each finding holds back its own scope: open ones pending review, a confirmed one
    confirmed, a dismissed one nothing; a refreshed finding keeps the period it held."""
    service: FindingsService = world.platform.findings
    org = world.admin.org_id
    week1, week3 = (_at(5), _at(12)), (_at(19), _at(26))
    scan = result(
        ("u7", [("no_outcome_runs", {"example_runs": ["r1"], "scope": _scope(week1)})]),
        ("u8", [("split_tasks", {"example_runs": ["r2"], "scope": _scope(week3)})]),
    )
    service.record(world.admin, scan, source="scan:weeks 1-3")
    assert service.withheld(org) == {
        Withholding(user="u7", periods=(Period(*week1),)),
        Withholding(user="u8", periods=(Period(*week3),)),
    }
    # A later scan of the same pattern refreshes u7's finding: both periods stay held.
    later = result(("u7", [("no_outcome_runs", {"example_runs": ["r1"], "scope": _scope(week3)})]))
    assert service.record(world.admin, later, source="scan:week 3").updated == 1
    u7 = Withholding(user="u7", periods=(Period(*week1), Period(*week3)))
    assert u7 in service.withheld(org)
    by_subject = {f.subject: f for f in service.queue(world.admin)}
    service.move(world.admin, by_subject["u7"].id, "confirm", reason="empty runs, checked")
    service.move(world.admin, by_subject["u8"].id, "dismiss", reason="release week")
    assert service.withheld(org) == {
        Withholding(user="u7", periods=u7.periods, confirmed=True),
    }


def test_a_failing_recheck_withholds_only_its_outcome(world: Any) -> None:
    service: FindingsService = world.platform.findings
    org = world.admin.org_id
    with world.platform.db.session() as session:
        service.open_for_platform(
            session, org_id=org, subject="u7", detector="recheck_failing",
            evidence={"outcome": "out_1", "type": "deploy", "run": "run_1"},
            source="outcome.recheck:out_1",
        )  # fmt: skip
    assert service.withheld(org) == {Withholding(user="u7", outcomes=frozenset({"out_1"}))}


def test_platform_and_offline_agree_on_a_real_scan(world: Any, tmp_path: Path) -> None:
    """The same scan, recorded on the platform and read from its JSON offline, withholds
    the same credit, before and after review; every finding carries the period the scan
    saw of its person."""
    from meshclaw.analytics import withheld_from_findings, withheld_from_scan
    from meshclaw.events import write_events
    from meshclaw.integrity import scan_file
    from tests.integrity.builder import Org
    from tests.integrity.test_detectors import GAMERS, build

    org = Org(seed=3)
    build(org)
    path = tmp_path / "events.jsonl"
    write_events(path, org.rows)
    scan = scan_file(path)
    flagged = {u.user: u for u in scan.users if u.flagged}
    assert GAMERS["cron_churn"].user in flagged
    for user in flagged.values():
        mine = [r["ts"] for r in org.rows if r["user"] == user.user]
        first, last = min(mine), max(mine)
        for finding in user.findings:
            periods = finding.evidence["scope"]["periods"]
            if finding.detector != "deadline_burst":
                assert periods[0]["from"] == first and periods[-1]["until"] > last
    offline = withheld_from_scan(scan)
    assert offline == withheld_from_findings(scan.to_json())
    assert all(w.periods and not w.confirmed for w in offline)
    service: FindingsService = world.platform.findings
    service.record(world.admin, scan, source="scan:events.jsonl")
    assert service.withheld(world.admin.org_id) == offline

    # Review: confirm one person's findings, dismiss another's; the JSON marked the same.
    queue = service.queue(world.admin)
    first_user, second_user = sorted({f.subject for f in queue})[:2]
    for f in queue:
        if f.subject == first_user:
            service.move(world.admin, f.id, "confirm", reason="checked")
        elif f.subject == second_user:
            service.move(world.admin, f.id, "dismiss", reason="checked")
    doc = scan.to_json()
    for entry in doc["users"]:
        if entry["user"] == first_user:
            entry["status"] = "confirmed"
        elif entry["user"] == second_user:
            entry["status"] = "dismissed"
    reviewed = service.withheld(world.admin.org_id)
    assert reviewed == withheld_from_findings(doc)
    assert {w.user for w in reviewed if w.confirmed} == {first_user}
    assert second_user not in {w.user for w in reviewed}
