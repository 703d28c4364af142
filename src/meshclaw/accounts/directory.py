"""The org's directory as administrators see it: people, teams, roles, and the price table.

What ``/v1/users``, ``/v1/teams``, ``/v1/prices`` and the dashboard's admin pages call.
Cedar decides who may do what (``policy.roles``):

* ``directory.read`` on the ``Org`` (platform admins, auditors) lists everyone; on a
  ``Team`` (its team admin) lists that team.
* ``directory.manage`` on the ``Org`` creates people and teams; on a ``User`` changes that
  person's role or team (platform admins; nobody changes their own).
* ``price.read`` on the ``Org``: everyone (cost is shown to everyone).

Every change is audited in the same transaction (``directory.user.create``,
``directory.user.update``, ``directory.team.create``). Input is checked field by field
before anything is written (``InvalidFields``), so a form can put each message next to
its field and nothing is half-saved.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from meshclaw.accounts.service import ROLES, Caller, email_owner, email_problem
from meshclaw.audit.sink import AuditRecord, AuditSink
from meshclaw.errors import ConflictError, NotFoundError, PermissionDenied, UserError
from meshclaw.ids import new_id
from meshclaw.metering.prices import ModelPrice, PriceSource
from meshclaw.policy.api import ApiAuthorizer, ApiResource
from meshclaw.store.db import Database
from meshclaw.store.models import Team, User

READ = "directory.read"
MANAGE = "directory.manage"
PRICE_READ = "price.read"
MAX_PAGE = 500
HANDLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}$")
TEAM_NAME = re.compile(r"^[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]{0,98}[^\s\x00-\x1f\x7f])?$")
MAX_TEXT = 200


class InvalidFields(UserError):
    """Input that failed validation, with one message per field (HTTP 422, or 409 when a
    name is already taken)."""

    http_status = 422

    def __init__(self, fields: Mapping[str, str], *, status: int = 422) -> None:
        self.fields = dict(fields)
        self.http_status = status
        super().__init__("; ".join(f"{k}: {v}" for k, v in self.fields.items()))


class _Keep(Enum):
    KEEP = "keep"


KEEP = _Keep.KEEP
"""``update_user(team=KEEP)``: leave the team as it is (``None`` removes it)."""


@dataclass(frozen=True, kw_only=True)
class PersonInfo:
    id: str
    handle: str
    display_name: str
    role: str
    team_id: str | None
    team: str | None
    """The team's name."""
    job_function: str | None
    created_at: datetime
    email: str | None = None
    """Mail address (lower-case), unique within the org."""


@dataclass(frozen=True, kw_only=True)
class PeoplePage:
    people: list[PersonInfo]
    total: int
    limit: int
    offset: int
    team_id: str | None
    """The team the listing was limited to (a team admin sees only theirs)."""

    @property
    def next_offset(self) -> int | None:
        end = self.offset + len(self.people)
        return end if end < self.total else None


@dataclass(frozen=True, kw_only=True)
class TeamInfo:
    id: str
    name: str
    people: int
    created_at: datetime


@dataclass(frozen=True, kw_only=True)
class PriceEntry:
    provider: str
    model: str
    """A model name or a glob (``claude-*``)."""
    input: Decimal
    """USD per million input tokens."""
    output: Decimal
    cached_input: Decimal
    """USD per million cached input tokens (``input`` when the vendor gives no discount)."""
    cache_write: Decimal
    effective_from: date | None
    status: str
    """``in force`` on the day asked about, or ``scheduled`` (takes effect later)."""


@dataclass(frozen=True, kw_only=True)
class PriceView:
    version: str
    day: date
    prices: list[PriceEntry]


def check_person_fields(
    *,
    handle: str | None = None,
    role: str | None = None,
    display_name: str | None = None,
    job_function: str | None = None,
    email: str | None = None,
) -> dict[str, str]:
    """A message per invalid field (only the fields given are checked)."""
    errors: dict[str, str] = {}
    if email is not None and email.strip():
        problem = email_problem(email)
        if problem is not None:
            errors["email"] = problem
    if handle is not None:
        if not handle.strip():
            errors["handle"] = "enter a user name"
        elif not HANDLE.match(handle.strip()):
            errors["handle"] = (
                "use letters, digits and . _ @ + - (starting with a letter or digit), "
                "at most 200 characters"
            )
    if role is not None and role not in ROLES:
        errors["role"] = f"choose one of {', '.join(ROLES)}"
    if display_name is not None and len(display_name.strip()) > MAX_TEXT:
        errors["display_name"] = f"at most {MAX_TEXT} characters"
    if job_function is not None and len(job_function.strip()) > MAX_TEXT:
        errors["job_function"] = f"at most {MAX_TEXT} characters"
    return errors


