"""Admin pages: connectors and tool approvals, the org's own policies, budgets, the price table,
and people, teams and roles.

Each page calls the service the API and CLI call, as the signed-in person, so the same
rules decide: Cedar (``policy.manage``, ``connector.manage``, ``directory.*``,
``price.read``, ``price.write``) and the budget, price and connector services. A form is
checked field by field first; nothing is written unless every field is valid, and each
message is shown next to its field. A successful change redirects (post/redirect/get)
with a short note.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from meshclaw.accounts.directory import KEEP, InvalidFields, PersonInfo
from meshclaw.accounts.service import ROLES
from meshclaw.errors import (
    ConflictError,
    MeshClawError,
    NotFoundError,
    PermissionDenied,
    PolicyError,
    PolicyIssue,
    UserError,
)
from meshclaw.metering.budgets import parse_cap
from meshclaw.metering.price_book import PRICE_WRITE
from meshclaw.metering.windows import METRICS, PERIODS, SCOPES
from meshclaw.policy.api import ApiResource
from meshclaw.policy.org_policies import MAX_POLICY_CHARS
from meshclaw.web._pages import PREFIX, FormDep, Viewer, ViewerDep, query_int, render

router = APIRouter()

DONE = {
    "approved": "Tool definition approved: agents may call it again.",
    "refreshed": "Tool list refreshed from the server.",
    "budget-saved": "Budget saved.",
    "budget-deleted": "Budget deleted.",
    "user-created": "Person added. They sign in once a password is set "
    "(meshclaw user set-password).",
    "user-changed": "Role and team saved.",
    "team-created": "Team added.",
    "price-added": "Price added. Calls made from its first day on are priced by it; "
    "re-price history (meshclaw usage reprice) for calls already made.",
}
FIX_FIELDS = "Nothing was saved: correct the fields marked below."


def _allowed(viewer: Viewer, action: str) -> bool:
    org = ApiResource.org(viewer.caller.org_id)
    return viewer.platform.access.authorize_api(viewer.caller, action, org).allowed


def _done(path: str, key: str, **extra: str) -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}{path}?{urlencode({'done': key, **extra})}", 303)


def _flash(done: str | None) -> str | None:
    return DONE.get(done or "")


# -- overview ----------------------------------------------------------------------------


@router.get("/admin", response_class=HTMLResponse)
def overview(request: Request, viewer: ViewerDep) -> HTMLResponse:
    return render(
        request,
        "admin.html",
        viewer,
        may_policies=_allowed(viewer, "policy.manage"),
        may_connectors=_allowed(viewer, "connector.manage"),
        may_directory=_may_list_people(viewer),
    )


def _may_list_people(viewer: Viewer) -> bool:
    try:
        viewer.platform.directory.teams(viewer.caller, limit=1)
    except PermissionDenied:
        return False
    return True


# -- connectors --------------------------------------------------------------------------


@router.get("/admin/connectors", response_class=HTMLResponse)
def connectors(request: Request, viewer: ViewerDep) -> HTMLResponse:
    infos = viewer.platform.connector_admin.list_connectors(viewer.caller)
    return render(
        request,
        "admin_connectors.html",
        viewer,
        connectors=infos,
        may_manage=_allowed(viewer, "connector.manage"),
    )


async def _connector_page(
    request: Request,
    viewer: Viewer,
    name: str,
    *,
    refresh: bool = False,
    error: str | None = None,
    flash: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    # 404 for a name the viewer's org does not have (another org's looks the same)
    config = viewer.platform.connector_admin.config(viewer.caller, name)
    try:
        tools = await viewer.platform.connector_admin.tools(viewer.caller, name, refresh=refresh)
    except MeshClawError as exc:  # the server is down or misbehaves: say so, show the record
        error = f"Could not list the tools from the server: {exc}"
        status_code = 502
        tools = await viewer.platform.connector_admin.tools(viewer.caller, name, refresh=False)
    return render(
        request,
        "admin_connector.html",
        viewer,
        status_code=status_code,
        name=name,
        config=config,
        tools=tools,
        definitions={t.tool: json.dumps(t.definition, indent=2, sort_keys=True) for t in tools},
        may_manage=_allowed(viewer, "connector.manage"),
        error=error,
        flash=flash,
    )


@router.get("/admin/connectors/{name}", response_class=HTMLResponse)
async def connector(
    request: Request, viewer: ViewerDep, name: str, done: str | None = None
) -> HTMLResponse:
    return await _connector_page(request, viewer, name, flash=_flash(done))


@router.post("/admin/connectors/{name}/refresh", response_model=None)
async def refresh_connector(
    request: Request, viewer: ViewerDep, _: FormDep, name: str
) -> HTMLResponse | Response:
    page = await _connector_page(request, viewer, name, refresh=True)
    if page.status_code != 200:
        return page
    return _done(f"/admin/connectors/{name}", "refreshed")


@router.post("/admin/connectors/{name}/approve", response_model=None)
async def approve_tool(
    request: Request, viewer: ViewerDep, fields: FormDep, name: str
) -> HTMLResponse | Response:
    """Approve exactly the definition the admin saw (its hash is in the form)."""
    org = ApiResource.org(viewer.caller.org_id)
    viewer.platform.access.require(viewer.caller, "connector.manage", org)
    viewer.platform.connector_admin.config(viewer.caller, name)  # 404 outside the org
    tool, expected = fields.get("tool", ""), fields.get("expected_hash", "")
    if not tool or not expected:
        return await _connector_page(
            request, viewer, name, status_code=422,
            error="Choose a tool to approve from the list below (the form was incomplete).",
        )  # fmt: skip
    try:
        viewer.platform.connector_admin.approve(viewer.caller, name, [tool], expected_hash=expected)
    except (ConflictError, NotFoundError) as exc:
        return await _connector_page(
            request, viewer, name, status_code=exc.http_status,
            error=f"Nothing was approved: {exc}.",
        )  # fmt: skip
    return _done(f"/admin/connectors/{name}", "approved")


# -- policies ----------------------------------------------------------------------------

POLICY_VERSIONS_SHOWN = 10


def _policy_page(
    request: Request,
    viewer: Viewer,
    *,
    text: str | None = None,
    status_code: int = 200,
    checked: bool = False,
    issues: Sequence[PolicyIssue] = (),
    errors: dict[str, str] | None = None,
    flash: str | None = None,
) -> HTMLResponse:
    """The org's own policies: the text in force (or as typed), problems by line, and the
    recent versions with what each changed."""
    service = viewer.platform.org_policies
    current = service.current(viewer.caller)
    versions = service.versions(viewer.caller)[:POLICY_VERSIONS_SHOWN]
    history = [
        (v, service.diff(viewer.caller, v.version - 1, v.version) if v.version > 1 else "")
        for v in versions
    ]
    text = current.text if text is None else text
    by_line: dict[int, list[str]] = {}
    for issue in issues:
        if issue.line is not None:
            by_line.setdefault(issue.line, []).append(issue.message)
    # The text with line numbers, each problem beside its line (only when there are any).
    numbered = enumerate(text.splitlines(), start=1)
    lines = [(n, line, by_line.get(n, [])) for n, line in numbered] if by_line else []
    return render(
        request,
        "admin_policies.html",
        viewer,
        status_code=status_code,
        text=text,
        current=current,
        history=history,
        checked=checked,
        issues=issues,
        lines=lines,
        errors=errors or {},
        operator_policies=bool(viewer.platform.policies.operator_text.strip()),
        may_save=_allowed(viewer, "policy.manage"),
        flash=flash,
    )


@router.get("/admin/policies", response_class=HTMLResponse)
def policies(request: Request, viewer: ViewerDep, done: str | None = None) -> HTMLResponse:
    org = ApiResource.org(viewer.caller.org_id)
    viewer.platform.access.require(viewer.caller, "policy.manage", org)
    saved = "Saved: the new version applies to the org's next decisions."
    return _policy_page(request, viewer, flash=saved if done == "policy-saved" else None)


@router.post("/admin/policies", response_class=HTMLResponse)
def save_policies(request: Request, viewer: ViewerDep, fields: FormDep) -> Response:
    """Check (like ``POST /v1/policy/validate``: nothing saved) or save (like
    ``PUT /v1/policy``: a new version, only if valid) the org's own policies."""
    org = ApiResource.org(viewer.caller.org_id)
    viewer.platform.access.require(viewer.caller, "policy.manage", org)
    text = fields.get("policies", "").replace("\r\n", "\n")
    saving = fields.get("intent") == "save"
    errors: dict[str, str] = {}
    issues: list[PolicyIssue] = []
    if len(text) > MAX_POLICY_CHARS:
        errors["policies"] = f"At most {MAX_POLICY_CHARS:,} characters ({len(text):,} now)."
    else:
        issues = viewer.platform.policies.validate(text)
        if issues:
            head = "Nothing was saved: " if saving else ""
            errors["policies"] = (
                f"{head}{len(issues)} problem{'s' if len(issues) != 1 else ''} found; "
                "each is listed below with its line."
            )
    if saving and not errors:
        raw_version = fields.get("version", "")
        try:
            viewer.platform.org_policies.save(
                viewer.caller,
                text,
                expected_version=int(raw_version) if raw_version.isdigit() else None,
                note=fields.get("note", "")[:1000],
            )
        except PolicyError as exc:
            issues = list(exc.issues)
            errors["policies"] = f"Nothing was saved: {len(issues)} problem(s) found."
        except ConflictError as exc:
            errors["policies"] = f"Nothing was saved: {exc}."
            return _policy_page(request, viewer, text=text, status_code=409, errors=errors)
        else:
            return _done("/admin/policies", "policy-saved")
    flash = None if errors else "Valid: the policies parse and match the schema (not saved)."
    return _policy_page(
        request,
        viewer,
        text=text,
        status_code=422 if errors else 200,
        checked=True,
        issues=issues,
        errors=errors,
        flash=flash,
    )


