"""The store on SQLite and PostgreSQL: migrations match the models, and a whole run persists."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select

from meshclaw.metering.usage import usage_report
from meshclaw.providers.scripted import ScriptedServer
from meshclaw.store.all_models import Base
from meshclaw.store.db import make_engine, migrate
from meshclaw.store.models import AgentVersion, AuditEvent, UsageRecord
from tests.conftest import World, agent_yaml


def test_migrations_create_exactly_the_models_schema(database_url: str) -> None:
    migrate(database_url)
    migrate(database_url)  # idempotent
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_a_run_persists_steps_usage_cost_and_audit(
    database_url: str,
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    make_world: Callable[..., World],
) -> None:
    server = scripted(
        {
            "turns": [
                {
                    "reply": {
                        "tool_calls": [
                            {"name": "notes.write", "arguments": {"title": "a", "body": "b"}}
                        ]
                    }
                },
                {"reply": {"content": "saved", "cached_tokens": 5}},
            ]
        }
    )
    world = make_world(server.base_url, database_url)
    world.save_agent(agent_yaml())
    world.save_agent(agent_yaml().replace("You help.", "You help more."))
    info = world.run("helper")
    assert info.status == "succeeded", info.error
    assert info.agent_version == 2

    with world.platform.db.session() as session:
        versions = session.scalars(
            select(AgentVersion.version).order_by(AgentVersion.version)
        ).all()
        assert versions == [1, 2]
        total_nano = session.scalar(select(func.sum(UsageRecord.cost_nano_usd)))
        actions = session.scalars(select(AuditEvent.action).order_by(AuditEvent.seq)).all()
    assert info.cost_usd == Decimal(total_nano) / Decimal(10**9)
    assert info.cost_usd > 0
    assert actions.count("model.invoke") == 2
    assert actions.count("tool.write") == 1
    assert actions[-1] == "run.finish"

    (row,) = usage_report(world.platform.db, world.alice, group_by="agent")
    assert row.key == "helper"
    assert (row.model_calls, row.tool_calls) == (2, 1)
    assert row.cached_tokens == 5
    assert row.cost_usd == info.cost_usd
    # Bob is an employee in another team: he sees none of alice's usage.
    assert usage_report(world.platform.db, world.bob, group_by="user") == []
    by_user = usage_report(world.platform.db, world.admin, group_by="user")
    assert [r.key for r in by_user] == ["alice"]


def test_a_store_error_names_the_statement_but_not_its_values(database_url: str) -> None:
    """Store errors reach logs and tracebacks: SQLAlchemy leaves the statement's values
    (personal data, ciphertext) out of the message (``hide_parameters``). PostgreSQL's
    own DETAIL line may still quote a failing row: that comes from the server."""
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    from meshclaw.store.db import Database

    migrate(database_url)
    db = Database(database_url)
    try:
        with pytest.raises(IntegrityError) as caught, db.engine.begin() as conn:
            conn.execute(text("INSERT INTO orgs (id, name) VALUES (:i, :n)"), {"i": None, "n": "x"})
        message = str(caught.value)
        assert "INSERT INTO orgs" in message and "parameters hidden" in message
        assert "[parameters:" not in message
    finally:
        db.dispose()
