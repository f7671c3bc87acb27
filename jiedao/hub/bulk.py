"""Bulk writes for the hub's big tables, inside the caller's transaction.

``insert_rows`` takes plain tuples (no per-row dicts, no ORM): on PostgreSQL they go through
``COPY … FROM STDIN``, on SQLite through the driver's own ``executemany``; other backends
fall back to a Core executemany. Values are converted by the column types' own bind
processors (JSON to text, dates to the backend's form), so what is stored is exactly what
SQLAlchemy would have stored. The rows use the session's connection: a rollback of the
session undoes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Table
from sqlalchemy.orm import Session


def _processors(table: Table, columns: Sequence[str], dialect) -> list:
    out = []
    for c in columns:
        proc = table.c[c].type._cached_bind_processor(dialect)
        out.append(None if proc is None else _memo(proc))
    return out


def _memo(proc, limit: int = 100_000):
    """``proc`` remembering its results for repeated values (import times, dates, flags and
    empty JSON lists repeat across millions of rows); other values are converted each time."""
    cache: dict = {}
    empty: dict = {}

    def conv(v):
        t = type(v)
        if t is list or t is dict:
            if v:
                return proc(v)
            r = empty.get(t)
            if r is None:
                r = empty[t] = proc(v)
            return r
        try:
            return cache[v]
        except KeyError:
            r = proc(v)
            if len(cache) < limit:
                cache[v] = r
            return r
        except TypeError:  # unhashable
            return proc(v)

    return conv


def insert_rows(session: Session, table: Table, columns: Sequence[str],
                rows: Iterable[Sequence], *, batch: int = 20000) -> int:
    """Insert ``rows`` (tuples in ``columns`` order) into ``table``; returns the count."""
    conn = session.connection()
    dialect = conn.dialect
    procs = _processors(table, columns, dialect)
    conv = [(i, p) for i, p in enumerate(procs) if p is not None]
    name = dialect.name
    n = 0
    if name == "postgresql" and dialect.driver == "psycopg":
        raw = conn.connection.driver_connection
        cols = ", ".join(dialect.identifier_preparer.quote(c) for c in columns)
        with raw.cursor() as cur, cur.copy(
                f"COPY {dialect.identifier_preparer.format_table(table)} ({cols}) FROM STDIN"
        ) as cp:
            for r in rows:
                if conv:
                    r = list(r)
                    for i, p in conv:
                        r[i] = p(r[i])
                cp.write_row(r)
                n += 1
        return n
    if name == "sqlite":
        cur = conn.connection.driver_connection.cursor()
        sql = (f"INSERT INTO {table.name} ({', '.join(columns)}) "
               f"VALUES ({', '.join('?' * len(columns))})")
        try:
            buf: list = []
            for r in rows:
                if conv:
                    r = list(r)
                    for i, p in conv:
                        r[i] = p(r[i])
                buf.append(r)
                if len(buf) >= batch:
                    cur.executemany(sql, buf)
                    n += len(buf)
                    buf = []
            if buf:
                cur.executemany(sql, buf)
                n += len(buf)
        finally:
            cur.close()
        return n
    buf = []
    stmt = table.insert()
    for r in rows:
        buf.append(dict(zip(columns, r, strict=True)))
        if len(buf) >= batch:
            conn.execute(stmt, buf)
            n += len(buf)
            buf = []
    if buf:
        conn.execute(stmt, buf)
        n += len(buf)
    return n


__all__ = ["insert_rows"]