# -- budgets -----------------------------------------------------------------------------


def _budget_errors(fields: dict[str, str]) -> dict[str, str]:
    errors: dict[str, str] = {}
    scope, metric = fields.get("scope", ""), fields.get("metric", "")
    if scope not in SCOPES:
        errors["scope"] = f"Choose one of {', '.join(SCOPES)}."
    elif scope != "org" and not fields.get("name", "").strip():
        errors["name"] = f"Enter the {scope}'s name."
    if metric not in METRICS:
        errors["metric"] = f"Choose one of {', '.join(METRICS)}."
    if fields.get("period", "") not in PERIODS:
        errors["period"] = f"Choose one of {', '.join(PERIODS)}."
    caps: dict[str, int | None] = {}
    for key in ("hard_cap", "soft_cap"):
        try:
            caps[key] = parse_cap(metric if metric in METRICS else "cost", fields.get(key, ""))
        except UserError as exc:
            errors[key] = str(exc).capitalize() + "."
    if not errors.keys() & {"hard_cap", "soft_cap"}:
        hard, soft = caps.get("hard_cap"), caps.get("soft_cap")
        if hard is None and soft is None:
            errors["hard_cap"] = "Give a hard cap, a soft cap or both."
        elif hard is not None and soft is not None and soft > hard:
            errors["soft_cap"] = "The soft cap (a warning) must not be above the hard cap."
    return errors


