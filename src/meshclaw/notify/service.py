"""Reading the notification outbox: what the platform told (or is about to tell) people.

Who reads what is Cedar's decision (``notification.read``): on a ``User`` it is the
notifications addressed to that person (by default: oneself), on the ``Org`` every
notification of the org (by default: platform admins and auditors, who answer for
delivery failures). ``GET /v1/notifications`` and the dashboard's ``/ui/notifications``
read through ``NotificationService.find``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Text, cast, func, select

from meshclaw.accounts.service import Caller
from meshclaw.errors import UserError
from meshclaw.notify.models import Notification
from meshclaw.policy.api import ApiAuthorizer, ApiResource
from meshclaw.store.db import Database
from meshclaw.store.models import User

READ = "notification.read"
"""Cedar action: read notifications (on a ``User``: theirs; on the ``Org``: all)."""
STATUSES = ("pending", "sent", "failed", "unsent")
"""pending (to send), sent, failed (gave up after retries), unsent (no usable channel)."""
MAX_PAGE = 200
Scope = Literal["mine", "org"]


@dataclass(frozen=True, kw_only=True)
class NotificationView:
    id: str
    kind: str
    """``budget.soft_cap``, ``approval.requested``, ..."""
    resource: str
    """What it is about, as in the audit log (``budget:<id>``, ``approval:<id>``)."""
    recipients: list[str]
    """User ids of the people it is for."""
    recipient_handles: list[str]
    """Their handles, in the same order (the id when someone is no longer found)."""
    subject: str
    body: str
    status: str
    attempts: int
    due_at: datetime
    """When it is (or was last) due to be sent."""
    last_error: str | None
    """Why the last attempt failed, or why it cannot be sent (``unsent``)."""
    created_at: datetime
    sent_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class NotificationPage:
    notifications: list[NotificationView]
    total: int
    limit: int
    offset: int
    next_offset: int | None
    scope: Scope


class NotificationService:
    def __init__(self, db: Database, access: ApiAuthorizer) -> None:
        self._db = db
        self._access = access

    def may_read_org(self, caller: Caller) -> bool:
        """Whether ``caller`` may see every notification of their org."""
        return self._access.authorize_api(caller, READ, ApiResource.org(caller.org_id)).allowed

    def find(
        self,
        caller: Caller,
        *,
        scope: Scope = "mine",
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> NotificationPage:
        """One page of notifications, newest first: the caller's own (``mine``) or, with
        ``notification.read`` on the org, the whole org's (``org``)."""
        if scope not in ("mine", "org"):
            raise UserError(f"scope must be mine or org, not {scope!r}")
        if status is not None and status not in STATUSES:
            raise UserError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        if not 1 <= limit <= MAX_PAGE:
            raise UserError(f"limit must be 1..{MAX_PAGE}, not {limit}")
        if offset < 0:
            raise UserError("offset must be >= 0")
        if scope == "org":
            target = ApiResource.org(caller.org_id)
            message = "the org's notifications:"
        else:
            target = ApiResource.person(
                id=caller.user_id, org_id=caller.org_id, team_id=caller.team_id, role=caller.role
            )
            message = "your notifications:"
        self._access.require(caller, READ, target, message=message)
        conds = [Notification.org_id == caller.org_id]
        if scope == "mine":
            # ``recipients`` is a JSON list of user ids: the quoted id matches one element.
            conds.append(
                cast(Notification.recipients, Text).contains(
                    json.dumps(caller.user_id), autoescape=True
                )
            )
        if status is not None:
            conds.append(Notification.status == status)
        with self._db.session() as session:
            total = session.scalar(select(func.count()).select_from(Notification).where(*conds))
            rows = session.scalars(
                select(Notification)
                .where(*conds)
                .order_by(Notification.created_at.desc(), Notification.id.desc())
                .limit(limit)
                .offset(offset)
            ).all()
            ids = sorted({str(r) for row in rows for r in row.recipients or ()})
            handles: dict[str, str] = {
                user_id: handle
                for user_id, handle in session.execute(
                    select(User.id, User.handle).where(
                        User.org_id == caller.org_id, User.id.in_(ids)
                    )
                )
            }
            views = [
                NotificationView(
                    id=row.id,
                    kind=row.kind,
                    resource=row.resource,
                    recipients=[str(r) for r in row.recipients or ()],
                    recipient_handles=[handles.get(str(r), str(r)) for r in row.recipients or ()],
                    subject=row.subject,
                    body=row.body,
                    status=row.status,
                    attempts=row.attempts,
                    due_at=row.due_at,
                    last_error=row.last_error,
                    created_at=row.created_at,
                    sent_at=row.sent_at,
                )
                for row in rows
            ]
        total = int(total or 0)
        following = offset + len(views)
        return NotificationPage(
            notifications=views, total=total, limit=limit, offset=offset,
            next_offset=following if following < total else None, scope=scope,
        )  # fmt: skip
