"""Sign-in and sign-out pages. The session is the same one ``/v1/auth/login`` opens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from meshclaw.api.auth import set_session_cookie
from meshclaw.api.deps import PlatformDep, end_session, session_of
from meshclaw.errors import AuthError
from meshclaw.web._pages import PREFIX, FormDep, render

router = APIRouter()


def _safe_next(target: str | None) -> str:
    """Only paths on this site: an open redirect would help phishing."""
    if target and target.startswith(PREFIX) and not target.startswith("//"):
        return target
    return f"{PREFIX}/"


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, platform: PlatformDep, next: str | None = None) -> Response:
    if session_of(request, platform) is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return render(request, "login.html", None, next=_safe_next(next), handle="", org="")


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    platform: PlatformDep,
    handle: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
    org: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    if not handle.strip() or not password:
        error = "Enter your user name and password."
    else:
        try:
            signed_in = platform.signin.login(handle.strip(), password, org.strip() or None)
        except AuthError as exc:
            error = str(exc).capitalize() + "."
        else:
            response = RedirectResponse(_safe_next(next), status_code=303)
            set_session_cookie(response, platform, signed_in)
            return response
    context = {"next": _safe_next(next), "handle": handle, "org": org, "error": error}
    return render(request, "login.html", None, status_code=401, **context)


@router.post("/logout")
def logout(request: Request, _: FormDep) -> Response:
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    end_session(request, response)
    return response