def _budgets_page(
    request: Request,
    viewer: Viewer,
    *,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    error: str | None = None,
    flash: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "admin_budgets.html",
        viewer,
        status_code=status_code,
        budgets=viewer.platform.budgets.visible(viewer.caller),
        form=form or {"scope": "team", "metric": "cost", "period": "month"},
        errors=errors or {},
        scopes=[(s, s) for s in SCOPES],
        metrics=[(m, {"cost": "cost (USD)"}.get(m, m)) for m in METRICS],
        periods=[(p, p) for p in PERIODS],
        error=error,
        flash=flash,
    )


@router.get("/admin/budgets", response_class=HTMLResponse)
def budgets(request: Request, viewer: ViewerDep, done: str | None = None) -> HTMLResponse:
    return _budgets_page(request, viewer, flash=_flash(done))


@router.post("/admin/budgets", response_model=None)
def save_budget(request: Request, viewer: ViewerDep, fields: FormDep) -> HTMLResponse | Response:
    errors = _budget_errors(fields)
    if errors:
        return _budgets_page(
            request, viewer, form=fields, errors=errors, error=FIX_FIELDS, status_code=422
        )
    try:
        viewer.platform.budgets.set(
            viewer.caller,
            scope=fields["scope"],
            name=fields.get("name", "").strip() or "org",
            metric=fields["metric"],
            period=fields["period"],
            hard_cap=fields.get("hard_cap", "").strip() or None,
            soft_cap=fields.get("soft_cap", "").strip() or None,
        )
    except NotFoundError as exc:
        return _budgets_page(
            request, viewer, form=fields, errors={"name": str(exc).capitalize() + "."},
            error=FIX_FIELDS, status_code=422,
        )  # fmt: skip
    except PermissionDenied as exc:
        return _budgets_page(
            request, viewer, form=fields, error=f"Nothing was saved: {exc}.", status_code=403
        )
    return _done("/admin/budgets", "budget-saved")


