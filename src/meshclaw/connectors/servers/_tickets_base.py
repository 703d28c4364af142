"""What every tickets backend shares: settings, the error the agent sees, the result shape.

A backend (``_tickets_github``, ``_tickets_redmine``, ``_tickets_jira``) turns one
tracker's REST API into the same tool results, so an agent, its spec and the outcomes
verifier do not change with the tracker:

- a ticket is named by its ``number`` (an int) and its ``key`` (``owner/repo#12``,
  ``ops#12``, ``OPS-12``);
- ``status`` is ``open``, ``todo``, ``in-progress``, ``blocked``, ``review`` or ``closed``
  (``tracker_status`` keeps the tracker's own name);
- ``reporter`` is who filed it, ``resolution`` (``completed`` / ``not_planned``) and
  ``closed_by`` say how and by whom it was closed.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Protocol

import httpx
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from meshclaw.errors import ConfigError

STATUSES = ("todo", "in-progress", "blocked", "review")
Status = Literal["todo", "in-progress", "blocked", "review"]
Resolution = Literal["completed", "not_planned"]
Kind = Literal["github", "redmine", "jira"]
GITHUB_API = "https://api.github.com"


class TicketsSettings(BaseSettings):
    """Which tracker, project and token (``MESHCLAW_TICKETS_*``)."""

    model_config = SettingsConfigDict(env_prefix="MESHCLAW_TICKETS_")

    kind: Kind = "github"
    api_url: str = GITHUB_API
    """GitHub's API (or GitHub Enterprise's), or the Redmine or Jira root URL."""
    repo: str | None = None
    """GitHub: ``owner/name``."""
    project: str | None = None
    """Redmine: the project identifier (``ops``); Jira: the project key (``OPS``)."""
    token: SecretStr
    """GitHub token, Redmine API key, Jira Cloud API token or Jira Data Center personal
    access token."""
    user: str | None = None
    """Jira Cloud: the account's email, for basic auth with the API token; unset, the
    token is sent as a bearer token (a Data Center personal access token)."""
    statuses: dict[str, str] = {}
    """Redmine, Jira: a workflow status (or ``completed`` / ``not_planned``) -> the name
    of the tracker's status it is, over the defaults (``{"review": "Code Review"}``)."""
    resolutions: dict[str, str] = {}
    """Jira: ``completed`` / ``not_planned`` -> the Jira resolution a resolve sets, over
    the defaults (``Done``, ``Won't Do``)."""
    issue_type: str = "Task"
    """Jira: the issue type of a created ticket."""
    timeout_seconds: float = 30.0

    def check(self) -> None:
        """What each kind needs; a clear error instead of a failing first call."""
        if self.kind == "github" and not self.repo:
            raise ConfigError("MESHCLAW_TICKETS_REPO (owner/name) is required for GitHub")
        if self.kind in ("redmine", "jira"):
            if not self.project:
                raise ConfigError(f"MESHCLAW_TICKETS_PROJECT is required for {self.kind}")
            if self.api_url.rstrip("/") == GITHUB_API:
                raise ConfigError(
                    f"MESHCLAW_TICKETS_API_URL (the {self.kind} server) is required for {self.kind}"
                )
        if self.kind == "jira" and not re.fullmatch(r"[A-Z][A-Z0-9_]*", self.project or ""):
            raise ConfigError(
                f"MESHCLAW_TICKETS_PROJECT must be a Jira project key (OPS), not {self.project!r}"
            )
        unknown_resolutions = sorted(set(self.resolutions) - {"completed", "not_planned"})
        if unknown_resolutions:
            raise ConfigError(
                f"MESHCLAW_TICKETS_RESOLUTIONS: unknown key {', '.join(unknown_resolutions)}; "
                "known: completed, not_planned"
            )
        known = (*STATUSES, "completed", "not_planned")
        unknown = sorted(set(self.statuses) - set(known))
        if unknown:
            raise ConfigError(
                f"MESHCLAW_TICKETS_STATUSES: unknown key {', '.join(unknown)}; "
                f"known: {', '.join(known)}"
            )


class TicketsError(ToolError):
    """A tracker operation failed; the text reaches the agent (never the token)."""


class Backend(Protocol):
    """One tracker's REST API behind the tickets tools."""

    async def search(self, query: str, state: str, limit: int) -> dict[str, Any]: ...

    async def get(self, number: int) -> dict[str, Any]: ...

    async def create(
        self, title: str, body: str, labels: list[str], marker: str | None
    ) -> dict[str, Any]: ...

    async def comment(self, number: int, body: str) -> dict[str, Any]: ...

    async def transition(self, number: int, status: Status) -> dict[str, Any]: ...

    async def resolve(
        self, number: int, resolution: Resolution, comment: str | None
    ) -> dict[str, Any]: ...


async def send(settings: TicketsSettings, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One HTTP request; a transport failure becomes a ``TicketsError`` naming the host."""
    try:
        async with httpx.AsyncClient(timeout=settings.timeout_seconds) as client:
            return await client.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        raise TicketsError(
            f"cannot reach the tracker at {settings.api_url.rstrip('/')}: {type(exc).__name__}"
        ) from None


def workflow_status(name: str, closed: bool, names: dict[str, str]) -> str:
    """A tracker status name in the tools' vocabulary (``closed`` when the tracker says
    so, a workflow status by its configured name, else ``open``)."""
    if closed:
        return "closed"
    wanted = name.strip().lower()
    return next((s for s, n in names.items() if n.lower() == wanted), "open")


def ticket(
    evidence: dict[str, Any],
    *,
    title: str | None,
    reporter: str | None,
    resolution: str | None,
    closed_by: str | None,
    labels: list[str],
    comments: int,
    updated_at: str | None,
    tracker_status: str | None = None,
) -> dict[str, Any]:
    """What searches and reads return for one ticket, the same for every tracker."""
    return (
        evidence
        | {
            "title": title,
            "reporter": reporter,
            "resolution": resolution,
            "closed_by": closed_by,
            "labels": labels,
            "comments": comments,
            "updated_at": updated_at,
        }
        | ({"tracker_status": tracker_status} if tracker_status is not None else {})
    )
