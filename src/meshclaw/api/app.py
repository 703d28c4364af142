"""The REST API (FastAPI). Every route but ``/health`` needs a bearer API token.

Errors are RFC 9457 problem details: user mistakes get a 4xx with the reason (and, for
specs, every field path and line); nothing half-done is left in the store.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, routing
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Mount, compile_path

from meshclaw import __version__
from meshclaw.accounts.directory import InvalidFields
from meshclaw.analytics.usage_views import usage_view
from meshclaw.api import analytics as analytics_api
from meshclaw.api import approvals as approvals_api
from meshclaw.api import audit as audit_api
from meshclaw.api import auth as auth_api
from meshclaw.api import chat_events as chat_events_api
from meshclaw.api import connectors as connectors_api
from meshclaw.api import directory as directory_api
from meshclaw.api import hooks as hooks_api
from meshclaw.api import integrity as integrity_api
from meshclaw.api import matrix_events as matrix_events_api
from meshclaw.api import metering as metering_api
from meshclaw.api import notifications as notifications_api
from meshclaw.api import ops as ops_api
from meshclaw.api import outcomes as outcomes_api
from meshclaw.api import policy as policy_api
from meshclaw.api import streams as streams_api
from meshclaw.api.deps import MAX_INDEX, PROBLEM_RESPONSES, Authed, Offset, Timestamp
from meshclaw.api.nul import RefuseNul
from meshclaw.api.schemas import (
    AgentCreate,
    AgentOut,
    Problem,
    RunCreate,
    RunOut,
    StepOut,
    UsageOut,
    UsageRowOut,
    VersionOut,
)
from meshclaw.errors import AuthError, MeshClawError, SpecError, UserError
from meshclaw.metering.usage import GroupBy, Period
from meshclaw.platform import Platform
from meshclaw.spec.loader import parse_spec, validate_spec
from meshclaw.spec.registry import AgentInfo
from meshclaw.web import install as install_dashboard
from meshclaw.web._pages import error_page, is_page
from meshclaw.workers.dispatch import RunDispatcher

PROBLEM = "application/problem+json"
log = logging.getLogger(__name__)


def _problem(
    status: int,
    title: str,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = Problem(title=title, status=status, detail=detail, errors=errors)
    return JSONResponse(
        body.model_dump(exclude_none=True), status, headers=headers, media_type=PROBLEM
    )


def _title(status: int) -> str:
    """A problem's title: the status's reason phrase ("Forbidden"), for people to read."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _agent_out(agent: AgentInfo, changed: bool | None = None) -> AgentOut:
    return AgentOut(
        id=agent.id,
        name=agent.name,
        owner=agent.owner_handle,
        team_id=agent.team_id,
        version=agent.version,
        created_at=agent.created_at,
        spec=agent.spec.model_dump(mode="json"),
        changed=changed,
        archived_at=agent.archived_at,
    )


def allowed_methods(request: Request) -> list[str]:
    """Every method the request's path is served with, sorted: the methods of all routes
    whose template matches it, the most specific templates only (``/v1/outcomes/recheck``
    is that path's own ``POST``, not also ``GET /v1/outcomes/{outcome_id}``). FastAPI
    routes do not answer HEAD for GET, so HEAD is listed only where a route serves it. The
    table is built once per app."""
    table: list[tuple[re.Pattern[str], int, frozenset[str]]] | None = getattr(
        request.app.state, "method_table", None
    )
    if table is None:
        table = []
        for route in routing.iter_route_contexts(request.app.routes):
            if isinstance(route.original_route, Mount) or not route.path or not route.methods:
                continue
            regex, _, params = compile_path(route.path)
            table.append((regex, len(params), frozenset(route.methods)))
        request.app.state.method_table = table
    root = request.scope.get("root_path", "")
    path = request.url.path
    path = path[len(root) :] if root and path.startswith(root) else path
    matching = [(params, methods) for regex, params, methods in table if regex.match(path)]
    fewest = min((params for params, _ in matching), default=0)
    return sorted({m for params, methods in matching if params == fewest for m in methods})


