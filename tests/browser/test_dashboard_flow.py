"""The dashboard in Chromium, end to end, against a real platform on loopback.

Alice builds an agent in the form and test-runs it against the scripted model; the trace
updates live while its mail to fiona is held by the org policy; alice approves the exact
call in the inbox and watches the run finish; fiona accepts the outcome on its page; the
insights chart and the team leaderboard change; dave, the auditor, dismisses an integrity
finding a real scan raised and finds his decision in the verified audit log; carol, the
platform admin, sees the connector and the policy that held the mail. Every page visited
is checked for console errors and accessibility basics (labels, alt texts, one h1).

With ``MESHCLAW_SCREENSHOTS=1`` the flow also saves the main pages as 1280x800 PNGs in
``docs/screenshots/`` (for the README); without it nothing in the tree changes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from meshclaw.integrity import scan_file
from tests.browser._browser import TIMEOUT_MS, Tab
from tests.browser._scenario import (
    BENEFICIARY,
    DESCRIPTION,
    INSTRUCTIONS,
    MODEL,
    SUBJECT,
    split_task_history,
)
from tests.browser.conftest import VIEWPORT, Live

pytestmark = pytest.mark.slow

AGENT = "oncall-report"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
REASON = "One incident ticket, closed in slices on purpose: checked with the team."


@pytest.fixture
def tabs(chromium: Browser, live: Live) -> Iterator[Callable[[], Tab]]:
    """Open browser tabs, each in its own context (its own cookies): one per person."""
    opened: list[Tab] = []

    def open_tab() -> Tab:
        context = chromium.new_context(viewport=VIEWPORT, base_url=live.url)
        context.set_default_timeout(TIMEOUT_MS)
        tab = Tab.open(context)
        opened.append(tab)
        return tab

    yield open_tab
    for tab in opened:
        tab.close()


def shoot(tab: Tab, name: str, at: Locator | None = None) -> None:
    """Save the viewport as ``docs/screenshots/NAME.png`` when MESHCLAW_SCREENSHOTS=1,
    scrolled to the top of the page or to ``at``."""
    if os.environ.get("MESHCLAW_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = tab.page
    page.wait_for_load_state("networkidle")
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    if at is None:
        page.evaluate("() => window.scrollTo(0, 0)")
    else:
        at.evaluate("el => window.scrollTo(0, el.getBoundingClientRect().top + scrollY - 12)")
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), animations="disabled")


def no_problems(*tabs: Tab) -> None:
    errors = [e for t in tabs for e in t.errors]
    assert errors == [], "console errors:\n" + "\n".join(errors)
    problems = {path: p for t in tabs for path, p in t.checked.items() if p}
    assert problems == {}, f"accessibility problems: {problems}"


def _steps(page: Page) -> int:
    return page.get_by_role("heading", name=re.compile(r"^\d+\. (Model turn|Tool call):")).count()


def _run_state(live: Live, run_id: str) -> str:
    """The run as the API sees it, for a failure message."""
    run = live.api("alice").get(f"/v1/runs/{run_id}").json()
    steps = [(s["seq"], s["name"], s["status"]) for s in run.get("steps") or []]
    return f"run {run_id} is {run.get('status')} ({run.get('error')}); steps {steps}"


def _nav(page: Page, name: str) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name=name).click()


def test_keyboard_only_sign_in(tabs: Callable[[], Tab]) -> None:
    tab = tabs()
    page = tab.page
    tab.goto("/ui/login")
    assert tab.check_page() == []
    focused = "() => document.activeElement.id || document.activeElement.textContent.trim()"
    assert page.evaluate(focused) == "handle"  # the user field has the focus on arrival
    page.keyboard.type("alice")
    page.keyboard.press("Tab")
    assert page.evaluate(focused) == "password"
    page.keyboard.type("meshclaw-demo")
    page.keyboard.press("Tab")
    assert page.evaluate(focused) == "org"
    page.keyboard.press("Tab")
    assert page.evaluate(focused) == "Sign in"
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Welcome, alice", level=1)).to_be_visible()
    assert page.url.endswith("/ui/")
    # From the top of a page, the first Tab stop is the skip link, and it works.
    page.keyboard.press("Tab")
    assert page.evaluate(focused) == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate(focused) == "main"
    # A wrong password comes back with the reason, announced as an alert.
    other = tabs()
    other.goto("/ui/login")
    other.page.keyboard.type("alice")
    other.page.keyboard.press("Tab")
    other.page.keyboard.type("not-the-password")
    other.page.keyboard.press("Enter")
    expect(other.page.get_by_role("alert")).to_contain_text("password")
    no_problems(tab, other)


def test_build_run_approve_accept_chart_leaderboard_and_review(
    live: Live, tabs: Callable[[], Tab], tmp_path: Path
) -> None:
    alice = tabs()
    alice.sign_in("alice")
    page = alice.page
    expect(page.get_by_role("heading", name="Welcome, alice", level=1)).to_be_visible()
    alice.check_page()

    # -- the builder: a form that produces a valid, versioned spec ----------------------
    _nav(page, "Agents")
    alice.check_page()
    page.get_by_role("link", name="Build a new agent").first.click()
    expect(page.get_by_role("heading", name="Build a new agent", level=1)).to_be_visible()
    alice.check_page()
    the_agent = page.get_by_role("group", name="The agent")
    the_agent.get_by_label("Name").fill(AGENT)
    the_agent.get_by_label("Description").fill(DESCRIPTION)
    model = page.get_by_role("group", name="Model", exact=True)
    model.get_by_label("Provider").fill("scripted")
    model.get_by_label("Model", exact=False).first.fill(MODEL)
    page.get_by_label("Instructions").fill(INSTRUCTIONS)
    tool1 = page.get_by_role("group", name="Tool 1")
    tool1.get_by_label("Name").fill("clock.now")
    tool1.get_by_label("Scope").select_option("read")
    tool2 = page.get_by_role("group", name="Tool 2")
    tool2.get_by_label("Name").fill("mail.send")
    tool2.get_by_label("Scope").select_option("write")
    tool2.get_by_label("Argument limits").fill('{to: ["*@acme.test"]}')
    page.get_by_label("Maximum model turns").fill("8")
    page.get_by_label("Timeout in seconds").fill("60")
    page.get_by_role("group", name="Outcome 1").get_by_label("Type").fill("mail_sent")
    shoot(alice, "agent-builder")
    page.get_by_role("button", name="Save the agent").click()
    expect(page.get_by_role("heading", name=AGENT, level=1)).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("Saved as a new version")
    alice.check_page()
    saved = live.api("alice").get(f"/v1/agents/{AGENT}").raise_for_status().json()
    assert saved["version"] == 1 and saved["spec"]["outcomes"][0]["type"] == "mail_sent"
    assert [t["name"] for t in saved["spec"]["tools"]] == ["clock.now", "mail.send"]

    # -- a test run: the trace grows without a reload while the run works --------------
    page.get_by_label("Input for the agent").fill("Send this week's on-call report.")
    page.get_by_role("button", name="Start test run").click()
    expect(page.get_by_role("heading", name=re.compile(r"^Run "), level=1)).to_be_visible()
    run_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    page.evaluate("() => { window.__sameDocument = true; }")  # a reload would drop it
    steps_at_load = _steps(page)
    held = page.get_by_role("heading", name=re.compile(r"\. Tool call: mail\.send"))
    try:
        expect(held).to_contain_text("waiting approval")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_run_state(live, run_id)}") from None
    assert page.evaluate("() => window.__sameDocument === true"), "the page was reloaded"
    assert _steps(page) > steps_at_load
    expect(page.get_by_text("Paused: a tool call waits for a person's approval")).to_be_visible()
    alice.check_page()

    # -- the approvals inbox: the exact action and arguments, approved ------------------
    page.get_by_role("link", name="Open the approvals inbox").click()
    expect(page.get_by_role("heading", name="Approvals", level=1)).to_be_visible()
    alice.check_page()
    item = page.get_by_role("region", name="mail.send wants to run").filter(has_text=run_id)
    expect(item).to_contain_text("tool.write")
    expect(item).to_contain_text(BENEFICIARY)
    expect(item).to_contain_text(SUBJECT)
    expect(item).to_contain_text("approval.mail-send")  # why the policy held it
    item.get_by_label("Note").fill("Report checked: send it.")
    shoot(alice, "approvals")
    item.get_by_role("button", name="Approve this call").click()
    expect(page.get_by_role("status")).to_contain_text("Approved")
    alice.check_page()

    # -- the run finishes, on its page ---------------------------------------------------
    alice.goto(f"/ui/runs/{run_id}")
    try:
        expect(page.get_by_role("heading", name="Final output")).to_be_visible()
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_run_state(live, run_id)}") from None
    expect(page.get_by_text(f"Sent the on-call report to {BENEFICIARY}.").first).to_be_visible()
    expect(page.locator("#run-live .badge").first).to_have_text("succeeded")
    expect(held).to_contain_text("ok")
    alice.check_page()
    shoot(alice, "run-trace", at=page.get_by_role("heading", name=re.compile(r"^3\. Model turn")))
    outcome = live.wait_for_outcome(run_id)
    assert outcome["verified"] and outcome["state"] == "unaccepted"

    # -- insights before fiona's verdict -------------------------------------------------
    _nav(page, "Usage & outcomes")
    expect(page.locator(".chart .main-svg").first).to_be_attached()  # Plotly drew it
    alice.check_page()
    before = _accepted_in_chart(alice)

    # -- fiona, who received the mail, accepts it on the outcome's page ------------------
    fiona = tabs()
    fiona.sign_in(BENEFICIARY)
    fiona.check_page()
    waiting = fiona.page.get_by_role("link", name=f"mail_sent: {outcome['ref']}")
    waiting.click()
    expect(fiona.page.get_by_role("heading", level=1)).to_contain_text("Mail sent")
    expect(fiona.page.get_by_text("Verified", exact=True)).to_be_visible()
    fiona.check_page()
    fiona.page.get_by_label("Note").fill("Thanks, exactly what I needed.")
    fiona.page.get_by_role("button", name="Accept").click()
    expect(fiona.page.get_by_role("status")).to_contain_text("Your verdict was recorded: accepted")
    expect(fiona.page.locator(".badge.credited").first).to_be_visible()
    fiona.check_page()

    # -- the chart changed: its figure data and the table count one more accepted -------
    alice.goto("/ui/insights")
    expect(page.locator(".chart .main-svg").first).to_be_attached()
    after = _accepted_in_chart(alice)
    assert after == before + 1, (before, after)
    numbers = page.get_by_role("table", name="The numbers")
    accepted_column = _column(numbers, "Accepted")
    assert sum(int(x) for x in accepted_column) == after
    expect(page.get_by_role("link", name=outcome["ref"])).to_be_visible()
    shoot(alice, "insights", at=page.get_by_role("heading", name=re.compile("^Recorded and")))

    # -- the leaderboard: alice's team is ranked by the accepted value -------------------
    _nav(page, "Leaderboard")
    expect(page.get_by_role("heading", name="Leaderboard", level=1)).to_be_visible()
    alice.check_page()
    board = live.api("alice").get("/v1/analytics/leaderboard").json()["entries"]
    platform_team = live.team_id("platform")
    (api_row,) = [e for e in board if e["team"] == platform_team]
    row = (
        page.get_by_role("table", name="Teams")
        .get_by_role("row")
        .filter(has=page.get_by_role("rowheader", name="platform"))
    )
    expect(row).to_have_count(1)
    assert float(row.get_by_role("cell").nth(1).inner_text()) == pytest.approx(
        api_row["score"], abs=0.005
    )
    assert int(row.get_by_role("cell").nth(2).inner_text()) >= 1
    shoot(alice, "leaderboard")

    # -- dave, the auditor, reviews a finding a real scan raised -------------------------
    people = live.people
    history = split_task_history(
        tmp_path / "history.jsonl",
        subject=people["erin"].user_id,
        peers=[people[h].user_id for h in ("alice", "bob", "carol", BENEFICIARY)],
    )
    scan = scan_file(history)
    assert scan.flagged == [people["erin"].user_id]
    live.platform.findings.record(people["dave"], scan, source="scan:history.jsonl")

    dave = tabs()
    dave.sign_in("dave")
    _nav(dave.page, "Integrity")
    expect(dave.page.get_by_role("heading", name="Integrity findings", level=1)).to_be_visible()
    dave.check_page()
    finding = dave.page.get_by_role("row").filter(has_text="erin")
    expect(finding).to_contain_text("split tasks")
    expect(finding).to_contain_text("open")
    shoot(dave, "integrity")
    finding.get_by_role("link", name=re.compile(r"^Review ")).click()
    expect(dave.page.get_by_role("heading", level=1)).to_contain_text("Split tasks: erin")
    expect(dave.page.get_by_role("cell", name="OPS-7")).to_be_visible()  # the evidence
    dave.check_page()
    dave.page.get_by_label(re.compile(r"^Dismiss")).check()
    dave.page.get_by_label("Reason").fill(REASON)
    dave.page.get_by_role("button", name="Record the decision").click()
    expect(dave.page.get_by_role("status")).to_contain_text("dismissed")
    expect(dave.page.get_by_role("cell", name=REASON).first).to_be_visible()
    dave.check_page()

    # -- ... and finds the decision in the audit log, which verifies ---------------------
    _nav(dave.page, "Audit")
    dave.page.get_by_label("Action").fill("integrity.*")
    dave.page.get_by_role("button", name="Search").click()
    results = dave.page.get_by_role("table", name=re.compile("Matching records"))
    expect(results.get_by_role("row").filter(has_text="integrity.finding.dismissed")).to_have_count(
        1
    )
    dave.check_page()
    dave.page.get_by_role("button", name=re.compile("Verify the log")).click()
    expect(dave.page.get_by_role("status")).to_contain_text("Verified: the log is intact")
    dave.check_page()
    shoot(dave, "audit")

    # -- carol, the platform admin: the connector and the policy that held the mail ------
    carol = tabs()
    carol.sign_in("carol")
    _nav(carol.page, "Admin")
    expect(carol.page.get_by_role("heading", name="Admin", level=1)).to_be_visible()
    carol.check_page()
    carol.page.get_by_role("link", name="Connectors and tool approvals").click()
    expect(carol.page.get_by_role("row").filter(has_text="mail")).to_contain_text("first use")
    carol.check_page()
    shoot(carol, "admin")
    carol.goto("/ui/admin/policies")
    expect(carol.page.get_by_label("Org policies (Cedar)")).to_have_value(
        re.compile("approval.mail-send")
    )
    carol.check_page()

    # -- back home: alice's agents, runs and credited outcome -----------------------------
    _nav(page, "Home")
    expect(page.get_by_role("link", name=AGENT, exact=True)).to_be_visible()
    expect(page.get_by_role("link", name=run_id)).to_be_visible()
    alice.check_page()
    shoot(alice, "home")

    no_problems(alice, fiona, dave, carol)


def _accepted_in_chart(tab: Tab) -> int:
    """Accepted outcomes in the chart's window, read from the figure the page draws."""
    figure = tab.figure("figure-outcomes")
    (accepted,) = [t for t in figure["data"] if t["name"].startswith("Accepted")]
    return int(sum(y or 0 for y in accepted["y"]))


