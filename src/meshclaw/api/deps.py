"""What every route depends on: the platform and the authenticated caller.

Routers live in their own modules and use ``PlatformDep`` and ``Authed``; ``create_app``
puts the platform on ``app.state``. A caller proves who they are with a bearer API token
or, in the browser, with the dashboard's session cookie; a cookie-authenticated unsafe
request must also carry the session's CSRF token (``X-CSRF-Token`` header; dashboard forms
a ``csrf`` field), because browsers send cookies on cross-site requests.
"""

from __future__ import annotations

import hmac
import re
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import Depends, Query, Request, Response
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BeforeValidator

from meshclaw.accounts.service import Caller
from meshclaw.accounts.signin import SessionCaller
from meshclaw.api.schemas import Problem
from meshclaw.errors import AuthError, PermissionDenied
from meshclaw.platform import Platform

SESSION_COOKIE = "meshclaw_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {
        "description": "The request was refused: an RFC 9457 problem details body says why "
        "(401 sign in, 403 not allowed, 404 not found or not yours, 409 state, 422 invalid "
        "input with every field in `errors`).",
        "content": {"application/problem+json": {"schema": Problem.model_json_schema()}},
    }
}
"""What every route may answer besides its success (``FastAPI(responses=...)``), so that
``/openapi.json`` declares the errors clients get."""

_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _not_a_number(value: Any) -> Any:
    """Pydantic reads a number as seconds since 1970; the schema promises ISO 8601 text, and
    ``before: 0`` is far likelier a mistake than a wish for 1970-01-01."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("expected an ISO 8601 date or time, e.g. 2026-01-31T12:00:00Z")
    return value


Timestamp = Annotated[datetime, BeforeValidator(_not_a_number)]
"""A date and time in a body or query: ISO 8601 text only (``2026-01-31T12:00:00Z``)."""
Day = Annotated[date, BeforeValidator(_not_a_number)]
"""A calendar day in a body or query: ISO 8601 text only (``2026-01-31``)."""

MAX_INDEX = 2**31 - 1
"""The largest offset, sequence or version number a query may name (the store's integers)."""
Offset = Annotated[int, Query(ge=0, le=MAX_INDEX)]
"""How many items to skip when paging."""

_bearer = HTTPBearer(auto_error=False, description="An API token: `meshclaw token create`.")
_cookie = APIKeyCookie(
    name=SESSION_COOKIE, auto_error=False, description="The dashboard's sign-in session."
)


def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


def session_of(request: Request, platform: Platform) -> SessionCaller | None:
    """The signed-in session of a browser request, or None (no or ended session)."""
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        return None
    try:
        return platform.signin.authenticate(secret)
    except AuthError:
        return None


def check_csrf(request: Request, expected: str, sent: str | None = None) -> None:
    """Refuse an unsafe cookie-authenticated request without the session's CSRF token.

    API calls send it in the ``X-CSRF-Token`` header; dashboard forms pass their ``csrf``
    field as ``sent``.
    """
    if request.method in SAFE_METHODS:
        return
    sent = sent if sent is not None else request.headers.get(CSRF_HEADER)
    if sent is None or not hmac.compare_digest(sent, expected):
        raise PermissionDenied("missing or wrong CSRF token; reload the page and try again")


def end_session(request: Request, response: Response) -> None:
    """Sign the browser out: revoke its session in the store and drop the cookie."""
    secret = request.cookies.get(SESSION_COOKIE)
    if secret:
        get_platform(request).signin.logout(secret)
    response.delete_cookie(SESSION_COOKIE, path="/")


def current_caller(
    request: Request,
    platform: PlatformDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> Caller:
    """Every route but /health depends on this: a valid token or session, else 401."""
    if credentials is not None:
        if credentials.scheme.lower() != "bearer":
            raise AuthError("use Authorization: Bearer <token>")
        return platform.accounts.authenticate(credentials.credentials)
    if cookie:
        signed_in = platform.signin.authenticate(cookie)
        check_csrf(request, signed_in.csrf_token)
        return signed_in.caller
    raise AuthError("missing bearer token (Authorization: Bearer <token>) or session cookie")


Authed = Annotated[Caller, Depends(current_caller)]
