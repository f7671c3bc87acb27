"""Test databases: a new, migrated, empty database per call, on SQLite or PostgreSQL.

Shared by tests/conftest.py and by test kits (import it as ``dbkit``: a bare
``import conftest`` would find whichever conftest.py is first on sys.path)."""

from __future__ import annotations

import itertools
import os

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from jiedao.db import Database

PG_URL = os.environ.get("JIEDAO_TEST_DATABASE_URL")
_counter = itertools.count()


def pg_admin(url: str) -> sa.Engine:
    u = make_url(url).set(drivername="postgresql+psycopg", database="postgres")
    return sa.create_engine(u, isolation_level="AUTOCOMMIT")


def reset_pg(url: str) -> None:
    eng = sa.create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    with eng.begin() as c:
        c.execute(sa.text("DROP SCHEMA public CASCADE"))
        c.execute(sa.text("CREATE SCHEMA public"))
    eng.dispose()


def new_database(tmp_path_factory) -> tuple[Database, callable]:
    """A new, migrated, empty database and a function that removes it."""
    n = next(_counter)
    if PG_URL:
        base = make_url(PG_URL)
        name = f"{base.database}_t{n}"
        admin = pg_admin(PG_URL)
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
        db = Database(base.set(database=name).render_as_string(hide_password=False))

        def drop():
            db.dispose()
            with admin.connect() as c:
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    else:
        path = tmp_path_factory.mktemp(f"db{n}") / "jiedao.sqlite"
        db = Database(f"sqlite:///{path}")

        def drop():
            db.dispose()
    db.upgrade()
    return db, drop
