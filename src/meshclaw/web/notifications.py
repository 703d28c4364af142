"""The notifications page: what the platform told (or is about to tell) people, and why a
message has not gone out yet.

Everyone sees their own notifications; whoever may read the org's (``notification.read``
on the ``Org``: platform admins and auditors by default) can switch to the whole org's.
``NotificationService`` decides, through Cedar; a refusal is its message (403).
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from meshclaw.notify.service import STATUSES, Scope
from meshclaw.web._pages import PREFIX, ViewerDep, query_int, render

router = APIRouter()

PAGE_SIZES = (25, 50, 100)
STATUS_CHOICES = {
    "all": "Any status",
    "pending": "Pending (to be sent)",
    "sent": "Sent",
    "failed": "Failed (gave up after retries)",
    "unsent": "Not sent (no usable channel)",
}
assert set(STATUS_CHOICES) == {"all", *STATUSES}
SCOPES = {"mine": "Addressed to me", "org": "Everyone in the org"}


@router.get("/notifications", response_class=HTMLResponse)
def notifications_page(
    request: Request,
    viewer: ViewerDep,
    scope: str | None = None,
    status: str | None = None,
    limit: str | None = None,
    offset: str | None = None,
) -> HTMLResponse:
    service = viewer.platform.notifications
    scope_key: Scope = "org" if scope == "org" else "mine"
    status_key = status if status in STATUS_CHOICES else "all"
    size = query_int(limit, 50, PAGE_SIZES)
    start = query_int(offset, 0)
    page = service.find(
        viewer.caller,
        scope=scope_key,
        status=None if status_key == "all" else status_key,
        limit=size,
        offset=start,
    )
    filters = {"scope": scope_key, "status": status_key, "limit": size}

    def page_url(new_offset: int) -> str:
        return f"{PREFIX}/notifications?{urlencode(filters | {'offset': new_offset})}"

    return render(
        request,
        "notifications.html",
        viewer,
        page=page,
        filters=filters,
        scopes=SCOPES if service.may_read_org(viewer.caller) else None,
        statuses=STATUS_CHOICES,
        sizes=PAGE_SIZES,
        next_url=page_url(page.next_offset) if page.next_offset is not None else None,
        prev_url=page_url(max(0, start - size)) if start > 0 else None,
    )
