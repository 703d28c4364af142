"""Dashboard pages for integrity review, the audit log and administration, end to end.

A real platform on a temp SQLite store and the real FastAPI app through its TestClient,
signed in like a browser (session cookie from ``POST /ui/login``, the CSRF token from the
pages' forms). People: alice (employee, eng), bob (employee, ops), root (platform admin),
dave (auditor), lead (team admin of eng); eve is the platform admin of another org.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape
from sqlalchemy import select, text

from meshclaw.accounts.service import Caller
from meshclaw.api.app import create_app
from meshclaw.events import ReadReport
from meshclaw.integrity import Finding, ScanResult, UserResult
from meshclaw.metering.models import Budget
from meshclaw.store.models import AuditEvent, User
from tests.accounts.passwords import cheap_hashing
from tests.conftest import World
from tests.connectors.conftest import FIXTURE_SERVER

PASSWORD = "a long test password"
EVIDENCE = {
    "repeated_runs_without_outcome": 37,
    "robust_z": 6.25,
    "similarity_threshold": 0.8,
    "clusters": [
        {"runs": 12, "days": 3, "first": "2026-03-02T09:00:00Z", "example_runs": ["run_a1"]},
    ],
    "example_runs": ["run_a1", "run_a2"],
}


@dataclass
class Site:
    world: World
    client_for: Callable[[str], Browser]
    dave: Caller
    lead: Caller
    eve: Caller


class Browser:
    """A signed-in TestClient that knows its session's CSRF token."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.csrf = ""

    def get(self, path: str, **kw: Any) -> Any:
        response = self.client.get(path, **kw)
        found = re.search(r'name="csrf" value="([^"]+)"', response.text)
        if found:
            self.csrf = found.group(1)
        return response

    def post(self, path: str, data: dict[str, str], **kw: Any) -> Any:
        if not self.csrf:
            self.get("/ui/")
        return self.client.post(path, data={"csrf": self.csrf, **data}, **kw)


@pytest.fixture
def site(make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    cheap_hashing(monkeypatch)
    world = make_world()
    accounts, platform = world.platform.accounts, world.platform
    org = world.alice.org_id
    dave = accounts.caller_for(accounts.create_user(org, "dave", role="auditor"))
    lead = accounts.caller_for(
        accounts.create_user(org, "lead", role="team_admin", team_id=world.alice.team_id)
    )
    other = accounts.create_org("globex")
    eve = accounts.caller_for(accounts.create_user(other.id, "eve", role="platform_admin"))
    people = {c.handle: c for c in (world.alice, world.bob, world.admin, dave, lead, eve)}
    with_password: set[str] = set()
    app = create_app(platform)
    with ExitStack() as stack:

        def browser(handle: str) -> Browser:
            if handle not in with_password:
                platform.signin.set_password(people[handle].user_id, PASSWORD)
                with_password.add(handle)
            client = stack.enter_context(TestClient(app, follow_redirects=False))
            signed = client.post(
                "/ui/login", data={"handle": handle, "password": PASSWORD, "next": "/ui/"}
            )
            assert signed.status_code == 303, signed.text
            return Browser(client)

        yield Site(world=world, client_for=browser, dave=dave, lead=lead, eve=eve)


def record_findings(site: Site, *people: tuple[Caller, str]) -> dict[str, str]:
    """One finding per (person, detector), recorded by the auditor; returns id by handle."""
    users = [
        UserResult(
            user=who.user_id,
            flagged=True,
            score=0.9,
            findings=[Finding(detector=d, user=who.user_id, strength=0.8, evidence=EVIDENCE)],
        )
        for who, d in people
    ]
    scan = ScanResult(users=users, report=ReadReport(), threshold=0.5)
    site.world.platform.findings.record(site.dave, scan, source="scan:week.jsonl")
    page = site.world.platform.findings.find(site.dave, limit=50)
    handles = {who.user_id: who.handle for who, _ in people}
    return {handles[f.subject]: f.id for f in page.findings}


def main(html: str) -> str:
    return html[html.index("<main") : html.index("</main>")]


def audit_actions(site: Site, prefix: str) -> list[tuple[str, dict[str, Any]]]:
    with site.world.platform.db.session() as session:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.action.like(prefix + "%")).order_by(AuditEvent.seq)
        ).all()
        return [(r.action, r.details) for r in rows]


# -- integrity review --------------------------------------------------------------------


