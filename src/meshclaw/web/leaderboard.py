"""Leaderboards: teams (the default) or people who opted in, ranked by accepted durable value.

The ranking and who appears on it are the analytics service's (teams smaller than k are
left out; the individual board exists only where the org enabled it and lists only people
who opted in); ``analytics.boards`` adds names and cost. A form lets the viewer opt in
or out of the individual board.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from meshclaw.analytics.boards import Boards
from meshclaw.web._pages import PREFIX, FormDep, Viewer, ViewerDep, render

router = APIRouter()

TOP = 50
CHOICES = {"in": True, "out": False}


@router.get("/leaderboard", response_class=HTMLResponse)
def leaderboard(
    request: Request, viewer: ViewerDep, by: str = "team", saved: str | None = None
) -> HTMLResponse:
    flash = None
    if saved in CHOICES:
        flash = "Saved: you {} on the individual leaderboard.".format(
            "appear" if CHOICES[saved] else "do not appear"
        )
    return _page(request, viewer, by, flash=flash)


@router.post("/leaderboard/opt-in", response_class=HTMLResponse)
def opt_in(request: Request, viewer: ViewerDep, form: FormDep) -> Response:
    choice = form.get("choice", "")
    if choice not in CHOICES:
        error = "Choose whether to appear on the individual leaderboard."
        return _page(request, viewer, "team", status_code=422, choice_error=error)
    analytics = viewer.platform.analytics
    analytics.opt_in(viewer.caller, CHOICES[choice])
    by = "user" if analytics.settings(viewer.caller)["individual_boards"] else "team"
    return RedirectResponse(f"{PREFIX}/leaderboard?by={by}&saved={choice}", status_code=303)


def _page(
    request: Request, viewer: Viewer, by: str, *, status_code: int = 200, **extra: Any
) -> HTMLResponse:
    platform, caller = viewer.platform, viewer.caller
    boards = Boards(platform.db, platform.analytics)
    return render(
        request,
        "leaderboard.html",
        viewer,
        status_code=status_code,
        by=by,
        rows=boards.rows(caller, by, top=TOP),
        top=TOP,
        settings=platform.analytics.settings(caller),
        opted_in=boards.opted_in(caller),
        **extra,
    )
