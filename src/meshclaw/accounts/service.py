"""The directory: orgs, teams, users, and API tokens (hashed at rest, shown once)."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from meshclaw.audit.sink import AuditRecord, AuditSink
from meshclaw.clock import as_utc, utcnow
from meshclaw.errors import AuthError, ConflictError, NotFoundError, UserError
from meshclaw.ids import new_id
from meshclaw.store.db import Database
from meshclaw.store.models import ApiToken, Org, Team, User

TOKEN_PREFIX = "mc_"
ROLES = ("employee", "team_admin", "platform_admin", "auditor")
MAX_EMAIL = 254
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_EMAIL_LOCAL = re.compile(rf"^{_ATOM}(?:\.{_ATOM})*$")
"""A dot-atom local part (RFC 5322 without quoted strings)."""
_EMAIL_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def email_problem(value: str) -> str | None:
    """Why ``value`` is not a mail address MeshClaw accepts (``name@example.com``), or None.

    Plain addresses only (no display name, no quoted local part, no IP literal), with a
    domain of at least two labels: what a directory holds and a recipient list names.
    """
    address = value.strip()
    if not address:
        return "enter a mail address"
    if len(address) > MAX_EMAIL:
        return f"at most {MAX_EMAIL} characters"
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return "a mail address looks like name@example.com"
    if len(local) > 64 or not _EMAIL_LOCAL.match(local):
        return (
            "the part before @: letters, digits and . _ + - (and ! # $ % & ' * / = ? ^ ` { | } ~)"
        )
    labels = domain.split(".")
    if len(labels) < 2 or not all(_EMAIL_LABEL.match(label) for label in labels):
        return "the domain after @ must be a name like example.com"
    return None


def normalize_email(value: str) -> str:
    """The stored form: trimmed and lower-case (addresses compare case-insensitively).

    Raises ``UserError`` naming the problem when ``value`` is not an address."""
    problem = email_problem(value)
    if problem is not None:
        raise UserError(f"email: {problem}")
    return value.strip().lower()


def hash_token(secret: str) -> str:
    # API tokens are 256-bit random values, so a fast hash is enough (no brute force).
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class Caller:
    """An authenticated human, as the API and CLI see them."""

    user_id: str
    org_id: str
    team_id: str | None
    handle: str
    role: str


def email_owner(session: Session, org_id: str, address: str) -> str | None:
    """The id of the org's user with this (normalised) address, if any."""
    return session.scalar(select(User.id).where(User.org_id == org_id, User.email == address))


def caller_of(user: User) -> Caller:
    return Caller(
        user_id=user.id,
        org_id=user.org_id,
        team_id=user.team_id,
        handle=user.handle,
        role=user.role,
    )


@dataclass(frozen=True, kw_only=True)
class TokenInfo:
    id: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: ApiToken) -> TokenInfo:
        return cls(
            id=row.id,
            name=row.name,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            revoked_at=row.revoked_at,
        )


