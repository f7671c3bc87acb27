"""The cockpit's DuckDB mirror of the operational database.

DuckDB cannot load its sqlite/postgres extensions here (no network at run time), so the
mirror is synced by this module: the case-level facts the metrics need are read from the
operational database with SQLAlchemy (SQLite and PostgreSQL alike), turned into two fact
tables inside DuckDB, and kept up to date incrementally:

* ``cf`` — one row per case (dimension codes, received time, the flags/times each metric
  needs, computed from the case's main assignments, transitions and follow-ups);
* ``df`` — one row per (case, department that has or had an assignment on it), the same
  columns computed from that department's assignments only (department metrics).

Change detection compares ``(id, version, code)`` of every case with the mirror:
``cases_case.version`` is bumped by every workflow action (``updated_at`` is business time,
not wall-clock time, so it is no watermark). New and changed cases are re-read and their
facts rebuilt; cases gone from the operational database are removed. Before that full key
diff, a cheap probe — the number of cases and the largest id of cases, transitions and
follow-ups (index look-ups only; every workflow action appends a transition) — skips the sync
when nothing changed (``force=True`` always runs the full diff).

Location: a DuckDB file ``$JIEDAO_HOME/cockpit/mirror-<sha256(url)[:16]>.duckdb``, so a
restarted server only syncs what changed. If another process holds that file (DuckDB
allows one writer process), the mirror falls back to an in-memory database for this process.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import sqlalchemy as sa

from jiedao.db import Database

log = logging.getLogger(__name__)

SCHEMA_VERSION = "4"
SIGN_WORKING_HOURS = 2.0  # default 签收时限 when an assignment has no sign_deadline
CHUNK = 900  # ids per IN (...) when reading changed cases

FACT_COLUMNS = """
    id BIGINT, department VARCHAR, version INTEGER, code VARCHAR, received_at TIMESTAMP,
    updated_at TIMESTAMP, channel VARCHAR, street VARCHAR, community VARCHAR, grid VARCHAR,
    category VARCHAR, event_id BIGINT, is_repeat BOOLEAN,
    sign_ok INTEGER, sign_late INTEGER, sign_open TIMESTAMP,
    close_ok INTEGER, close_late INTEGER, close_open TIMESTAMP,
    first_sat VARCHAR, last_sat VARCHAR, dispatched BOOLEAN, redispatched BOOLEAN,
    hours DOUBLE,
    s_d BOOLEAN, s_n BOOLEAN, c_d BOOLEAN, c_n BOOLEAN, r_d BOOLEAN, r_n BOOLEAN,
    f_d BOOLEAN, f_n BOOLEAN, fd_d BOOLEAN, fd_n BOOLEAN
