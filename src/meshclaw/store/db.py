"""Engine, sessions and migrations for SQLite (embedded) and PostgreSQL (at scale)."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, Dialect, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.dml import UpdateBase

MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the API read while a run writes; NORMAL sync is durable across app crashes.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def make_engine(url: str) -> Engine:
    # hide_parameters: a store error's message (logged, or in a traceback) names the
    # statement but not its values, which may be personal data or a secret's ciphertext.
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False}, hide_parameters=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = str(parsed.set(drivername="postgresql+psycopg"))
    return create_engine(
        url, pool_pre_ping=True, pool_size=10, max_overflow=20, hide_parameters=True
    )


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the latest schema."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            # "heads": capabilities add migrations on their own branches off the base schema.
            command.upgrade(cfg, "heads")
    finally:
        engine.dispose()


class KeptConnections:
    """A few connections kept out of the pool for short transactions made very often
    (a budget reservation before every model call), on SQLite.

    Checking a connection out of the pool and back in costs more than such a transaction
    on SQLite. Any thread may ``begin``: it takes an idle kept connection (or a new one
    from the pool) and puts it back afterwards; at most ``keep`` stay idle, so busy
    moments do not hold the pool's connections for good. A connection whose transaction
    failed in the driver is closed, not kept. ``Database.dispose`` closes them all.
    """

    def __init__(self, engine: Engine, keep: int = 2) -> None:
        self._engine = engine
        self._keep = keep
        self._idle: list[Connection] = []

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A transaction: commits on success, rolls back on any error."""
        try:
            conn = self._idle.pop()  # atomic: no lock needed between threads
        except IndexError:
            conn = self._engine.connect()
        keep = False
        try:
            with conn.begin():
                yield conn
            keep = True
        except DBAPIError:
            raise
        except BaseException:
            keep = True  # rolled back; the connection itself is fine
            raise
        finally:
            if keep and len(self._idle) < self._keep:
                self._idle.append(conn)
            else:
                conn.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


class Database:
    """One engine and a session factory; passed to every service that stores things."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._kept: list[KeptConnections] = []

    def kept_connections(self, keep: int = 2) -> KeptConnections:
        """Connections kept for very frequent short transactions (see ``KeptConnections``);
        closed by ``dispose``."""
        kept = KeptConnections(self.engine, keep)
        self._kept.append(kept)
        return kept

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: commits on success, rolls back on any error."""
        with self._sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        for kept in self._kept:
            kept.close()
        self.engine.dispose()


@dataclass(frozen=True)
class _Form:
    """A statement compiled for one dialect: its SQL and how to order its parameters."""

    sql: str
    slots: tuple[tuple[str | None, Callable[[Any], Any] | None, Any], ...]
    """Per placeholder: the parameter's name (None for a value fixed in the statement),
    the column type's bind processor, and the fixed value (already processed)."""
    names: tuple[str, ...] | None
    """Placeholder names for a named paramstyle; None for a positional one."""


class Prepared:
    """An ``INSERT`` or ``UPDATE`` compiled once per dialect and run with ``exec_driver_sql``.

    For the few writes made on every model and tool call. A Core statement built once is
    still re-keyed for the compiled cache, its parameters set up and a result prepared on
    every execution, which on SQLite costs several times the write itself. Here the
    statement is compiled once per dialect for exactly the parameter names ``keys``, the
    column types' own bind processors (JSON, UTC timestamps, booleans) are looked up
    once, and an execution only converts the values and hands them to the driver;
    ``Connection.exec_driver_sql`` keeps SQLAlchemy's transaction, events and error
    translation. Every execution passes every one of ``keys`` and nothing else; columns
    with Python-side defaults must be among them (refused when compiling otherwise).
    """

    def __init__(
        self, statement: UpdateBase, keys: Iterable[str], *, as_given: Iterable[str] = ()
    ) -> None:
        """``as_given``: keys whose values the caller passes as the driver takes them (JSON
        text already serialised, say): their column type's bind processor is skipped."""
        self._statement = statement
        self._keys = tuple(keys)
        self._as_given = frozenset(as_given)
        if not self._as_given <= set(self._keys):
            raise ValueError(f"as_given keys {sorted(self._as_given)} must be among the keys")
        self._forms: weakref.WeakKeyDictionary[Dialect, _Form] = weakref.WeakKeyDictionary()

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Run the statement in ``conn``'s transaction; return the row count."""
        form = self._forms.get(conn.dialect) or self._compile(conn.dialect)
        values = [
            value if key is None else (params[key] if fn is None else fn(params[key]))
            for key, fn, value in form.slots
        ]
        if form.names is None:
            return int(conn.exec_driver_sql(form.sql, tuple(values)).rowcount)
        return int(
            conn.exec_driver_sql(form.sql, dict(zip(form.names, values, strict=True))).rowcount
        )

    def run(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """``execute`` on the driver's own cursor, in ``conn``'s transaction: no
        SQLAlchemy execution context, events or result (a third of the cost on SQLite).
        For statements run very often on SQLite, whose writes share the connection's
        transaction either way; a driver error is raised as SQLAlchemy's ``DBAPIError``,
        like ``execute`` does. Returns the row count."""
        dialect = conn.dialect
        form = self._forms.get(dialect) or self._compile(dialect)
        values = [
            value if key is None else (params[key] if fn is None else fn(params[key]))
            for key, fn, value in form.slots
        ]
        args: Any = (
            tuple(values) if form.names is None else dict(zip(form.names, values, strict=True))
        )
        driver_error = dialect.loaded_dbapi.Error
        cursor = conn.connection.cursor()
        try:
            cursor.execute(form.sql, args)
            return int(cursor.rowcount)
        except driver_error as exc:
            raise DBAPIError.instance(
                form.sql,
                args,
                exc,
                driver_error,
                hide_parameters=conn.engine.hide_parameters,
                dialect=dialect,
            ) from exc
        finally:
            cursor.close()

    def write(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """``run`` on SQLite, ``execute`` on other engines: the way for a write made on
        every call. Returns the row count."""
        if conn.dialect.name == "sqlite":
            return self.run(conn, params)
        return self.execute(conn, params)

    def _compile(self, dialect: Dialect) -> _Form:
        compiled: Any = self._statement.compile(dialect=dialect, column_keys=list(self._keys))
        if (
            compiled.insert_prefetch
            or compiled.update_prefetch
            or compiled.post_compile_params
            or compiled.literal_execute_params
        ):
            raise ValueError(f"cannot prepare {self._statement}: pass every defaulted column")
        by_name = {name: bind for bind, name in compiled.bind_names.items()}
        names = tuple(compiled.positiontup) if compiled.positional else tuple(by_name)
        slots = []
        for name in names:
            bind = by_name[name]
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.key in self._keys:
                slots.append((bind.key, None if bind.key in self._as_given else process, None))
            elif bind.callable is None and bind.value is not None:
                fixed = bind.effective_value
                slots.append((None, None, fixed if process is None else process(fixed)))
            else:
                raise ValueError(f"cannot prepare {self._statement}: no value for {bind.key}")
        escaped = compiled.escaped_bind_names or {}
        form = _Form(
            sql=str(compiled),
            slots=tuple(slots),
            names=None if compiled.positional else tuple(escaped.get(n, n) for n in names),
        )
        self._forms[dialect] = form
        return form
