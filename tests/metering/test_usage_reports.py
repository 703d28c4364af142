"""Usage reports by period, and the ``meshclaw usage`` commands."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import update
from typer.testing import CliRunner

from meshclaw.cli.main import app
from meshclaw.metering.usage import period_start, usage_report
from meshclaw.store.models import UsageRecord
from tests.conftest import World


def test_period_starts() -> None:
    day = date(2026, 11, 27)  # a Friday
    assert period_start(day, "day") == day
    assert period_start(day, "week") == date(2026, 11, 23)
    assert period_start(day, "month") == date(2026, 11, 1)


def _spread_over_days(world: World) -> None:
    """Move the first model call to 40 days ago, so periods differ."""
    with world.platform.db.session() as session:
        first = session.scalars(
            UsageRecord.__table__.select()
            .where(UsageRecord.kind == "model")
            .order_by(UsageRecord.created_at)
            .limit(1)
        ).first()
        old = datetime.now(UTC) - timedelta(days=40)
        session.execute(update(UsageRecord).where(UsageRecord.id == first).values(created_at=old))


def test_report_by_day_week_and_month(ran_world: World) -> None:
    _spread_over_days(ran_world)
    db, admin = ran_world.platform.db, ran_world.admin
    total = usage_report(db, admin, group_by="model")
    assert len(total) == 1 and total[0].model_calls == 2
    for period in ("day", "week", "month"):
        rows = usage_report(db, admin, group_by="model", period=period)
        assert len(rows) == 2, period
        assert [r.period for r in rows] == sorted(r.period or "" for r in rows)
        assert sum(r.model_calls for r in rows) == 2
        assert sum(r.cost_usd for r in rows) == total[0].cost_usd
        assert sum(r.input_tokens for r in rows) == total[0].input_tokens
    today = datetime.now(UTC).date()
    days = usage_report(db, admin, group_by="agent", period="day")
    assert days[-1].period == today.isoformat()


def test_cli_usage_by_period_and_reprice(ran_world: World) -> None:
    platform = ran_world.platform
    admin_token = platform.accounts.issue_token(ran_world.admin.user_id, "cli")
    env = {
        "MESHCLAW_HOME": str(platform.settings.home),
        "MESHCLAW_EMBEDDED_MODEL_SERVER": "false",
        "MESHCLAW_DATABASE_URL": platform.settings.resolved_database_url(),
        "MESHCLAW_CONFIG": None,
        "MESHCLAW_TOKEN": admin_token,
    }
    runner = CliRunner()
    result = runner.invoke(app, ["usage", "--by", "agent", "--period", "week", "--json"], env=env)
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["period"] == "week"
    assert body["rows"][0]["key"] == "helper" and body["rows"][0]["model_calls"] == 2
    # alice's team has one person, fewer than k: its row would be hers, so it is left out
    teams = runner.invoke(app, ["usage", "--by", "team", "--json"], env=env)
    assert teams.exit_code == 0 and json.loads(teams.stdout)["rows"] == []
    bad = runner.invoke(app, ["usage", "--period", "year"], env=env)
    assert bad.exit_code == 2
    dry = runner.invoke(app, ["usage", "reprice", "--dry-run", "--json"], env=env)
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["examined"] == 2
    alice = platform.accounts.issue_token(ran_world.alice.user_id, "cli")
    denied = runner.invoke(app, ["usage", "reprice"], env=env | {"MESHCLAW_TOKEN": alice})
    assert denied.exit_code == 2
