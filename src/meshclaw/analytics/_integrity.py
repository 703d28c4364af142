"""The seam to the integrity engine: whose credit is withheld pending review.

``../shared/DESIGN.md`` (Integrity): while a finding about someone is open, the credit
it concerns is withheld from leaderboards and shown as "pending review"; it is restored
if a reviewer dismisses the finding. The integrity engine reports findings per person
(``integrity.ScanResult``), so the credit a finding concerns is, for now, all of that
person's credit in the history scanned. When findings name individual outcomes, this
module is the one place to narrow it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshclaw.integrity import ScanResult

CLOSED = frozenset({"dismissed", "resolved_dismissed"})
"""Finding statuses that restore the credit (a reviewer dismissed the finding)."""


def withheld_from_scan(result: ScanResult) -> frozenset[str]:
    """People flagged by a scan (every finding is open until reviewed)."""
    return frozenset(u.user for u in result.users if u.flagged)


def withheld_from_findings(document: Mapping[str, Any]) -> frozenset[str]:
    """People with open findings in a scan's JSON (``ScanResult.to_json()``).

    A person counts when ``flagged`` is true and their optional ``status`` (written by a
    review) is not ``dismissed``.
    """
    users = document.get("users")
    if not isinstance(users, list):
        raise ValueError('findings document needs a "users" list (integrity scan --json)')
    withheld = set()
    for entry in users:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("user"), str):
            raise ValueError('each "users" entry needs a "user" string')
        if entry.get("flagged") and entry.get("status") not in CLOSED:
            withheld.add(entry["user"])
    return frozenset(withheld)
