"""Live scans: the same engine on the platform's own history, on a schedule.

``scan_org(platform, org_id)`` writes the org's last ``weeks`` weeks as event format v1
to a temporary file (``events.export``), scans it with ``scan_file`` exactly as
``meshclaw integrity scan`` would, and records the flagged people's findings through
``FindingsService.record_for_platform`` (same dedupe and dismissal rules as a recorded
scan, audited as the platform). The file holds texts (each run's task, and as its first
model call's ``prompt`` the agent's instructions and that task) only while the scan reads
it, in a private temporary folder deleted after the scan; the scan keeps fingerprints and
word counts (what ``repeated_tasks`` and ``padded_prompts`` judge), and the findings keep
evidence (ids and numbers), never the texts.

The scheduler runs ``Platform.scan_integrity()`` for every org every
``integrity_scan_hours`` (``workers.celery_app``, ``workers.inprocess``); ``meshclaw
integrity scan-live`` runs it now for the caller's org.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from meshclaw.clock import utcnow
from meshclaw.events.export import export_org
from meshclaw.integrity._history import ScanConfig
from meshclaw.integrity._scan import scan_file
from meshclaw.integrity.findings import RecordSummary
from meshclaw.store.models import Org

if TYPE_CHECKING:
    from meshclaw.platform import Platform

SOURCE = "live-scan"
WEEKS = 4


@dataclass(frozen=True, kw_only=True)
class LiveScan:
    """What one org's live scan saw and recorded."""

    org_id: str
    since: datetime
    until: datetime
    events: int
    people: int
    flagged: list[str] = field(default_factory=list)
    recorded: RecordSummary = field(
        default_factory=lambda: RecordSummary(opened=0, updated=0, suppressed=0)
    )


def scan_org(
    platform: Platform, org_id: str, *, weeks: int = WEEKS, now: datetime | None = None
) -> LiveScan:
    """Scan the org's last ``weeks`` weeks of runs and record what is flagged."""
    if weeks < 1:
        raise ValueError("weeks must be at least 1")
    until = now or utcnow()
    since = until - timedelta(weeks=weeks)
    config = _config(platform, org_id)
    weights = platform.outcomes.weights(org_id)
    with tempfile.TemporaryDirectory(prefix="meshclaw-scan-") as tmp:
        path = Path(tmp) / "events.jsonl"
        exported = export_org(platform.db, org_id, path, since=since, until=until, weights=weights)
        if exported.total == 0:
            return LiveScan(org_id=org_id, since=since, until=until, events=0, people=0)
        result = scan_file(path, config=config)
    recorded = platform.findings.record_for_platform(org_id, result, source=SOURCE)
    return LiveScan(
        org_id=org_id, since=since, until=until, events=exported.total,
        people=len(result.users), flagged=result.flagged, recorded=recorded,
    )  # fmt: skip


def scan_orgs(
    platform: Platform,
    org_id: str | None = None,
    *,
    weeks: int = WEEKS,
    now: datetime | None = None,
) -> list[LiveScan]:
    """``scan_org`` for one org, or every org of the install (one at a time)."""
    if org_id is not None:
        return [scan_org(platform, org_id, weeks=weeks, now=now)]
    with platform.db.session() as session:
        orgs = list(session.scalars(select(Org.id).order_by(Org.id)))
    return [scan_org(platform, org, weeks=weeks, now=now) for org in orgs]


def _config(platform: Platform, org_id: str) -> ScanConfig:
    """The org's measurement cut-off (its analytics settings; Friday 17:00 UTC default)."""
    with platform.db.session() as session:
        org = session.get(Org, org_id)
        analytics = ((org.settings or {}) if org is not None else {}).get("analytics") or {}
    return ScanConfig(
        cutoff_weekday=int(analytics.get("cutoff_weekday", 4)),
        cutoff_hour=int(analytics.get("cutoff_hour", 17)),
    )
