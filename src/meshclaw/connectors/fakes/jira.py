"""A protocol-level fake of Jira's REST API v2 (Cloud and Data Center): a real HTTP server
on loopback.

Shapes follow Atlassian's published REST API v2: ``POST /rest/api/2/issue`` (``fields``:
``project.key``, ``summary``, ``description``, ``issuetype.name``, ``labels``; answers
``{id, key, self}``), ``GET /rest/api/2/issue/{key}`` (``fields=``, ``expand=changelog``),
``GET/POST .../issue/{key}/comment``, ``GET/POST .../issue/{key}/transitions``
(``expand=transitions.fields`` lists the Resolution field of a transition's screen and its
allowed values; a transition to a not-done status clears the resolution, as Jira's
reopen post-functions do) and ``GET /rest/api/2/myself``. Search by the flavour:

- ``cloud``: ``GET/POST /rest/api/2/search/jql`` (enhanced search: ``fields`` default to
  ``id``, ``nextPageToken`` paging, ``isLast``, no total; an unbounded query is a 400) and
  ``POST /rest/api/2/search/approximate-count``; the removed ``/rest/api/2/search``
  answers 410 Gone with Atlassian's migration message;
- ``server`` (Data Center): ``GET/POST /rest/api/2/search`` (``startAt``, ``total``);
  ``/search/jql`` does not exist (404).

People: Cloud users carry ``accountId`` (``emailAddress`` only when visible); Data Center
users ``name`` and ``key``. Auth: basic (``email`` or user name ``:`` API token) or bearer
(a personal access token); anything else is a 401. Per project a user ``member`` may
read and write, ``browse`` may only read (writes are a 403, no transitions are offered),
anyone else does not see the project (a 404 like Jira's). Errors are Jira's body:
``{"errorMessages": [...], "errors": {field: message}}``. JQL: ``_jira_jql``.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from meshclaw._loopback import ServedFake

__all__ = ["JiraFake", "JiraIssue", "JiraProject", "JiraState", "JiraTransition", "JiraUser",
           "default_transitions"]  # fmt: skip

Flavor = Literal["cloud", "server"]
API = "/rest/api/2"
CATEGORIES = {"new": (2, "To Do", "blue-gray"), "indeterminate": (4, "In Progress", "yellow"),
              "done": (3, "Done", "green")}  # fmt: skip
GONE = ("The requested API has been removed. Please migrate to the /rest/api/3/search/jql "
        "API. A full migration guideline is available at "
        "https://developer.atlassian.com/changelog/#CHANGE-2046")  # fmt: skip
HIDDEN = "Issue does not exist or you do not have permission to see it."


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


@dataclass
class JiraUser:
    name: str
    """The Data Center user name (the fake's handle for a Cloud account too)."""
    account_id: str
    display_name: str
    email: str | None = None
    email_visible: bool = True
    api_token: str | None = None
    """Basic auth secret: a Cloud API token (a Data Center password)."""
    pat: str | None = None
    """Bearer secret: a Data Center personal access token."""


@dataclass
class JiraTransition:
    id: str
    name: str
    to: str
    sources: tuple[str, ...] = ()
    """Statuses it leaves from; empty: global (from any other status)."""
    resolution: bool = False
    """Its screen carries the Resolution field."""


@dataclass
class JiraIssue:
    id: int
    key: str
    project: str
    summary: str
    description: str
    issuetype: str
    reporter: str
    status: str
    labels: list[str] = field(default_factory=list)
    resolution: str | None = None
    resolutiondate: str | None = None
    assignee: str | None = None
    comments: list[dict[str, Any]] = field(default_factory=list)
    histories: list[dict[str, Any]] = field(default_factory=list)
    created: str = field(default_factory=_now)
    updated: str = field(default_factory=_now)


@dataclass
class JiraProject:
    key: str
    id: int
    roles: dict[str, str]
    """User name -> ``member`` (read and write) or ``browse`` (read only)."""
    counter: int = 0


def default_transitions() -> list[JiraTransition]:
    """A team-managed style workflow: from any status to any other."""
    return [
        JiraTransition("11", "To Do", "To Do"),
        JiraTransition("21", "In Progress", "In Progress"),
        JiraTransition("31", "Blocked", "Blocked"),
        JiraTransition("41", "In Review", "In Review"),
        JiraTransition("51", "Done", "Done", resolution=True),
    ]


class JiraState:
    """Users, projects, issues and the workflow every project uses."""

    def __init__(self, *, flavor: Flavor = "cloud") -> None:
        self.flavor: Flavor = flavor
        self.users: dict[str, JiraUser] = {}
        self.projects: dict[str, JiraProject] = {}
        self.issues: dict[str, JiraIssue] = {}
        self.statuses: dict[str, tuple[int, str]] = {
            "To Do": (10000, "new"), "In Progress": (3, "indeterminate"),
            "Blocked": (10001, "indeterminate"), "In Review": (10002, "indeterminate"),
            "Done": (10003, "done"),
        }  # fmt: skip
        """Status name -> (id, status category key)."""
        self.transitions = default_transitions()
        self.resolutions = ["Done", "Won't Do", "Duplicate", "Cannot Reproduce"]
        self.issue_types = ["Task", "Bug", "Story", "Epic"]
        self.lock = threading.Lock()
        self._ids = itertools.count(10001)

    def add_user(
        self,
        name: str,
        *,
        email: str | None = None,
        display_name: str | None = None,
        api_token: str | None = None,
        pat: str | None = None,
        email_visible: bool = True,
    ) -> JiraUser:
        user = JiraUser(
            name=name, account_id=f"5b10a2844c20165700ede{len(self.users):03d}",
            display_name=display_name or name.title(), email=email,
            email_visible=email_visible, api_token=api_token, pat=pat,
        )  # fmt: skip
        self.users[name] = user
        return user

    def add_project(self, key: str, roles: dict[str, str]) -> JiraProject:
        project = JiraProject(key=key, id=10000 + len(self.projects), roles=dict(roles))
        self.projects[key] = project
        return project

    def file_issue(
        self, project: str, reporter: str, summary: str, description: str = "",
        *, labels: list[str] | None = None, issuetype: str = "Task",
    ) -> JiraIssue:  # fmt: skip
        """A new issue in the first status (what ``POST /rest/api/2/issue`` makes)."""
        with self.lock:
            listed = self.projects[project]
            listed.counter += 1
            issue = JiraIssue(
                id=next(self._ids), key=f"{project}-{listed.counter}", project=project,
                summary=summary, description=description, issuetype=issuetype,
                reporter=reporter, status=next(iter(self.statuses)), labels=list(labels or []),
            )  # fmt: skip
            self.issues[issue.key] = issue
        return issue

    def move(self, issue: JiraIssue, status: str, by: str, resolution: str | None = None) -> None:
        """Put ``issue`` in ``status`` as ``by`` did it, with a changelog entry; a done
        status sets the resolution (``Done`` unless given), any other clears it."""
        done = self.statuses[status][1] == "done"
        resolved = (resolution or "Done") if done else None
        items = [self._item("status", issue.status, status, self.statuses)]
        if resolved != issue.resolution:
            ids = {r: (10000 + i, "") for i, r in enumerate(self.resolutions)}
            items.append(self._item("resolution", issue.resolution, resolved, ids))
        with self.lock:
            issue.status, issue.resolution = status, resolved
            issue.resolutiondate = _now() if done else None
            issue.updated = _now()
            issue.histories.append(
                {"id": str(next(self._ids)), "author": by, "created": issue.updated, "items": items}
            )

    @staticmethod
    def _item(
        name: str, old: str | None, new: str | None, ids: dict[str, tuple[int, str]]
    ) -> dict[str, Any]:
        def ident(value: str | None) -> str | None:
            return str(ids[value][0]) if value is not None and value in ids else None

        return {"field": name, "fieldtype": "jira", "fieldId": name, "from": ident(old),
                "fromString": old, "to": ident(new), "toString": new}  # fmt: skip

    # ---- JSON shapes ---------------------------------------------------------------------

    def user_json(self, name: str | None, api: str) -> dict[str, Any] | None:
        user = self.users.get(name or "")
        if user is None:
            return None
        found: dict[str, Any] = {"displayName": user.display_name, "active": True,
                                 "timeZone": "Etc/UTC"}  # fmt: skip
        if self.flavor == "cloud":
            found |= {"self": f"{api}{API}/user?accountId={user.account_id}",
                      "accountId": user.account_id, "accountType": "atlassian"}  # fmt: skip
        else:
            found |= {"self": f"{api}{API}/user?username={user.name}", "name": user.name,
                      "key": f"JIRAUSER{10000 + list(self.users).index(user.name)}"}  # fmt: skip
        if user.email and user.email_visible:
            found["emailAddress"] = user.email
        return found

    def status_json(self, name: str, api: str) -> dict[str, Any]:
        status_id, category = self.statuses[name]
        cat_id, cat_name, colour = CATEGORIES[category]
        return {
            "self": f"{api}{API}/status/{status_id}", "id": str(status_id), "name": name,
            "description": "", "statusCategory": {
                "self": f"{api}{API}/statuscategory/{cat_id}", "id": cat_id, "key": category,
                "colorName": colour, "name": cat_name,
            },
        }  # fmt: skip

    def issue_json(
        self, issue: JiraIssue, api: str, wanted: set[str] | None, expand: set[str]
    ) -> dict[str, Any]:
        """``wanted``: field ids (None: all); ``id``, ``key`` and ``self`` always come."""
        project = self.projects[issue.project]
        resolution = None
        if issue.resolution is not None:
            rid = 10000 + self.resolutions.index(issue.resolution)
            resolution = {"self": f"{api}{API}/resolution/{rid}", "id": str(rid),
                          "name": issue.resolution, "description": ""}  # fmt: skip
        comments = [
            c | {"author": self.user_json(c["author"], api),
                 "self": f"{api}{API}/issue/{issue.id}/comment/{c['id']}"}
            for c in issue.comments
        ]  # fmt: skip
        every: dict[str, Any] = {
            "summary": issue.summary,
            "description": issue.description or None,
            "issuetype": {"id": str(10000 + self.issue_types.index(issue.issuetype)),
                          "name": issue.issuetype, "subtask": False},
            "project": {"self": f"{api}{API}/project/{project.id}", "id": str(project.id),
                        "key": project.key, "name": project.key.title()},
            "status": self.status_json(issue.status, api),
            "reporter": self.user_json(issue.reporter, api),
            "creator": self.user_json(issue.reporter, api),
            "assignee": self.user_json(issue.assignee, api),
            "resolution": resolution,
            "resolutiondate": issue.resolutiondate,
            "labels": list(issue.labels),
            "created": issue.created,
            "updated": issue.updated,
            "comment": {"comments": comments, "maxResults": len(comments),
                        "total": len(comments), "startAt": 0},
        }  # fmt: skip
        fields = every if wanted is None else {k: v for k, v in every.items() if k in wanted}
        found: dict[str, Any] = {
            "expand": "renderedFields,names,schema,operations,editmeta,changelog",
            "id": str(issue.id), "self": f"{api}{API}/issue/{issue.id}", "key": issue.key,
            "fields": fields,
        }  # fmt: skip
        if "changelog" in expand:
            histories = [h | {"author": self.user_json(h["author"], api)} for h in issue.histories]
            found["changelog"] = {"startAt": 0, "maxResults": len(histories),
                                  "total": len(histories), "histories": histories}  # fmt: skip
        return found

    def value_of(self, issue: JiraIssue, name: str) -> list[str] | str | None:
        """What a JQL clause on ``name`` compares with."""

        def person(user_name: str | None) -> list[str]:
            user = self.users.get(user_name or "")
            if user is None:
                return []
            return [x for x in (user.name, user.account_id, user.email) if x]

        text: dict[str, list[str] | str | None] = {
            "summary": issue.summary, "description": issue.description,
            "comment": " ".join(c["body"] for c in issue.comments),
        }  # fmt: skip
        values: dict[str, list[str] | str | None] = text | {
            "text": f"{issue.summary} {issue.description} {text['comment']}",
            "project": issue.project, "key": issue.key, "issuekey": issue.key,
            "status": issue.status, "resolution": issue.resolution,
            "statuscategory": self.statuses[issue.status][1],
            "labels": list(issue.labels), "issuetype": issue.issuetype,
            "type": issue.issuetype, "reporter": person(issue.reporter),
            "assignee": person(issue.assignee),
        }  # fmt: skip
        value = values[name]
        if name == "statuscategory" and isinstance(value, str):
            return [value, CATEGORIES[value][1]]  # the key or the name ("done", "Done")
        return value


def _error(
    status: int,
    *messages: str,
    errors: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"errorMessages": list(messages), "errors": errors or {}},
        status_code=status,
        headers=headers,
    )


