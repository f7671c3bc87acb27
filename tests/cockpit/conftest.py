"""The cockpit's tests check figures against exact counts, so they get their own small demo.

Tests elsewhere add cases to the session's shared demo database (some dated in other years),
which would move "the latest month" and every total. Here ``demo_db`` is a private small
demo built once for this directory, and it is the default database while a cockpit test runs
(the CLI commands under test read ``get_database()``).
"""

from __future__ import annotations

import pytest
from dbkit import new_database

import jiedao.db


@pytest.fixture(scope="session")
def demo_db(database, tmp_path_factory):
    """A small demo district with its replayed year, private to the cockpit tests."""
    from jiedao.demo.build import build_demo

    db, drop = new_database(tmp_path_factory)
    build_demo(db, small=True, progress=False)
    yield db
    drop()


@pytest.fixture(autouse=True)
def _cockpit_default_database(request):
    """Make the private demo the default database for tests that use it, then restore."""
    if "demo_db" not in request.fixturenames:
        yield
        return
    previous = jiedao.db._default
    jiedao.db.set_database(request.getfixturevalue("demo_db"))
    yield
    jiedao.db.set_database(previous)
