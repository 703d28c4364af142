"""The seam to the integrity engine: which credit is withheld, pending review or confirmed.

``../shared/DESIGN.md`` (Integrity): while a finding about someone is open, the credit
it concerns is withheld from leaderboards and shown as "pending review"; it is restored
if a reviewer dismisses the finding (a confirmed finding keeps it withheld). What a
finding concerns is its scope (``integrity.scope``: the outcomes of the period the scan
saw of the person, the weeks a deadline burst names, or the one outcome a failing
re-check is about), recorded in its evidence; the platform's ``FindingsService.withheld``
reads its rows the same way, so offline and platform agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from meshclaw.integrity.scope import Withholding, withholding_of

if TYPE_CHECKING:
    from meshclaw.integrity import ScanResult


def withheld_from_scan(result: ScanResult) -> frozenset[Withholding]:
    """The credit a scan's flagged people's findings concern (all open until reviewed)."""
    return frozenset(
        w
        for u in result.users
        if u.flagged
        for f in u.findings
        if (w := withholding_of(u.user, f.detector, f.evidence, "open")) is not None
    )


def withheld_from_findings(document: Mapping[str, Any]) -> frozenset[Withholding]:
    """The credit the findings in a scan's JSON (``ScanResult.to_json()``) concern.

    A person counts when ``flagged`` is true. A review may write a ``status`` on the
    person (for all their findings) or on a finding: ``dismissed`` gives the credit back,
    ``confirmed`` keeps it out of the score (not shown as pending), anything else holds
    it pending review. A flagged person listed without findings: all of their credit.
    ``ValueError`` (with the reason) when the document is not such a file.
    """
    users = document.get("users")
    if not isinstance(users, list):
        raise ValueError('findings document needs a "users" list (integrity scan --json)')
    withheld: set[Withholding] = set()
    for entry in users:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("user"), str):
            raise ValueError('each "users" entry needs a "user" string')
        if not entry.get("flagged"):
            continue
        user, status = entry["user"], entry.get("status")
        findings = entry.get("findings", [])
        if not isinstance(findings, list):
            raise ValueError(f'{user}: "findings" must be a list')
        if not findings:
            whole = withholding_of(user, "", None, status)
            withheld |= {whole} if whole is not None else set()
        for finding in findings:
            if not isinstance(finding, Mapping) or not isinstance(
                finding.get("evidence", {}), Mapping
            ):
                raise ValueError(f'{user}: each finding needs an "evidence" object')
            held = withholding_of(
                user,
                str(finding.get("detector", "")),
                finding.get("evidence"),
                finding.get("status", status),
            )
            if held is not None:
                withheld.add(held)
    return frozenset(withheld)
