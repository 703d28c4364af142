"""``/v1/notifications``: what the platform told (or is about to tell) you, and which of
yours you have read.

Your own notifications by default; ``scope=org`` is every notification of your org, for
whoever Cedar lets read them (``notification.read`` on the ``Org``: platform admins and
auditors by default; anyone else gets a 403 that says why), and ``recipient`` narrows it
to one person's. ``status`` and ``unread`` filter, ``limit`` and ``offset`` page (newest
first); every item says whether you read it, and the page how many are unread.

``POST``/``DELETE /v1/notifications/{id}/read`` mark one of yours read or unread again,
``POST /v1/notifications/read-all`` all of yours, or with ``{"through": id}`` only those
up to the newest you saw (one that arrived since stays unread); a notification not
addressed to you is "not found", whoever asks.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from meshclaw.api.deps import PROBLEM_RESPONSES, Authed, Offset, PlatformDep
from meshclaw.notify.limits import MAX_PAGE
from meshclaw.notify.service import NotificationView

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
    read: bool | None
    """Whether you have read it; null when it is not addressed to you (``scope=org``)."""
    read_at: datetime | None


class NotificationPageOut(BaseModel):
    notifications: list[NotificationOut]
    total: int
    limit: int
    offset: int
    next_offset: int | None
    scope: Literal["mine", "org"]
    unread: int
    """How many notifications matching the query (every page) are yours and unread."""


class ReadAllIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    through: str | None = Field(
        default=None,
        min_length=1,
        max_length=40,
        # In the OpenAPI document, unlike a docstring: clients need to know what it bounds.
        description="The id of the newest notification you saw (the first one `GET "
        "/v1/notifications` listed): only it and those listed after it (older) are marked, "
        "so one that arrived since stays unread. Left out: every one of yours.",
    )


class ReadAllOut(BaseModel):
    marked: int
    """How many of your notifications were unread and are now read."""
    unread: int
    """How many are unread now (0, unless one is newer than ``through`` or arrived
    meanwhile)."""


READ_ALL_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {
        "description": "`through` names no notification addressed to you (the same answer "
        "whether it exists or not); nothing was marked.",
        "content": PROBLEM_RESPONSES["4XX"]["content"],
    },
    422: {
        "description": 'The body is not `{}` or `{"through": "<notification id>"}` '
        "(an empty or too long id, another field); `errors` names each field.",
        "content": PROBLEM_RESPONSES["4XX"]["content"],
    },
}


@router.get("")
def list_notifications(
    platform: PlatformDep,
    who: Authed,
    scope: Literal["mine", "org"] = "mine",
    status: Status | None = None,
    unread: bool = False,
    recipient: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Offset = 0,
) -> NotificationPageOut:
    """Your notifications (``scope=org``: your org's, if you may; ``recipient``: one
    person's of them, by handle or user id), newest first; ``unread=true``: only yours
    that you have not read."""
    page = platform.notifications.find(
        who, scope=scope, status=status, unread=unread, recipient=recipient, limit=limit,
        offset=offset,
    )  # fmt: skip
    return NotificationPageOut.model_validate(page, from_attributes=True)


def _out(view: NotificationView) -> NotificationOut:
    return NotificationOut.model_validate(view, from_attributes=True)


@router.post("/read-all", responses=READ_ALL_ERRORS)
def mark_all_read(platform: PlatformDep, who: Authed, body: ReadAllIn | None = None) -> ReadAllOut:
    """Mark every notification of yours read; with ``through`` (the newest you saw) only
    it and those before it, newest first, so what arrived since stays unread."""
    through = body.through if body is not None else None
    marked = platform.notifications.mark_all_read(who, through=through)
    return ReadAllOut(marked=marked, unread=platform.notifications.unread_count(who) or 0)


@router.post("/{notification_id}/read")
def mark_read(notification_id: str, platform: PlatformDep, who: Authed) -> NotificationOut:
    """Mark one of your notifications read (again: keeps when you first read it)."""
    return _out(platform.notifications.mark_read(who, notification_id))


@router.delete("/{notification_id}/read")
def mark_unread(notification_id: str, platform: PlatformDep, who: Authed) -> NotificationOut:
    """Mark one of your notifications unread again."""
    return _out(platform.notifications.mark_read(who, notification_id, read=False))
