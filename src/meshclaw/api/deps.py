"""What every route depends on: the platform and the authenticated caller.

Routers live in their own modules and use ``PlatformDep`` and ``Authed``; ``create_app``
puts the platform on ``app.state``. A caller proves who they are with a bearer API token
or, in the browser, with the dashboard's session cookie; a cookie-authenticated unsafe
request must also carry the session's CSRF token (``X-CSRF-Token`` header; dashboard forms
a ``csrf`` field), because browsers send cookies on cross-site requests.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from meshclaw.accounts.service import Caller
from meshclaw.accounts.signin import SessionCaller
from meshclaw.errors import AuthError, PermissionDenied
from meshclaw.platform import Platform

SESSION_COOKIE = "meshclaw_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

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


def check_csrf(request: Request, signed_in: SessionCaller, sent: str | None = None) -> None:
    """Refuse an unsafe cookie-authenticated request without the session's CSRF token.

    API calls send it in the ``X-CSRF-Token`` header; dashboard forms pass their ``csrf``
    field as ``sent``.
    """
    if request.method in SAFE_METHODS:
        return
    sent = sent if sent is not None else request.headers.get(CSRF_HEADER)
    if sent is None or not hmac.compare_digest(sent, signed_in.csrf_token):
        raise PermissionDenied("missing or wrong CSRF token; reload the page and try again")


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
        check_csrf(request, signed_in)
        return signed_in.caller
    raise AuthError("missing bearer token (Authorization: Bearer <token>) or session cookie")


Authed = Annotated[Caller, Depends(current_caller)]
