"""The Jira fake's issue endpoints: ``/myself``, creating an issue, reading one, its
comments and its transitions (search is ``_jira_search``)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from meshclaw.connectors.fakes._jira_http import (
    api_url,
    body_of,
    caller,
    error,
    expansions,
    issue_request,
    may_write,
    refused,
    role,
    wanted_fields,
)
from meshclaw.connectors.fakes._jira_state import (
    API,
    JiraIssue,
    JiraState,
    JiraTransition,
    JiraUser,
)


def offered(state: JiraState, user: JiraUser, issue: JiraIssue) -> list[JiraTransition]:
    """The transitions ``user`` may perform on ``issue`` from its current status."""
    if not may_write(state, user, issue.project):
        return []  # Jira lists only the transitions this account may perform
    here = issue.status
    return [t for t in state.transitions if t.to != here and (not t.sources or here in t.sources)]


def transition_json(
    state: JiraState, t: JiraTransition, api: str, with_fields: bool
) -> dict[str, Any]:
    found: dict[str, Any] = {
        "id": t.id, "name": t.name, "to": state.status_json(t.to, api),
        "hasScreen": t.resolution, "isGlobal": not t.sources, "isInitial": False,
        "isAvailable": True, "isConditional": False, "isLooped": False,
    }  # fmt: skip
    if with_fields:
        found["fields"] = {} if not t.resolution else {"resolution": {
            "required": True, "schema": {"type": "resolution", "system": "resolution"},
            "name": "Resolution", "key": "resolution", "operations": ["set"],
            "allowedValues": [
                {"self": f"{api}{API}/resolution/{10000 + i}", "id": str(10000 + i),
                 "name": name} for i, name in enumerate(state.resolutions)
            ],
        }}  # fmt: skip
    return found


def _resolution(
    state: JiraState, chosen: JiraTransition, fields: dict[str, Any]
) -> str | JSONResponse | None:
    """The resolution a transition's ``fields`` set (None: none given), or Jira's 400."""
    if "resolution" not in fields:
        return None
    if not chosen.resolution:
        unset = "Field 'resolution' cannot be set. It is not on the appropriate screen, or unknown."
        return error(400, errors={"resolution": unset})
    named = (fields["resolution"] or {}).get("name")
    if named not in state.resolutions:
        unknown = "Could not find valid 'id' or 'name' in resolution object."
        return error(400, errors={"resolution": unknown})
    return str(named)


def _new_issue(
    state: JiraState, user: JiraUser, fields: dict[str, Any], key: str
) -> tuple[str, str, list[str]] | JSONResponse:
    """A new issue's summary, type and labels, or Jira's answer: a 400 with its per-field
    complaints, a 403 for a project the user may only read."""
    errors: dict[str, str] = {}
    if not key or role(state, user, key) is None:
        errors["project"] = "valid project is required"
    elif not may_write(state, user, key):
        return error(403, "You do not have permission to create issues in this project.")
    summary = str(fields.get("summary") or "").strip()
    if not summary:
        errors["summary"] = "You must specify a summary of the issue."
    kind = (fields.get("issuetype") or {}).get("name") if isinstance(
        fields.get("issuetype"), dict) else None  # fmt: skip
    if kind not in state.issue_types:
        errors["issuetype"] = "Specify a valid issue type" if kind else "issue type is required"
    labels = fields.get("labels") or []
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        errors["labels"] = "labels must be a list of strings"
    else:
        spaced = next((x for x in labels if not x or any(c.isspace() for c in x)), None)
        if spaced is not None:
            errors["labels"] = f"The label '{spaced}' contains spaces which is invalid."
    if errors:
        return error(400, errors=errors)
    return summary, str(kind), labels


def issue_routes(state: JiraState) -> list[Route]:
    async def myself(request: Request) -> JSONResponse:
        user = caller(state, request)
        return JSONResponse(state.user_json(user.name, api_url(request))) if user else refused()

    async def create(request: Request) -> JSONResponse:
        user = caller(state, request)
        if user is None:
            return refused()
        body = await body_of(request)
        fields = body.get("fields") if body is not None else None
        if not isinstance(fields, dict):
            return error(400, "Can not deserialize the request: 'fields' is required.")
        given = fields.get("project")
        project_ref: dict[str, Any] = given if isinstance(given, dict) else {}
        key = str(project_ref.get("key") or "")
        if not key and project_ref.get("id"):
            by_id = {str(p.id): p.key for p in state.projects.values()}
            key = by_id.get(str(project_ref["id"]), "")
        checked = _new_issue(state, user, fields, key)
        if isinstance(checked, JSONResponse):
            return checked
        summary, kind, labels = checked
        issue = state.file_issue(
            key, user.name, summary, str(fields.get("description") or ""),
            labels=labels, issuetype=kind,
        )  # fmt: skip
        return JSONResponse(
            {
                "id": str(issue.id),
                "key": issue.key,
                "self": f"{api_url(request)}{API}/issue/{issue.id}",
            },
            status_code=201,
        )

    async def get_issue(request: Request) -> JSONResponse:
        found = issue_request(state, request)
        if isinstance(found, JSONResponse):
            return found
        _, issue = found
        wanted = wanted_fields(request.query_params.get("fields"), None)
        expand = expansions(request.query_params.get("expand"))
        return JSONResponse(state.issue_json(issue, api_url(request), wanted, expand))

    async def comments(request: Request) -> JSONResponse:
        found = issue_request(state, request)
        if isinstance(found, JSONResponse):
            return found
        user, issue = found
        listed = state.issue_json(issue, api_url(request), {"comment"}, set())["fields"]["comment"]
        if request.method == "GET":
            return JSONResponse(listed)
        if not may_write(state, user, issue.project):
            return error(403, "You do not have the permission to comment on this issue.")
        body = await body_of(request)
        text = str((body or {}).get("body") or "").strip()
        if not text:
            return error(400, errors={"comment": "Comment body can not be empty!"})
        comment = state.add_comment(issue, user.name, text)
        link = f"{api_url(request)}{API}/issue/{issue.id}/comment/{comment['id']}"
        answer = comment | {"author": state.user_json(user.name, api_url(request)), "self": link}
        return JSONResponse(answer, status_code=201)

    async def transitions(request: Request) -> Response:
        found = issue_request(state, request)
        if isinstance(found, JSONResponse):
            return found
        user, issue = found
        available = offered(state, user, issue)
        if request.method == "GET":
            with_fields = "transitions.fields" in expansions(request.query_params.get("expand"))
            return JSONResponse({"expand": "transitions", "transitions": [
                transition_json(state, t, api_url(request), with_fields) for t in available
            ]})  # fmt: skip
        body = await body_of(request) or {}
        wanted = str((body.get("transition") or {}).get("id") or "")
        if not wanted:
            return error(400, "Missing 'transition' identifier")
        chosen = next((t for t in available if t.id == wanted), None)
        if chosen is None:
            return error(400, f"Transition id '{wanted}' is not valid for this issue.")
        resolution = _resolution(state, chosen, body.get("fields") or {})
        if isinstance(resolution, JSONResponse):
            return resolution
        for update in (body.get("update") or {}).get("comment") or []:
            added = str((update.get("add") or {}).get("body") or "").strip()
            if added:
                state.add_comment(issue, user.name, added)
        state.move(issue, chosen.to, user.name, resolution)
        return Response(status_code=204)

    return [
        Route(f"{API}/myself", myself, methods=["GET"]),
        Route(f"{API}/issue", create, methods=["POST"]),
        Route(f"{API}/issue/{{key}}", get_issue, methods=["GET"]),
        Route(f"{API}/issue/{{key}}/comment", comments, methods=["GET", "POST"]),
        Route(f"{API}/issue/{{key}}/transitions", transitions, methods=["GET", "POST"]),
    ]
