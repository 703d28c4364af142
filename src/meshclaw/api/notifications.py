"""``/v1/notifications``: what the platform told (or is about to tell) you.

Your own notifications by default; ``scope=org`` is every notification of your org, for
whoever Cedar lets read them (``notification.read`` on the ``Org``: platform admins and
auditors by default; anyone else gets a 403 that says why). ``status`` filters, ``limit``
and ``offset`` page (newest first).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from meshclaw.api.deps import Authed, Offset, PlatformDep
from meshclaw.notify.service import MAX_PAGE

router = APIRouter(prefix="/v1/notifications", tags=["notifications"])

Status = Literal["pending", "sent", "failed", "unsent"]


class NotificationOut(BaseModel):
    id: str
    kind: str
    """``budget.soft_cap``, ``approval.requested``, ..."""
    resource: str
    """What it is about, as in the audit log (``budget:<id>``, ``approval:<id>``)."""
    recipients: list[str]
    recipient_handles: list[str]
    subject: str
    body: str
    status: Status
    attempts: int
    due_at: datetime
    last_error: str | None
    """Why the last attempt failed, or why it cannot be sent (``unsent``)."""
    created_at: datetime
    sent_at: datetime | None


class NotificationPageOut(BaseModel):
    notifications: list[NotificationOut]
    total: int
    limit: int
    offset: int
    next_offset: int | None
    scope: Literal["mine", "org"]


@router.get("")
def list_notifications(
    platform: PlatformDep,
    who: Authed,
    scope: Literal["mine", "org"] = "mine",
    status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Offset = 0,
) -> NotificationPageOut:
    """Your notifications (``scope=org``: your org's, if you may), newest first."""
    page = platform.notifications.find(who, scope=scope, status=status, limit=limit, offset=offset)
    return NotificationPageOut.model_validate(page, from_attributes=True)
