"""Engines and sessions: Postgres in production, SQLite for the embedded default."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, pool_size: int = 10) -> Engine:
    """SQLite gets WAL, a busy timeout and BEGIN IMMEDIATE, because the API and a worker process share the file.

    A deferred SQLite transaction that reads and then writes can fail at once with "database is locked"
    when another connection wrote in between; taking the write lock at BEGIN makes it wait instead.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
            dbapi_connection.isolation_level = None  # let the "begin" hook below issue BEGIN itself

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection) -> None:  # type: ignore[no-untyped-def]
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=10)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A short transaction: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session