def test_auditor_confirms_a_finding_with_a_reason_and_the_log_records_it(site: Site) -> None:
    ids = record_findings(site, (site.world.alice, "repeated_tasks"))
    dave = site.client_for("dave")
    queue = dave.get("/ui/integrity")
    assert queue.status_code == 200
    assert f'href="/ui/integrity/{ids["alice"]}"' in queue.text
    assert "repeated tasks" in queue.text and "0.90" in queue.text

    page = dave.get(f"/ui/integrity/{ids['alice']}")
    assert page.status_code == 200
    body = main(page.text)
    # Evidence is tables of ids and counts, with the runs linked.
    assert '<th scope="row">Repeated runs without outcome</th><td>37</td>' in body
    assert '<a href="/ui/runs/run_a1"><code>run_a1</code></a>' in body
    assert '<th scope="col">Example runs</th>' in body  # the clusters table
    assert "Detectors that contributed" in body and "Your decision" in body

    done = dave.post(
        f"/ui/integrity/{ids['alice']}/review",
        {"decision": "confirmed", "reason": "37 identical runs, nothing delivered"},
    )
    assert done.status_code == 303
    after = dave.get(done.headers["location"])
    assert "The finding is confirmed." in after.text
    assert "37 identical runs, nothing delivered" in main(after.text)
    assert "This finding is decided." in after.text
    view = site.world.platform.findings.get(site.dave, ids["alice"])
    assert (view.status, view.reviewed_by) == ("confirmed", site.dave.user_id)
    assert audit_actions(site, "integrity.finding.")[-1] == (
        "integrity.finding.confirmed",
        {
            "subject": site.world.alice.user_id,
            "detector": "repeated_tasks",
            "score": 0.9,
            "reason": "37 identical runs, nothing delivered",
        },
    )
    # A decided finding cannot be decided again: the page says why, nothing changes.
    again = dave.post(f"/ui/integrity/{ids['alice']}/review", {"decision": "dismissed"})
    assert again.status_code == 409 and "this finding is already confirmed" in again.text


def test_a_missing_reason_is_shown_next_to_the_field_and_nothing_changes(site: Site) -> None:
    ids = record_findings(site, (site.world.bob, "no_outcome_runs"))
    dave = site.client_for("dave")
    dave.get(f"/ui/integrity/{ids['bob']}")
    before = len(audit_actions(site, "integrity."))
    response = dave.post(
        f"/ui/integrity/{ids['bob']}/review", {"decision": "dismissed", "reason": "   "}
    )
    assert response.status_code == 422
    body = main(response.text)
    assert 'id="review-reason-error"' in body
    assert 'aria-describedby="review-reason-help review-reason-error" aria-invalid="true"' in body
    assert 'value="dismissed" checked' in body  # what was chosen is kept
    assert site.world.platform.findings.get(site.dave, ids["bob"]).status == "open"
    assert len(audit_actions(site, "integrity.")) == before
    nothing = dave.post(f"/ui/integrity/{ids['bob']}/review", {"reason": "x"})
    assert nothing.status_code == 422 and 'id="review-decision-error"' in nothing.text


def test_an_employee_sees_only_their_own_findings_and_cannot_review(site: Site) -> None:
    ids = record_findings(
        site, (site.world.alice, "self_addressed"), (site.world.bob, "split_tasks")
    )
    alice = site.client_for("alice")
    queue = alice.get("/ui/integrity")
    assert queue.status_code == 200
    assert ids["alice"] in queue.text and ids["bob"] not in queue.text
    assert alice.get(f"/ui/integrity/{ids['bob']}").status_code == 404
    assert alice.get("/ui/integrity", params={"subject": "bob"}).status_code == 403
    own = alice.get(f"/ui/integrity/{ids['alice']}")
    assert own.status_code == 200 and "Your decision" not in own.text
    refused = alice.post(
        f"/ui/integrity/{ids['alice']}/review", {"decision": "dismissed", "reason": "not me"}
    )
    assert refused.status_code == 403
    other = alice.post(
        f"/ui/integrity/{ids['bob']}/review", {"decision": "dismissed", "reason": "x"}
    )
    assert other.status_code == 404
    assert site.world.platform.findings.get(site.dave, ids["alice"]).status == "open"
    # The team admin is a peer here: findings are for reviewers and the person concerned.
    lead = site.client_for("lead")
    assert lead.get(f"/ui/integrity/{ids['alice']}").status_code == 404


def test_forms_need_the_csrf_token(site: Site) -> None:
    ids = record_findings(site, (site.world.alice, "cron_churn"))
    dave = site.client_for("dave")
    forged = dave.client.post(
        f"/ui/integrity/{ids['alice']}/review",
        data={"decision": "confirmed", "reason": "x", "csrf": "forged"},
    )
    assert forged.status_code == 403
    assert site.world.platform.findings.get(site.dave, ids["alice"]).status == "open"


