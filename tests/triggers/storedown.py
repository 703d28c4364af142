"""A real store that refuses new runs for a while: an ``INSERT`` trigger on ``runs`` that
raises, on SQLite or PostgreSQL, so a trigger's run creation fails as when the store
blinks, without replacing any code. ``input_containing`` narrows it to the runs of one
message (a run whose input holds that text), so the others go through."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text

from meshclaw.store.db import Database


def _statements(sqlite: bool, pattern: str) -> tuple[str, ...]:
    like = "'" + pattern.replace("'", "''") + "'"
    if sqlite:
        return (
            f"CREATE TRIGGER runs_down BEFORE INSERT ON runs WHEN NEW.input LIKE {like} "
            "BEGIN SELECT RAISE(ABORT, 'store unavailable'); END",
        )
    return (
        "CREATE FUNCTION runs_down() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF NEW.input LIKE {like} THEN RAISE EXCEPTION 'store unavailable'; END IF; "
        "RETURN NEW; END $$",
        "CREATE TRIGGER runs_down BEFORE INSERT ON runs FOR EACH ROW EXECUTE FUNCTION runs_down()",
    )


@contextmanager
def runs_refused(db: Database, *, input_containing: str | None = None) -> Iterator[None]:
    """Every run insert fails inside this block (with ``input_containing``: every insert of
    a run whose input contains that text, which must hold no ``%``, ``_`` or ``:``)."""
    sqlite = db.engine.dialect.name == "sqlite"
    pattern = "%" if input_containing is None else f"%{input_containing}%"
    with db.engine.begin() as conn:
        for statement in _statements(sqlite, pattern):
            conn.execute(text(statement))
    try:
        yield
    finally:
        with db.engine.begin() as conn:
            conn.execute(text("DROP TRIGGER runs_down" + ("" if sqlite else " ON runs")))
            if not sqlite:
                conn.execute(text("DROP FUNCTION runs_down()"))
