"""The audit pages: search the log, verify it, and "who looked at my numbers".

Search and verify go through ``AuditLog`` (``platform.audit_log``), the same service as
``meshclaw audit log`` / ``audit verify`` and ``/v1/audit``: it decides who may read or
verify, and records every search and verification in the log itself. "Who looked at my
numbers" is every person's own trail of drill-downs into their metrics
(``platform.analytics.views_of``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from meshclaw.audit.log import AuditEntry, AuditPage
from meshclaw.audit.verify import Report
from meshclaw.clock import as_utc
from meshclaw.errors import NotFoundError, PermissionDenied, UserError
from meshclaw.policy.api import ApiResource
from meshclaw.web._pages import PREFIX, FormDep, Viewer, ViewerDep, render

_MAX_SEQ = 2**31 - 1
"""The largest sequence number a cursor may name (as the API's)."""

router = APIRouter()

PAGE_SIZES = (25, 50, 100, 200)
OUTCOME = re.compile(r"^[a-z_]{1,40}$")
VIEWS_SHOWN = 200
_TEXT_FIELDS = ("actor", "action", "resource")
_DETAIL_CHARS = 200


@dataclass(frozen=True, kw_only=True)
class Search:
    """The search form as typed, what it means, and the message per invalid field."""

    form: dict[str, str]
    filters: dict[str, Any]
    errors: dict[str, str]
    limit: int
    after: int | None
    """Forwards from this seq. Neither cursor: the most recent records when nothing is
    filtered, else the oldest matches."""
    before: int | None = None
    """Backwards: the page just before this seq."""

    @property
    def filtered(self) -> bool:
        return any(v is not None for v in self.filters.values())


def _time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.strip().replace(" ", "T"))
    return as_utc(parsed) if parsed.tzinfo else as_utc(parsed.replace(tzinfo=None))


def parse_search(params: dict[str, str]) -> Search:
    form = {k: (params.get(k) or "").strip()[:300] for k in (*_TEXT_FIELDS, "outcome")}
    form |= {
        k: (params.get(k) or "").strip()[:40]
        for k in ("since", "until", "limit", "after", "before")
    }
    errors: dict[str, str] = {}
    filters: dict[str, Any] = {k: form[k] or None for k in _TEXT_FIELDS}
    if form["outcome"] and not OUTCOME.match(form["outcome"]):
        errors["outcome"] = "An outcome is one word such as ok, denied or error."
    filters["outcome"] = form["outcome"] or None
    for key in ("since", "until"):
        filters[key] = None
        if form[key]:
            try:
                filters[key] = _time(form[key])
            except ValueError:
                errors[key] = "Give a date and time like 2026-03-01 09:30 (UTC)."
    if filters["since"] and filters["until"] and filters["until"] <= filters["since"]:
        errors["until"] = "The end must be after the start."
    limit = 50
    if form["limit"]:
        if form["limit"].isdigit() and int(form["limit"]) in PAGE_SIZES:
            limit = int(form["limit"])
        else:
            errors["limit"] = f"Choose one of {', '.join(map(str, PAGE_SIZES))}."
    after = int(form["after"]) if form["after"].isdigit() else None
    before = int(form["before"]) if form["before"].isdigit() and after is None else None
    if before is not None and not 1 <= before <= _MAX_SEQ:
        before = None
    return Search(
        form=form, filters=filters, errors=errors, limit=limit, after=after, before=before
    )


