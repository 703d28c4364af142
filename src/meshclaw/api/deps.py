"""What every route depends on: the platform and the authenticated caller.

Routers live in their own modules and use ``PlatformDep`` and ``Authed``; ``create_app``
puts the platform on ``app.state``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from meshclaw.accounts.service import Caller
from meshclaw.errors import AuthError
from meshclaw.platform import Platform

_bearer = HTTPBearer(auto_error=False)


def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


def current_caller(
    platform: PlatformDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """Every route but /health depends on this: a valid bearer token or 401."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthError("missing bearer token (Authorization: Bearer <token>)")
    return platform.accounts.authenticate(credentials.credentials)


Authed = Annotated[Caller, Depends(current_caller)]
