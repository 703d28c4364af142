"""The browser scenario through the JSON API alone: held mail, approval, verified outcome.

If this fails, the dashboard tests cannot pass either; it says which layer broke.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.browser._scenario import BENEFICIARY, SUBJECT, agent_yaml
from tests.browser.conftest import Live

pytestmark = pytest.mark.slow


def _team_score(live: Live, handle: str, team_name: str) -> float:
    board = live.api(handle).get("/v1/analytics/leaderboard").raise_for_status().json()
    team_id = live.team_id(team_name)
    return sum(float(e["score"]) for e in board["entries"] if e["team"] == team_id)


def _mails_to_beneficiary(live: Live) -> list[dict[str, Any]]:
    """The agent's reports to the beneficiary (not the platform's feedback requests)."""
    return [
        e for e in live.smtp.envelopes if BENEFICIARY in e["to"] and SUBJECT.encode() in e["data"]
    ]


def test_a_held_mail_is_approved_sent_verified_and_accepted_by_its_recipient(live: Live) -> None:
    alice, fiona = live.api("alice"), live.api(BENEFICIARY)
    created = alice.post("/v1/agents", json={"spec_yaml": agent_yaml("oncall-report-api")})
    assert created.status_code == 201, created.text
    score_before = _team_score(live, "alice", "platform")
    mails_before = _mails_to_beneficiary(live)

    started = alice.post("/v1/runs", json={"agent": "oncall-report-api", "input": "send it"})
    assert started.status_code == 202, started.text
    run_id = started.json()["id"]
    held = live.wait_for_run(run_id, "waiting_approval", "failed", "succeeded")
    assert held["status"] == "waiting_approval", (held["error"], held["steps"])
    assert [s["name"] for s in held["steps"] if s["kind"] == "tool"] == ["clock.now", "mail.send"]
    assert len(_mails_to_beneficiary(live)) == len(mails_before), "sent before approval"

    # The inbox shows the exact action and arguments; the owner approves them.
    (approval,) = [a for a in alice.get("/v1/approvals").json() if a["run_id"] == run_id]
    assert approval["tool"] == "mail.send" and approval["action"] == "tool.write"
    assert approval["arguments"]["to"] == [BENEFICIARY]
    assert approval["arguments"]["subject"] == SUBJECT
    decided = alice.post(f"/v1/approvals/{approval['id']}/approve", json={"note": "go ahead"})
    assert decided.status_code == 200 and decided.json()["status"] == "approved", decided.text

    done = live.wait_for_run(run_id, "succeeded", "failed")
    assert done["status"] == "succeeded", done["error"]
    assert done["output"] == f"Sent the on-call report to {BENEFICIARY}."
    (envelope,) = _mails_to_beneficiary(live)[len(mails_before) :]
    assert envelope["from"] == "alice@acme.test"

    # The mail server's evidence made a verified outcome whose beneficiary is fiona.
    outcome = live.wait_for_outcome(run_id)
    assert (outcome["type"], outcome["verified"], outcome["state"]) == (
        "mail_sent", True, "unaccepted",
    )  # fmt: skip
    assert outcome["beneficiaries"] == [live.people[BENEFICIARY].user_id]
    to_review = fiona.get("/v1/outcomes", params={"to_review": True}).json()
    assert outcome["id"] in [o["id"] for o in to_review]
    accepted = fiona.post(
        f"/v1/outcomes/{outcome['id']}/feedback", json={"verdict": "accepted", "note": "thanks"}
    )
    assert accepted.status_code == 200 and accepted.json()["state"] == "credited", accepted.text
    # Credit shows on the team board: points = weight x value / sqrt(k), where mail_sent
    # weighs 0.5 and k is this outcome's rank among alice's mail_sent of the week.
    credited = alice.get("/v1/outcomes", params={"state": "credited"}).json()
    k = len([o for o in credited if o["type"] == "mail_sent"])
    expected = score_before + 0.5 / math.sqrt(k)
    assert _team_score(live, "alice", "platform") == pytest.approx(expected, abs=1e-4)
