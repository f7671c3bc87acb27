"""Cockpit metrics over three years of demo cases (about 900,000): each metric query's time
(target ≤ 300 ms) and the DuckDB mirror refresh (full, and incremental after 1,000 changed
cases).

The three-year database is built once and cached under ``var/bench/`` (reused by later runs
while the demo's fingerprint is unchanged):

1. a fresh SQLite database gets the demo district (``build_demo`` with only the catalogue,
   users and appeals stages; full scale, or small with ``--quick``): the appeals stage
   replays the year 2025 through the real case engine (``jiedao.cases.replay.replay_year``).
   ``JIEDAO_BENCH_COCKPIT_BASE=/path/jiedao.sqlite`` takes an already built full demo
   database as that year instead (copied with SQLite's backup API, read-only);
   ``JIEDAO_BENCH_COCKPIT_SCALE=replicated`` (a fallback when no full year can be built in
   time) uses the small year 600 times instead, 200 copies in each of the three years;
2. two earlier years are made by copying that year's case rows — cases, assignments,
   transitions, follow-ups and events — with every timestamp shifted back by 364 and by 728
   days (whole weeks, so weekdays are kept), new ids, and case codes re-dated with a "-1" /
   "-2" suffix (idempotency keys dropped).

Then, in this process: a full mirror build, a no-change refresh, 1,000 cases changed (a
version bump and a touched assignment each, as a workflow action does) and an incremental
refresh, and every query kind the pages use, each timed as the median of 5 runs.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BUILD = r"""
import sys
from jiedao.db import Database
from jiedao.demo import build
build.DB_STAGES = [s for s in build.DB_STAGES if s[0] in ("catalog", "users", "appeals")]
db = Database(sys.argv[1]); db.upgrade()
build.build_demo(db, small=sys.argv[2] == "small", progress=False)
"""

SHIFTS = (364, 728)
REPLICAS = 600  # JIEDAO_BENCH_COCKPIT_SCALE=replicated: copies of the small year (≈ 910,000 cases)
COPY_TABLES = ("cases_event", "cases_case", "cases_assignment", "cases_transition", "cases_followup")


def _copy_years(path: Path, copies: list[tuple[int, int]]) -> dict:
    """Copy the year's case rows once per ``(n, days)`` in ``copies``: timestamps shifted back
    ``days`` days, ids offset by ``n`` × the year's largest id, codes re-dated with "-n"."""
    import sqlite3

    con = sqlite3.connect(path)
    cur = con.cursor()
    off = {t: cur.execute(f"SELECT COALESCE(MAX(id), 0) FROM {t}").fetchone()[0] for t in COPY_TABLES}
    cols = {t: [r[1] for r in cur.execute(f"PRAGMA table_info({t})")] for t in COPY_TABLES}
    dt = {"first_at", "last_at", "received_at", "closed_at", "updated_at", "dispatched_at", "deadline",
          "sign_deadline", "signed_at", "replied_at", "at"}
    ref = {"event_id": "cases_event", "case_id": "cases_case"}
    cur.execute("CREATE TEMP TABLE copies (n INTEGER, days INTEGER)")
    cur.executemany("INSERT INTO copies VALUES (?, ?)", copies)
    for t in COPY_TABLES:
        exprs = []
        for c in cols[t]:
            if c == "id":
                exprs.append(f"x.id + {off[t]} * k.n")
            elif c in ref:
                exprs.append(f"x.{c} + {off[ref[c]]} * k.n")
            elif c in dt:
                exprs.append(f"strftime('%Y-%m-%d %H:%M:%f', x.{c}, '-' || k.days || ' days')")
            elif t == "cases_case" and c == "code":
                exprs.append("strftime('%Y%m%d', x.received_at, '-' || k.days || ' days') || substr(x.code, 9) "
                             "|| '-' || k.n")
            elif t == "cases_case" and c == "idempotency_key":
                exprs.append("NULL")
            else:
                exprs.append(f"x.{c}")
        cur.execute(f"INSERT INTO {t} ({', '.join(cols[t])}) SELECT {', '.join(exprs)} "
                    f"FROM {t} x CROSS JOIN copies k WHERE x.id <= {off[t]} ORDER BY k.n, x.id")
    con.commit()
    counts = {t: cur.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in COPY_TABLES}
    con.close()
    return counts