def _column(table: Any, header: str) -> list[str]:
    headers = [h.strip() for h in table.locator("thead th").all_inner_texts()]
    index = headers.index(header)
    return [
        row.locator("th, td").nth(index).inner_text() for row in table.locator("tbody tr").all()
    ]


PAGES = {
    # Pages the flow above does not visit, as someone who may open them.
    "alice": [
        "/ui/agents/daily-notes/edit", "/ui/runs", "/ui/insights?period=day", "/ui/integrity",
        "/ui/audit", "/ui/admin", "/ui/admin/budgets", "/ui/notifications",
    ],
    "carol": [
        "/ui/admin/connectors/mail", "/ui/admin/budgets", "/ui/admin/prices",
        "/ui/admin/directory", "/ui/insights?scope=org&period=month", "/ui/integrity?status=all",
        "/ui/notifications?scope=org&status=all",
    ],
}  # fmt: skip


@pytest.mark.parametrize("handle", sorted(PAGES))
def test_every_page_has_labels_one_h1_and_no_console_errors(
    handle: str, tabs: Callable[[], Tab]
) -> None:
    tab = tabs()
    tab.sign_in(handle)
    for path in PAGES[handle]:
        tab.goto(path)
        if "/insights" in path:  # Plotly loads after the page: wait for the drawing
            expect(tab.page.locator(".chart .main-svg").first).to_be_attached()
        tab.check_page()
    if handle == "alice":
        # A form sent back with errors keeps its labels and names the fields to fix.
        tab.goto("/ui/agents/new")
        tab.page.get_by_role("group", name="The agent").get_by_label("Name").fill("Not A Name")
        tab.page.get_by_role("button", name="Save the agent").click()
        summary = tab.page.get_by_role("alert").filter(has_text="Nothing was saved")
        expect(summary).to_be_visible()
        expect(summary.get_by_role("link", name="Name")).to_be_visible()
        expect(tab.page.locator("#name")).to_have_attribute("aria-invalid", "true")
        tab.check_page()
    no_problems(tab)
