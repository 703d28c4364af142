"""Tickets on Redmine's REST API (``X-Redmine-API-Key``; the REST API switched on).

A ticket is an issue of the project ``MESHCLAW_TICKETS_PROJECT``; its key is
``<project>#<id>``. Workflow statuses map to Redmine status names (``STATUSES`` below,
overridable with ``MESHCLAW_TICKETS_STATUSES``); resolving moves the issue to a closed
status (``completed``: Closed, ``not_planned``: Rejected). Redmine has no labels: a label
naming a tracker (Bug, Feature, Support) picks the tracker, others are ignored. Who
reported and who closed an issue are logins (the author; the user of the journal that
closed it). The idempotency marker is the description's last line.
"""

from __future__ import annotations

from typing import Any

from meshclaw.connectors.servers._tickets_base import (
    Resolution,
    Status,
    TicketsError,
    TicketsSettings,
    send,
    ticket,
    workflow_status,
)

NAMES = {"todo": "New", "in-progress": "In Progress", "blocked": "Feedback",
         "review": "Resolved", "completed": "Closed", "not_planned": "Rejected"}  # fmt: skip


class RedmineTickets:
    def __init__(self, settings: TicketsSettings) -> None:
        assert settings.project is not None  # TicketsSettings.check
        self.settings = settings
        self.base = settings.api_url.rstrip("/")
        self.project = settings.project
        self.names = NAMES | settings.statuses
        self._statuses: list[dict[str, Any]] | None = None
        self._logins: dict[int, str] = {}
        self._checked = False
        self._project_id: int | None = None

    def key(self, number: int) -> str:
        return f"{self.project}#{number}"

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        if not self._checked:  # an unknown key is "anonymous" to Redmine: say so first
            self._checked = True
            await self.call("GET", "/users/current.json")
        headers = {"X-Redmine-API-Key": self.settings.token.get_secret_value()}
        response = await send(
            self.settings, method, f"{self.base}{path}", headers=headers, **kwargs
        )
        if response.status_code == 401:
            raise TicketsError(f"the tracker at {self.base} refused the API key")
        if response.status_code == 403:
            raise TicketsError(f"this account may not do that in {self.project}: {path}")
        if response.status_code == 404:
            raise TicketsError(f"not found in {self.project}: {path.removesuffix('.json')}")
        if response.status_code >= 400:
            errors = response.json().get("errors", []) if response.content else []
            raise TicketsError(f"the tracker answered {response.status_code}: {'; '.join(errors)}")
        return response.json() if response.content.strip() else {}

    async def statuses(self) -> list[dict[str, Any]]:
        if self._statuses is None:
            self._statuses = (await self.call("GET", "/issue_statuses.json"))["issue_statuses"]
        return self._statuses

    async def status_id(self, name: str) -> int:
        for status in await self.statuses():
            if str(status["name"]).lower() == name.lower():
                return int(status["id"])
        known = ", ".join(str(s["name"]) for s in await self.statuses())
        raise TicketsError(f"Redmine has no status {name!r}; it has: {known}")

    async def login(self, user: Any) -> str | None:
        """A user's login where this account may see it, else their name."""
        if not isinstance(user, dict) or "id" not in user:
            return None
        uid = int(user["id"])
        if uid not in self._logins:
            try:
                found = await self.call("GET", f"/users/{uid}.json")
                self._logins[uid] = str(found["user"].get("login") or user.get("name"))
            except TicketsError:
                self._logins[uid] = str(user.get("name") or uid)
        return self._logins[uid]

    def evidence(self, issue: dict[str, Any]) -> dict[str, Any]:
        status = issue.get("status") or {}
        closed = bool(status.get("is_closed"))
        return {
            "key": self.key(issue["id"]),
            "number": issue["id"],
            "url": f"{self.base}/issues/{issue['id']}",
            "status": workflow_status(str(status.get("name", "")), closed, self.names),
        }

    async def summary(self, issue: dict[str, Any]) -> dict[str, Any]:
        status = issue.get("status") or {}
        closed = bool(status.get("is_closed"))
        closed_by = None
        if closed:
            closed_ids = {str(s["id"]) for s in await self.statuses() if s.get("is_closed")}
            for journal in reversed(issue.get("journals", [])):
                if any(d.get("name") == "status_id" and d.get("new_value") in closed_ids
                       for d in journal.get("details", [])):  # fmt: skip
                    closed_by = await self.login(journal.get("user"))
                    break
        rejected = str(status.get("name", "")).lower() == self.names["not_planned"].lower()
        return ticket(
            self.evidence(issue),
            title=issue.get("subject"),
            reporter=await self.login(issue.get("author")),
            resolution=("not_planned" if rejected else "completed") if closed else None,
            closed_by=closed_by,
            labels=[str((issue.get("tracker") or {}).get("name"))],
            comments=len([j for j in issue.get("journals", []) if j.get("notes")]),
            updated_at=issue.get("updated_on"),
            tracker_status=str(status.get("name", "")),
        )

    async def issue(self, number: int) -> dict[str, Any]:
        found = await self.call("GET", f"/issues/{number}.json", params={"include": "journals"})
        issue: dict[str, Any] = found["issue"]
        if (issue.get("project") or {}).get("id") != await self.project_id():
            raise TicketsError(f"not found in {self.project}: /issues/{number}")
        return issue

    async def project_id(self) -> int:
        if self._project_id is None:
            found = await self.call("GET", f"/projects/{self.project}.json")
            self._project_id = int(found["project"]["id"])
        return self._project_id

    async def search(self, query: str, state: str, limit: int) -> dict[str, Any]:
        params: dict[str, Any] = {
            "project_id": self.project,
            "status_id": {"open": "open", "closed": "closed"}.get(state, "*"),
            "limit": limit,
            "sort": "updated_on:desc",
        }
        if query.strip():
            params["any_searchable"] = f"~{query.strip()}"
        found = await self.call("GET", "/issues.json", params=params)
        return {
            "total": found.get("total_count", 0),
            "tickets": [await self.summary(i) for i in found.get("issues", [])],
        }

    async def get(self, number: int) -> dict[str, Any]:
        issue = await self.issue(number)
        comments = [j for j in issue.get("journals", []) if j.get("notes")]
        return await self.summary(issue) | {
            "body": issue.get("description") or "",
            "comment_list": [
                {"by": await self.login(j.get("user")), "body": j["notes"]} for j in comments
            ],
        }

    async def create(
        self, title: str, body: str, labels: list[str], marker: str | None
    ) -> dict[str, Any]:
        if marker is not None:
            found = await self.call(
                "GET",
                "/issues.json",
                params={"project_id": self.project, "status_id": "*", "description": f"~{marker}"},
            )
            if found.get("issues"):
                return self.evidence(found["issues"][0]) | {"duplicate": True}
            body = f"{body}\n\n({marker})" if body else f"({marker})"
        fields: dict[str, Any] = {"project_id": self.project, "subject": title, "description": body}
        trackers = (await self.call("GET", "/trackers.json")).get("trackers", [])
        wanted = {x.lower() for x in labels}
        tracker = next((t for t in trackers if str(t["name"]).lower() in wanted), None)
        if tracker is not None:
            fields["tracker_id"] = tracker["id"]
        made = await self.call("POST", "/issues.json", json={"issue": fields})
        return self.evidence(made["issue"]) | {"duplicate": False}

    async def _update(self, number: int, fields: dict[str, Any]) -> dict[str, Any]:
        await self.issue(number)  # in this project
        await self.call("PUT", f"/issues/{number}.json", json={"issue": fields})
        return await self.issue(number)

    async def comment(self, number: int, body: str) -> dict[str, Any]:
        issue = await self._update(number, {"notes": body})
        mine = [j for j in issue.get("journals", []) if j.get("notes") == body]
        journal = mine[-1]["id"] if mine else None
        return {
            "key": self.key(number),
            "comment_id": journal,
            "url": f"{self.base}/issues/{number}#change-{journal}",
        }

    async def _move(self, number: int, name: str, notes: str | None) -> dict[str, Any]:
        fields: dict[str, Any] = {"status_id": await self.status_id(name)}
        if notes:
            fields["notes"] = notes
        issue = await self._update(number, fields)
        now = str((issue.get("status") or {}).get("name", ""))
        if now.lower() != name.lower():
            raise TicketsError(
                f"{self.key(number)} stays {now!r}: the workflow does not let this account "
                f"move it to {name!r}"
            )
        return issue

    async def transition(self, number: int, status: Status) -> dict[str, Any]:
        return self.evidence(await self._move(number, self.names[status], None))

    async def resolve(
        self, number: int, resolution: Resolution, comment: str | None
    ) -> dict[str, Any]:
        issue = await self._move(number, self.names[resolution], comment)
        return self.evidence(issue) | {"resolution": resolution}
