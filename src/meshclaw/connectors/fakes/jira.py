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
``{"errorMessages": [...], "errors": {field: message}}``.

The parts: data and JSON shapes in ``_jira_state``, request helpers in ``_jira_http``, the
issue endpoints in ``_jira_issues``, search in ``_jira_search``, JQL in ``_jira_jql``.
"""

from __future__ import annotations

from starlette.applications import Starlette

from meshclaw._loopback import ServedFake
from meshclaw.connectors.fakes._jira_issues import issue_routes
from meshclaw.connectors.fakes._jira_search import search_routes
from meshclaw.connectors.fakes._jira_state import (
    JiraIssue,
    JiraProject,
    JiraState,
    JiraTransition,
    JiraUser,
    default_transitions,
)

__all__ = ["JiraFake", "JiraIssue", "JiraProject", "JiraState", "JiraTransition", "JiraUser",
           "default_transitions"]  # fmt: skip


def _app(state: JiraState) -> Starlette:
    return Starlette(routes=[*issue_routes(state), *search_routes(state)])


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