# -- audit -------------------------------------------------------------------------------


def test_audit_search_filters_and_is_for_auditors_only(site: Site) -> None:
    record_findings(site, (site.world.alice, "deadline_burst"))
    dave = site.client_for("dave")
    found = dave.get("/ui/audit", params={"action": "integrity.*", "actor": "dave"})
    assert found.status_code == 200
    body = main(found.text)
    assert "integrity.finding.open" in body and "auth.login" not in body
    assert "Matching records" in body
    logins = main(dave.get("/ui/audit", params={"action": "auth.login", "limit": "25"}).text)
    assert "auth.login" in logins and "integrity.finding.open" not in logins
    bad = dave.get("/ui/audit", params={"since": "last tuesday", "actor": "nobody"})
    assert bad.status_code == 422
    assert 'id="q-since-error"' in bad.text
    nobody = dave.get("/ui/audit", params={"actor": "nobody"})
    assert nobody.status_code == 422 and "No user &#39;nobody&#39;" in nobody.text
    assert audit_actions(site, "audit.query")  # every search is itself recorded

    for handle in ("alice", "root", "lead"):
        page = site.client_for(handle).get("/ui/audit", params={"action": "integrity.*"})
        assert page.status_code == 200
        body = main(page.text)
        assert "Searching the audit log is for auditors" in body
        assert "integrity.finding.open" not in body


def test_verify_shows_ok_then_the_first_bad_record_after_tampering(site: Site) -> None:
    record_findings(site, (site.world.alice, "agent_churn"))
    dave = site.client_for("dave")
    assert "Verify the log now" in dave.get("/ui/audit").text
    ok = dave.post("/ui/audit/verify", {})
    assert ok.status_code == 200
    assert "Verified: the log is intact." in ok.text
    with site.world.platform.db.session() as session:
        seq = session.scalar(
            select(AuditEvent.seq).where(AuditEvent.action == "integrity.finding.open")
        )
        session.execute(
            text("UPDATE audit_events SET details = :d WHERE seq = :s"),
            {"d": '{"subject": "someone else", "detector": "agent_churn", "score": 0.1}', "s": seq},
        )
    failed = dave.post("/ui/audit/verify", {})
    body = main(failed.text)
    assert "Verification FAILED." in body
    assert f'<th scope="row">First bad record</th><td>seq {seq}</td>' in body
    assert "does not match its hash" in body
    assert "The first bad record, as stored now" in body and "someone else" in body
    # Verifying is for auditors and platform admins (the log service decides).
    assert site.client_for("alice").post("/ui/audit/verify", {}).status_code == 403
    assert "Verification FAILED." in site.client_for("root").post("/ui/audit/verify", {}).text


def test_who_looked_at_my_numbers_lists_a_team_admins_drill_down(site: Site) -> None:
    platform = site.world.platform
    platform.analytics.person(site.lead, site.world.alice.user_id, reason="cost spike review")
    page = site.client_for("alice").get("/ui/audit")
    assert page.status_code == 200
    body = main(page.text)
    assert "Who looked at my numbers" in body
    assert "<td>lead</td><td>cost spike review</td>" in body
    bob = main(site.client_for("bob").get("/ui/audit").text)
    assert "Nobody else has looked at your individual numbers." in bob


# -- admin -------------------------------------------------------------------------------


def test_admin_creates_a_user_and_changes_a_role(site: Site) -> None:
    root = site.client_for("root")
    page = root.get("/ui/admin/directory")
    assert page.status_code == 200 and "Add a person" in page.text
    created = root.post(
        "/ui/admin/directory/users",
        {"handle": "frank", "display_name": "Frank", "role": "employee", "team": "eng"},
    )
    assert created.status_code == 303
    assert "Person added" in root.get(created.headers["location"]).text
    with site.world.platform.db.session() as session:
        frank = session.scalars(select(User).where(User.handle == "frank")).one()
        assert (frank.role, frank.team_id) == ("employee", site.world.alice.team_id)
    changed = root.post(
        f"/ui/admin/directory/users/{frank.id}", {"role": "team_admin", "team": "ops"}
    )
    assert changed.status_code == 303
    listing = main(root.get("/ui/admin/directory", params={"q": "frank"}).text)
    assert "<td>ops</td><td>team admin</td>" in listing
    assert [a for a, _ in audit_actions(site, "directory.")] == [
        "directory.user.create",
        "directory.user.update",
    ]
    duplicate = root.post("/ui/admin/directory/users", {"handle": "frank", "role": "employee"})
    assert duplicate.status_code == 409 and 'id="user-handle-error"' in duplicate.text
    invalid = root.post(
        "/ui/admin/directory/users", {"handle": "no spaces", "role": "boss", "team": "nope"}
    )
    assert invalid.status_code == 422
    for field in ("handle", "role", "team"):
        assert f'id="user-{field}-error"' in invalid.text
    # Nobody changes their own role: the row offers no form, a forged post is refused.
    assert f'action="/ui/admin/directory/users/{site.world.admin.user_id}"' not in listing
    own = root.post(f"/ui/admin/directory/users/{site.world.admin.user_id}", {"role": "employee"})
    assert own.status_code == 403
    # The team admin sees their team and no forms; employees see no directory.
    lead = main(site.client_for("lead").get("/ui/admin/directory").text)
    assert "alice" in lead and "bob" not in lead and "Add a person" not in lead
    assert site.client_for("alice").get("/ui/admin/directory").status_code == 403