def _details(details: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for key, value in details.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if len(text) > _DETAIL_CHARS:
            text = text[: _DETAIL_CHARS - 1] + "\N{HORIZONTAL ELLIPSIS}"
        out.append((key, text))
    return out


def _search(viewer: Viewer, search: Search) -> AuditPage | None:
    """The page asked for; raises PermissionDenied for those who may not read."""
    before = search.before
    if search.after is None and before is None and not search.filtered:
        before = _MAX_SEQ  # nothing filtered and no cursor: the latest of the org's records
    try:
        if before is not None:
            return viewer.platform.audit_log.query(
                viewer.caller, **search.filters, before=before, limit=search.limit
            )
        return viewer.platform.audit_log.query(
            viewer.caller, **search.filters, after=search.after or 0, limit=search.limit
        )
    except NotFoundError as exc:
        search.errors["actor"] = str(exc).capitalize() + "."
        return None


def _page_urls(search: Search, page: AuditPage | None) -> dict[str, str | None]:
    base = {k: v for k, v in search.form.items() if v and k not in ("after", "before")}

    def url(cursor: str, seq: int) -> str:
        return f"{PREFIX}/audit?{urlencode(base | {cursor: seq})}#results"

    if page is None or not page.entries:
        return {"older": None, "newer": None}
    first, last = page.entries[0].seq, page.entries[-1].seq
    backwards = search.before is not None or (search.after is None and not search.filtered)
    if backwards:
        older = url("before", page.next_before) if page.next_before is not None else None
        at_head = search.before is None  # the latest page: nothing newer yet
        newer = None if at_head else url("after", last)
    else:
        older = url("before", first) if search.after else None
        newer = url("after", page.next_after) if page.next_after is not None else None
    return {"older": older, "newer": newer}


def _views(viewer: Viewer) -> list[dict[str, Any]]:
    views = viewer.platform.analytics.views_of(viewer.caller)[:VIEWS_SHOWN]
    names = viewer.platform.directory.handles(viewer.caller, [v.viewer_id for v in views])
    return [
        {"viewer": names.get(v.viewer_id, v.viewer_id), "reason": v.reason, "when": v.created_at}
        for v in views
    ]


def _may_verify(viewer: Viewer) -> bool:
    """Whether to offer the verify button (the log service still decides on the click)."""
    org = ApiResource.org(viewer.caller.org_id)
    return viewer.platform.access.authorize_api(viewer.caller, "audit.verify", org).allowed


def _render(
    request: Request,
    viewer: Viewer,
    params: dict[str, str],
    *,
    report: Report | None = None,
    bad_record: AuditEntry | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    search = parse_search(params)
    page: AuditPage | None = None
    refused: str | None = None
    if not search.errors:
        try:
            page = _search(viewer, search)
        except PermissionDenied as exc:
            refused = str(exc)
    if search.errors and status_code == 200:
        status_code = 422  # also when the service refused the actor (no such user)
    entries = page.entries if page else []
    names = viewer.platform.directory.handles(
        viewer.caller, [e.actor_user_id for e in entries if e.actor_user_id]
    )
    return render(
        request,
        "audit.html",
        viewer,
        status_code=status_code,
        search=search,
        page=page,
        rows=[(e, names.get(e.actor_user_id or ""), _details(e.details)) for e in entries],
        refused=refused,
        urls=_page_urls(search, page),
        sizes=[(str(n), str(n)) for n in PAGE_SIZES],
        views=_views(viewer),
        may_verify=_may_verify(viewer),
        report=report,
        bad_record=bad_record,
        bad_details=_details(bad_record.details) if bad_record else [],
        error="Correct the search fields marked below." if search.errors else None,
    )


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, viewer: ViewerDep) -> HTMLResponse:
    return _render(request, viewer, dict(request.query_params))


@router.post("/audit/verify", response_class=HTMLResponse)
def verify(request: Request, viewer: ViewerDep, _: FormDep) -> HTMLResponse:
    """Recompute the tree and check every signed checkpoint, as ``meshclaw audit verify``."""
    report = viewer.platform.audit_log.verify(viewer.caller)
    bad: AuditEntry | None = None
    seq = report.problem.seq if report.problem is not None else None
    if seq is not None:
        try:
            found = viewer.platform.audit_log.query(viewer.caller, after=seq - 1, limit=1)
        except (PermissionDenied, ValueError, UserError):
            found = None  # may verify but not read bodies, or the record no longer parses
        if found is not None and found.entries and found.entries[0].seq == seq:
            bad = found.entries[0]
    return _render(request, viewer, {}, report=report, bad_record=bad)
