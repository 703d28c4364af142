"""``Prepared`` statements write exactly what the same Core statement writes, on both engines."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Table, bindparam, select
from sqlalchemy.exc import IntegrityError

from meshclaw.store.db import Database, Prepared, migrate
from meshclaw.store.models import AuditEvent

EVENTS = cast(Table, AuditEvent.__table__)
KEYS = [c.key for c in EVENTS.columns]


def event(seq: int, **changes: Any) -> dict[str, Any]:
    return {
        "seq": seq,
        "id": f"aud_{seq}",
        "ts": datetime(2026, 11, 27, 14, 0, 0, 123456, tzinfo=UTC),
        "org_id": None,
        "actor_user_id": "usr_1",
        "actor_agent_id": None,
        "action": "model.invoke",
        "resource": "model:scripted/m",
        "outcome": "ok",
        "details": {"run_id": "run_1", "step": 3, "nested": {"ünï": [1, None, True]}},
        "salt": "00ff",
        "body_sha256": "ab" * 32,
        "leaf_hash": "cd" * 32,
        "redacted_at": None,
    } | changes


def rows(db: Database) -> list[tuple[Any, ...]]:
    """Each row as the driver returns it (no SQLAlchemy result processing), without its
    seq and id, followed by the row as SQLAlchemy reads it back."""
    with db.engine.connect() as conn:
        raw = conn.exec_driver_sql("SELECT * FROM audit_events ORDER BY seq").all()
        read = conn.execute(select(EVENTS).order_by(EVENTS.c.seq)).all()
    return [tuple(r[2:]) + tuple(o[2:]) for r, o in zip(raw, read, strict=True)]


@contextmanager
def migrated(url: str) -> Iterator[Database]:
    migrate(url)
    database = Database(url)
    yield database
    database.dispose()


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    with migrated(database_url) as database:
        yield database


@pytest.mark.parametrize("way", ["execute", "run", "write"])
def test_prepared_insert_and_update_store_what_core_stores(db: Database, way: str) -> None:
    """``execute`` goes through SQLAlchemy's connection, ``run`` straight to the driver's
    cursor, ``write`` picks (``run`` on SQLite); all write what Core writes."""
    insert = Prepared(EVENTS.insert(), KEYS)
    with db.engine.begin() as conn:
        conn.execute(EVENTS.insert(), event(1))
        assert getattr(insert, way)(conn, event(2)) == 1
    core, prepared = rows(db)
    assert prepared == core  # JSON, timestamps and NULLs stored alike

    # An update with a condition fixed in the statement and one given per call.
    statement = EVENTS.update().where(EVENTS.c.seq == bindparam("b_seq"), EVENTS.c.outcome == "ok")
    update = Prepared(statement, ("b_seq", "outcome", "details"))
    run = getattr(update, way)
    with db.engine.begin() as conn:
        assert run(conn, {"b_seq": 2, "outcome": "error", "details": {"a": 1}}) == 1
        assert run(conn, {"b_seq": 2, "outcome": "error", "details": {"a": 2}}) == 0
        conn.execute(statement, {"b_seq": 1, "outcome": "error", "details": {"a": 1}})
    core, prepared = rows(db)
    assert prepared == core


def test_json_given_as_text_reads_back_as_the_same_object(tmp_path: Path) -> None:
    """Only SQLite is handed JSON as text (the audit sink's details, as hashed)."""
    with migrated(f"sqlite:///{tmp_path / 'store.db'}") as db:
        insert = Prepared(EVENTS.insert(), KEYS)
        as_text = Prepared(EVENTS.insert(), KEYS, as_given=("details",))
        text = '{"nested":{"ünï":[1,null,true]},"run_id":"run_1","step":3}'
        with db.engine.begin() as conn:
            insert.run(conn, event(1))
            assert as_text.run(conn, event(2, details=text)) == 1
        with db.engine.connect() as conn:
            first, second = conn.execute(select(EVENTS.c.details).order_by(EVENTS.c.seq)).scalars()
        assert second == first


def test_a_statement_whose_defaults_would_be_skipped_is_refused(db: Database) -> None:
    without_ts = Prepared(EVENTS.insert(), [k for k in KEYS if k != "ts"])  # ts has a default
    with db.engine.begin() as conn, pytest.raises(ValueError, match="defaulted column"):
        without_ts.execute(conn, event(1))


def test_as_given_keys_must_be_keys() -> None:
    with pytest.raises(ValueError, match="among the keys"):
        Prepared(EVENTS.insert(), KEYS[:-1], as_given=("nope",))


@pytest.mark.parametrize("way", ["execute", "run"])
def test_a_driver_error_hides_the_values_as_the_engine_does(db: Database, way: str) -> None:
    """``run`` raises the driver's error as SQLAlchemy would, values hidden too
    (``hide_parameters``)."""
    insert = Prepared(EVENTS.insert(), KEYS)
    with pytest.raises(IntegrityError) as caught, db.engine.begin() as conn:
        getattr(insert, way)(conn, event(1, resource="first"))
        getattr(insert, way)(conn, event(1, resource="secret-resource"))
    assert "parameters hidden" in str(caught.value)
    assert "secret-resource" not in str(caught.value)
