"""notify: read state per recipient (a person's inbox: read or unread)

Revision ID: notify_read_state_0001
Revises: notify_0001
Create Date: 2026-12-10 10:00:00

One row per (notification, recipient). Notifications already in the outbox get a row
for each recipient who is a person of the notification's org, unread: nobody has marked
anything yet, and one "mark all read" clears them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "notify_read_state_0001"
down_revision = "notify_0001"
branch_labels = None
depends_on = None

_notifications = sa.table(
    "notifications",
    sa.column("id", sa.String()),
    sa.column("org_id", sa.String()),
    sa.column("recipients", sa.JSON()),
)
_users = sa.table("users", sa.column("id", sa.String()), sa.column("org_id", sa.String()))


def upgrade() -> None:
    recipients = op.create_table(
        "notification_recipients",
        sa.Column("notification_id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["notification_id"], ["notifications.id"],
            name=op.f("fk_notification_recipients_notification_id_notifications"),
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_notification_recipients_org_id_orgs")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_notification_recipients_user_id_users")
        ),
        sa.PrimaryKeyConstraint(
            "notification_id", "user_id", name=op.f("pk_notification_recipients")
        ),
    )  # fmt: skip
    # A person's inbox and unread count (every dashboard page) read only this index.
    op.create_index(
        "ix_notification_recipients_unread",
        "notification_recipients",
        ["org_id", "user_id", "read_at"],
    )
    bind = op.get_bind()
    people = {(user_id, org_id) for user_id, org_id in bind.execute(sa.select(_users))}
    rows = [
        {"notification_id": ntf_id, "user_id": str(user_id), "org_id": org_id, "read_at": None}
        for ntf_id, org_id, listed in bind.execute(sa.select(_notifications))
        for user_id in sorted({str(u) for u in listed or ()})
        if (str(user_id), org_id) in people
    ]
    if rows:
        op.bulk_insert(recipients, rows)


def downgrade() -> None:
    op.drop_index("ix_notification_recipients_unread", table_name="notification_recipients")
    op.drop_table("notification_recipients")
