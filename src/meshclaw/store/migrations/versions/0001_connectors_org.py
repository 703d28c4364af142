"""connectors belong to an org: org_id on connectors and on approved tool definitions

Connector names become unique per org, tool approvals per (org, connector, tool).

Existing rows are given an org:
- a stored connector: the org of the person who added it (``created_by``); if that
  person is unknown, the oldest org (on a single-org install: the org);
- a recorded tool: the org of the stored connector of that name; otherwise it belongs to
  a connector declared in settings, and goes to the oldest org, which is where a
  settings connector without an ``org`` field belongs (docs/connectors.md);
- rows that still have no org (there is no org at all) are deleted: a connector nobody
  can use, and tools that are recorded again, unapproved, on the next listing.

Downgrading fails if two orgs hold connectors (or tools) of the same name.

Revision ID: connectors_org_0001
Revises: connectors_0001
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "connectors_org_0001"
down_revision = "connectors_0001"
branch_labels = None
depends_on = None

ORG_ID = sa.String(length=40)


def upgrade() -> None:
    for table in ("connectors", "connector_tools"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("org_id", ORG_ID, nullable=True))
    _backfill()
    with op.batch_alter_table("connectors") as batch:
        batch.alter_column("org_id", existing_type=ORG_ID, nullable=False)
        batch.drop_constraint("uq_connectors_name", type_="unique")
        batch.create_unique_constraint(op.f("uq_connectors_org_id"), ["org_id", "name"])
        batch.create_foreign_key(op.f("fk_connectors_org_id_orgs"), "orgs", ["org_id"], ["id"])
    with op.batch_alter_table("connector_tools") as batch:
        batch.alter_column("org_id", existing_type=ORG_ID, nullable=False)
        batch.drop_constraint("uq_connector_tools_connector", type_="unique")
        batch.create_unique_constraint(
            op.f("uq_connector_tools_org_id"), ["org_id", "connector", "tool"]
        )


def _backfill() -> None:
    oldest_org = "(SELECT id FROM orgs ORDER BY created_at, id LIMIT 1)"
    op.execute(
        "UPDATE connectors SET org_id = "
        "(SELECT users.org_id FROM users WHERE users.id = connectors.created_by)"
    )
    op.execute(f"UPDATE connectors SET org_id = {oldest_org} WHERE org_id IS NULL")
    op.execute("DELETE FROM connectors WHERE org_id IS NULL")
    # Names are still unique here, so the subquery finds at most one connector.
    op.execute(
        "UPDATE connector_tools SET org_id = (SELECT connectors.org_id FROM connectors "
        "WHERE connectors.name = connector_tools.connector)"
    )
    op.execute(f"UPDATE connector_tools SET org_id = {oldest_org} WHERE org_id IS NULL")
    op.execute("DELETE FROM connector_tools WHERE org_id IS NULL")


def downgrade() -> None:
    with op.batch_alter_table("connector_tools") as batch:
        batch.drop_constraint(op.f("uq_connector_tools_org_id"), type_="unique")
        batch.create_unique_constraint(op.f("uq_connector_tools_connector"), ["connector", "tool"])
        batch.drop_column("org_id")
    with op.batch_alter_table("connectors") as batch:
        batch.drop_constraint(op.f("fk_connectors_org_id_orgs"), type_="foreignkey")
        batch.drop_constraint(op.f("uq_connectors_org_id"), type_="unique")
        batch.create_unique_constraint(op.f("uq_connectors_name"), ["name"])
        batch.drop_column("org_id")
