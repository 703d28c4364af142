"""The built-in ``tickets`` MCP server: issues in a GitHub-shaped REST tracker.

Settings come from ``MESHCLAW_TICKETS_*`` (``TicketsSettings``); ``api_url`` points at
GitHub's REST API, GitHub Enterprise, or any tracker speaking that shape (MeshClaw's
``connectors.fakes.github`` in tests). Workflow states other than open/closed are
``status:<name>`` labels.

Writes return **evidence**: the ticket key (``owner/repo#number``), its URL and its
status after the change. Reads also say who reported the ticket (``reporter``), which the
outcomes verifier reads back through ``get_ticket`` to credit a resolution only when the
reporter is someone other than the agent's owner.

Creating is idempotent per run step: the body carries the caller's idempotency key in a
hidden marker, and a ticket that already carries it is returned instead of created twice.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

IDEMPOTENCY_META_KEY = "io.meshclaw/idempotency-key"
READ = ToolAnnotations(read_only_hint=True, open_world_hint=True)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True)
STATUSES = ("todo", "in-progress", "blocked", "review")
Status = Literal["todo", "in-progress", "blocked", "review"]


class TicketsSettings(BaseSettings):
    """Which tracker and repository, with which token (``MESHCLAW_TICKETS_*``)."""

    model_config = SettingsConfigDict(env_prefix="MESHCLAW_TICKETS_")

    api_url: str = "https://api.github.com"
    repo: str
    """``owner/name``."""
    token: SecretStr
    timeout_seconds: float = 30.0


class TicketsError(ToolError):
    """A tracker operation failed; the text reaches the agent (never the token)."""


def _status(issue: dict[str, Any]) -> str:
    if issue.get("state") == "closed":
        return "closed"
    labels = [label["name"] for label in issue.get("labels", [])]
    return next((x.removeprefix("status:") for x in labels if x.startswith("status:")), "open")


def _login(user: Any) -> str | None:
    login = user.get("login") if isinstance(user, dict) else None
    return login if isinstance(login, str) and login else None


class Tracker:
    def __init__(self, settings: TicketsSettings) -> None:
        self.settings = settings
        self.base = settings.api_url.rstrip("/")
        self.repo = settings.repo

    def key(self, number: int) -> str:
        return f"{self.repo}#{number}"

    async def send(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {
            "Authorization": f"Bearer {self.settings.token.get_secret_value()}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        try:
            async with httpx.AsyncClient(
                headers=headers, timeout=self.settings.timeout_seconds
            ) as client:
                response = await client.request(method, f"{self.base}{path}", **kwargs)
        except httpx.HTTPError as exc:
            raise TicketsError(
                f"cannot reach the tracker at {self.base}: {type(exc).__name__}"
            ) from None
        if response.status_code == 401:
            raise TicketsError(f"the tracker at {self.base} refused the token (Bad credentials)")
        if response.status_code == 404:
            raise TicketsError(
                f"not found in {self.repo}: {path.rsplit('/repos/' + self.repo, 1)[-1] or '/'}"
            )
        if response.status_code >= 400:
            message = response.json().get("message", "") if response.content else ""
            raise TicketsError(f"the tracker answered {response.status_code}: {message}")
        return response.json()

    def evidence(self, issue: dict[str, Any]) -> dict[str, Any]:
        return {
            "key": self.key(issue["number"]),
            "number": issue["number"],
            "url": issue.get("html_url"),
            "status": _status(issue),
        }

    def summary(self, issue: dict[str, Any]) -> dict[str, Any]:
        """What searches and reads return: the evidence fields, who filed the ticket
        (``reporter``: outcomes credit resolving it only when that is someone else) and,
        once closed, how (``resolution``: ``completed`` or ``not_planned``) and by whom
        (``closed_by``, where the tracker says)."""
        closed = issue.get("state") == "closed"
        return self.evidence(issue) | {
            "title": issue.get("title"),
            "reporter": _login(issue.get("user")),
            "resolution": issue.get("state_reason") if closed else None,
            "closed_by": _login(issue.get("closed_by")) if closed else None,
            "labels": [label["name"] for label in issue.get("labels", [])],
            "comments": issue.get("comments", 0),
            "updated_at": issue.get("updated_at"),
        }


def _marker(ctx: Context[Any, Any]) -> str | None:
    meta = ctx.request_context.meta or {}
    key = meta.get(IDEMPOTENCY_META_KEY) if isinstance(meta, dict) else None
    return f"meshclaw:{key}" if isinstance(key, str) and key.replace("_", "").isalnum() else None


def build(settings: TicketsSettings | None = None) -> MCPServer:
    cfg = settings or TicketsSettings()  # read from the environment
    tracker = Tracker(cfg)
    repo_path = f"/repos/{cfg.repo}"
    server = MCPServer(
        "meshclaw-tickets",
        instructions="Tickets: search, read, create, comment, change status, resolve.",
        log_level="WARNING",
    )

    @server.tool(description="Find tickets by words, state and label.", annotations=READ)
    async def search_tickets(
        query: str = "", state: Literal["open", "closed", "all"] = "open", limit: int = 20
    ) -> dict[str, Any]:
        terms = [f"repo:{cfg.repo}", "is:issue", *query.split()]
        if state != "all":
            terms.append(f"is:{state}")
        found = await tracker.send(
            "GET",
            "/search/issues",
            params={"q": " ".join(terms), "per_page": max(1, min(limit, 100))},
        )
        return {
            "total": found.get("total_count", 0),
            "tickets": [tracker.summary(i) for i in found["items"]],
        }

    @server.tool(description="One ticket with its description and comments.", annotations=READ)
    async def get_ticket(number: int) -> dict[str, Any]:
        issue = await tracker.send("GET", f"{repo_path}/issues/{number}")
        comments = await tracker.send("GET", f"{repo_path}/issues/{number}/comments")
        return tracker.summary(issue) | {
            "body": issue.get("body") or "",
            "comment_list": [{"by": c["user"]["login"], "body": c["body"]} for c in comments],
        }

    @server.tool(description="Create a ticket.", annotations=WRITE)
    async def create_ticket(
        title: str, ctx: Context[Any, Any], body: str = "", labels: list[str] | None = None
    ) -> dict[str, Any]:
        marker = _marker(ctx)
        if marker is not None:
            found = await tracker.send(
                "GET", "/search/issues", params={"q": f'repo:{cfg.repo} in:body "{marker}"'}
            )
            if found.get("items"):
                return {"evidence": tracker.evidence(found["items"][0]) | {"duplicate": True}}
            body = f"{body}\n\n<!-- {marker} -->" if body else f"<!-- {marker} -->"
        issue = await tracker.send(
            "POST",
            f"{repo_path}/issues",
            json={"title": title, "body": body, "labels": labels or []},
        )
        return {"evidence": tracker.evidence(issue) | {"duplicate": False}}

    @server.tool(description="Comment on a ticket.", annotations=WRITE)
    async def comment(number: int, body: str) -> dict[str, Any]:
        made = await tracker.send(
            "POST", f"{repo_path}/issues/{number}/comments", json={"body": body}
        )
        return {
            "evidence": {
                "key": tracker.key(number),
                "comment_id": made["id"],
                "url": made.get("html_url"),
            }
        }

    @server.tool(
        description="Move a ticket to a workflow status: todo, in-progress, blocked, review "
        "(reopens a closed ticket).",
        annotations=WRITE,
    )
    async def transition(number: int, status: Status) -> dict[str, Any]:
        issue = await tracker.send("GET", f"{repo_path}/issues/{number}")
        labels = [x["name"] for x in issue.get("labels", []) if not x["name"].startswith("status:")]
        update: dict[str, Any] = {"labels": [*labels, f"status:{status}"]}
        if issue.get("state") == "closed":
            update |= {"state": "open", "state_reason": "reopened"}
        changed = await tracker.send("PATCH", f"{repo_path}/issues/{number}", json=update)
        return {"evidence": tracker.evidence(changed)}

    @server.tool(
        description="Resolve (close) a ticket, optionally with a last comment.", annotations=WRITE
    )
    async def resolve(
        number: int,
        resolution: Literal["completed", "not_planned"] = "completed",
        comment: str | None = None,
    ) -> dict[str, Any]:
        if comment:
            await tracker.send(
                "POST", f"{repo_path}/issues/{number}/comments", json={"body": comment}
            )
        issue = await tracker.send("GET", f"{repo_path}/issues/{number}")
        labels = [x["name"] for x in issue.get("labels", []) if not x["name"].startswith("status:")]
        closed = await tracker.send(
            "PATCH",
            f"{repo_path}/issues/{number}",
            json={"state": "closed", "state_reason": resolution, "labels": labels},
        )
        return {"evidence": tracker.evidence(closed) | {"resolution": closed.get("state_reason")}}

    return server
