"""Test databases: a new, migrated, empty database per call, on SQLite or PostgreSQL.

Shared by tests/conftest.py and by test kits (import it as ``dbkit``: a bare
``import conftest`` would find whichever conftest.py is first on sys.path)."""

from __future__ import annotations

import atexit
import itertools
import os
import sqlite3
import time

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


def clone_database(demo_db, suffix: str):
    """A private copy of the small demo database (SQLite backup / PostgreSQL template)."""
    from jiedao.db import Database

    url = make_url(demo_db.url)
    if url.get_backend_name() == "sqlite":
        target = url.database.replace(".sqlite", "") + f"_{suffix}.sqlite"
        src, dst = sqlite3.connect(url.database), sqlite3.connect(target)
        with dst:
            src.backup(dst)
        src.close()
        dst.close()
        db = Database(url.set(database=target).render_as_string(hide_password=False))
        atexit.register(db.dispose)
        return db
    name = f"{url.database}_{suffix}"
    admin = sa.create_engine(url.set(drivername="postgresql+psycopg", database="postgres"),
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        for attempt in range(20):
            demo_db.dispose()
            try:
                c.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{url.database}"'))
                break
            except sa.exc.OperationalError:
                if attempt == 19:
                    raise
                time.sleep(0.25)
    db = Database(url.set(database=name).render_as_string(hide_password=False))

    def drop():
        db.dispose()
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    atexit.register(drop)
    return db
