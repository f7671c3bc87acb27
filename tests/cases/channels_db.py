"""A private copy of the small demo database for the channel tests (API, Open311, import).

Those tests add cases; other tests read the shared demo database's replayed year and count
its cases, so the channel tests work on a clone made once per test session: a SQLite backup
of the file, or a PostgreSQL ``CREATE DATABASE … TEMPLATE``.
"""

from __future__ import annotations

import atexit
import sqlite3
import time

import sqlalchemy as sa
from sqlalchemy.engine import make_url

_clone = None


def channels_db(demo_db):
    """The clone of ``demo_db`` (made on first use, dropped at exit)."""
    global _clone
    if _clone is not None:
        return _clone
    from jiedao.db import Database

    url = make_url(demo_db.url)
    if url.get_backend_name() == "sqlite":
        target = url.database.replace(".sqlite", "") + "_channels.sqlite"
        src, dst = sqlite3.connect(url.database), sqlite3.connect(target)
        with dst:
            src.backup(dst)
        src.close()
        dst.close()
        _clone = Database(url.set(database=target).render_as_string(hide_password=False))
        atexit.register(_clone.dispose)
        return _clone
    name = f"{url.database}_channels"
    admin = sa.create_engine(url.set(drivername="postgresql+psycopg", database="postgres"),
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        for attempt in range(20):
            demo_db.dispose()  # a template must have no open connections
            try:
                c.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{url.database}"'))
                break
            except sa.exc.OperationalError:
                if attempt == 19:
                    raise
                time.sleep(0.25)
    _clone = Database(url.set(database=name).render_as_string(hide_password=False))

    def drop():
        _clone.dispose()
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    atexit.register(drop)
    return _clone