def _source_key(scale: str) -> str:
    """A hash of what the cached database depends on: the demo generator, the case engine,
    the catalogue files, the migrations and the scale (not the cockpit's own code)."""
    import jiedao

    root = Path(jiedao.__file__).parent
    h = hashlib.sha256(f"{scale};{SHIFTS}".encode())
    for sub in ("demo", "cases", "catalog/data", "migrations"):
        for f in sorted((root / sub).rglob("*")):
            if f.is_file() and f.suffix in (".py", ".yaml", ".yml", ".csv", ".json", ".txt"):
                h.update(str(f.relative_to(root)).encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _mode(quick: bool) -> str:
    if quick:
        return "small"
    return "replicated" if os.environ.get("JIEDAO_BENCH_COCKPIT_SCALE") == "replicated" else "full"


def bench_db(quick: bool) -> Path:
    """The cached three-year database (built on first use)."""
    scale = _mode(quick)
    folder = Path(os.environ.get("JIEDAO_BENCH_DIR", "var/bench")).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    fp = _source_key(scale)
    if scale == "full" and os.environ.get("JIEDAO_BENCH_COCKPIT_BASE"):
        base = Path(os.environ["JIEDAO_BENCH_COCKPIT_BASE"])
        fp = "base" + hashlib.sha256(f"{base.resolve()}:{base.stat().st_mtime_ns}".encode()).hexdigest()[:8]
    path = folder / f"cockpit-{scale}-{fp}.sqlite"
    if path.exists():
        return path
    for old in folder.glob(f"cockpit-{scale}-*.sqlite*"):
        old.unlink()
    tmp = folder / f"building-cockpit-{scale}.sqlite"
    for p in folder.glob(tmp.name + "*"):
        p.unlink()
    t0 = time.perf_counter()
    base = os.environ.get("JIEDAO_BENCH_COCKPIT_BASE")
    if base and scale == "full":
        # an existing full demo database (SQLite) is the base year: a consistent copy of it
        import sqlite3

        src, dst = sqlite3.connect(f"file:{base}?mode=ro", uri=True), sqlite3.connect(tmp)
        src.backup(dst)
        src.close()
        dst.close()
        print(f"  demo year copied from {base} in {time.perf_counter() - t0:.0f} s")
    else:
        env = {**os.environ, "JIEDAO_HOME": str(folder / "home")}
        env.setdefault("JIEDAO_SECRET_KEY", "bench-secret")
        subprocess.run([sys.executable, "-c", BUILD, f"sqlite:///{tmp}", "full" if scale == "full" else "small"],
                       env=env, check=True)
        print(f"  demo year built in {time.perf_counter() - t0:.0f} s")
    if scale == "replicated":  # the small year 600 times: 200 copies in each of the three years
        copies = [(n, 364 * (n % 3)) for n in range(1, REPLICAS)]
    else:
        copies = [(n, days) for n, days in enumerate(SHIFTS, 1)]
    t0 = time.perf_counter()
    counts = _copy_years(tmp, copies)
    print(f"  copied in {time.perf_counter() - t0:.0f} s")
    print(f"  copied to three years: {counts}")
    tmp.rename(path)
    return path


def _median_ms(fn, n: int = 5) -> float:
    fn()  # warm
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _touch(path: Path, n: int) -> None:
    """Change ``n`` cases as a workflow action would: version + 1, a child row touched."""
    import sqlite3

    con = sqlite3.connect(path)
    ids = [r[0] for r in con.execute(f"SELECT id FROM cases_case ORDER BY (id * 7919) % 100003 LIMIT {n}")]
    q = ",".join(map(str, ids))
    con.execute(f"UPDATE cases_case SET version = version + 1 WHERE id IN ({q})")
    con.execute(f"UPDATE cases_assignment SET replied_at = strftime('%Y-%m-%d %H:%M:%f', replied_at, '+1 hours') "
                f"WHERE case_id IN ({q}) AND replied_at IS NOT NULL")
    con.commit()
    con.close()


def run(quick: bool = False) -> list[dict]:
    import tempfile

    path = bench_db(quick)
    scale = {"small": "small×3", "full": "full×3", "replicated": "small×600"}[_mode(quick)]
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("JIEDAO_SECRET_KEY", "bench-secret")
        work = Path(tmp) / "cockpit.sqlite"
        import shutil

        shutil.copy(path, work)  # the incremental step writes to it
        from jiedao.cockpit.metrics import DIMENSIONS, METRICS, Metrics
        from jiedao.db import Database

        db = Database(f"sqlite:///{work}")
        figs: list[dict] = []
        m = Metrics(db, path=Path(tmp) / "mirror.duckdb", refresh_seconds=1e9)
        t0 = time.perf_counter()
        m.refresh(force=True)
        full = time.perf_counter() - t0
        n_cases = m.summary(m.latest_period("year").previous().previous())["received"].denominator
        with m.mirror.cursor() as cur:
            total = cur.execute("SELECT COUNT(*) FROM cf").fetchall()[0][0]
            pairs = cur.execute("SELECT COUNT(*) FROM df").fetchall()[0][0]
        print(f"  [{scale}] mirror: {total:,} cases, {pairs:,} case×department rows; "
              f"full build {full:.1f} s {m.mirror.timings}")
        figs.append({"name": f"mirror full build ({scale}, {total:,} cases)", "value": round(full, 2),
                     "unit": "s", "target": None, "better": "lower"})
        t0 = time.perf_counter()
        m.refresh(force=True)
        figs.append({"name": f"mirror refresh, nothing changed ({scale})",
                     "value": round((time.perf_counter() - t0) * 1000, 1), "unit": "ms", "target": None,
                     "better": "lower"})
        _touch(work, 1000)
        t0 = time.perf_counter()
        changed = m.refresh(force=True)
        inc = time.perf_counter() - t0
        print(f"  [{scale}] incremental refresh: {changed} cases in {inc:.2f} s {m.mirror.timings}")
        figs.append({"name": f"mirror incremental refresh, 1,000 changed cases ({scale})",
                     "value": round(inc, 2), "unit": "s", "target": None, "better": "lower"})
        month = m.latest_period("month")
        year = m.latest_period("year")
        street = next(r.code for r in m.breakdown(month, "street", compare=False) if r.code)
        dept = m.ranking(month, "department")[0].code
        from jiedao.auth.scope import Principal

        street_leader = Principal(0, "bench", "街道领导", "leader", "street", street)
        dept_user = Principal(0, "bench", "部门", "handler", "department", dept)
        queries = {
            "summary (month, with 环比/同比)": lambda: m.summary(month),
            "summary (year, with 环比/同比)": lambda: m.summary(year),
            "summary (month, street leader)": lambda: m.summary(month, principal=street_leader),
            "summary (month, department user)": lambda: m.summary(month, principal=dept_user),
            **{f"breakdown by {by} (month, compare)": (lambda by=by: m.breakdown(month, by))
               for by in DIMENSIONS},
            "breakdown by grid (year, compare)": lambda: m.breakdown(year, "grid"),
            "trend (year by month)": lambda: m.trend(year, "month"),
            "trend (3 years by week)": lambda: m.trend(
                type(year)("year", year.last_year().last_year().start, year.end), "week"),
            "trend (month by day, one street)": lambda: m.trend(month, "day", filters={"street": street}),
            "ranking departments (month)": lambda: m.ranking(month, "department"),
            "ranking streets (month)": lambda: m.ranking(month, "street"),
            "case_ids close_ontime miss (year)": lambda: m.case_ids(year, "close_ontime", part="miss"),
            "case_ids received (month, limit 500)": lambda: m.case_ids(month, "received", limit=500),
        }
        worst = 0.0
        for name, fn in queries.items():
            ms = _median_ms(fn)
            worst = max(worst, ms)
            figs.append({"name": f"{name} ({scale})", "value": round(ms, 1), "unit": "ms", "target": 300.0,
                         "better": "lower"})
        figs.append({"name": f"slowest metric query ({scale})", "value": round(worst, 1), "unit": "ms",
                     "target": 300.0, "better": "lower"})
        print(f"  [{scale}] {n_cases:,} cases in the earliest year; metrics: {', '.join(METRICS)}")
        m.close()
        db.dispose()
    return figs


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
