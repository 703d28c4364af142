"""A real store that refuses new runs for a while: an ``INSERT`` trigger on ``runs`` that
raises, on SQLite or PostgreSQL, so a trigger's run creation fails as when the store
blinks, without replacing any code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text

from meshclaw.store.db import Database

_SQLITE = (
    "CREATE TRIGGER runs_down BEFORE INSERT ON runs "
    "BEGIN SELECT RAISE(ABORT, 'store unavailable'); END",
)
_POSTGRESQL = (
    "CREATE FUNCTION runs_down() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'store unavailable'; END $$",
    "CREATE TRIGGER runs_down BEFORE INSERT ON runs FOR EACH ROW EXECUTE FUNCTION runs_down()",
)


@contextmanager
def runs_refused(db: Database) -> Iterator[None]:
    """Every run insert fails inside this block."""
    sqlite = db.engine.dialect.name == "sqlite"
    with db.engine.begin() as conn:
        for statement in _SQLITE if sqlite else _POSTGRESQL:
            conn.execute(text(statement))
    try:
        yield
    finally:
        with db.engine.begin() as conn:
            conn.execute(text("DROP TRIGGER runs_down" + ("" if sqlite else " ON runs")))
            if not sqlite:
                conn.execute(text("DROP FUNCTION runs_down()"))
