"""The dashboard on a phone-sized screen (375 CSS pixels wide): every main page fits the
window (only a wide table or code block scrolls, inside its own box), the menu reaches
every section, and each page passes the same checks as on a desktop (labels, one h1,
text contrast, no console errors)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from tests.browser._browser import TIMEOUT_MS, Tab
from tests.browser.conftest import Live
from tests.browser.test_dashboard_flow import no_problems

pytestmark = pytest.mark.slow

PHONE = {"width": 375, "height": 740}

PAGES = {
    "alice": ["/ui/", "/ui/agents", "/ui/agents/new", "/ui/agents/daily-notes", "/ui/runs",
              "/ui/approvals", "/ui/insights", "/ui/leaderboard", "/ui/notifications"],
    "carol": ["/ui/admin", "/ui/admin/connectors/mail", "/ui/admin/budgets",
              "/ui/admin/prices", "/ui/admin/policies", "/ui/integrity?status=all"],
    "dave": ["/ui/audit", "/ui/integrity"],
}  # fmt: skip


@pytest.fixture
def phone(chromium: Browser, live: Live) -> Iterator[Tab]:
    context = chromium.new_context(viewport=PHONE, base_url=live.url, is_mobile=True)
    context.set_default_timeout(TIMEOUT_MS)
    tab = Tab.open(context)
    yield tab
    tab.close()


@pytest.mark.parametrize("handle", sorted(PAGES))
def test_main_pages_fit_a_phone_screen(handle: str, phone: Tab) -> None:
    phone.sign_in(handle)
    menu = phone.page.get_by_role("navigation", name="Main")
    for name in ("Home", "Agents", "Runs", "Approvals", "Audit", "Admin"):
        link = menu.get_by_role("link", name=name, exact=True)
        expect(link).to_be_visible()
        box = link.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    for path in PAGES[handle]:
        phone.goto(path)
        if path.startswith("/ui/insights"):  # Plotly draws after the page loads
            expect(phone.page.locator(".chart .main-svg").first).to_be_attached()
        phone.check_page()
    no_problems(phone)
