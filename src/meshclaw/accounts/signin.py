"""Signing in to the dashboard: argon2id password hashes and server-side sessions.

A session is a random secret in an HttpOnly cookie; the store keeps its SHA-256 (like API
tokens), an expiry and a CSRF token that every unsafe request must send back. Passwords are
one sign-in method among several: ``method`` on the session leaves room for OIDC, which
would create the same kind of session after its own checks.
"""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from meshclaw.accounts.directory import InvalidFields
from meshclaw.accounts.models import UserPassword, WebSession
from meshclaw.accounts.service import Caller, caller_of, hash_token
from meshclaw.audit.sink import AuditRecord, AuditSink
from meshclaw.clock import utcnow
from meshclaw.errors import AuthError, NotFoundError
from meshclaw.ids import new_id
from meshclaw.store.db import Database
from meshclaw.store.models import Org, User

MIN_PASSWORD_LENGTH = 12
_BAD_LOGIN = "unknown user or wrong password"
# A hash to verify against when the user does not exist, so both failures take as long.
_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Made at the first sign-in, not at import (argon2 takes ~0.2 s: every CLI command and
    worker would pay it)."""
    return _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True, kw_only=True)
class SignedIn:
    """A new session: the cookie secret (shown once) and the CSRF token forms send back."""

    secret: str
    csrf_token: str
    caller: Caller
    expires_at: datetime


@dataclass(frozen=True, kw_only=True)
class SessionCaller:
    caller: Caller
    csrf_token: str
    session_id: str


class SignIn:
    def __init__(self, db: Database, audit: AuditSink, *, ttl: timedelta) -> None:
        self._db = db
        self._audit = audit
        self._ttl = ttl

    def set_password(self, user_id: str, password: str) -> None:
        if len(password) < MIN_PASSWORD_LENGTH:
            # Bad input, not a conflict with the state: 422 with the field (``password``).
            raise InvalidFields(
                {"password": f"a password needs at least {MIN_PASSWORD_LENGTH} characters"}
            )
        digest = _hasher.hash(password)
        with self._db.session() as session:
            user = session.get(User, user_id)
            if user is None:
                raise NotFoundError(f"no user {user_id!r}")
            row = session.get(UserPassword, user_id)
            if row is None:
                session.add(UserPassword(user_id=user_id, password_hash=digest))
            else:
                row.password_hash = digest
                row.updated_at = utcnow()
            # A new password ends every open session of that person.
            session.execute(
                update(WebSession)
                .where(WebSession.user_id == user_id, WebSession.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            self._audit.append(
                session,
                AuditRecord(
                    action="auth.password_set",
                    resource=f"user:{user_id}",
                    outcome="ok",
                    org_id=user.org_id,
                    actor_user_id=user_id,
                ),
            )

    def login(self, handle: str, password: str, org: str | None = None) -> SignedIn:
        """Check the password and open a session. ``org`` may be omitted in a one-org store.

        Every failure gives the same message (no user enumeration) and is audited when the
        user exists.
        """
        with self._db.session() as session:
            user = self._find_user(session, handle, org)
            stored = session.get(UserPassword, user.id) if user is not None else None
            if not _verify(stored.password_hash if stored else _dummy_hash(), password) or (
                user is None or stored is None
            ):
                if user is not None:
                    self._audit.append(
                        session,
                        AuditRecord(
                            action="auth.login",
                            resource=f"user:{user.id}",
                            outcome="denied",
                            org_id=user.org_id,
                            actor_user_id=user.id,
                            details={"method": "password"},
                        ),
                    )
                    session.commit()
                raise AuthError(_BAD_LOGIN)
            if _hasher.check_needs_rehash(stored.password_hash):
                stored.password_hash = _hasher.hash(password)
            secret = secrets.token_urlsafe(32)
            row = WebSession(
                id=new_id("ses"),
                org_id=user.org_id,
                user_id=user.id,
                secret_hash=hash_token(secret),
                csrf_token=secrets.token_urlsafe(24),
                method="password",
                expires_at=utcnow() + self._ttl,
            )
            session.add(row)
            self._audit.append(
                session,
                AuditRecord(
                    action="auth.login",
                    resource=f"user:{user.id}",
                    outcome="ok",
                    org_id=user.org_id,
                    actor_user_id=user.id,
                    details={"method": "password", "session": row.id},
                ),
            )
            return SignedIn(
                secret=secret,
                csrf_token=row.csrf_token,
                caller=caller_of(user),
                expires_at=row.expires_at,
            )

    def authenticate(self, secret: str) -> SessionCaller:
        with self._db.session() as session:
            row = session.scalar(
                select(WebSession).where(WebSession.secret_hash == hash_token(secret))
            )
            if row is None or row.revoked_at is not None or row.expires_at <= utcnow():
                raise AuthError("your session has ended; sign in again")
            user = session.get(User, row.user_id)
            if user is None:
                raise AuthError("session owner no longer exists")
            return SessionCaller(
                caller=caller_of(user), csrf_token=row.csrf_token, session_id=row.id
            )

    def logout(self, secret: str) -> None:
        with self._db.session() as session:
            row = session.scalar(
                select(WebSession).where(WebSession.secret_hash == hash_token(secret))
            )
            if row is None or row.revoked_at is not None:
                return
            row.revoked_at = utcnow()
            self._audit.append(
                session,
                AuditRecord(
                    action="auth.logout",
                    resource=f"user:{row.user_id}",
                    outcome="ok",
                    org_id=row.org_id,
                    actor_user_id=row.user_id,
                    details={"session": row.id},
                ),
            )

    @staticmethod
    def _find_user(session: Session, handle: str, org: str | None) -> User | None:
        query = select(User).where(User.handle == handle)
        if org:
            query = query.join(Org, Org.id == User.org_id).where(Org.name == org)
        users = list(session.scalars(query.limit(2)))
        # Without an org name the handle must be unambiguous across the store.
        return users[0] if len(users) == 1 else None


def _verify(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False