@router.post("/admin/budgets/{budget_id}/delete", response_model=None)
def delete_budget(
    request: Request, viewer: ViewerDep, _: FormDep, budget_id: str
) -> HTMLResponse | Response:
    try:
        viewer.platform.budgets.delete(viewer.caller, budget_id)
    except PermissionDenied as exc:
        return _budgets_page(request, viewer, error=f"Nothing was deleted: {exc}.", status_code=403)
    return _done("/admin/budgets", "budget-deleted")


# -- the price table ---------------------------------------------------------------------


PRICE_PAGE_SIZES = (25, 50, 100)
PRICE_FORM_FIELDS = (
    "provider", "model", "input", "output", "cached_input", "cache_write", "effective_from",
)  # fmt: skip


def _prices_page(
    request: Request,
    viewer: Viewer,
    *,
    limit: str | None = None,
    offset: str | None = None,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    error: str | None = None,
    flash: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    platform, caller = viewer.platform, viewer.caller
    size, start = query_int(limit, PRICE_PAGE_SIZES[0], PRICE_PAGE_SIZES), query_int(offset, 0)
    # One more than a page says whether a next page exists.
    added = platform.price_book.entries(caller, limit=size + 1, offset=start)

    def page_url(new_offset: int) -> str:
        query = urlencode({"limit": size, "offset": new_offset})
        return f"{PREFIX}/admin/prices?{query}#added-heading"

    return render(
        request,
        "admin_prices.html",
        viewer,
        status_code=status_code,
        view=platform.directory.prices(caller),
        source=platform.settings.price_table,
        added=added[:size],
        added_offset=start,
        next_url=page_url(start + size) if len(added) > size else None,
        prev_url=page_url(max(0, start - size)) if start > 0 else None,
        can_write=_allowed(viewer, PRICE_WRITE),
        form=form or {},
        errors=errors or {},
        error=error,
        flash=flash,
    )


@router.get("/admin/prices", response_class=HTMLResponse)
def prices(
    request: Request,
    viewer: ViewerDep,
    done: str | None = None,
    limit: str | None = None,
    offset: str | None = None,
) -> HTMLResponse:
    return _prices_page(request, viewer, limit=limit, offset=offset, flash=_flash(done))


@router.post("/admin/prices", response_model=None)
def add_price(request: Request, viewer: ViewerDep, fields: FormDep) -> HTMLResponse | Response:
    """Add an effective-dated price to the org's table (``price.write``; audited)."""
    form = {k: fields.get(k, "").strip() for k in PRICE_FORM_FIELDS}
    entered = {k: (v or None) for k, v in form.items()}
    try:
        viewer.platform.price_book.add(viewer.caller, entered)
    except InvalidFields as exc:
        errors = {k: v[:1].upper() + v[1:] + "." for k, v in exc.fields.items()}
        return _prices_page(
            request, viewer, form=form, errors=errors, error=FIX_FIELDS, status_code=422
        )
    except PermissionDenied as exc:
        return _prices_page(
            request, viewer, form=form, error=f"Nothing was saved: {exc}.", status_code=403
        )
    return _done("/admin/prices", "price-added")


# -- people, teams and roles -------------------------------------------------------------


def _directory_page(
    request: Request,
    viewer: Viewer,
    params: dict[str, str],
    *,
    user_form: dict[str, str] | None = None,
    team_form: dict[str, str] | None = None,
    errors: dict[str, dict[str, str]] | None = None,
    error: str | None = None,
    flash: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    directory = viewer.platform.directory
    offset = int(params["offset"]) if params.get("offset", "").isdigit() else 0
    role = params.get("role") if params.get("role") in ROLES else None
    query = (params.get("q") or "").strip()[:200]
    team = (params.get("team") or "").strip()[:200] or None
    page = directory.people(viewer.caller, team=team, role=role, query=query, offset=offset)
    teams = directory.teams(viewer.caller)
    may_manage = directory.may_manage(viewer.caller)
    base = {k: v for k, v in {"team": team, "role": role, "q": query}.items() if v}

    def url(at: int) -> str:
        return f"{PREFIX}/admin/directory?{urlencode(base | {'offset': at})}"

    return render(
        request,
        "admin_directory.html",
        viewer,
        status_code=status_code,
        page=page,
        teams=teams,
        may_manage=may_manage,
        changeable={p.id for p in page.people if may_manage and _may_change(viewer, p)},
        filters={"team": team or "", "role": role or "", "q": query},
        roles=[(r, r.replace("_", " ")) for r in ROLES],
        team_options=[("", "no team")] + [(t.name, t.name) for t in teams],
        user_form=user_form or {"role": "employee"},
        team_form=team_form or {},
        errors=errors or {},
        next_url=url(page.next_offset) if page.next_offset is not None else None,
        prev_url=url(max(0, offset - page.limit)) if offset > 0 else None,
        error=error,
        flash=flash,
    )


def _may_change(viewer: Viewer, person: PersonInfo) -> bool:
    resource = ApiResource.person(
        id=person.id, org_id=viewer.caller.org_id, team_id=person.team_id, role=person.role
    )
    decision = viewer.platform.access.authorize_api(viewer.caller, "directory.manage", resource)
    return decision.allowed


@router.get("/admin/directory", response_class=HTMLResponse)
def directory_page(request: Request, viewer: ViewerDep, done: str | None = None) -> HTMLResponse:
    params = dict(request.query_params)
    return _directory_page(request, viewer, params, flash=_flash(done))


def _field_problem(
    request: Request,
    viewer: Viewer,
    exc: InvalidFields,
    form_key: str,
    fields: dict[str, str],
) -> HTMLResponse:
    forms: dict[str, Any] = {"user_form": None, "team_form": None}
    error = FIX_FIELDS
    if form_key in ("user_form", "team_form"):
        forms[form_key] = fields
    else:  # a row of the people table, which may not be on the page shown again
        error = f"Nothing was saved: {exc}."
    return _directory_page(
        request, viewer, {}, **forms,
        errors={form_key: {k: v[:1].upper() + v[1:] + "." for k, v in exc.fields.items()}},
        error=error, status_code=exc.http_status,
    )  # fmt: skip


@router.post("/admin/directory/users", response_model=None)
def create_user(request: Request, viewer: ViewerDep, fields: FormDep) -> HTMLResponse | Response:
    try:
        viewer.platform.directory.create_user(
            viewer.caller,
            handle=fields.get("handle", ""),
            role=fields.get("role", ""),
            team=fields.get("team") or None,
            display_name=fields.get("display_name", ""),
            job_function=fields.get("job_function") or None,
        )
    except InvalidFields as exc:
        return _field_problem(request, viewer, exc, "user_form", fields)
    return _done("/admin/directory", "user-created")


@router.post("/admin/directory/users/{user_id}", response_model=None)
def change_user(
    request: Request, viewer: ViewerDep, fields: FormDep, user_id: str
) -> HTMLResponse | Response:
    try:
        viewer.platform.directory.update_user(
            viewer.caller,
            user_id,
            role=fields.get("role") or None,
            team=fields.get("team", "") if "team" in fields else KEEP,
        )
    except InvalidFields as exc:
        return _field_problem(request, viewer, exc, user_id, fields)
    except ConflictError as exc:
        return _directory_page(
            request, viewer, {}, error=f"Nothing was saved: {exc}.", status_code=409
        )
    return _done("/admin/directory", "user-changed")


@router.post("/admin/directory/teams", response_model=None)
def create_team(request: Request, viewer: ViewerDep, fields: FormDep) -> HTMLResponse | Response:
    try:
        viewer.platform.directory.create_team(viewer.caller, fields.get("name", ""))
    except InvalidFields as exc:
        return _field_problem(request, viewer, exc, "team_form", fields)
    return _done("/admin/directory", "team-created")
