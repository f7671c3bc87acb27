"""Shared fixtures. The database is SQLite in a temporary folder unless
JIEDAO_TEST_DATABASE_URL points at PostgreSQL (as `.ci/run` does with a fresh database)."""

from __future__ import annotations

import itertools
import os

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

os.environ.setdefault("JIEDAO_SECRET_KEY", "test-secret-key-not-for-production")

from jiedao.db import Database, set_database  # noqa: E402

PG_URL = os.environ.get("JIEDAO_TEST_DATABASE_URL")
_counter = itertools.count()


def _pg_admin(url: str) -> sa.Engine:
    u = make_url(url).set(drivername="postgresql+psycopg", database="postgres")
    return sa.create_engine(u, isolation_level="AUTOCOMMIT")


def _reset_pg(url: str) -> None:
    eng = sa.create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    with eng.begin() as c:
        c.execute(sa.text("DROP SCHEMA public CASCADE"))
        c.execute(sa.text("CREATE SCHEMA public"))
    eng.dispose()


@pytest.fixture(scope="session", autouse=True)
def _home(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    os.environ["JIEDAO_HOME"] = str(home)
    from jiedao.config import get_settings

    get_settings.cache_clear()
    yield home


def _new_database(tmp_path_factory) -> tuple[Database, callable]:
    """A new, migrated, empty database and a function that removes it."""
    n = next(_counter)
    if PG_URL:
        base = make_url(PG_URL)
        name = f"{base.database}_t{n}"
        admin = _pg_admin(PG_URL)
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


@pytest.fixture(scope="session")
def database(tmp_path_factory):
    """The session's main database: migrated, then filled by `demo_db` when a test asks."""
    if PG_URL:
        _reset_pg(PG_URL)
        db = Database(PG_URL)
        db.upgrade()
        drop = db.dispose
    else:
        db, drop = _new_database(tmp_path_factory)
    set_database(db)
    yield db
    set_database(None)
    drop()


@pytest.fixture(scope="session")
def demo_db(database):
    """The main database holding the small demo district (built once per test session)."""
    from jiedao.demo.build import build_demo

    build_demo(database, small=True, progress=False)
    return database


@pytest.fixture
def fresh_db(tmp_path_factory):
    """A separate empty migrated database for tests that need to see exactly what changed."""
    db, drop = _new_database(tmp_path_factory)
    yield db
    drop()
