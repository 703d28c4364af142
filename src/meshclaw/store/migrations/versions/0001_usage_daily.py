"""usage daily: usage records summed per closed UTC day, and triggers that mark a day stale

Revision ID: usage_daily_0001
Revises: metering_0001
Create Date: 2026-11-27 19:00:00

``metering.rollup`` sums each closed day's usage records into ``usage_daily`` so reports
stop scanning every call. Any write to a record of a past day (a late insert, a re-price,
a deletion) must make that day's sums stale, whichever code path makes it: triggers on
``usage_records`` upsert ``usage_daily_days.stale`` for the record's day. Writes of the
current day (every model and tool call) do nothing more than evaluate the condition.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "usage_daily_0001"
down_revision = "metering_0001"
branch_labels = None
depends_on = None

_SQLITE_MARK = """
INSERT INTO usage_daily_days (org_id, day, stale)
SELECT {row}.org_id, substr({row}.created_at, 1, 10), 1
WHERE {row}.created_at < strftime('%Y-%m-%d', 'now')
ON CONFLICT (org_id, day) DO UPDATE SET stale = 1;
"""
_SQLITE_TRIGGERS = {
    "insert": ("INSERT", ("NEW",)),
    "update": ("UPDATE", ("OLD", "NEW")),
    "delete": ("DELETE", ("OLD",)),
}
_PG_FUNCTION = """
CREATE FUNCTION usage_daily_mark_stale() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    today timestamptz := date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.created_at < today THEN
        INSERT INTO usage_daily_days (org_id, day, stale)
        VALUES (OLD.org_id, (OLD.created_at AT TIME ZONE 'UTC')::date, true)
        ON CONFLICT (org_id, day) DO UPDATE SET stale = true;
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.created_at < today THEN
        INSERT INTO usage_daily_days (org_id, day, stale)
        VALUES (NEW.org_id, (NEW.created_at AT TIME ZONE 'UTC')::date, true)
        ON CONFLICT (org_id, day) DO UPDATE SET stale = true;
    END IF;
    RETURN NULL;
END;
$$
"""


def upgrade() -> None:
    op.create_table(
        "usage_daily",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("team_id", sa.String(length=40), nullable=True),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("agent_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("provider", sa.String(length=100), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_write_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_nano_usd", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_daily")),
    )
    op.create_index("ix_usage_daily_org_day", "usage_daily", ["org_id", "day"], unique=False)
    op.create_table(
        "usage_daily_days",
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("stale", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "day", name=op.f("pk_usage_daily_days")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(
            "CREATE TRIGGER usage_daily_mark_stale AFTER INSERT OR UPDATE OR DELETE"
            " ON usage_records FOR EACH ROW EXECUTE FUNCTION usage_daily_mark_stale()"
        )
        return
    for name, (event, rows) in _SQLITE_TRIGGERS.items():
        body = "".join(_SQLITE_MARK.format(row=row) for row in rows)
        op.execute(
            f"CREATE TRIGGER usage_daily_mark_stale_{name} AFTER {event} ON usage_records"
            f" FOR EACH ROW BEGIN {body} END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER usage_daily_mark_stale ON usage_records")
        op.execute("DROP FUNCTION usage_daily_mark_stale()")
    else:
        for name in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER usage_daily_mark_stale_{name}")
    op.drop_table("usage_daily_days")
    op.drop_index("ix_usage_daily_org_day", table_name="usage_daily")
    op.drop_table("usage_daily")