def check_team_name(name: str) -> str | None:
    """The problem with a team name, or None."""
    if not name.strip():
        return "enter a team name"
    if not TEAM_NAME.match(name.strip()):
        return "at most 100 characters, no control characters"
    return None


def _person(user: User, team_name: str | None) -> PersonInfo:
    return PersonInfo(
        id=user.id, handle=user.handle, display_name=user.display_name, role=user.role,
        team_id=user.team_id, team=team_name, job_function=user.job_function,
        created_at=user.created_at, email=user.email,
    )  # fmt: skip


def _price(p: ModelPrice, status: str) -> PriceEntry:
    return PriceEntry(
        provider=p.provider, model=p.model, input=p.input, output=p.output,
        cached_input=p.cached_input if p.cached_input is not None else p.input,
        cache_write=p.cache_write if p.cache_write is not None else p.input,
        effective_from=p.effective_from, status=status,
    )  # fmt: skip


class Directory:
    def __init__(
        self,
        db: Database,
        audit: AuditSink,
        access: ApiAuthorizer,
        *,
        prices: Callable[[], PriceSource],
    ) -> None:
        self._db = db
        self._audit = audit
        self._access = access
        self._prices = prices
        """The price table in use (read on every call, so a reload shows at once)."""

    # -- reading ------------------------------------------------------------------------

    def people(
        self,
        caller: Caller,
        *,
        team: str | None = None,
        role: str | None = None,
        query: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> PeoplePage:
        """People of the org by handle; ``team`` (name or id) limits to one team."""
        if not 1 <= limit <= MAX_PAGE:
            raise UserError(f"limit must be 1..{MAX_PAGE}, not {limit}")
        if offset < 0:
            raise UserError("offset must be >= 0")
        if role is not None and role not in ROLES:
            raise InvalidFields({"role": f"choose one of {', '.join(ROLES)}"})
        with self._db.session() as session:
            team_id = self._read_scope(session, caller, team)
            conds = [User.org_id == caller.org_id]
            if team_id is not None:
                conds.append(User.team_id == team_id)
            if role is not None:
                conds.append(User.role == role)
            if query and query.strip():
                like = "%" + _escape_like(query.strip().lower()) + "%"
                conds.append(
                    or_(
                        func.lower(User.handle).like(like, escape="\\"),
                        func.lower(User.display_name).like(like, escape="\\"),
                        User.email.like(like, escape="\\"),
                    )
                )
            total = session.scalar(select(func.count()).select_from(User).where(*conds)) or 0
            rows = session.execute(
                select(User, Team.name)
                .outerjoin(Team, Team.id == User.team_id)
                .where(*conds)
                .order_by(User.handle)
                .limit(limit)
                .offset(offset)
            ).all()
            return PeoplePage(
                people=[_person(user, name) for user, name in rows],
                total=total, limit=limit, offset=offset, team_id=team_id,
            )  # fmt: skip

    def person(self, caller: Caller, user: str) -> PersonInfo:
        """One person by handle or id (within what the caller may list)."""
        with self._db.session() as session:
            row = self._user(session, caller, user)
            self._read_scope(session, caller, row.team_id, fallback=False)
            return _person(row, self._team_name(session, row.team_id))

    def teams(self, caller: Caller, *, limit: int = MAX_PAGE) -> list[TeamInfo]:
        """Teams by name with their head count (a team admin: their own team)."""
        with self._db.session() as session:
            team_id = self._read_scope(session, caller, None)
            counts = (
                select(User.team_id, func.count().label("n"))
                .where(User.org_id == caller.org_id, User.team_id.is_not(None))
                .group_by(User.team_id)
                .subquery()
            )
            stmt = (
                select(Team, func.coalesce(counts.c.n, 0))
                .outerjoin(counts, counts.c.team_id == Team.id)
                .where(Team.org_id == caller.org_id)
                .order_by(Team.name)
                .limit(limit)
            )
            if team_id is not None:
                stmt = stmt.where(Team.id == team_id)
            return [
                TeamInfo(id=t.id, name=t.name, people=int(n), created_at=t.created_at)
                for t, n in session.execute(stmt).all()
            ]

    def may_manage(self, caller: Caller) -> bool:
        """Whether the policy lets the caller create people and teams (to offer the forms)."""
        return self._access.authorize_api(caller, MANAGE, ApiResource.org(caller.org_id)).allowed

    def handles(self, caller: Caller, ids: list[str]) -> dict[str, str]:
        """Handles of people of the caller's org (e.g. who looked at the caller's numbers)."""
        wanted = sorted(set(ids))[:MAX_PAGE]
        if not wanted:
            return {}
        with self._db.session() as session:
            rows = session.execute(
                select(User.id, User.handle).where(
                    User.org_id == caller.org_id, User.id.in_(wanted)
                )
            )
            return {user_id: handle for user_id, handle in rows}

    def prices(self, caller: Caller, *, day: date | None = None) -> PriceView:
        """The price table as it applies on ``day`` (default today, UTC): for each
        provider and model the entry in force, then the entries scheduled for later."""
        self._access.require(caller, PRICE_READ, ApiResource.org(caller.org_id))
        table = self._prices().for_org(caller.org_id)
        day = day or datetime.now(UTC).date()
        latest: dict[tuple[str, str], ModelPrice] = {}
        scheduled = []
        for entry in table.prices:
            key = (entry.provider, entry.model)
            if not entry.in_force(day):
                scheduled.append(entry)
            elif key not in latest or entry.sort_key() >= latest[key].sort_key():
                latest[key] = entry
        return PriceView(
            version=table.version,
            day=day,
            prices=[_price(p, "in force") for p in latest.values()]
            + [_price(p, "scheduled") for p in sorted(scheduled, key=ModelPrice.sort_key)],
        )

    # -- changing -----------------------------------------------------------------------

    def create_team(self, caller: Caller, name: str) -> TeamInfo:
        self._access.require(caller, MANAGE, ApiResource.org(caller.org_id))
        problem = check_team_name(name)
        if problem:
            raise InvalidFields({"name": problem})
        name = name.strip()
        with self._db.session() as session:
            taken = session.scalar(
                select(Team.id).where(Team.org_id == caller.org_id, Team.name == name)
            )
            if taken is not None:
                raise InvalidFields({"name": f"a team {name!r} already exists"}, status=409)
            team = Team(id=new_id("team"), org_id=caller.org_id, name=name)
            session.add(team)
            session.flush()
            self._record(caller, session, "directory.team.create", f"team:{team.id}", name=name)
            return TeamInfo(id=team.id, name=team.name, people=0, created_at=team.created_at)

    def create_user(
        self,
        caller: Caller,
        *,
        handle: str,
        role: str = "employee",
        team: str | None = None,
        display_name: str = "",
        job_function: str | None = None,
        email: str | None = None,
    ) -> PersonInfo:
        """Add a person (sign-in needs a password: ``meshclaw user set-password``).

        ``email`` is optional; blank means none. It is stored lower-case and must be free
        in the org (409 otherwise)."""
        self._access.require(caller, MANAGE, ApiResource.org(caller.org_id))
        errors = check_person_fields(
            handle=handle, role=role, display_name=display_name, job_function=job_function or "",
            email=email,
        )  # fmt: skip
        handle = handle.strip()
        address = _address(email)
        with self._db.session() as session:
            team_row = None
            if team is not None and team.strip():
                team_row = self._team(session, caller, team.strip())
                if team_row is None:
                    errors["team"] = f"no team {team.strip()!r} in this org"
            if errors:
                raise InvalidFields(errors)
            taken = session.scalar(
                select(User.id).where(User.org_id == caller.org_id, User.handle == handle)
            )
            if taken is not None:
                raise InvalidFields({"handle": f"{handle!r} is already taken"}, status=409)
            self._email_free(session, caller, address, None)
            user = User(
                id=new_id("usr"), org_id=caller.org_id, handle=handle, role=role,
                team_id=team_row.id if team_row else None,
                display_name=display_name.strip() or handle,
                job_function=(job_function or "").strip() or None, email=address,
            )  # fmt: skip
            session.add(user)
            session.flush()
            self._record(
                caller, session, "directory.user.create", f"user:{user.id}",
                handle=handle, role=role, team=user.team_id, email=address,
            )  # fmt: skip
            return _person(user, team_row.name if team_row else None)

    def update_user(
        self,
        caller: Caller,
        user: str,
        *,
        role: str | None = None,
        team: str | _Keep | None = KEEP,
        email: str | _Keep | None = KEEP,
    ) -> PersonInfo:
        """Change a person's role, team and/or mail address (``team=None`` or ``""``: no
        team; ``email=None`` or ``""``: no address)."""
        with self._db.session() as session:
            row = self._user(session, caller, user)
            resource = ApiResource.person(
                id=row.id, org_id=row.org_id, team_id=row.team_id, role=row.role
            )
            self._access.require(caller, MANAGE, resource, message=f"changing {row.handle}:")
            errors = check_person_fields(role=role, email=email if isinstance(email, str) else None)
            team_row: Team | None = None
            if isinstance(team, str) and team.strip():
                team_row = self._team(session, caller, team.strip())
                if team_row is None:
                    errors["team"] = f"no team {team.strip()!r} in this org"
            if errors:
                raise InvalidFields(errors)
            changes: dict[str, Any] = {}
            if role is not None and role != row.role:
                if row.role == "platform_admin":
                    self._keep_an_admin(session, row)
                changes["role"] = [row.role, role]
                row.role = role
            if team is not KEEP:
                new_team = team_row.id if team_row else None
                if new_team != row.team_id:
                    changes["team"] = [row.team_id, new_team]
                    row.team_id = new_team
            if not isinstance(email, _Keep):
                address = _address(email)
                if address != row.email:
                    self._email_free(session, caller, address, row.id)
                    changes["email"] = [row.email, address]
                    row.email = address
            if changes:
                self._record(
                    caller, session, "directory.user.update", f"user:{row.id}",
                    handle=row.handle, **changes,
                )  # fmt: skip
            return _person(row, self._team_name(session, row.team_id))

    # -- helpers ------------------------------------------------------------------------

    def _read_scope(
        self, session: Session, caller: Caller, team: str | None, *, fallback: bool = True
    ) -> str | None:
        """The team a listing is limited to (None: the whole org), as the policy allows.

        Without ``team``: the whole org if the caller may read it, else (``fallback``) the
        caller's own team if they may read that.
        """
        org = self._access.authorize_api(caller, READ, ApiResource.org(caller.org_id))
        if team is None and org.allowed:
            return None
        found = None
        if team is not None:
            found = self._team(session, caller, team)
            if found is None and org.allowed:
                raise NotFoundError(f"no team {team!r} in this org")
        elif fallback and caller.team_id is not None:
            found = self._team(session, caller, caller.team_id)
        if found is not None and (org.allowed or self._may_read_team(caller, found)):
            return found.id
        raise PermissionDenied(f"the directory: ({READ} denied: {org.reason})")

    def _may_read_team(self, caller: Caller, team: Team) -> bool:
        resource = ApiResource.team(id=team.id, org_id=team.org_id, name=team.name)
        return self._access.authorize_api(caller, READ, resource).allowed

    @staticmethod
    def _team(session: Session, caller: Caller, team: str) -> Team | None:
        """A team of the caller's org by id or name."""
        return session.scalar(
            select(Team).where(
                Team.org_id == caller.org_id, or_(Team.id == team, Team.name == team)
            )
        )

    @staticmethod
    def _team_name(session: Session, team_id: str | None) -> str | None:
        if team_id is None:
            return None
        return session.scalar(select(Team.name).where(Team.id == team_id))

    @staticmethod
    def _user(session: Session, caller: Caller, user: str) -> User:
        row = session.scalar(
            select(User).where(
                User.org_id == caller.org_id, or_(User.id == user, User.handle == user)
            )
        )
        if row is None:
            raise NotFoundError(f"no user {user!r} in this org")
        return row

    @staticmethod
    def _email_free(
        session: Session, caller: Caller, address: str | None, user_id: str | None
    ) -> None:
        if address is None:
            return
        owner = email_owner(session, caller.org_id, address)
        if owner is not None and owner != user_id:
            raise InvalidFields({"email": f"{address!r} is already someone's"}, status=409)

    @staticmethod
    def _keep_an_admin(session: Session, row: User) -> None:
        """An org must keep a platform admin, or nobody could manage it any more."""
        admins = session.scalar(
            select(func.count())
            .select_from(User)
            .where(User.org_id == row.org_id, User.role == "platform_admin")
        )
        if (admins or 0) <= 1:
            raise ConflictError(
                f"{row.handle} is the org's only platform admin: make someone else one first"
            )

    def _record(
        self, caller: Caller, session: Session, action: str, resource: str, **details: Any
    ) -> None:
        self._audit.append(
            session,
            AuditRecord(
                action=action, resource=resource, outcome="ok", org_id=caller.org_id,
                actor_user_id=caller.user_id, details=details,
            ),
        )  # fmt: skip


def _address(email: str | None) -> str | None:
    """The stored form of a checked address; blank or None is no address."""
    return email.strip().lower() if email is not None and email.strip() else None


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
