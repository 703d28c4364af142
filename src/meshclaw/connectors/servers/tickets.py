"""The built-in ``tickets`` MCP server: one set of ticket tools over several trackers.

``MESHCLAW_TICKETS_KIND`` picks the tracker (``TicketsSettings``): ``github`` (GitHub's
REST API, GitHub Enterprise, MeshClaw's ``connectors.fakes.github``), ``redmine``
(Redmine's REST API) or ``jira`` (Jira Cloud or Data Center, REST API v2; MeshClaw's
``connectors.fakes.jira``). The tools, their arguments and their results are the same
for each (``_tickets_base``); only GitHub adds pull requests (the server's instructions
say so on the other kinds).

Writes return **evidence**: the ticket key, its URL and its status after the change.
Reads also say who reported the ticket (``reporter``) and, once closed, how
(``resolution``) and by whom (``closed_by``): the outcomes verifier reads a resolved
ticket back through ``get_ticket`` and credits it only when the reporter is someone
other than the agent's owner.

Creating is idempotent per run step: the ticket carries the caller's idempotency key (a
marker in the body), and a ticket that already carries it is
returned instead of created twice.
"""

from __future__ import annotations

from typing import Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import ToolAnnotations

from meshclaw.connectors.servers._tickets_base import (
    STATUSES,
    Backend,
    Resolution,
    Status,
    TicketsError,
    TicketsSettings,
)
from meshclaw.connectors.servers._tickets_github import GitHubTickets, MergeMethod

__all__ = ["STATUSES", "TicketsError", "TicketsSettings", "build"]

IDEMPOTENCY_META_KEY = "io.meshclaw/idempotency-key"
READ = ToolAnnotations(read_only_hint=True, open_world_hint=True)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True)


def _marker(ctx: Context[Any, Any]) -> str | None:
    meta = ctx.request_context.meta or {}
    key = meta.get(IDEMPOTENCY_META_KEY) if isinstance(meta, dict) else None
    return f"meshclaw:{key}" if isinstance(key, str) and key.replace("_", "").isalnum() else None


def backend_for(settings: TicketsSettings) -> Backend:
    settings.check()
    if settings.kind == "redmine":
        from meshclaw.connectors.servers._tickets_redmine import RedmineTickets

        return RedmineTickets(settings)
    if settings.kind == "jira":
        from meshclaw.connectors.servers._tickets_jira import JiraTickets

        return JiraTickets(settings)
    return GitHubTickets(settings)


def instructions(settings: TicketsSettings) -> str:
    """What the server tells the model: the tracker, and that pull requests are GitHub's."""
    where = {"github": f"GitHub repository {settings.repo}",
             "redmine": f"Redmine project {settings.project}",
             "jira": f"Jira project {settings.project}"}[settings.kind]  # fmt: skip
    pulls = (
        " Pull requests: list, read, merge."
        if settings.kind == "github"
        else f" No pull request tools: those exist only on the GitHub kind, not on {settings.kind}."
    )
    return f"Tickets in the {where}: search, read, create, comment, change status, resolve.{pulls}"


def build(settings: TicketsSettings | None = None) -> MCPServer:
    cfg = settings or TicketsSettings()  # read from the environment
    tracker = backend_for(cfg)
    server = MCPServer(
        "meshclaw-tickets",
        instructions=instructions(cfg),
        log_level="WARNING",
    )

    @server.tool(description="Find tickets by words, state and label.", annotations=READ)
    async def search_tickets(
        query: str = "", state: Literal["open", "closed", "all"] = "open", limit: int = 20
    ) -> dict[str, Any]:
        return await tracker.search(query, state, max(1, min(limit, 100)))

    @server.tool(description="One ticket with its description and comments.", annotations=READ)
    async def get_ticket(number: int) -> dict[str, Any]:
        return await tracker.get(number)

    @server.tool(description="Create a ticket.", annotations=WRITE)
    async def create_ticket(
        title: str, ctx: Context[Any, Any], body: str = "", labels: list[str] | None = None
    ) -> dict[str, Any]:
        return {"evidence": await tracker.create(title, body, labels or [], _marker(ctx))}

    @server.tool(description="Comment on a ticket.", annotations=WRITE)
    async def comment(number: int, body: str) -> dict[str, Any]:
        return {"evidence": await tracker.comment(number, body)}

    @server.tool(
        description="Move a ticket to a workflow status: todo, in-progress, blocked, review "
        "(reopens a closed ticket).",
        annotations=WRITE,
    )
    async def transition(number: int, status: Status) -> dict[str, Any]:
        return {"evidence": await tracker.transition(number, status)}

    @server.tool(
        description="Resolve (close) a ticket, optionally with a last comment.", annotations=WRITE
    )
    async def resolve(
        number: int,
        resolution: Literal["completed", "not_planned"] = "completed",
        comment: str | None = None,
    ) -> dict[str, Any]:
        chosen: Resolution = resolution
        return {"evidence": await tracker.resolve(number, chosen, comment)}

    if isinstance(tracker, GitHubTickets):
        _pull_request_tools(server, tracker)
    return server


def _pull_request_tools(server: MCPServer, tracker: GitHubTickets) -> None:
    @server.tool(
        description="List pull requests: number, title, author, status, branches.",
        annotations=READ,
    )
    async def list_pull_requests(
        state: Literal["open", "closed", "all"] = "open", limit: int = 20
    ) -> dict[str, Any]:
        return await tracker.list_pulls(state, max(1, min(limit, 100)))

    @server.tool(
        description="One pull request: merged or not, by whom, its author, who approved it "
        "and whether a later pull request reverted it.",
        annotations=READ,
    )
    async def get_pull_request(number: int) -> dict[str, Any]:
        return await tracker.get_pull(number)

    @server.tool(
        description="Merge a pull request (merge, squash or rebase); with expected_head_sha "
        "only if its head is still that commit.",
        annotations=WRITE,
    )
    async def merge_pull_request(
        number: int, method: MergeMethod = "merge", expected_head_sha: str | None = None
    ) -> dict[str, Any]:
        return {"evidence": await tracker.merge_pull(number, method, expected_head_sha)}