def test_policy_validation_shows_each_problem_at_its_line(site: Site) -> None:
    root = site.client_for("root")
    assert root.get("/ui/admin/policies").status_code == 200
    policy = (
        '@id("org.ok")\n'
        'forbid (principal, action == Action::"run.start", resource)\n'
        "when { context.drill_down };\n"
        "\n"
        '@id("org.bad")\n'
        'permit (principal, action == Action::"no.such", resource);\n'
    )
    result = root.post("/ui/admin/policies", {"policies": policy})
    assert result.status_code == 422
    body = main(result.text)
    assert '<td class="num">5</td><td>org.bad</td>' in body
    assert "<strong>5 (error)</strong>" in body and "no.such" in body
    assert 'aria-describedby="policy-policies-help policy-policies-error"' in body
    good = root.post("/ui/admin/policies", {"policies": policy.split("\n\n")[0]})
    assert good.status_code == 200 and "Valid: the policies parse" in good.text
    assert site.client_for("alice").get("/ui/admin/policies").status_code == 403
    assert site.client_for("dave").post("/ui/admin/policies", {"policies": ""}).status_code == 403


def test_budget_form_rejects_a_negative_cap_and_saves_nothing(site: Site) -> None:
    root = site.client_for("root")
    fields = {"scope": "team", "name": "eng", "metric": "cost", "period": "month"}
    negative = root.post("/ui/admin/budgets", fields | {"hard_cap": "-5", "soft_cap": ""})
    assert negative.status_code == 422
    assert 'id="budget-hard_cap-error"' in negative.text
    assert "cannot be negative" in negative.text
    assert 'value="-5" aria-describedby' in negative.text  # what was typed is kept
    upside_down = root.post("/ui/admin/budgets", fields | {"hard_cap": "5", "soft_cap": "9"})
    assert upside_down.status_code == 422 and 'id="budget-soft_cap-error"' in upside_down.text
    no_team = root.post("/ui/admin/budgets", fields | {"name": "nope", "hard_cap": "5"})
    assert no_team.status_code == 422 and 'id="budget-name-error"' in no_team.text
    with site.world.platform.db.session() as session:
        assert session.scalars(select(Budget)).all() == []

    saved = root.post("/ui/admin/budgets", fields | {"hard_cap": "25.00", "soft_cap": "20"})
    assert saved.status_code == 303
    listing = main(root.get("/ui/admin/budgets").text)
    assert "$25" in listing and "within caps" in listing
    [budget_id] = re.findall(r"/ui/admin/budgets/(bud_[a-z0-9]+)/delete", listing)
    # An employee's attempt to change a team budget is refused and changes nothing.
    alice = site.client_for("alice")
    refused = alice.post("/ui/admin/budgets", fields | {"hard_cap": "1000"})
    assert refused.status_code == 403 and "Nothing was saved" in refused.text
    assert alice.post(f"/ui/admin/budgets/{budget_id}/delete", {}).status_code == 403
    deleted = root.post(f"/ui/admin/budgets/{budget_id}/delete", {})
    assert deleted.status_code == 303
    with site.world.platform.db.session() as session:
        assert session.scalars(select(Budget)).all() == []


