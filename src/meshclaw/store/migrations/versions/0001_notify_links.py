"""notify: a link only the recipient gets (an outcome's signed feedback link)

Revision ID: notify_links_0001
Revises: notify_read_state_0001
Create Date: 2026-12-14 10:00:00

Kept apart from the body: the body is what the inbox, the API and the dashboard show
(an org's admins read every notification), the link answers for its one recipient.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "notify_links_0001"
down_revision = "notify_read_state_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("notifications", sa.Column("link", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("link")
