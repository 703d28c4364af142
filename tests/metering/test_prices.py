"""Price table: effective dates, Decimal costs, and re-pricing history (audited)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from meshclaw.errors import ConfigError, PermissionDenied
from meshclaw.metering.prices import PriceTable, load_price_table, to_nano
from meshclaw.metering.reprice import reprice
from meshclaw.providers.base import Usage
from meshclaw.store.models import AuditEvent, RunStep, UsageRecord
from tests.conftest import World

TABLE = """
version: "2027-01-01"
prices:
  - {provider: acme, model: "big-*", input: "1.00", output: "2.00"}
  - {provider: acme, model: "big-*", input: "0.50", output: "1.00", effective_from: 2026-06-01}
  - {provider: acme, model: big-1, input: "9.00", output: "9.00", effective_from: 2026-09-01}
  - {provider: acme, model: "*", input: "7.00", output: "7.00"}
"""


def table(tmp_path: Path, text: str = TABLE) -> PriceTable:
    path = tmp_path / "prices.yaml"
    path.write_text(text)
    return load_price_table(path)


def at(day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC)


def test_the_entry_in_force_when_the_call_was_made_prices_it(tmp_path: Path) -> None:
    prices = table(tmp_path)
    million_in = Usage(input_tokens=1_000_000)
    assert prices.cost_usd("acme", "big-2", million_in, at("2026-01-01")) == Decimal("1.00")
    assert prices.cost_usd("acme", "big-2", million_in, at("2026-06-01")) == Decimal("0.50")
    # An exact name beats a glob, but only once it is in force.
    assert prices.cost_usd("acme", "big-1", million_in, at("2026-08-31")) == Decimal("0.50")
    assert prices.cost_usd("acme", "big-1", million_in, at("2026-09-01")) == Decimal("9.00")
    assert prices.cost_usd("acme", "small", million_in, at("2026-01-01")) == Decimal("7.00")
    assert prices.cost_usd("other", "big-1", million_in) is None


def test_cache_reads_writes_and_reasoning_are_priced_exactly() -> None:
    prices = load_price_table()
    usage = Usage(
        input_tokens=1_020,
        cached_tokens=1_000,
        cache_write_tokens=50,
        output_tokens=30,
        reasoning_tokens=12,
    )
    cost = prices.cost_usd("anthropic", "claude-x", usage)
    expected = (
        20 * Decimal("3.00") + 1_000 * Decimal("0.30") + 50 * Decimal("3.75") + 30 * Decimal("15")
    ) / 1_000_000
    assert cost == expected
    assert to_nano(expected) == 997_500


def test_a_bad_effective_date_is_a_config_error(tmp_path: Path) -> None:
    bad = TABLE.replace("2026-06-01", "June first")
    with pytest.raises(ConfigError, match="effective_from"):
        table(tmp_path, bad)


def test_reprice_updates_history_and_steps_in_one_audited_transaction(
    ran_world: World, tmp_path: Path
) -> None:
    platform = ran_world.platform
    with platform.db.session() as session:
        before = {r.id: r.cost_nano_usd for r in session.scalars(select(UsageRecord))}
    new = table(
        tmp_path,
        'version: "v2"\nprices:\n'
        '  - {provider: scripted, model: "*", input: "5.00", cached_input: "0.50", output: "15"}\n',
    )
    with pytest.raises(PermissionDenied):
        reprice(platform.db, platform.audit, new, ran_world.alice)

    preview = reprice(platform.db, platform.audit, new, ran_world.admin, dry_run=True)
    assert (preview.examined, preview.changed) == (2, 2)
    with platform.db.session() as session:
        assert {r.id: r.cost_nano_usd for r in session.scalars(select(UsageRecord))} == before

    result = reprice(platform.db, platform.audit, new, ran_world.admin)
    assert (result.examined, result.changed, result.unpriced) == (2, 2, 0)
    assert result.after_usd == preview.after_usd > result.before_usd
    with platform.db.session() as session:
        for row in session.scalars(select(UsageRecord).where(UsageRecord.kind == "model")):
            usage = Usage(
                input_tokens=row.input_tokens,
                output_tokens=row.output_tokens,
                cached_tokens=row.cached_tokens,
            )
            cost = new.cost_usd("scripted", "test-model", usage)
            assert cost is not None
            assert row.cost_nano_usd == to_nano(cost)
            assert row.price_version == "v2"
            step = session.get(RunStep, row.step_id)
            assert step is not None and step.cost_nano_usd == row.cost_nano_usd
        events = list(
            session.scalars(select(AuditEvent).where(AuditEvent.action == "usage.reprice"))
        )
    assert len(events) == 1
    assert events[0].details["changed"] == 2
    assert events[0].details["after_usd"] == str(result.after_usd)
    # Running it again changes nothing.
    again = reprice(platform.db, platform.audit, new, ran_world.admin)
    assert again.changed == 0


def test_reprice_respects_the_time_window(ran_world: World, tmp_path: Path) -> None:
    platform = ran_world.platform
    future = datetime.now(UTC) + timedelta(days=1)
    new = table(
        tmp_path,
        'version: "v3"\nprices:\n  - {provider: scripted, model: "*", input: 9, output: 9}\n',
    )
    result = reprice(platform.db, platform.audit, new, ran_world.admin, since=future)
    assert result.examined == 0
