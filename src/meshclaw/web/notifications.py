"""The notifications page: what the platform told (or is about to tell) people, why a
message has not gone out yet, and which of one's own are unread.

Everyone sees their own notifications, unread ones in bold, and marks them read or
unread again (or all read) with plain CSRF-checked forms; whoever may read the org's
(``notification.read`` on the ``Org``: platform admins and auditors by default) can
switch to the whole org's and narrow it to one recipient. ``NotificationService``
decides, through Cedar; a refusal is its message (403), someone else's notification is
"not found" (404).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from meshclaw.notify.limits import STATUSES
from meshclaw.notify.service import NotificationPage, Scope, UnknownRecipient
from meshclaw.web._pages import PREFIX, FormDep, ViewerDep, query_int, render

router = APIRouter()

PAGE_SIZES = (25, 50, 100)
STATUS_CHOICES = {
    "all": "Any status",
    "pending": "Pending (to be sent)",
    "sent": "Sent",
    "failed": "Failed (refused by policy, or gave up after retries)",
    "unsent": "Not sent (no usable channel)",
}
assert set(STATUS_CHOICES) == {"all", *STATUSES}
SCOPES = {"mine": "Addressed to me", "org": "Everyone in the org"}
DONE = {
    "read": "Marked read.",
    "unread": "Marked unread.",
    "all": "Your unread notifications are marked read; any that arrived after the page was "
    "shown stay unread.",
}
MAX_RECIPIENT = 200


def _filters(values: Mapping[str, str | None]) -> dict[str, Any]:
    """The page's query, made safe: unknown values fall back to the defaults (a bad link
    shows the default page, never an error). A recipient means the org view."""
    recipient = (values.get("recipient") or "").strip()[:MAX_RECIPIENT]
    status = values.get("status")
    return {
        "scope": "org" if values.get("scope") == "org" or recipient else "mine",
        "status": status if status in STATUS_CHOICES else "all",
        "unread": "yes" if values.get("unread") in ("yes", "1", "true", "on") else "",
        "recipient": recipient,
        "limit": query_int(values.get("limit"), 50, PAGE_SIZES),
        "offset": query_int(values.get("offset"), 0),
    }


def page_url(filters: dict[str, Any], offset: int | None = None, **extra: str) -> str:
    """The page with these filters (empty ones left out), at ``offset``."""
    query = {k: v for k, v in filters.items() if v != "" and k != "offset"}
    query["offset"] = filters["offset"] if offset is None else offset
    return f"{PREFIX}/notifications?{urlencode(query | extra)}"


@router.get("/notifications", response_class=HTMLResponse)
def notifications_page(
    request: Request,
    viewer: ViewerDep,
    scope: str | None = None,
    status: str | None = None,
    unread: str | None = None,
    recipient: str | None = None,
    limit: str | None = None,
    offset: str | None = None,
    done: str | None = None,
) -> HTMLResponse:
    service = viewer.platform.notifications
    filters = _filters(
        {"scope": scope, "status": status, "unread": unread, "recipient": recipient,
         "limit": limit, "offset": offset}
    )  # fmt: skip
    scope_key: Scope = filters["scope"]
    page: NotificationPage | None = None
    errors: dict[str, str] = {}
    try:
        page = service.find(
            viewer.caller,
            scope=scope_key,
            status=None if filters["status"] == "all" else filters["status"],
            unread=bool(filters["unread"]),
            recipient=filters["recipient"] or None,
            limit=filters["limit"],
            offset=filters["offset"],
        )
    except UnknownRecipient as exc:  # the form's mistake; a refusal (403) stays one
        errors["recipient"] = str(exc).removeprefix("recipient: ").capitalize() + "."
    # The unread count the "mark all read" form states and the newest of those, which it
    # sends as ``through``: one that arrives after the page was drawn stays unread.
    inbox = service.unread_inbox(viewer.caller)
    start, size = filters["offset"], filters["limit"]
    following = page.next_offset if page is not None else None
    return render(
        request,
        "notifications.html",
        viewer,
        status_code=422 if errors else 200,
        page=page,
        filters=filters,
        errors=errors,
        inbox=inbox,
        unread_notifications=inbox.count if inbox is not None else None,  # counted once
        scopes=SCOPES if service.may_read_org(viewer.caller) else None,
        statuses=STATUS_CHOICES,
        sizes=PAGE_SIZES,
        back=urlencode(filters),
        next_url=page_url(filters, following) if following is not None else None,
        prev_url=page_url(filters, max(0, start - size)) if start > 0 else None,
        flash=DONE.get(done or ""),
        error="Nothing is shown: correct the field marked below." if errors else None,
    )


def _back(fields: dict[str, str], done: str) -> RedirectResponse:
    """Back to the page the form was on: its query came in the ``back`` field, and is
    rebuilt through ``_filters`` (only this page, only known filters: no open redirect)."""
    filters = _filters(dict(parse_qsl(fields.get("back", ""))))
    return RedirectResponse(page_url(filters, done=done), status_code=303)


@router.post("/notifications/read-all")
def mark_all_read(viewer: ViewerDep, fields: FormDep) -> RedirectResponse:
    """Marks the viewer's unread notifications up to ``through``, the newest unread one
    when the page was drawn (without it: all of them); one not addressed to the viewer
    is not found (404)."""
    through = fields.get("through") or None
    viewer.platform.notifications.mark_all_read(viewer.caller, through=through)
    return _back(fields, "all")


@router.post("/notifications/{notification_id}/read")
def mark_read(viewer: ViewerDep, fields: FormDep, notification_id: str) -> RedirectResponse:
    """``read=no`` marks it unread again; a notification not addressed to the viewer is
    not found (404), as on the API."""
    read = fields.get("read", "yes") != "no"
    viewer.platform.notifications.mark_read(viewer.caller, notification_id, read=read)
    return _back(fields, "read" if read else "unread")
