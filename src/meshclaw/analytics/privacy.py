"""Privacy tiers for analytics (``../shared/DESIGN.md``, users; issue 8, item 7).

- Everyone sees their own numbers.
- Team aggregates need ``analytics.view_team`` on the team (team admins: their team;
  platform admins: all), and a group smaller than ``k`` people is never shown
  (k-anonymity; ``k`` is an org setting, default 5).
- One person's numbers, seen by someone else, need ``analytics.view_person`` with
  ``context.drill_down`` (team admins: their team; platform admins: the org), a stated
  reason, and are recorded: in the audit log and in the trail the person can read
  ("who looked at my numbers").

The decisions are Cedar's (``policy.api.ApiAuthorizer``); ``authorize`` is the one place
analytics asks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from sqlalchemy.orm import Session

from meshclaw.accounts.service import Caller
from meshclaw.analytics.models import AnalyticsView
from meshclaw.audit.sink import AuditRecord, AuditSink
from meshclaw.clock import utcnow
from meshclaw.ids import new_id
from meshclaw.policy.api import ApiAuthorizer, ApiResource

DEFAULT_K = 5
Action = Literal["analytics.view_team", "analytics.view_person"]
VIEW_TEAM: Action = "analytics.view_team"
VIEW_PERSON: Action = "analytics.view_person"


def authorize(
    access: ApiAuthorizer,
    caller: Caller,
    action: Action,
    resource: ApiResource,
    *,
    drill_down: bool = False,
) -> None:
    """Raise ``PermissionDenied`` unless the policy allows ``action`` on ``resource``."""
    access.require(caller, action, resource, drill_down=drill_down)


def k_of(org_settings: Mapping[str, Any] | None) -> int:
    """The org's k for k-anonymity (``settings["analytics"]["k"]``, default 5, at least 2)."""
    analytics = (org_settings or {}).get("analytics") or {}
    try:
        return max(2, int(analytics.get("k", DEFAULT_K)))
    except (TypeError, ValueError):
        return DEFAULT_K


def individual_boards(org_settings: Mapping[str, Any] | None) -> bool:
    """Whether the org allows individual leaderboards (people still opt in one by one)."""
    analytics = (org_settings or {}).get("analytics") or {}
    return bool(analytics.get("individual_boards", False))


def record_person_view(
    session: Session,
    audit: AuditSink,
    caller: Caller,
    subject_id: str,
    reason: str,
    *,
    what: str,
) -> None:
    """Record that ``caller`` looked at ``subject_id``'s ``what`` (their numbers, their
    usage): in the trail the person reads ("who looked at my numbers") and in the audit
    log, in the caller's transaction."""
    session.add(
        AnalyticsView(
            id=new_id("anv"), org_id=caller.org_id, viewer_id=caller.user_id,
            subject_id=subject_id, reason=reason, created_at=utcnow(),
        )
    )  # fmt: skip
    audit.append(
        session,
        AuditRecord(
            action="analytics.view_person", resource=f"user:{subject_id}", outcome="ok",
            org_id=caller.org_id, actor_user_id=caller.user_id,
            details={"reason": reason, "what": what},
        ),
    )  # fmt: skip
