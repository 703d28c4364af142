"""Tables of web sign-in: password hashes and browser sessions.

Kept apart from ``users`` so a deployment that signs in through OIDC only never stores a
password, and a session is one more way to authenticate a ``Caller`` (like an API token).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from meshclaw.clock import utcnow
from meshclaw.store.models import Base


class UserPassword(Base):
    """An argon2id hash (PHC string, parameters included, so they can be raised later)."""

    __tablename__ = "user_passwords"
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    password_hash: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebSession(Base):
    """A signed-in browser. The cookie holds a random secret; only its hash is stored."""

    __tablename__ = "web_sessions"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    """Sent back by forms and by the dashboard's fetch calls on every unsafe request."""
    method: Mapped[str] = mapped_column(String(20), default="password")
    """How the person signed in (``password``; ``oidc`` later)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
