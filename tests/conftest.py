"""Shared fixtures. The database is SQLite in a temporary folder unless
JIEDAO_TEST_DATABASE_URL points at PostgreSQL (as `.ci/run` does with a fresh database)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("JIEDAO_SECRET_KEY", "test-secret-key-not-for-production")

from dbkit import PG_URL, new_database, reset_pg  # noqa: E402

from jiedao.db import Database, set_database  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _home(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    os.environ["JIEDAO_HOME"] = str(home)
    from jiedao.config import get_settings

    get_settings.cache_clear()
    yield home


@pytest.fixture(scope="session")
def database(tmp_path_factory):
    """The session's main database: migrated, then filled by `demo_db` when a test asks."""
    if PG_URL:
        reset_pg(PG_URL)
        db = Database(PG_URL)
        db.upgrade()
        drop = db.dispose
    else:
        db, drop = new_database(tmp_path_factory)
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
    db, drop = new_database(tmp_path_factory)
    yield db
    drop()