def create_app(platform: Platform, worker: RunDispatcher | None = None) -> FastAPI:
    app = FastAPI(
        title="MeshClaw", version=__version__, description=__doc__, responses=PROBLEM_RESPONSES
    )
    app.state.platform = platform
    app.state.dispatcher = worker

    def bad_request(request: Request, detail: str) -> Response:
        """A 400: an error page on the dashboard, else a problem body."""
        if is_page(request):
            return error_page(request, 400, detail)
        return _problem(400, _title(400), detail)

    def refuse_nul(request: Request, where: str) -> Response:
        return bad_request(
            request, f"the request's {where} holds a NUL character, which no text may"
        )

    app.add_middleware(RefuseNul, refuse=refuse_nul)
    app.include_router(auth_api.router)
    app.include_router(approvals_api.router)
    app.include_router(policy_api.router)
    app.include_router(audit_api.router)
    app.include_router(connectors_api.router)
    app.include_router(metering_api.router)
    app.include_router(chat_events_api.router)
    app.include_router(matrix_events_api.router)
    app.include_router(hooks_api.router)
    app.include_router(ops_api.router)
    app.include_router(streams_api.router)
    app.include_router(outcomes_api.router)
    app.include_router(analytics_api.router)
    app.include_router(integrity_api.router)
    app.include_router(notifications_api.router)
    app.include_router(directory_api.router)
    install_dashboard(app)

    @app.exception_handler(SpecError)
    async def _spec_error(_: Request, exc: SpecError) -> JSONResponse:
        issues = [{"path": i.path, "line": i.line, "message": i.message} for i in exc.issues]
        return _problem(422, "Invalid agent spec", f"{len(issues)} problem(s) in the spec", issues)

    @app.exception_handler(InvalidFields)
    async def _invalid_fields(request: Request, exc: InvalidFields) -> Response:
        # Bad fields (a password too short, ...): 422 with each field's path, as request
        # validation answers (409 when a name is taken).
        if is_page(request):
            return error_page(request, exc.http_status, str(exc))
        errors = [{"path": f"body.{k}", "message": v} for k, v in exc.fields.items()]
        return _problem(exc.http_status, "Invalid request", str(exc), errors)

    @app.exception_handler(MeshClawError)
    async def _meshclaw_error(request: Request, exc: MeshClawError) -> Response:
        status = exc.http_status if isinstance(exc, UserError) else 500
        if is_page(request):
            return error_page(request, status, str(exc))
        # RFC 9110 §11.6.1: a 401 names the scheme that would succeed.
        challenge = {"WWW-Authenticate": exc.challenge} if isinstance(exc, AuthError) else None
        return _problem(status, _title(status), str(exc), headers=challenge)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"path": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()
        ]
        return _problem(
            422, "Invalid request", "the request body or parameters are invalid", errors
        )

    @app.exception_handler(DataError)
    async def _store_refused(request: Request, exc: DataError) -> Response:
        # PostgreSQL keeps no NUL character in text: one in a body (a webhook's, a form's)
        # is the sender's mistake, answered as such; anything else the store refused is ours.
        if "NUL" not in str(exc.orig):
            log.error("the store refused a value", exc_info=exc)
            return _problem(500, _title(500), "the store refused a value")
        return bad_request(
            request, "the request holds a NUL character (\\u0000), which text cannot hold"
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Keep the exception's headers: a 405 must say what is allowed (``Allow``), and
        # Starlette names only the first matching route's methods.
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        if is_page(request):
            page = error_page(request, exc.status_code, str(exc.detail))
            page.headers.update(headers)
            return page
        return _problem(
            exc.status_code, _title(exc.status_code), str(exc.detail), headers=headers or None
        )

    @app.get("/health", tags=["meta"])
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/v1/me", tags=["meta"])
    def me(who: Authed) -> dict[str, Any]:
        return {
            "user_id": who.user_id,
            "org_id": who.org_id,
            "handle": who.handle,
            "role": who.role,
        }

    @app.get("/v1/agents", tags=["agents"])
    def list_agents(
        who: Authed,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        offset: Offset = 0,
        include_archived: bool = False,
    ) -> list[AgentOut]:
        """The agents you may read, by name: ``offset`` skips, ``limit`` caps the page;
        archived ones only with ``include_archived``."""
        agents = platform.agents.list_agents(
            who, limit=limit, offset=offset, include_archived=include_archived
        )
        return [_agent_out(a) for a in agents]

    @app.post("/v1/agents", tags=["agents"], status_code=201)
    def create_agent(body: AgentCreate, who: Authed) -> AgentOut:
        """Create an agent, or store a new version when the spec changed."""
        spec = (
            parse_spec(body.spec_yaml)
            if body.spec_yaml is not None
            else validate_spec(body.spec or {})
        )
        agent, changed = platform.agents.save(who, spec)
        return _agent_out(agent, changed)

    @app.get("/v1/agents/{name}", tags=["agents"])
    def get_agent(name: str, who: Authed) -> AgentOut:
        return _agent_out(platform.agents.get(who, name))

    @app.post("/v1/agents/{name}/archive", tags=["agents"])
    def archive_agent(name: str, who: Authed) -> AgentOut:
        """Archive the agent: no new runs, its triggers stop; nothing is deleted (its runs,
        outcomes, versions and audit records stay). 409 if already archived."""
        return _agent_out(platform.agents.archive(who, name))

    @app.post("/v1/agents/{name}/restore", tags=["agents"])
    def restore_agent(name: str, who: Authed) -> AgentOut:
        """Undo an archive: the agent runs and its triggers fire again."""
        return _agent_out(platform.agents.restore(who, name))

    @app.get("/v1/agents/{name}/versions", tags=["agents"])
    def agent_versions(
        name: str,
        who: Authed,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        offset: Offset = 0,
    ) -> list[VersionOut]:
        """The agent's versions, oldest first: ``offset`` skips, ``limit`` caps the page."""
        versions = platform.agents.versions(who, name, limit=limit, offset=offset)
        return [VersionOut.model_validate(v) for v in versions]

    @app.get("/v1/agents/{name}/diff", tags=["agents"])
    def agent_diff(
        name: str,
        who: Authed,
        old: Annotated[int, Query(ge=1, le=MAX_INDEX)],
        new: Annotated[int, Query(ge=1, le=MAX_INDEX)],
    ) -> dict[str, Any]:
        return {"old": old, "new": new, "diff": platform.agents.diff(who, name, old, new)}

    @app.post("/v1/runs", tags=["runs"], status_code=202)
    def start_run(body: RunCreate, who: Authed) -> RunOut:
        """Queue a run; the worker starts it at once. Poll ``GET /v1/runs/{id}``."""
        info = platform.runs.create(who, body.agent, body.input, trigger=body.trigger)
        if worker is not None:
            worker.dispatch(info.id)
        return RunOut.model_validate(info)

    @app.get("/v1/runs", tags=["runs"])
    def list_runs(
        who: Authed,
        agent: str | None = None,
        status: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Offset = 0,
    ) -> list[RunOut]:
        runs = platform.runs.find(who, agent=agent, status=status, limit=limit, offset=offset)
        return [RunOut.model_validate(r) for r in runs]

    @app.get("/v1/runs/{run_id}", tags=["runs"])
    def get_run(run_id: str, who: Authed) -> RunOut:
        out = RunOut.model_validate(platform.runs.get(who, run_id))
        out.steps = [StepOut.model_validate(s) for s in platform.runs.steps(who, run_id)]
        return out

    @app.get("/v1/runs/{run_id}/steps", tags=["runs"])
    def run_steps(run_id: str, who: Authed, after: Offset = 0) -> list[StepOut]:
        return [StepOut.model_validate(s) for s in platform.runs.steps(who, run_id, after)]

    @app.post("/v1/runs/{run_id}/cancel", tags=["runs"])
    def cancel_run(run_id: str, who: Authed) -> RunOut:
        return RunOut.model_validate(platform.runs.cancel(who, run_id))

    @app.get("/v1/usage", tags=["usage"])
    def usage(
        who: Authed,
        group_by: GroupBy | None = None,
        since: Timestamp | None = None,
        until: Timestamp | None = None,
        period: Period | None = None,
        user: Annotated[str | None, Query(max_length=200)] = None,
        reason: Annotated[str | None, Query(max_length=500)] = None,
    ) -> UsageOut:
        """Tokens and cost (per day, week or month with ``period``). Tokens are a cost,
        never a measure of achievement. ``group_by`` defaults to ``user`` for one's own
        usage, else ``team``. Someone else's usage is an individual drill-down: ``user``
        (handle or id) and a ``reason``, recorded where they see it; per-person rows of a
        team or the org are refused, and teams smaller than the org's k are left out."""
        view = usage_view(
            platform.db,
            platform.access,
            platform.audit,
            who,
            group_by=group_by,
            since=since,
            until=until,
            period=period,
            user=user,
            reason=reason,
        )
        return UsageOut(
            group_by=view.group_by,
            period=period,
            rows=[UsageRowOut.model_validate(r) for r in view.rows],
        )

    return app
