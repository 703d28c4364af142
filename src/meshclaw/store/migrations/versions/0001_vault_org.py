"""the credential vault is per org: org_id on vault entries, bound into their encryption

Entries become unique per (org, reference, user), so each org may have its own ``mail``
default, and a connector resolves references in its own org only.

Existing rows are given an org:
- a per-user entry: the org of that user; if the user is unknown, the oldest org;
- a default entry (``user_id = ''``): the org of the stored connectors naming that
  reference (``config.credentials``) if they all belong to one org; otherwise (no
  stored connector names it, or several orgs' do) the oldest org, which is also where
  connectors declared in settings without an ``org`` belong. Settings are not visible
  here: a default used by a settings connector of another org must be put again in
  that org (``meshclaw vault put``);
- rows that still have no org (there is no org at all) are deleted: nobody can use them.

Existing rows keep their ciphertexts, which are bound to (reference, user) only:
``aad_version`` 1. New entries are bound to (org, reference, user) as well, version 2;
``meshclaw vault put`` or ``meshclaw vault rotate`` re-encrypts old rows that way (no
migration can: the key-encryption key is never in the database).

Downgrading fails if two orgs hold an entry of the same reference and user, and leaves
version-2 entries unreadable by the older code (put them again after downgrading).

Revision ID: vault_org_0001
Revises: policy_0001
Depends on: connectors_org_0001 (for the connectors' orgs)
Create Date: 2026-12-03 10:00:00
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "vault_org_0001"
down_revision = "policy_0001"
branch_labels = None
depends_on = "connectors_org_0001"

ORG_ID = sa.String(length=40)

_entries = sa.table(
    "vault_entries",
    sa.column("id", sa.String()),
    sa.column("org_id", sa.String()),
    sa.column("ref", sa.String()),
    sa.column("user_id", sa.String()),
)
_connectors = sa.table(
    "connectors", sa.column("org_id", sa.String()), sa.column("config", sa.JSON())
)
_orgs = sa.table("orgs", sa.column("id", sa.String()), sa.column("created_at", sa.DateTime()))


def upgrade() -> None:
    with op.batch_alter_table("vault_entries") as batch:
        batch.add_column(sa.Column("org_id", ORG_ID, nullable=True))
        batch.add_column(sa.Column("aad_version", sa.Integer(), nullable=True))
    op.execute("UPDATE vault_entries SET aad_version = 1")
    _backfill()
    with op.batch_alter_table("vault_entries") as batch:
        batch.alter_column("org_id", existing_type=ORG_ID, nullable=False)
        batch.alter_column("aad_version", existing_type=sa.Integer(), nullable=False)
        batch.drop_constraint("uq_vault_entries_ref", type_="unique")
        batch.create_unique_constraint(
            op.f("uq_vault_entries_org_id"), ["org_id", "ref", "user_id"]
        )
        batch.create_foreign_key(op.f("fk_vault_entries_org_id_orgs"), "orgs", ["org_id"], ["id"])


def _config_ref(config: Any) -> str | None:
    if isinstance(config, str):  # a driver that hands JSON back as text
        try:
            config = json.loads(config)
        except ValueError:
            return None
    ref = config.get("credentials") if isinstance(config, dict) else None
    return ref if isinstance(ref, str) and ref else None


def _backfill() -> None:
    conn = op.get_bind()
    op.execute(
        "UPDATE vault_entries SET org_id = "
        "(SELECT users.org_id FROM users WHERE users.id = vault_entries.user_id) "
        "WHERE user_id <> ''"
    )
    orgs_naming: dict[str, set[str]] = {}
    for org_id, config in conn.execute(sa.select(_connectors.c.org_id, _connectors.c.config)):
        ref = _config_ref(config)
        if ref is not None:
            orgs_naming.setdefault(ref, set()).add(org_id)
    for ref, orgs in sorted(orgs_naming.items()):
        if len(orgs) == 1:
            conn.execute(
                sa.update(_entries)
                .where(_entries.c.ref == ref, _entries.c.user_id == "", _entries.c.org_id.is_(None))
                .values(org_id=next(iter(orgs)))
            )
    oldest = conn.execute(
        sa.select(_orgs.c.id).order_by(_orgs.c.created_at, _orgs.c.id).limit(1)
    ).scalar()
    if oldest is not None:
        conn.execute(sa.update(_entries).where(_entries.c.org_id.is_(None)).values(org_id=oldest))
    conn.execute(sa.delete(_entries).where(_entries.c.org_id.is_(None)))


def downgrade() -> None:
    with op.batch_alter_table("vault_entries") as batch:
        batch.drop_constraint(op.f("fk_vault_entries_org_id_orgs"), type_="foreignkey")
        batch.drop_constraint(op.f("uq_vault_entries_org_id"), type_="unique")
        batch.create_unique_constraint(op.f("uq_vault_entries_ref"), ["ref", "user_id"])
        batch.drop_column("aad_version")
        batch.drop_column("org_id")
