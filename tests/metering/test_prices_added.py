"""Prices a platform admin adds to their org's table: checked field by field, Cedar's
``price.write``, audited, append-only (history keeps every price), layered on the file
for that org only, used by the gateway for new calls and by re-pricing for old ones, and
exported as a price table file that loads back equal."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from meshclaw.accounts.directory import InvalidFields
from meshclaw.errors import PermissionDenied
from meshclaw.metering.price_book import PriceBook, check_entry
from meshclaw.metering.prices import ModelPrice, PriceTable, parse_price_table, to_nano
from meshclaw.metering.reprice import reprice
from meshclaw.providers.base import Usage
from meshclaw.store.models import AuditEvent, UsageRecord
from tests.conftest import World, agent_yaml

MILLION_IN = Usage(input_tokens=1_000_000)
TODAY = datetime.now(UTC).date()


def entry(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "provider": "scripted",
        "model": "test-model",
        "input": "4.25",
        "output": "8.5",
        "effective_from": TODAY.isoformat(),
    }
    return fields | changes


def at(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC)


def test_every_bad_field_is_named_at_once() -> None:
    with pytest.raises(InvalidFields) as caught:
        check_entry(
            {
                "provider": "",
                "model": "gpt 4",
                "input": "two dollars",
                "output": "-1",
                "cached_input": "1e400000",
                "cache_write": "0.0000000001",
                "effective_from": "June first",
            }
        )
    problems = caught.value.fields
    assert set(problems) == {
        "provider", "model", "input", "output", "cached_input", "cache_write", "effective_from",
    }  # fmt: skip
    assert "required" in problems["provider"]
    assert "spaces" in problems["model"]
    assert "not a number" in problems["input"]
    assert "negative" in problems["output"]
    assert "at most" in problems["cached_input"]
    assert "decimal places" in problems["cache_write"]
    assert "YYYY-MM-DD" in problems["effective_from"]
    with pytest.raises(InvalidFields) as missing:
        check_entry({"provider": "openai", "model": "m"})
    assert set(missing.value.fields) == {"input", "output", "effective_from"}
    for odd in ("NaN", "Infinity", "$-0.1"):
        with pytest.raises(InvalidFields, match="input"):
            check_entry(entry(input=odd))
    price = check_entry(entry(input="$ 2.50", cached_input="", effective_from=date(2026, 12, 1)))
    assert price.input == Decimal("2.50") and price.cached_input is None
    assert price.effective_from == date(2026, 12, 1)


def test_only_platform_admins_add_and_each_addition_is_audited(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    book = world.platform.price_book
    for who in (world.alice, world.bob):
        with pytest.raises(PermissionDenied, match="only a platform admin"):
            book.add(who, entry())
    assert book.entries(world.alice) == []  # everyone reads (price.read)
    added = book.add(world.admin, entry(cached_input="0.5"))
    assert added.input == Decimal("4.25") and added.created_by == world.admin.user_id
    with world.platform.db.session() as session:
        events = list(session.scalars(select(AuditEvent).where(AuditEvent.action == "price.add")))
    assert len(events) == 1
    details = events[0].details
    assert events[0].actor_user_id == world.admin.user_id
    assert details["input"] == "4.25" and details["cached_input"] == "0.5"
    assert details["version"] == f"{book.version}+org1"
    assert [e.id for e in book.entries(world.bob)] == [added.id]


def test_the_org_table_layers_its_entries_on_the_file_and_keeps_history(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    book = world.platform.price_book
    file_price = book.base.cost_usd("scripted", "test-model", MILLION_IN)
    later = TODAY + timedelta(days=10)
    book.add(world.admin, entry(effective_from=TODAY.isoformat()))
    book.add(world.admin, entry(input="1", effective_from=later.isoformat()))
    table = book.for_org(world.admin.org_id)
    assert table.version == f"{book.version}+org2"
    yesterday = at(TODAY - timedelta(days=1))
    assert table.cost_usd("scripted", "test-model", MILLION_IN, yesterday) == file_price
    assert table.cost_usd("scripted", "test-model", MILLION_IN, at(TODAY)) == Decimal("4.25")
    assert table.cost_usd("scripted", "test-model", MILLION_IN, at(later)) == Decimal("1")
    # Other models of the provider keep the file's glob price.
    assert table.cost_usd("scripted", "other", MILLION_IN) == file_price
    # The same day again: the latest added wins (a correction).
    book.add(world.admin, entry(input="3", effective_from=TODAY.isoformat()))
    assert book.for_org(world.admin.org_id).cost_usd(
        "scripted", "test-model", MILLION_IN, at(TODAY)
    ) == Decimal("3")
    assert len(book.entries(world.admin)) == 3  # nothing replaced
    assert [e.input for e in book.entries(world.admin, limit=2, offset=1)] == [
        Decimal("1"),
        Decimal("4.25"),
    ]

    # Another org's table is the file's alone.
    accounts = world.platform.accounts
    other = accounts.create_org("globex")
    root = accounts.caller_for(accounts.create_user(other.id, "groot", role="platform_admin"))
    assert book.for_org(other.id) is book.base
    assert book.entries(root) == []


def test_the_export_loads_back_equal(make_world: Callable[..., World]) -> None:
    world = make_world()
    book = world.platform.price_book
    book.add(world.admin, entry(model="gpt-*", provider="openai", cache_write="0.125"))
    exported = book.export(world.alice)
    assert exported.version == f"{book.version}+org1"
    again = parse_price_table(exported.to_yaml(), "export")
    assert again == exported
    assert again.prices[0] == ModelPrice(
        provider="openai",
        model="gpt-*",
        input=Decimal("4.25"),
        output=Decimal("8.5"),
        cache_write=Decimal("0.125"),
        effective_from=TODAY,
    )
    # The file alone round-trips too.
    assert parse_price_table(book.base.to_yaml()) == book.base


def test_another_process_sees_an_addition_after_its_refresh(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    platform = world.platform
    mine = platform.price_book
    theirs = PriceBook(mine.base, platform.db, platform.audit, platform.access, refresh_seconds=0)
    stale = PriceBook(mine.base, platform.db, platform.audit, platform.access, refresh_seconds=60)
    assert stale.for_org(world.admin.org_id) is mine.base
    mine.add(world.admin, entry())
    assert theirs.for_org(world.admin.org_id).version.endswith("+org1")
    assert stale.for_org(world.admin.org_id) is mine.base  # until its refresh


def test_new_calls_are_priced_by_the_added_price_and_reprice_uses_it_for_old_ones(
    ran_world: World,
) -> None:
    platform = ran_world.platform
    with platform.db.session() as session:
        old = list(session.scalars(select(UsageRecord).where(UsageRecord.kind == "model")))
    assert old and all(r.price_version == platform.prices.version for r in old)
    yesterday = (min(r.created_at for r in old).astimezone(UTC) - timedelta(days=1)).date()
    platform.price_book.add(
        ran_world.admin, entry(input="100", output="200", effective_from=yesterday.isoformat())
    )
    version = f"{platform.prices.version}+org1"
    expected: PriceTable = platform.price_book.for_org(ran_world.admin.org_id)

    ran_world.save_agent(agent_yaml(name="second"))
    ran_world.run("second")
    result = reprice(platform.db, platform.audit, platform.price_book, ran_world.admin)
    assert result.version == version
    assert result.changed == len(old)  # only the calls made before the price was added
    with platform.db.session() as session:
        rows = list(session.scalars(select(UsageRecord).where(UsageRecord.kind == "model")))
    assert len(rows) > len(old)
    for row in rows:
        usage = Usage(
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            cached_tokens=row.cached_tokens,
            cache_write_tokens=row.cache_write_tokens,
        )
        cost = expected.cost_usd("scripted", "test-model", usage, row.created_at)
        assert cost is not None and row.cost_nano_usd == to_nano(cost)
        assert row.price_version == version