def api_url(request: Request) -> str:
    """The server's own base URL, for ``self`` links."""
    return str(request.base_url).rstrip("/")


def caller(state: JiraState, request: Request) -> JiraUser | None:
    """The user the request authenticates as (basic or bearer), or None."""
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and secret:
        return next((u for u in state.users.values() if u.pat == secret), None)
    if scheme.lower() != "basic":
        return None
    try:
        login, _, token = base64.b64decode(secret, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return next(
        (u for u in state.users.values()
         if login in (u.name, u.email) and u.api_token and u.api_token == token),
        None,
    )  # fmt: skip


def refused() -> JSONResponse:
    """Jira's 401."""
    return _error(
        401,
        "You are not authenticated. Authentication required to perform this operation.",
        headers={"X-Seraph-LoginReason": "AUTHENTICATED_FAILED",
                 "WWW-Authenticate": 'Basic realm="protected-area"'},
    )  # fmt: skip


def role(state: JiraState, user: JiraUser, project: str) -> str | None:
    found = state.projects.get(project)
    return found.roles.get(user.name) if found is not None else None


def visible(state: JiraState, user: JiraUser, key: str) -> JiraIssue | None:
    issue = state.issues.get(key.upper()) or next(
        (i for i in state.issues.values() if str(i.id) == key), None
    )
    return issue if issue is not None and role(state, user, issue.project) else None


async def body_of(request: Request) -> dict[str, Any] | None:
    try:
        found = await request.json()
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def wanted_fields(raw: Any, default: set[str] | None) -> set[str] | None:
    names = raw if isinstance(raw, list) else str(raw).split(",") if raw else None
    if names is None:
        return default
    picked = {str(n).strip() for n in names if str(n).strip()}
    return None if picked & {"*all", "*navigable"} else picked


def count(raw: Any, default: int) -> int | None:
    try:
        return int(raw) if raw not in (None, "") else default
    except (TypeError, ValueError):
        return None


def expansions(raw: Any) -> set[str]:
    names = raw if isinstance(raw, list) else str(raw or "").split(",")
    return {str(n).strip() for n in names if str(n).strip()}


def _app(state: JiraState) -> Starlette:
    from meshclaw.connectors.fakes._jira_search import search_routes

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
            return _error(400, "Can not deserialize the request: 'fields' is required.")
        given = fields.get("project")
        project_ref: dict[str, Any] = given if isinstance(given, dict) else {}
        key = str(project_ref.get("key") or "")
        if not key and project_ref.get("id"):
            by_id = {str(p.id): p.key for p in state.projects.values()}
            key = by_id.get(str(project_ref["id"]), "")
        errors: dict[str, str] = {}
        if not key or role(state, user, key) is None:
            errors["project"] = "valid project is required"
        elif role(state, user, key) != "member":
            return _error(403, "You do not have permission to create issues in this project.")
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
            return _error(400, errors=errors)
        issue = state.file_issue(
            key, user.name, summary, str(fields.get("description") or ""),
            labels=labels, issuetype=str(kind),
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
        user = caller(state, request)
        if user is None:
            return refused()
        issue = visible(state, user, request.path_params["key"])
        if issue is None:
            return _error(404, HIDDEN)
        wanted = wanted_fields(request.query_params.get("fields"), None)
        expand = expansions(request.query_params.get("expand"))
        return JSONResponse(state.issue_json(issue, api_url(request), wanted, expand))

    async def comments(request: Request) -> JSONResponse:
        user = caller(state, request)
        if user is None:
            return refused()
        issue = visible(state, user, request.path_params["key"])
        if issue is None:
            return _error(404, HIDDEN)
        listed = state.issue_json(issue, api_url(request), {"comment"}, set())["fields"]["comment"]
        if request.method == "GET":
            return JSONResponse(listed)
        if role(state, user, issue.project) != "member":
            return _error(403, "You do not have the permission to comment on this issue.")
        body = await body_of(request)
        text = str((body or {}).get("body") or "").strip()
        if not text:
            return _error(400, errors={"comment": "Comment body can not be empty!"})
        with state.lock:
            now = _now()
            comment = {"id": str(next(state._ids)), "author": user.name, "body": text,
                       "created": now, "updated": now}  # fmt: skip
            issue.comments.append(comment)
            issue.updated = now
        link = f"{api_url(request)}{API}/issue/{issue.id}/comment/{comment['id']}"
        answer = comment | {"author": state.user_json(user.name, api_url(request)), "self": link}
        return JSONResponse(answer, status_code=201)

    def offered(user: JiraUser, issue: JiraIssue) -> list[JiraTransition]:
        if role(state, user, issue.project) != "member":
            return []  # Jira lists only the transitions this account may perform
        here = issue.status
        return [
            t for t in state.transitions if t.to != here and (not t.sources or here in t.sources)
        ]

    def transition_json(t: JiraTransition, api_url: str, with_fields: bool) -> dict[str, Any]:
        found: dict[str, Any] = {
            "id": t.id, "name": t.name, "to": state.status_json(t.to, api_url),
            "hasScreen": t.resolution, "isGlobal": not t.sources, "isInitial": False,
            "isAvailable": True, "isConditional": False, "isLooped": False,
        }  # fmt: skip
        if with_fields:
            found["fields"] = {} if not t.resolution else {"resolution": {
                "required": True, "schema": {"type": "resolution", "system": "resolution"},
                "name": "Resolution", "key": "resolution", "operations": ["set"],
                "allowedValues": [
                    {"self": f"{api_url}{API}/resolution/{10000 + i}", "id": str(10000 + i),
                     "name": name} for i, name in enumerate(state.resolutions)
                ],
            }}  # fmt: skip
        return found

    async def transitions(request: Request) -> Response:
        user = caller(state, request)
        if user is None:
            return refused()
        issue = visible(state, user, request.path_params["key"])
        if issue is None:
            return _error(404, HIDDEN)
        available = offered(user, issue)
        if request.method == "GET":
            with_fields = "transitions.fields" in expansions(request.query_params.get("expand"))
            return JSONResponse({"expand": "transitions", "transitions": [
                transition_json(t, api_url(request), with_fields) for t in available
            ]})  # fmt: skip
        body = await body_of(request) or {}
        wanted = str((body.get("transition") or {}).get("id") or "")
        if not wanted:
            return _error(400, "Missing 'transition' identifier")
        chosen = next((t for t in available if t.id == wanted), None)
        if chosen is None:
            return _error(400, f"Transition id '{wanted}' is not valid for this issue.")
        fields = body.get("fields") or {}
        resolution = None
        if "resolution" in fields:
            if not chosen.resolution:
                unset = (
                    "Field 'resolution' cannot be set. It is not on the appropriate screen, "
                    "or unknown."
                )
                return _error(400, errors={"resolution": unset})
            named = (fields["resolution"] or {}).get("name")
            if named not in state.resolutions:
                unknown = "Could not find valid 'id' or 'name' in resolution object."
                return _error(400, errors={"resolution": unknown})
            resolution = str(named)
        for update in (body.get("update") or {}).get("comment") or []:
            added = str((update.get("add") or {}).get("body") or "").strip()
            if added:
                now = _now()
                issue.comments.append({"id": str(next(state._ids)), "author": user.name,
                                       "body": added, "created": now, "updated": now})  # fmt: skip
        state.move(issue, chosen.to, user.name, resolution)
        return Response(status_code=204)

    return Starlette(
        routes=[
            Route(f"{API}/myself", myself, methods=["GET"]),
            Route(f"{API}/issue", create, methods=["POST"]),
            Route(f"{API}/issue/{{key}}", get_issue, methods=["GET"]),
            Route(f"{API}/issue/{{key}}/comment", comments, methods=["GET", "POST"]),
            Route(f"{API}/issue/{{key}}/transitions", transitions, methods=["GET", "POST"]),
            *search_routes(state),
        ]
    )


class JiraFake(ServedFake):
    """Serves a ``JiraState`` on loopback (port from the OS) in a background thread."""

    name = "Jira fake"

    def __init__(self, state: JiraState | None = None) -> None:
        super().__init__()
        self.state = state or JiraState()

    def _app(self) -> Starlette:
        return _app(self.state)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
