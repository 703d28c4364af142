"""The notification outbox: what the platform has to tell people, until it is delivered."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from meshclaw.clock import utcnow
from meshclaw.store.models import Base


class Notification(Base):
    """One message to one or more people of an org (a soft cap crossed, an approval
    waiting), written in the transaction of the event it reports, sent later."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_status_due", "status", "due_at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    kind: Mapped[str] = mapped_column(String(63))
    """``budget.soft_cap``, ``approval.requested``, ..."""
    resource: Mapped[str] = mapped_column(String(200))
    """What it is about (``budget:<id>``, ``approval:<id>``), as in the audit log."""
    recipients: Mapped[list[Any]] = mapped_column(default=list)
    """User ids of the people it is for."""
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    link: Mapped[str | None] = mapped_column(Text)
    """A link that answers for its one recipient (an outcome's signed feedback link):
    mailed to that recipient's own address only, added to the body when sent, and never
    shown in the inbox, the API or the dashboard, where others may read the message."""
    status: Mapped[str] = mapped_column(String(12), default="pending")
    """pending (to send at ``due_at``), sent, failed (gave up, or refused by policy),
    unsent (no channel)."""
    attempts: Mapped[int] = mapped_column(default=0)
    due_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]


class NotificationRecipient(Base):
    """One person's copy of a notification in their inbox: whether they have read it.

    One row per (notification, recipient), written with the notification. ``recipients``
    on the notification stays what delivery reads; this table is what reading asks, so
    "mine", "unread" and the dashboard's unread count are indexed lookups, not scans of
    the org's JSON lists.
    """

    __tablename__ = "notification_recipients"
    __table_args__ = (Index("ix_notification_recipients_unread", "org_id", "user_id", "read_at"),)
    notification_id: Mapped[str] = mapped_column(ForeignKey("notifications.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"))
    """The notification's org (and the person's): every query names it, so a person is
    never shown another org's row even if ids were ever mixed up."""
    read_at: Mapped[datetime | None]
    """When the person marked it read; None while unread."""