"""
# The metric flags (denominator, numerator) of each fact row, materialised at sync time so
# that a metric query only counts boolean columns. ``{as_of}`` is the 统计截止时间: an open
# assignment whose (sign) deadline is before it counts as late. Rows with an open assignment
# are re-flagged at every sync (as_of moves); the others only when their case changes.
FLAGS = {
    "s": ("sign_ok + sign_late > 0 OR COALESCE(sign_open <= {as_of}, FALSE)",
          "(sign_ok + sign_late > 0 OR COALESCE(sign_open <= {as_of}, FALSE)) AND sign_late = 0 "
          "AND NOT COALESCE(sign_open <= {as_of}, FALSE)"),
    "c": ("close_ok + close_late > 0 OR COALESCE(close_open <= {as_of}, FALSE)",
          "(close_ok + close_late > 0 OR COALESCE(close_open <= {as_of}, FALSE)) AND close_late = 0 "
          "AND NOT COALESCE(close_open <= {as_of}, FALSE)"),
    "r": ("last_sat IS NOT NULL", "COALESCE(last_sat <> '不满意', FALSE)"),
    "f": ("first_sat IS NOT NULL", "COALESCE(first_sat IN ('满意', '基本满意'), FALSE)"),
    "fd": ("dispatched", "dispatched AND NOT redispatched"),
}


def _raw_rows(conn: sa.Connection, sql: str) -> list[tuple]:
    """All rows of a parameterless query through the DBAPI cursor (plain tuples: several times
    faster than Row objects for the million-row reads of a full sync)."""
    cur = conn.connection.cursor()
    try:
        cur.execute(sql)
        return cur.fetchall()
    finally:
        cur.close()


def default_path(url: str) -> Path:
    """Where the mirror of database ``url`` lives: under JIEDAO_HOME, keyed by a hash of the URL."""
    from jiedao.config import get_settings

    h = hashlib.sha256(url.encode()).hexdigest()[:16]
    return get_settings().home / "cockpit" / f"mirror-{h}.duckdb"


def sign_deadlines(dispatched: pd.Series, hours: float) -> pd.Series:
    """``dispatched`` + ``hours`` of office time on workdays (the district's working-day
    calendar), vectorised: the office intervals of the span are laid end to end with their
    cumulative working time, and each deadline is found by two binary searches."""
    from jiedao.catalog.calendar import get_calendar

    if dispatched.empty:
        return pd.Series([], dtype="datetime64[us]", index=dispatched.index)
    cal = get_calendar()
    t = dispatched.astype("datetime64[us]").to_numpy().astype("int64")
    first = pd.Timestamp(int(t.min()), unit="us").date()
    last = pd.Timestamp(int(t.max()), unit="us").date() + timedelta(days=60 + int(hours / 4) * 3)
    starts, ends = [], []
    day = first
    while day <= last:
        if cal.is_workday(day):
            for s, e in cal.office_hours:
                starts.append(datetime.combine(day, s))
                ends.append(datetime.combine(day, e))
        day += timedelta(days=1)
    if not starts:  # no workday at all: clock time
        return dispatched + pd.Timedelta(hours=hours)
    us = lambda xs: np.array(xs, dtype="datetime64[us]").astype("int64")  # noqa: E731
    st, en = us(starts), us(ends)
    cum_end = np.cumsum(en - st)
    cum_start = cum_end - (en - st)
    i = np.minimum(np.searchsorted(en, t, side="right"), len(st) - 1)
    worked = cum_start[i] + np.clip(t - st[i], 0, None)
    target = worked + int(hours * 3_600_000_000)
    j = np.minimum(np.searchsorted(cum_end, target, side="left"), len(st) - 1)
    out = st[j] + (target - cum_start[j])
    return pd.Series(out.astype("datetime64[us]"), index=dispatched.index)


class Mirror:
    """A DuckDB copy of the case facts of one operational database."""

    def __init__(self, db: Database, path: Path | None = None, *, sign_hours: float = SIGN_WORKING_HOURS):
        self.db = db
        self.sign_hours = sign_hours
        self.lock = threading.RLock()
        self.path: Path | None = None
        self.con = self._connect(path if path is not None else default_path(db.url))
        self.labels: dict[str, dict[str, str]] = {}
        self.as_of: datetime | None = None
        self.first_at: datetime | None = None  # the earliest received case
        self.synced_at: float | None = None  # time.monotonic() of the last sync
        self.timings: dict[str, float] = {}
        self._probe: tuple | None = None
        self._prepare()

    # ---- storage --------------------------------------------------------------------
    def _connect(self, path: Path | str | None) -> duckdb.DuckDBPyConnection:
        if path is None or str(path) == ":memory:":
            return duckdb.connect(":memory:")
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            con = duckdb.connect(str(path))
            self.path = path
            return con
        except (duckdb.IOException, OSError) as e:  # locked by another process
            log.warning("cockpit mirror %s unavailable (%s); using an in-memory mirror", path, e)
            return duckdb.connect(":memory:")

    def _prepare(self) -> None:
        con = self.con
        con.execute("SET enable_progress_bar = false")
        con.execute("CREATE TABLE IF NOT EXISTS mirror_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        rows = con.execute("SELECT value FROM mirror_meta WHERE key = 'schema'").fetchall()
        row = rows[0] if rows else None
        want = f"{SCHEMA_VERSION};sign={self.sign_hours}"
        if row is None or row[0] != want:
            con.execute("DROP TABLE IF EXISTS cf")
            con.execute("DROP TABLE IF EXISTS df")
            con.execute("DELETE FROM mirror_meta")
            con.execute("INSERT INTO mirror_meta VALUES ('schema', ?)", [want])
        con.execute(f"CREATE TABLE IF NOT EXISTS cf ({FACT_COLUMNS})")
        con.execute(f"CREATE TABLE IF NOT EXISTS df ({FACT_COLUMNS})")

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection for one query (DuckDB cursors may be used from different threads)."""
        return self.con.cursor()

    def close(self) -> None:
        self.con.close()

    @property
    def version(self) -> tuple | None:
        """What the mirror was last synced from (case count, last case, transition and
        follow-up ids): equal versions mean equal figures."""
        return self._probe

    # ---- sync -------------------------------------------------------------------------
    def _read_probe(self, conn: sa.Connection) -> tuple:
        # index-only look-ups (no scan of the wide case rows): every workflow action appends
        # a transition, a follow-up appends its row, intake adds a case, a delete drops the count
        return tuple(conn.execute(sa.text(
            "SELECT (SELECT COUNT(*) FROM cases_case), (SELECT MAX(id) FROM cases_case), "
            "(SELECT MAX(id) FROM cases_transition), (SELECT MAX(id) FROM cases_followup)")).one())

    def sync(self, force: bool = False) -> int:
        """Bring the mirror up to date. Returns the number of cases added, changed or removed."""
        with self.lock:
            t0 = time.perf_counter()
            with self.db.engine.connect() as conn:
                probe = self._read_probe(conn)
                if not force and probe == self._probe and self.synced_at is not None:
                    self.synced_at = time.monotonic()
                    return 0
                if not force and self.synced_at is None and repr(probe) == self._stored_probe():
                    # a mirror file synced by an earlier process, nothing changed since
                    self._read_labels(conn)
                    with self.con.cursor() as c:
                        self.as_of, self.first_at = c.execute(
                            "SELECT MAX(updated_at), MIN(received_at) FROM cf").fetchall()[0]
                    self._probe, self.synced_at = probe, time.monotonic()
                    return 0
                self._read_labels(conn)
                keys = pd.DataFrame(_raw_rows(conn, "SELECT id, version, code FROM cases_case"),
                                    columns=["id", "version", "code"])
                if keys.empty:
                    keys = pd.DataFrame({"id": pd.Series([], dtype="int64"),
                                         "version": pd.Series([], dtype="int64"),
                                         "code": pd.Series([], dtype="object")})
                t_keys = time.perf_counter()
                cur = self.con.cursor()
                cur.register("op_keys", keys)
                changed = [r[0] for r in cur.execute(
                    "SELECT k.id FROM op_keys k LEFT JOIN cf m ON m.id = k.id "
                    "WHERE m.id IS NULL OR m.version <> k.version OR m.code <> k.code").fetchall()]
                deleted = [r[0] for r in cur.execute(
                    "SELECT m.id FROM cf m ANTI JOIN op_keys k ON m.id = k.id").fetchall()]
                n_mirror = cur.execute("SELECT COUNT(*) FROM cf").fetchall()[0][0]
                cur.unregister("op_keys")
                full = n_mirror == 0 or len(changed) > len(keys) // 2
                staged = self._read_facts(conn, None if full else changed) if changed else None
            t_read = time.perf_counter()
            cur.execute("BEGIN TRANSACTION")
            try:
                gone = pd.DataFrame({"id": pd.Series(changed + deleted, dtype="int64")})
                cur.register("gone", gone)
                cur.execute("DELETE FROM cf WHERE id IN (SELECT id FROM gone)")
                cur.execute("DELETE FROM df WHERE id IN (SELECT id FROM gone)")
                cur.unregister("gone")
                if staged is not None:
                    self._build_facts(cur, staged)
                    cur.execute("DROP TABLE IF EXISTS s_a")
                if changed or deleted:
                    self._update_repeat(cur)
                as_of = cur.execute("SELECT MAX(updated_at) FROM cf").fetchall()[0][0]
                if changed or as_of != self.as_of:
                    self._update_flags(cur, as_of)
                cur.execute("INSERT OR REPLACE INTO mirror_meta VALUES ('probe', ?)", [repr(probe)])
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            self.as_of, self.first_at = cur.execute("SELECT MAX(updated_at), MIN(received_at) FROM cf").fetchall()[0]
            cur.close()
            self._probe = probe
            self.synced_at = time.monotonic()
            t1 = time.perf_counter()
            self.timings = {"keys": t_keys - t0, "read": t_read - t_keys, "build": t1 - t_read,
                            "total": t1 - t0, "changed": len(changed), "deleted": len(deleted)}
            return len(changed) + len(deleted)

    def _stored_probe(self) -> str | None:
        with self.con.cursor() as c:
            rows = c.execute("SELECT value FROM mirror_meta WHERE key = 'probe'").fetchall()
        return rows[0][0] if rows else None

    def _read_labels(self, conn: sa.Connection) -> None:
        from jiedao.cases.models import CHANNELS

        def pairs(sql):
            try:
                return {str(c): n for c, n in conn.execute(sa.text(sql)).all()}
            except sa.exc.DBAPIError:
                return {}

        self.labels = {
            "department": pairs("SELECT code, name FROM catalog_department"),
            "street": pairs("SELECT code, name FROM geo_street"),
            "community": pairs("SELECT code, name FROM geo_community"),
            "grid": pairs("SELECT code, name FROM geo_grid"),
            "category": pairs("SELECT code, name FROM catalog_matter"),
            "channel": dict(CHANNELS),
        }

    def _read_facts(self, conn: sa.Connection, ids: list[int] | None) -> dict[str, pd.DataFrame]:
        """Raw rows of the given cases (all cases when ``ids`` is None) as data frames."""
        queries = {
            "s_case": ("SELECT id, version, code, received_at, updated_at, closed_at, channel, street_code, "
                       "community_code, grid_code, matter_code, event_id FROM cases_case", "id"),
            "s_asg": ("SELECT case_id, seq, department_code, role, state, dispatched_at, deadline, "
                      "sign_deadline, signed_at, replied_at FROM cases_assignment", "case_id"),
            "s_tr": ("SELECT case_id, action, at, assignment_seq FROM cases_transition "
                     "WHERE action IN ('dispatch', 'return', 'reassign')", "case_id"),
            "s_fu": ("SELECT case_id, id, at, satisfaction FROM cases_followup", "case_id"),
        }
        dt_cols = {"received_at", "updated_at", "closed_at", "dispatched_at", "deadline",
                   "sign_deadline", "signed_at", "replied_at", "at"}
        out = {}
        for name, (sql, key) in queries.items():
            cols = [c.strip().split(" ")[-1] for c in sql.split("FROM")[0][len("SELECT "):].split(",")]
            rows: list = []
            if ids is None:
                rows = _raw_rows(conn, sql)
            else:
                joiner = " AND " if " WHERE " in sql else " WHERE "
                stmt = sa.text(sql + joiner + f"{key} IN :ids").bindparams(sa.bindparam("ids", expanding=True))
                for i in range(0, len(ids), CHUNK):
                    rows.extend(conn.execute(stmt, {"ids": ids[i:i + CHUNK]}).all())
            frame = pd.DataFrame(rows, columns=cols)
            for c in cols:
                if c in dt_cols:
                    frame[c] = (pd.to_datetime(frame[c], format="mixed") if len(frame)
                                else pd.Series([], dtype="object")).astype("datetime64[us]")
            out[name] = frame.rename(columns={"at": "ts"})  # AT is a keyword in DuckDB
        asg = out["s_asg"]
        if len(asg):
            missing = asg["sign_deadline"].isna()
            if missing.any():
                asg.loc[missing, "sign_deadline"] = sign_deadlines(asg.loc[missing, "dispatched_at"],
                                                                   self.sign_hours)
        return out

    def _build_facts(self, cur: duckdb.DuckDBPyConnection, staged: dict[str, pd.DataFrame]) -> None:
        for name, frame in staged.items():
            cur.register(name, frame)
        try:
            cur.execute("""
                CREATE OR REPLACE TEMP TABLE s_a AS
                WITH ret AS (
                    SELECT case_id, assignment_seq AS seq, MIN(ts) AS ret_at FROM s_tr
                    WHERE action = 'return' AND assignment_seq IS NOT NULL GROUP BY ALL)
                SELECT a.case_id, a.department_code, a.role, a.state, a.dispatched_at, a.replied_at,
                       CAST(a.deadline AS TIMESTAMP) AS deadline,
                       CAST(a.sign_deadline AS TIMESTAMP) AS sdl,
                       CAST(COALESCE(a.signed_at, r.ret_at) AS TIMESTAMP) AS resp_at
                FROM s_asg a LEFT JOIN ret r ON r.case_id = a.case_id AND r.seq = a.seq
            """)
            # per assignment: is it counted for sign / close, and how
            flags = """
                COUNT(*) FILTER (WHERE a.resp_at IS NOT NULL AND a.resp_at <= a.sdl) AS sign_ok,
                COUNT(*) FILTER (WHERE a.resp_at IS NOT NULL AND a.resp_at > a.sdl) AS sign_late,
                MIN(a.sdl) FILTER (WHERE a.resp_at IS NULL AND a.state = 'pending') AS sign_open,
                COUNT(*) FILTER (WHERE a.state NOT IN ('returned', 'cancelled')
                                 AND a.replied_at IS NOT NULL AND a.replied_at <= a.deadline) AS close_ok,
                COUNT(*) FILTER (WHERE a.state NOT IN ('returned', 'cancelled')
                                 AND a.replied_at IS NOT NULL AND a.replied_at > a.deadline) AS close_late,
                MIN(a.deadline) FILTER (WHERE a.state NOT IN ('returned', 'cancelled')
                                        AND a.replied_at IS NULL) AS close_open
            """
            cur.execute(f"""
                INSERT INTO cf
                WITH m AS (
                    SELECT a.case_id, {flags}, MIN(a.replied_at) AS first_reply
                    FROM s_a a WHERE a.role = 'main' GROUP BY a.case_id),
                t AS (
                    SELECT case_id, BOOL_OR(action = 'dispatch') AS dispatched,
                           BOOL_OR(action IN ('return', 'reassign')) AS redispatched
                    FROM s_tr GROUP BY case_id),
                f AS (
                    SELECT case_id, ARG_MIN(satisfaction, (ts, id)) AS first_sat,
                           ARG_MAX(satisfaction, (ts, id)) AS last_sat
                    FROM s_fu GROUP BY case_id)
                SELECT c.id, NULL, c.version, c.code, c.received_at, c.updated_at, c.channel,
                       c.street_code, c.community_code, c.grid_code, c.matter_code, c.event_id, FALSE,
                       COALESCE(m.sign_ok, 0), COALESCE(m.sign_late, 0), m.sign_open,
                       COALESCE(m.close_ok, 0), COALESCE(m.close_late, 0), m.close_open,
                       f.first_sat, f.last_sat, COALESCE(t.dispatched, FALSE), COALESCE(t.redispatched, FALSE),
                       EPOCH(COALESCE(m.first_reply, c.closed_at) - c.received_at) / 3600.0,
                       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
                FROM s_case c LEFT JOIN m ON m.case_id = c.id LEFT JOIN t ON t.case_id = c.id
                LEFT JOIN f ON f.case_id = c.id
                ORDER BY c.received_at  -- keeps row groups time-clustered: period filters prune them
            """)
            cur.execute(f"""
                INSERT INTO df
                WITH d AS (
                    SELECT a.case_id, a.department_code, {flags},
                           BOOL_OR(a.role = 'main') AS has_main,
                           BOOL_OR(a.role = 'main' AND a.state IN ('returned', 'cancelled')) AS main_lost,
                           BOOL_OR(a.role = 'main' AND a.replied_at IS NOT NULL) AS main_replied,
                           MIN(a.dispatched_at) AS first_dispatch, MIN(a.replied_at) AS first_reply
                    FROM s_a a GROUP BY a.case_id, a.department_code)
                SELECT c.id, d.department_code, c.version, c.code, c.received_at, c.updated_at, c.channel,
                       c.street, c.community, c.grid, c.category, c.event_id, FALSE,
                       d.sign_ok, d.sign_late, d.sign_open, d.close_ok, d.close_late, d.close_open,
                       CASE WHEN d.main_replied THEN c.first_sat END,
                       CASE WHEN d.main_replied THEN c.last_sat END,
                       d.has_main, d.main_lost,
                       EPOCH(d.first_reply - d.first_dispatch) / 3600.0,
                       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
                FROM d JOIN cf c ON c.id = d.case_id
                WHERE c.id IN (SELECT id FROM s_case)
                ORDER BY c.received_at
            """)
        finally:
            for name in staged:
                # after a failed statement the transaction is aborted; the rollback cleans up
                with contextlib.suppress(duckdb.Error):
                    cur.unregister(name)

    def _update_flags(self, cur: duckdb.DuckDBPyConnection, as_of: datetime | None) -> None:
        lit = f"TIMESTAMP '{(as_of or datetime(1900, 1, 1)).isoformat(' ')}'"
        sets = ", ".join(f"{k}_d = {d.format(as_of=lit)}, {k}_n = {n.format(as_of=lit)}"
                         for k, (d, n) in FLAGS.items())
        for t in ("cf", "df"):
            cur.execute(f"UPDATE {t} SET {sets} WHERE s_d IS NULL OR sign_open IS NOT NULL "
                        "OR close_open IS NOT NULL")

    def _update_repeat(self, cur: duckdb.DuckDBPyConnection) -> None:
        """重复诉求: a case that joined an event someone else opened (not the event's first case)."""
        cur.execute("""
            CREATE OR REPLACE TEMP TABLE rep AS
            SELECT id, event_id IS NOT NULL AND
                   ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY received_at, id) > 1 AS r
            FROM cf
        """)
        cur.execute("UPDATE cf SET is_repeat = rep.r FROM rep WHERE cf.id = rep.id AND cf.is_repeat <> rep.r")
        cur.execute("UPDATE df SET is_repeat = rep.r FROM rep WHERE df.id = rep.id AND df.is_repeat <> rep.r")
        cur.execute("DROP TABLE rep")
