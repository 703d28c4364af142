"""Paths of the dashboard pages that are linked from outside the dashboard (mails).

A mail that names a page must name the page the web app serves. The route declares its
path with the template here and the mail builds its link with the function here, so the
two cannot drift apart; ``tests/api/test_dashboard_paths.py`` also matches each path
against the app's routes. This module imports nothing: ``outcomes`` (run by workers)
uses it without loading the web package.
"""

from __future__ import annotations

from urllib.parse import quote

UI = "/ui"
"""Where the dashboard is mounted (``web._pages.PREFIX``)."""
OUTCOME_PAGE = "/insights/outcomes/{outcome_id}"
"""One outcome's page, under ``UI``: its evidence, feedback, and the accept/reject form."""


def outcome_page(outcome_id: str, *, base_url: str | None = None) -> str:
    """The path of one outcome's page, absolute under ``base_url`` when given."""
    path = UI + OUTCOME_PAGE.format(outcome_id=quote(outcome_id, safe=""))
    return f"{(base_url or '').rstrip('/')}{path}"
