"""The Jira fake's data: users, projects, issues, the workflow, and their JSON shapes as
Jira's REST API v2 answers them (the HTTP side is ``jira``, ``_jira_issues``,
``_jira_search``)."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Flavor = Literal["cloud", "server"]
API = "/rest/api/2"
CATEGORIES = {"new": (2, "To Do", "blue-gray"), "indeterminate": (4, "In Progress", "yellow"),
              "done": (3, "Done", "green")}  # fmt: skip


def now() -> str:
    """Jira's timestamp form (milliseconds, ``+0000``)."""
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
    created: str = field(default_factory=now)
    updated: str = field(default_factory=now)


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
            issue.resolutiondate = now() if done else None
            issue.updated = now()
            issue.histories.append(
                {"id": str(next(self._ids)), "author": by, "created": issue.updated, "items": items}
            )

    def add_comment(self, issue: JiraIssue, author: str, body: str) -> dict[str, Any]:
        """Append a comment by ``author`` (a user name) to ``issue``; returns it as stored."""
        with self.lock:
            stamp = now()
            comment = {"id": str(next(self._ids)), "author": author, "body": body,
                       "created": stamp, "updated": stamp}  # fmt: skip
            issue.comments.append(comment)
            issue.updated = stamp
        return comment

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