class Accounts:
    def __init__(
        self, db: Database, audit: AuditSink, *, token_use_interval: timedelta = timedelta(hours=1)
    ) -> None:
        self._db = db
        self._audit = audit
        self._token_use_interval = token_use_interval

    def create_org(self, name: str) -> Org:
        with self._db.session() as session:
            if session.scalar(select(Org).where(Org.name == name)) is not None:
                raise ConflictError(f"org {name!r} already exists")
            org = Org(id=new_id("org"), name=name, settings={})
            session.add(org)
        return org

    def org_by_name(self, name: str) -> Org | None:
        with self._db.session() as session:
            return session.scalar(select(Org).where(Org.name == name))

    def create_team(self, org_id: str, name: str) -> Team:
        with self._db.session() as session:
            team = Team(id=new_id("team"), org_id=org_id, name=name)
            session.add(team)
        return team

    def create_user(
        self,
        org_id: str,
        handle: str,
        *,
        team_id: str | None = None,
        display_name: str = "",
        role: str = "employee",
        job_function: str | None = None,
        email: str | None = None,
    ) -> User:
        if role not in ROLES:
            raise ConflictError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        address = normalize_email(email) if email is not None else None
        with self._db.session() as session:
            taken = session.scalar(select(User).where(User.org_id == org_id, User.handle == handle))
            if taken is not None:
                raise ConflictError(f"user {handle!r} already exists")
            if address is not None and email_owner(session, org_id, address) is not None:
                raise ConflictError(f"email {address!r} is already someone else's in this org")
            user = User(
                id=new_id("usr"),
                org_id=org_id,
                team_id=team_id,
                handle=handle,
                display_name=display_name or handle,
                role=role,
                job_function=job_function,
                email=address,
            )
            session.add(user)
        return user

    def set_email(self, org_id: str, handle: str, email: str | None) -> User:
        """Set (or with None, clear) a person's mail address; audited (host-local admin)."""
        address = normalize_email(email) if email is not None else None
        with self._db.session() as session:
            user = session.scalar(select(User).where(User.org_id == org_id, User.handle == handle))
            if user is None:
                raise NotFoundError(f"no user {handle!r} in this org")
            owner = email_owner(session, org_id, address) if address is not None else None
            if owner is not None and owner != user.id:
                raise ConflictError(f"email {address!r} is already someone else's in this org")
            if user.email != address:
                self._audit.append(
                    session,
                    AuditRecord(
                        action="directory.user.update", resource=f"user:{user.id}",
                        outcome="ok", org_id=org_id,
                        details={"handle": handle, "email": [user.email, address], "via": "cli"},
                    ),
                )  # fmt: skip
                user.email = address
        return user

    def user_by_handle(self, org_id: str, handle: str) -> User:
        with self._db.session() as session:
            user = session.scalar(select(User).where(User.org_id == org_id, User.handle == handle))
        if user is None:
            raise NotFoundError(f"no user {handle!r} in this org")
        return user

    def issue_token(self, user_id: str, name: str) -> str:
        """Create an API token and return its secret; only its hash is stored."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._db.session() as session:
            user = session.get(User, user_id)
            if user is None:
                raise NotFoundError(f"no user {user_id!r}")
            token = ApiToken(
                id=new_id("tok"),
                org_id=user.org_id,
                user_id=user.id,
                name=name,
                token_hash=hash_token(secret),
            )
            session.add(token)
            self._audit.append(
                session,
                AuditRecord(
                    action="token.create",
                    resource=f"token:{token.id}",
                    outcome="ok",
                    org_id=user.org_id,
                    actor_user_id=user.id,
                    details={"name": name},
                ),
            )
        return secret

    def authenticate(self, secret: str) -> Caller:
        """Resolve a bearer token to its user; unknown or revoked tokens are refused."""
        with self._db.session() as session:
            token = session.scalar(
                select(ApiToken).where(ApiToken.token_hash == hash_token(secret))
            )
            if token is None:
                raise AuthError("invalid or revoked API token")
            user = session.get(User, token.user_id)
            if token.revoked_at is not None:
                self._record_token_use(session, token, "token.refused")
            if user is None or token.revoked_at is not None:
                raise AuthError("invalid or revoked API token")
            now, last = utcnow(), token.last_used_at
            if last is None or now - as_utc(last) >= self._token_use_interval:
                self._record_token_use(session, token, "token.use")
            token.last_used_at = now
            return caller_of(user)

    def _record_token_use(self, session: Session, token: ApiToken, action: str) -> None:
        """A token's use (its id and name, never its secret) in the audit log. A refused
        use is committed although the request fails."""
        self._audit.append(
            session,
            AuditRecord(
                action=action,
                resource=f"token:{token.id}",
                outcome="ok" if action == "token.use" else "denied",
                org_id=token.org_id,
                actor_user_id=token.user_id,
                details={"name": token.name},
            ),
        )
        if action != "token.use":
            session.commit()  # the AuthError that follows must not roll the record back

    def caller_for(self, user: User) -> Caller:
        return caller_of(user)

    def tokens(self, caller: Caller) -> list[TokenInfo]:
        """The caller's own API tokens (never their secrets), newest first."""
        with self._db.session() as session:
            rows = session.scalars(
                select(ApiToken)
                .where(ApiToken.user_id == caller.user_id)
                .order_by(ApiToken.created_at.desc())
            )
            return [TokenInfo.of(row) for row in rows]

    def revoke_token(self, caller: Caller, token_id: str) -> TokenInfo:
        """Revoke one of the caller's own tokens; someone else's reads as not found."""
        with self._db.session() as session:
            token = session.get(ApiToken, token_id)
            if token is None or token.user_id != caller.user_id:
                raise NotFoundError(f"no token {token_id!r}")
            if token.revoked_at is None:
                token.revoked_at = utcnow()
                self._audit.append(
                    session,
                    AuditRecord(
                        action="token.revoke",
                        resource=f"token:{token.id}",
                        outcome="ok",
                        org_id=token.org_id,
                        actor_user_id=caller.user_id,
                    ),
                )
            return TokenInfo.of(token)
