"""Usage reports under the privacy tiers (``analytics.privacy``): what the API's
``/v1/usage``, ``meshclaw usage`` and the dashboard show.

``metering.usage.usage_report`` sums tokens and cost within the caller's visibility (the
org, their team, or themselves). Shown to people, per-person rows are an individual
drill-down like any other look at someone's numbers:

- Everyone sees their own usage (``user`` = themselves, or everything when they only
  see themselves).
- Someone else's usage needs ``user`` (one person), a stated ``reason``, and
  ``analytics.view_person`` with ``drill_down`` on that person; the look is recorded
  where the person sees it and in the audit log.
- Grouping by ``user`` over a team or the org would list everyone's numbers at once: it
  is refused with a hint (group by team, agent or model, or ask for one person).
- Team rows of teams smaller than the org's k are left out (k-anonymity); a team admin
  whose whole view is a team smaller than k sees only their own numbers there.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from meshclaw.accounts.service import Caller
from meshclaw.analytics.privacy import VIEW_PERSON, authorize, k_of, record_person_view
from meshclaw.audit.sink import AuditSink
from meshclaw.errors import ConflictError, NotFoundError, PermissionDenied
from meshclaw.metering.usage import GroupBy, Period, UsageRow, usage_report, visibility
from meshclaw.policy.api import ApiAuthorizer, ApiResource
from meshclaw.store.db import Database
from meshclaw.store.models import Org, Team, User

NO_TEAM = "(no team)"
"""The team key of people in no team (``usage_report``)."""


@dataclass(frozen=True)
class UsageView:
    group_by: GroupBy
    """As asked, or by default: ``user`` for one's own usage, else ``team``."""
    rows: list[UsageRow]


def usage_view(
    db: Database,
    access: ApiAuthorizer,
    audit: AuditSink,
    caller: Caller,
    *,
    group_by: GroupBy | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    period: Period | None = None,
    user: str | None = None,
    reason: str | None = None,
) -> UsageView:
    """The usage ``caller`` may be shown; ``user`` (a handle or id) narrows it to one
    person, which for anyone but the caller is a recorded drill-down needing ``reason``."""
    reach = visibility(access, caller)
    subject = _person(db, caller, user) if user is not None else None
    if group_by is None:
        group_by = "user" if reach.kind == "self" or subject is not None else "team"
    someone_else = subject is not None and subject.id != caller.user_id
    if someone_else:
        assert subject is not None
        if not (reason or "").strip():
            raise ConflictError("looking at someone else's usage needs a stated reason")
        resource = ApiResource.person(
            id=subject.id, org_id=caller.org_id, team_id=subject.team_id, role=subject.role
        )
        authorize(access, caller, VIEW_PERSON, resource, drill_down=True)
    elif subject is None and group_by == "user" and reach.kind != "self":
        raise PermissionDenied(
            "usage per person lists other people's numbers: group by team, agent or model, "
            "or ask for one person (user and reason: an individual drill-down, recorded)"
        )
    rows = usage_report(
        db, caller, group_by=group_by, since=since, until=until, period=period,
        user_id=subject.id if subject is not None else None, access=access,
    )  # fmt: skip
    if subject is None and reach.kind != "self":
        rows = _k_anonymous(db, caller, rows, group_by, reach.team_id)
    if someone_else:
        assert subject is not None
        with db.session() as session:
            record_person_view(
                session, audit, caller, subject.id, (reason or "").strip(), what="usage"
            )
    return UsageView(group_by=group_by, rows=rows)


def _person(db: Database, caller: Caller, user: str) -> User:
    """A person of the caller's org, by handle or id (another org's: not found)."""
    with db.session() as session:
        found = session.scalars(
            select(User).where(
                User.org_id == caller.org_id, (User.handle == user) | (User.id == user)
            )
        ).first()
        if found is None:
            raise NotFoundError(f"no user {user!r} in this org")
        session.expunge(found)
        return found


def _k_anonymous(
    db: Database, caller: Caller, rows: list[UsageRow], group_by: GroupBy, team_id: str | None
) -> list[UsageRow]:
    """Leave out what would show a group of fewer than k people: team rows of small
    teams; and, for a team admin whose team is small, everything but their own usage."""
    with db.session() as session:
        org = session.get(Org, caller.org_id)
        k = k_of(org.settings if org is not None else None)
        sizes: Counter[str] = Counter()
        for name in session.scalars(
            select(Team.name)
            .select_from(User)
            .outerjoin(Team, Team.id == User.team_id)
            .where(User.org_id == caller.org_id)
        ):
            sizes[name or NO_TEAM] += 1
        own_team = session.get(Team, team_id) if team_id is not None else None
    if own_team is not None and sizes[own_team.name] < k:
        raise PermissionDenied(
            f"your team has fewer than {k} people, so its usage would show individuals: "
            "ask for your own (user = yourself) or for one person with a reason"
        )
    if group_by != "team":
        return rows
    return [r for r in rows if sizes[r.key] >= k]
