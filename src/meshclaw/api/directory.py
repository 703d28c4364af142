"""``/v1/users``, ``/v1/teams`` (the directory) and ``/v1/prices`` (the price table).

Platform admins create people and teams and change roles and teams; team admins list
their team; auditors read the directory; everyone reads the price table (Cedar:
``directory.read``, ``directory.manage``, ``price.read``). Changes are audited. A field
that fails validation is a 422 naming the field (``errors[].path``); a name that is
already taken is a 409.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from meshclaw.accounts.directory import (
    KEEP,
    MAX_PAGE,
    InvalidFields,
    PersonInfo,
    TeamInfo,
)
from meshclaw.api.deps import Authed, Day, Offset, PlatformDep
from meshclaw.errors import ConflictError

router = APIRouter(tags=["directory"])


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class PersonOut(_Out):
    id: str
    handle: str
    display_name: str
    role: str
    team_id: str | None
    team: str | None
    job_function: str | None
    email: str | None
    """Mail address (lower-case); how outcomes tell who received a mail."""
    created_at: datetime


class PeopleOut(BaseModel):
    people: list[PersonOut]
    total: int
    limit: int
    offset: int
    next_offset: int | None
    team_id: str | None
    """The team the listing is limited to (a team admin sees only theirs)."""


class TeamOut(_Out):
    id: str
    name: str
    people: int
    created_at: datetime


class PersonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    handle: str = Field(max_length=200)
    role: str = "employee"
    """employee, team_admin, platform_admin or auditor."""
    team: str | None = Field(default=None, max_length=200)
    """A team name or id of the org; none for no team."""
    display_name: str = Field(default="", max_length=200)
    job_function: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=254)
    """Mail address, unique in the org (compared case-insensitively); none if absent."""


class PersonChange(BaseModel):
    """Only the fields sent change; ``"team": null`` removes the person from their team,
    ``"email": null`` their mail address."""

    model_config = ConfigDict(extra="forbid")

    role: str | None = None
    team: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=254)


class TeamIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=200)


class PriceOut(_Out):
    provider: str
    model: str
    input: Decimal
    """USD per million input tokens."""
    output: Decimal
    cached_input: Decimal
    cache_write: Decimal
    effective_from: date | None
    status: str
    """``in force`` on ``day``, or ``scheduled``."""


class PricesOut(_Out):
    version: str
    day: date
    prices: list[PriceOut]


def _fields(exc: InvalidFields) -> RequestValidationError | ConflictError:
    """A field's problem as the API's other validation errors (422 with a path), or a 409."""
    if exc.http_status == 409:
        return ConflictError(str(exc))
    return RequestValidationError(
        [{"loc": ("body", k), "msg": v, "type": "value_error"} for k, v in exc.fields.items()]
    )


def _person(info: PersonInfo) -> PersonOut:
    return PersonOut.model_validate(info)


@router.get("/v1/users")
def list_users(
    platform: PlatformDep,
    who: Authed,
    team: Annotated[str | None, Query(max_length=200)] = None,
    role: Annotated[str | None, Query(max_length=40)] = None,
    q: Annotated[
        str | None, Query(max_length=200, description="Part of a handle, name or address.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Offset = 0,
) -> PeopleOut:
    """People by handle (platform admins, auditors: the org; team admins: their team)."""
    try:
        page = platform.directory.people(
            who, team=team, role=role, query=q, limit=limit, offset=offset
        )
    except InvalidFields as exc:
        raise _fields(exc) from None
    return PeopleOut(
        people=[_person(p) for p in page.people],
        total=page.total,
        limit=page.limit,
        offset=page.offset,
        next_offset=page.next_offset,
        team_id=page.team_id,
    )


@router.post("/v1/users", status_code=201)
def create_user(body: PersonIn, platform: PlatformDep, who: Authed) -> PersonOut:
    """Add a person (platform admins; audited). Set their password with
    ``meshclaw user set-password``."""
    try:
        info = platform.directory.create_user(
            who,
            handle=body.handle,
            role=body.role,
            team=body.team,
            display_name=body.display_name,
            job_function=body.job_function,
            email=body.email,
        )
    except InvalidFields as exc:
        raise _fields(exc) from None
    return _person(info)


@router.get("/v1/users/{user}")
def get_user(user: str, platform: PlatformDep, who: Authed) -> PersonOut:
    """One person by handle or id."""
    return _person(platform.directory.person(who, user))


@router.patch("/v1/users/{user}")
def change_user(user: str, body: PersonChange, platform: PlatformDep, who: Authed) -> PersonOut:
    """Change a person's role, team and/or mail address (platform admins, never their own;
    audited)."""
    team = body.team if "team" in body.model_fields_set else KEEP
    email = body.email if "email" in body.model_fields_set else KEEP
    try:
        info = platform.directory.update_user(who, user, role=body.role, team=team, email=email)
    except InvalidFields as exc:
        raise _fields(exc) from None
    return _person(info)


@router.get("/v1/teams")
def list_teams(platform: PlatformDep, who: Authed) -> list[TeamOut]:
    """Teams with their head count (a team admin: their own team)."""
    return [TeamOut.model_validate(t) for t in platform.directory.teams(who)]


@router.post("/v1/teams", status_code=201)
def create_team(body: TeamIn, platform: PlatformDep, who: Authed) -> TeamOut:
    """Add a team (platform admins; audited)."""
    try:
        info: TeamInfo = platform.directory.create_team(who, body.name)
    except InvalidFields as exc:
        raise _fields(exc) from None
    return TeamOut.model_validate(info)


@router.get("/v1/prices", tags=["metering"])
def prices(platform: PlatformDep, who: Authed, day: Day | None = None) -> PricesOut:
    """The price table in force on ``day`` (default today, UTC), then scheduled entries.
    USD per million tokens; read-only here (the table is a file: ``price_table``)."""
    return PricesOut.model_validate(platform.directory.prices(who, day=day))
