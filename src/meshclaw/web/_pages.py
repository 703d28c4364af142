"""What every dashboard page shares: templates, the signed-in caller, CSRF-checked forms.

Pages are server-rendered (Jinja2) and work without JavaScript; ``static/app.js`` only
adds live updates (SSE) and charts. A page reads through the same services as the API,
as the signed-in ``Caller``, so Cedar decides the same way for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape

from meshclaw.accounts.service import Caller
from meshclaw.api.deps import PlatformDep, check_csrf, session_of
from meshclaw.dashboard_paths import outcome_page
from meshclaw.platform import Platform

PREFIX = "/ui"

_TEMPLATES_DIR = str(resources.files("meshclaw.web").joinpath("templates"))
_env = Environment(
    loader=FileSystemLoader(_TEMPLATES_DIR),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
templates = Jinja2Templates(env=_env)


class SignInRequired(Exception):
    """Raised by page dependencies; the app answers with a redirect to the sign-in page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def sign_in_url(next_path: str) -> str:
    return f"{PREFIX}/login?next={quote(next_path, safe='/')}"


@dataclass(frozen=True, kw_only=True)
class Viewer:
    """The signed-in person looking at a page, and the session's CSRF token for forms."""

    caller: Caller
    csrf_token: str
    platform: Platform


def _viewer(request: Request, platform: Platform) -> Viewer | None:
    """The signed-in person looking at the page, or None."""
    signed_in = session_of(request, platform)
    if signed_in is None:
        return None
    return Viewer(caller=signed_in.caller, csrf_token=signed_in.csrf_token, platform=platform)


def current_viewer(request: Request, platform: PlatformDep) -> Viewer:
    viewer = _viewer(request, platform)
    if viewer is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(path)
    return viewer


ViewerDep = Annotated[Viewer, Depends(current_viewer)]


async def checked_form(request: Request, viewer: ViewerDep) -> dict[str, str]:
    """The posted form's fields, after checking its CSRF token (403 when it is wrong)."""
    form = await request.form()
    fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    # The viewer's session was read a moment ago by ``current_viewer``: compare with it.
    check_csrf(request, viewer.csrf_token, fields.get("csrf", ""))
    fields.pop("csrf", None)
    return fields


FormDep = Annotated[dict[str, str], Depends(checked_form)]


def render(
    request: Request,
    template: str,
    viewer: Viewer | None,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """Render a page with what the layout needs (who is signed in, the nav, CSRF).

    The nav's unread count is one indexed COUNT per page (None: not theirs to read), unless
    the page counted already (``unread_notifications`` in ``context``); not on a server
    error's page, which must render even when the store failed."""
    if "unread_notifications" not in context:
        context["unread_notifications"] = (
            viewer.platform.notifications.unread_count(viewer.caller)
            if viewer and status_code < 500
            else None
        )
    return templates.TemplateResponse(
        request,
        template,
        {
            "viewer": viewer,
            "caller": viewer.caller if viewer else None,
            "csrf": viewer.csrf_token if viewer else "",
            "prefix": PREFIX,
            "path": request.url.path,
            **context,
        },
        status_code=status_code,
    )


def query_int(value: str | None, default: int, allowed: tuple[int, ...] | None = None) -> int:
    """A page's numeric query parameter (``limit``, ``offset``): ``default`` when absent,
    not a number, or not one of ``allowed``; never negative. A bad link shows the
    default page rather than an error."""
    try:
        number = int(value) if value else default
    except ValueError:
        return default
    if allowed is not None and number not in allowed:
        return default
    return max(number, 0)


def is_page(request: Request) -> bool:
    """Whether the request is for a dashboard page (errors then render as HTML)."""
    return request.url.path == PREFIX or request.url.path.startswith(PREFIX + "/")


_TITLES = {400: "Bad request", 401: "Sign in needed", 403: "Not allowed", 404: "Not found",
           409: "Cannot do that now", 422: "Invalid input"}  # fmt: skip


def error_page(request: Request, status: int, detail: str) -> HTMLResponse:
    """A user's mistake or a refusal on a page: the reason in plain words, never a trace."""
    viewer = _viewer(request, request.app.state.platform)
    title = _TITLES.get(status, "Something went wrong" if status >= 500 else "Error")
    if status >= 500:
        detail = "The platform failed while handling this page; the error is in the server log."
    return render(request, "error.html", viewer, status_code=status, title=title, detail=detail)


def money(value: Decimal | float | int | None) -> str:
    """Cost as people read it: dollars with cents, sub-cent amounts with more digits."""
    if value is None:
        return "\N{EN DASH}"
    amount = Decimal(value)
    if amount and abs(amount) < Decimal("0.01"):
        return f"${amount:.4f}"
    return f"${amount:,.2f}"


_env.filters["money"] = money
_env.globals["outcome_page"] = outcome_page  # links to an outcome, from any page
_env.filters["when"] = lambda d: d.strftime("%Y-%m-%d %H:%M UTC") if d else "\N{EN DASH}"