def test_prices_and_connector_tool_approval(site: Site) -> None:
    root = site.client_for("root")
    prices = main(root.get("/ui/admin/prices").text)
    assert "gpt-4o-mini" in prices and "in force" in prices
    assert site.client_for("alice").get("/ui/admin/prices").status_code == 200

    config = {"command": sys.executable, "args": [str(FIXTURE_SERVER)]}
    site.world.platform.connector_admin.add(site.world.admin, "fx", config)
    assert "fx" in root.get("/ui/admin/connectors").text
    refreshed = root.post("/ui/admin/connectors/fx/refresh", {})
    assert refreshed.status_code == 303, refreshed.text
    page = root.get("/ui/admin/connectors/fx").text
    digest = re.search(
        r'name="tool" value="echo">\s*<input type="hidden" name="expected_hash" value="(\w+)"',
        page,
    )
    assert digest is not None and "waiting for approval" in page
    stale = root.post("/ui/admin/connectors/fx/approve", {"tool": "echo", "expected_hash": "0"})
    assert stale.status_code == 409 and "Nothing was approved" in stale.text
    alice = site.client_for("alice")
    assert "Approve echo" not in alice.get("/ui/admin/connectors/fx").text
    hashed = {"tool": "echo", "expected_hash": digest.group(1)}
    assert alice.post("/ui/admin/connectors/fx/approve", hashed).status_code == 403
    approved = root.post("/ui/admin/connectors/fx/approve", hashed)
    assert approved.status_code == 303
    approvals = site.world.platform.connector_admin.approvals(site.world.admin.org_id)
    states = {s.tool: s.status for s in approvals.states("fx")}
    assert states["echo"] == "approved"


def test_a_user_of_another_org_never_sees_or_changes_anything(site: Site) -> None:
    ids = record_findings(site, (site.world.alice, "token_heavy"))
    site.world.platform.analytics.person(site.lead, site.world.alice.user_id, reason="check")
    eve = site.client_for("eve")
    assert ids["alice"] not in eve.get("/ui/integrity").text
    assert eve.get(f"/ui/integrity/{ids['alice']}").status_code == 404
    review = eve.post(
        f"/ui/integrity/{ids['alice']}/review", {"decision": "dismissed", "reason": "mine now"}
    )
    assert review.status_code == 404
    directory = main(eve.get("/ui/admin/directory").text)
    assert "alice" not in directory and "eve" in directory
    changed = eve.post(
        f"/ui/admin/directory/users/{site.world.alice.user_id}", {"role": "platform_admin"}
    )
    assert changed.status_code == 404
    budget = {"scope": "team", "name": "eng", "metric": "cost", "period": "month"}
    refused = eve.post("/ui/admin/budgets", budget | {"hard_cap": "1"})
    assert refused.status_code == 422 and "No team &#39;eng&#39;" in refused.text
    verify = eve.post("/ui/audit/verify", {})
    assert verify.status_code == 200  # org admins verify the shared log, bodies stay hidden
    assert escape(site.world.alice.user_id) not in verify.text
    assert "lead" not in main(eve.get("/ui/audit").text)
    with site.world.platform.db.session() as session:
        alice = session.get(User, site.world.alice.user_id)
        assert alice is not None and alice.role == "employee"
    assert site.world.platform.findings.get(site.dave, ids["alice"]).status == "open"


def test_pages_ask_to_sign_in(site: Site) -> None:
    anonymous = TestClient(create_app(site.world.platform), follow_redirects=False)
    for path in ("/ui/integrity", "/ui/audit", "/ui/admin", "/ui/admin/directory"):
        response = anonymous.get(path)
        assert response.status_code == 303 and "/ui/login" in response.headers["location"]


def _seqs(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<tr><td class="num">(\d+)</td>', html)]


def _link(html: str, label: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)">{label}</a>', html)
    return found.group(1).replace("&amp;", "&") if found else None


def test_audit_pages_walk_back_from_the_latest_and_forward_again(site: Site) -> None:
    dave = site.client_for("dave")
    for _ in range(30):  # enough of the org's own records for two pages of 25
        dave.get("/ui/audit", params={"action": "nothing.*"})
    latest = dave.get("/ui/audit", params={"limit": "25"}).text
    newest = _seqs(latest)
    assert len(newest) == 25 and newest == sorted(newest)
    assert _link(latest, "Later records") is None  # the head: nothing newer yet
    earlier = _link(latest, "Earlier records")
    assert earlier is not None and "before=" in earlier
    previous = dave.get(earlier).text
    older = _seqs(previous)
    assert older and max(older) < min(newest)
    back = _link(previous, "Later records")
    assert back is not None
    assert _seqs(dave.get(back).text)[0] > max(older)


def test_the_queue_filters_by_findings_the_platform_raises_too(site: Site) -> None:
    queue = site.client_for("dave").get("/ui/integrity", params={"detector": "recheck_failing"})
    assert queue.status_code == 200
    assert '<option value="recheck_failing" selected' in queue.text
