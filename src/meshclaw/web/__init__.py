"""The web dashboard, served by the API process under ``/ui`` (docs/dashboard.md).

``install(app)`` adds the pages, the static files (CSS, a little JavaScript, and Plotly
from its PyPI package: no CDN, no JavaScript build) and the sign-in redirect.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import plotly
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from meshclaw.web import (
    admin,
    agents,
    approvals,
    audit,
    home,
    insights,
    integrity,
    leaderboard,
    notifications,
    runs,
    session,
)
from meshclaw.web._pages import PREFIX, SignInRequired, sign_in_url

PAGE_MODULES = (
    session,
    home,
    agents,
    runs,
    approvals,
    insights,
    leaderboard,
    integrity,
    notifications,
    audit,
    admin,
)
_PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
_WEEK = "public, max-age=604800"


def install(app: FastAPI) -> None:
    for module in PAGE_MODULES:
        app.include_router(module.router, prefix=PREFIX, include_in_schema=False)
    static_dir = str(resources.files("meshclaw.web").joinpath("static"))
    app.mount(f"{PREFIX}/static", StaticFiles(directory=static_dir), name="static")

    @app.get(f"{PREFIX}/vendor/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:
        return FileResponse(
            _PLOTLY_JS, media_type="text/javascript", headers={"Cache-Control": _WEEK}
        )

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    @app.exception_handler(SignInRequired)
    async def _sign_in(_: Request, exc: SignInRequired) -> Response:
        return RedirectResponse(sign_in_url(exc.next_path), status_code=303)
