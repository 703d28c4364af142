"""The directory: orgs, teams, users, and API tokens (hashed at rest, shown once)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from meshclaw.audit.sink import AuditRecord, AuditSink
from meshclaw.clock import utcnow
from meshclaw.errors import AuthError, ConflictError, NotFoundError
from meshclaw.ids import new_id
from meshclaw.store.db import Database
from meshclaw.store.models import ApiToken, Org, Team, User

TOKEN_PREFIX = "mc_"
ROLES = ("employee", "team_admin", "platform_admin", "auditor")


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
    def __init__(self, db: Database, audit: AuditSink) -> None:
        self._db = db
        self._audit = audit

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
    ) -> User:
        if role not in ROLES:
            raise ConflictError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        with self._db.session() as session:
            taken = session.scalar(select(User).where(User.org_id == org_id, User.handle == handle))
            if taken is not None:
                raise ConflictError(f"user {handle!r} already exists")
            user = User(
                id=new_id("usr"),
                org_id=org_id,
                team_id=team_id,
                handle=handle,
                display_name=display_name or handle,
                role=role,
                job_function=job_function,
            )
            session.add(user)
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
            if token is None or token.revoked_at is not None:
                raise AuthError("invalid or revoked API token")
            user = session.get(User, token.user_id)
            if user is None:
                raise AuthError("token owner no longer exists")
            token.last_used_at = utcnow()
            return caller_of(user)

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
