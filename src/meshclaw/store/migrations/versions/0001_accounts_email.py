"""accounts: a mail address per user (unique within the org, stored lower-case)

Revision ID: accounts_email_0001
Revises: accounts_web_0001
Create Date: 2026-11-28 10:00:00

Outcome verification maps a mail's recipients to people by this address (a handle is
not always an address), so a mail to a colleague is attributable to them and a mail to
one's own address is recognised as one's own.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "accounts_email_0001"
down_revision = "accounts_web_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("email", sa.String(length=254), nullable=True))
    op.create_index("ix_users_org_email", "users", ["org_id", "email"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_users_org_email", table_name="users")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("email")
