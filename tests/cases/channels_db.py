"""A private copy of the small demo database for the channel tests (API, Open311, import).

Those tests add cases; other tests read the shared demo database's replayed year and count
its cases, so the channel tests work on a clone made once per test session: a SQLite backup
of the file, or a PostgreSQL ``CREATE DATABASE … TEMPLATE``.
"""

from __future__ import annotations

from dbkit import clone_database

_clone = None


def channels_db(demo_db):
    """The clone of ``demo_db`` (made on first use, dropped at exit)."""
    global _clone
    if _clone is not None:
        return _clone
    _clone = clone_database(demo_db, "channels")
    return _clone
