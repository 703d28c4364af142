"""Tickets on Jira's REST API v2 (Jira Cloud, or Jira Data Center / Server).

A ticket is an issue of the project ``MESHCLAW_TICKETS_PROJECT`` (a key: ``OPS``); its
number is the one in its key (``OPS-12``). Auth: with ``MESHCLAW_TICKETS_USER`` (Cloud:
the account's email) basic ``user:token`` with an API token, else the token as a bearer
personal access token (Data Center).

Workflow statuses map to Jira status names (``NAMES``, overridable with
``MESHCLAW_TICKETS_STATUSES``); a status change is the workflow transition whose target is
that status, and a workflow that offers none from the issue's status (or none to this
account) is an error naming the ones it offers. Resolving moves the issue to the done
status (``Done``) with a resolution (``completed``: Done, ``not_planned``: Won't Do;
``MESHCLAW_TICKETS_RESOLUTIONS``) when the transition's screen has the Resolution field.
An issue is ``closed`` when its status is in Jira's *done* category; its ``resolution``
is ``not_planned`` for Won't Do / Won't Fix / Duplicate / Cannot Reproduce / Incomplete /
Declined (and the configured one); ``closed_by`` is the author of the changelog entry
that moved it to its current status. People are named by their email where Jira shows
it, else their user name (Data Center), else their account id (Cloud).

Search uses the enhanced ``/search/jql`` (Cloud, where ``/search`` is gone) and falls
back to ``/search`` when the server has no such endpoint (Data Center). The idempotency
marker is a label (``meshclaw:KEY``, exact-match searchable, left out of results).
"""

from __future__ import annotations

import base64
from typing import Any

import httpx

from meshclaw.connectors.servers._tickets_base import (
    Resolution,
    Status,
    TicketsError,
    TicketsSettings,
    send,
    ticket,
    workflow_status,
)

API = "/rest/api/2"
NAMES = {"todo": "To Do", "in-progress": "In Progress", "blocked": "Blocked",
         "review": "In Review", "completed": "Done", "not_planned": "Done"}  # fmt: skip
RESOLUTIONS = {"completed": "Done", "not_planned": "Won't Do"}
NOT_PLANNED = {"won't do", "won't fix", "duplicate", "cannot reproduce", "incomplete", "declined"}
FIELDS = ["summary", "description", "status", "reporter", "resolution", "resolutiondate",
          "labels", "updated", "comment", "project"]  # fmt: skip
MARKER = "meshclaw:"


