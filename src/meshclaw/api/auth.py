"""Sign-in and API tokens: ``/v1/auth`` (browser sessions) and ``/v1/tokens`` (your own).

``POST /v1/auth/login`` checks a password and sets the HttpOnly session cookie; the
response carries the CSRF token that unsafe cookie-authenticated requests send back in
``X-CSRF-Token``. Tokens are created for the caller only and their secret is shown once.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from meshclaw.accounts.service import TokenInfo
from meshclaw.accounts.signin import SignedIn
from meshclaw.api.deps import SESSION_COOKIE, Authed, PlatformDep, end_session
from meshclaw.platform import Platform

router = APIRouter(tags=["auth"])


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    handle: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1000)
    org: str | None = Field(default=None, max_length=200)
    """Needed only when the handle exists in more than one org."""


class LoginOut(BaseModel):
    user_id: str
    handle: str
    role: str
    csrf_token: str
    expires_at: datetime


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)


class TokenOut(BaseModel):
    id: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewTokenOut(BaseModel):
    secret: str
    """Shown once; only its hash is stored."""


def set_session_cookie(response: Response, platform: Platform, signed_in: SignedIn) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        signed_in.secret,
        max_age=int(platform.settings.web.session_hours * 3600),
        httponly=True,
        samesite="lax",
        secure=platform.settings.web.secure_cookies,
        path="/",
    )


@router.post("/v1/auth/login")
def login(body: LoginIn, response: Response, platform: PlatformDep) -> LoginOut:
    signed_in = platform.signin.login(body.handle, body.password, body.org)
    set_session_cookie(response, platform, signed_in)
    return LoginOut(
        user_id=signed_in.caller.user_id,
        handle=signed_in.caller.handle,
        role=signed_in.caller.role,
        csrf_token=signed_in.csrf_token,
        expires_at=signed_in.expires_at,
    )


@router.post("/v1/auth/logout", status_code=204)
def logout(request: Request, response: Response, _: Authed) -> None:
    end_session(request, response)


def _token_out(info: TokenInfo) -> TokenOut:
    return TokenOut(**vars(info))


@router.get("/v1/tokens")
def list_tokens(platform: PlatformDep, caller: Authed) -> list[TokenOut]:
    """Your own API tokens, newest first (never their secrets)."""
    return [_token_out(t) for t in platform.accounts.tokens(caller)]


@router.post("/v1/tokens", status_code=201)
def create_token(body: TokenIn, platform: PlatformDep, caller: Authed) -> NewTokenOut:
    return NewTokenOut(secret=platform.accounts.issue_token(caller.user_id, body.name))


@router.delete("/v1/tokens/{token_id}")
def revoke_token(token_id: str, platform: PlatformDep, caller: Authed) -> TokenOut:
    return _token_out(platform.accounts.revoke_token(caller, token_id))