def person(user: Any) -> str | None:
    """How MeshClaw names a Jira user: email where visible, else name, else account id."""
    if not isinstance(user, dict):
        return None
    for key in ("emailAddress", "name", "accountId", "displayName"):
        value = user.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _messages(response: httpx.Response) -> str:
    """Jira's error body (``errorMessages`` and per-field ``errors``) as one line."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if not isinstance(body, dict):
        return ""
    parts = [str(m) for m in body.get("errorMessages") or []]
    parts += [f"{k}: {v}" for k, v in (body.get("errors") or {}).items()]
    return "; ".join(parts)


def _quoted(text: str) -> str:
    """A JQL string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class JiraTickets:
    def __init__(self, settings: TicketsSettings) -> None:
        assert settings.project is not None  # TicketsSettings.check
        self.settings = settings
        self.base = settings.api_url.rstrip("/")
        self.project = settings.project
        self.names = NAMES | settings.statuses
        self.resolutions = RESOLUTIONS | settings.resolutions
        self._search: str | None = None
        """``/search/jql`` or ``/search``, once the server said which it has."""
        token = settings.token.get_secret_value()
        if settings.user:
            pair = base64.b64encode(f"{settings.user}:{token}".encode()).decode()
            self._auth = f"Basic {pair}"
        else:
            self._auth = f"Bearer {token}"

    def key(self, number: int) -> str:
        return f"{self.project}-{number}"

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": self._auth, "Accept": "application/json"}
        response = await send(
            self.settings, method, f"{self.base}{API}{path}", headers=headers, **kwargs
        )
        if response.status_code == 401:
            raise TicketsError(
                f"the tracker at {self.base} refused the credentials"
                + (f" of {self.settings.user}" if self.settings.user else " (bearer token)")
            )
        return response

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.request(method, path, **kwargs)
        if response.status_code == 403:
            raise TicketsError(
                f"this account may not do that in {self.project}: {_messages(response)}"
            )
        if response.status_code == 404:
            said = _messages(response)
            raise TicketsError(
                f"not found in {self.project}: {path.split('?')[0]}"
                + (f" ({said})" if said else "")
            )
        if response.status_code >= 400:
            raise TicketsError(
                f"the tracker answered {response.status_code}: {_messages(response)}"
            )
        return response.json() if response.content.strip() else {}

    # ---- reading -------------------------------------------------------------------------

    def number(self, issue: dict[str, Any]) -> int:
        return int(str(issue["key"]).rsplit("-", 1)[-1])

    def evidence(self, issue: dict[str, Any]) -> dict[str, Any]:
        fields = issue.get("fields") or {}
        status = fields.get("status") or {}
        closed = (status.get("statusCategory") or {}).get("key") == "done"
        workflow = {k: v for k, v in self.names.items() if k not in ("completed", "not_planned")}
        return {
            "key": issue["key"],
            "number": self.number(issue),
            "url": f"{self.base}/browse/{issue['key']}",
            "status": workflow_status(str(status.get("name", "")), closed, workflow),
        }

    def resolution(self, fields: dict[str, Any]) -> str | None:
        name = str((fields.get("resolution") or {}).get("name") or "")
        if not name:
            return None
        not_planned = NOT_PLANNED | {self.resolutions["not_planned"].lower()}
        return "not_planned" if name.lower() in not_planned else "completed"

    def summary(self, issue: dict[str, Any]) -> dict[str, Any]:
        fields = issue.get("fields") or {}
        status = fields.get("status") or {}
        evidence = self.evidence(issue)
        closed = evidence["status"] == "closed"
        closed_by = None
        if closed:
            histories = (issue.get("changelog") or {}).get("histories") or []
            for history in reversed(histories):
                if any(item.get("field") == "status" and item.get("toString") == status.get("name")
                       for item in history.get("items") or []):  # fmt: skip
                    closed_by = person(history.get("author"))
                    break
        return ticket(
            evidence,
            title=fields.get("summary"),
            reporter=person(fields.get("reporter")),
            resolution=self.resolution(fields) if closed else None,
            closed_by=closed_by,
            labels=[x for x in fields.get("labels") or [] if not str(x).startswith(MARKER)],
            comments=int((fields.get("comment") or {}).get("total") or 0),
            updated_at=fields.get("updated"),
            tracker_status=str(status.get("name", "")),
        )

    async def issue(self, number: int) -> dict[str, Any]:
        key = self.key(number)
        found: dict[str, Any] = await self.call(
            "GET", f"/issue/{key}", params={"fields": ",".join(FIELDS), "expand": "changelog"}
        )
        if not str(found.get("key", "")).startswith(f"{self.project}-"):
            raise TicketsError(f"not found in {self.project}: {key} is now {found.get('key')}")
        return found

    async def query(self, jql: str, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """(total, issues) for ``jql``: the enhanced search, else the Data Center one."""
        if self._search in (None, "/search/jql"):
            body = {"jql": jql, "maxResults": limit, "fields": FIELDS, "expand": "changelog"}
            response = await self.request("POST", "/search/jql", json=body)
            if response.status_code != 404:
                self._search = "/search/jql"
                if response.status_code >= 400:
                    raise TicketsError(
                        f"the tracker answered {response.status_code}: {_messages(response)}"
                    )
                found = response.json()
                issues: list[dict[str, Any]] = found.get("issues") or []
                if found.get("isLast", True):
                    return len(issues), issues
                counted = await self.call("POST", "/search/approximate-count", json={"jql": jql})
                return int(counted.get("count") or len(issues)), issues
            self._search = "/search"
        found = await self.call(
            "POST",
            "/search",
            json={"jql": jql, "maxResults": limit, "fields": FIELDS, "expand": ["changelog"]},
        )
        return int(found.get("total") or 0), list(found.get("issues") or [])

    async def search(self, query: str, state: str, limit: int) -> dict[str, Any]:
        clauses = [f"project = {_quoted(self.project)}"]
        if state in ("open", "closed"):
            clauses.append(f"statusCategory {'!=' if state == 'open' else '='} Done")
        words = [w for w in query.split() if not w.startswith("label:")]
        clauses += [f"labels = {_quoted(w[6:])}" for w in query.split() if w.startswith("label:")]
        if words:
            clauses.append(f"text ~ {_quoted(' '.join(words))}")
        total, issues = await self.query(" AND ".join(clauses) + " ORDER BY updated DESC", limit)
        return {"total": total, "tickets": [self.summary(i) for i in issues]}

    async def get(self, number: int) -> dict[str, Any]:
        issue = await self.issue(number)
        fields = issue.get("fields") or {}
        comments = (fields.get("comment") or {}).get("comments") or []
        return self.summary(issue) | {
            "body": fields.get("description") or "",
            "comment_list": [
                {"by": person(c.get("author")), "body": c.get("body")} for c in comments
            ],
        }

    # ---- writing -------------------------------------------------------------------------

    async def create(
        self, title: str, body: str, labels: list[str], marker: str | None
    ) -> dict[str, Any]:
        if marker is not None:
            jql = f"project = {_quoted(self.project)} AND labels = {_quoted(marker)}"
            _, found = await self.query(jql, 1)
            if found:
                return self.evidence(await self.issue(self.number(found[0]))) | {"duplicate": True}
        fields = {
            "project": {"key": self.project},
            "summary": title,
            "description": body,
            "issuetype": {"name": self.settings.issue_type},
            "labels": [*labels, *([marker] if marker else [])],
        }
        made = await self.call("POST", "/issue", json={"fields": fields})
        return self.evidence(await self.issue(self.number(made))) | {"duplicate": False}

    async def comment(self, number: int, body: str) -> dict[str, Any]:
        key = self.key(number)
        made = await self.call("POST", f"/issue/{key}/comment", json={"body": body})
        return {
            "key": key,
            "comment_id": made.get("id"),
            "url": f"{self.base}/browse/{key}?focusedCommentId={made.get('id')}",
        }

    async def _move(
        self, number: int, target: str, resolution: str | None, comment: str | None
    ) -> dict[str, Any]:
        issue = await self.issue(number)
        key = issue["key"]
        now = str(((issue.get("fields") or {}).get("status") or {}).get("name", ""))
        if now.lower() == target.lower():
            if resolution is None:
                return issue  # already there
            raise TicketsError(
                f"{key} is already {now!r} (resolution "
                f"{((issue['fields'].get('resolution') or {}).get('name'))!r})"
            )
        offered = (
            await self.call(
                "GET", f"/issue/{key}/transitions", params={"expand": "transitions.fields"}
            )
        ).get("transitions") or []
        chosen = next(
            (
                t
                for t in offered
                if str((t.get("to") or {}).get("name", "")).lower() == target.lower()
            ),
            None,
        )
        if chosen is None:
            names = ", ".join(repr(str((t.get("to") or {}).get("name"))) for t in offered)
            raise TicketsError(
                f"{key} cannot move from {now!r} to {target!r}: the workflow offers this "
                f"account {'only ' + names if names else 'no transition'}"
            )
        payload: dict[str, Any] = {"transition": {"id": chosen["id"]}}
        field = (chosen.get("fields") or {}).get("resolution")
        if resolution is not None and field is not None:
            allowed = [str(v.get("name")) for v in field.get("allowedValues") or []]
            match = next((a for a in allowed if a.lower() == resolution.lower()), None)
            if allowed and match is None:
                raise TicketsError(
                    f"Jira has no resolution {resolution!r} here; it has: {', '.join(allowed)}"
                )
            payload["fields"] = {"resolution": {"name": match or resolution}}
        if comment:
            await self.call("POST", f"/issue/{key}/comment", json={"body": comment})
        await self.call("POST", f"/issue/{key}/transitions", json=payload)
        moved = await self.issue(number)
        status = str(((moved.get("fields") or {}).get("status") or {}).get("name", ""))
        if status.lower() != target.lower():
            raise TicketsError(f"{key} stays {status!r} after the transition to {target!r}")
        return moved

    async def transition(self, number: int, status: Status) -> dict[str, Any]:
        return self.evidence(await self._move(number, self.names[status], None, None))

    async def resolve(
        self, number: int, resolution: Resolution, comment: str | None
    ) -> dict[str, Any]:
        issue = await self._move(
            number, self.names[resolution], self.resolutions[resolution], comment
        )
        return self.evidence(issue) | {"resolution": self.resolution(issue.get("fields") or {})}
