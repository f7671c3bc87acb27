"""Replay of the demo year (about 294,000 appeals) through the whole case pipeline: seconds,
cases/s and peak memory against the targets (≤ 5 minutes, ≤ 2 GB), on SQLite and — when
JIEDAO_BENCH_PG_URL points at a PostgreSQL server — on PostgreSQL too.

Each database gets the district first (``build_demo`` with only the database stages the replay
needs — catalogue and users; no appeals, warnings or hub ledgers — in a child process), then a
second child process runs only ``replay_year`` (generation, training on the 80 % split,
analysis, simulated handling, writing) so that its time and peak RSS (its own plus its largest
worker's) are the replay's. Its CPU time (user + sys of the process and its workers, and of
the PostgreSQL backend serving it when the server runs on this machine — not counting parallel
index-build workers) and the load average are printed next to the wall time. The resulting 按时办结率 and 满意率 are read back from the
database and printed as a sanity check, with the held-out analysis metrics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

BUILD = r"""
import sys
from jiedao.db import Database
from jiedao.demo import build
build.DB_STAGES = [s for s in build.DB_STAGES if s[0] in ("catalog", "users")]  # what the replay needs
db = Database(sys.argv[1]); db.upgrade()
build.build_demo(db, small=sys.argv[2] == "small", progress=False)
"""

REPLAY = r"""
import json, os, resource, sys, time
import sqlalchemy as sa
from jiedao.db import Database
from jiedao.cases.replay import replay_year, rates_from_db

def server_cpu(pid):  # CPU seconds of the PostgreSQL backend serving us, when it runs on this machine
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, TypeError):
        return None

db = Database(sys.argv[1])
t0, c0 = time.perf_counter(), os.times()
with db.session() as s:
    conn = s.connection()
    pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar() if conn.dialect.name == "postgresql" else None
    b0 = server_cpu(pid)
    r = replay_year(s, scale=sys.argv[2])
    b1 = server_cpu(pid)
seconds = time.perf_counter() - t0  # including the commit
c1 = os.times()
with db.session() as s:
    rates = rates_from_db(s)
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest worker
cpu = {"main": round(c1.user + c1.system - c0.user - c0.system, 1),
       "workers": round(c1.children_user + c1.children_system - c0.children_user - c0.children_system, 1),
       "server": None if b0 is None or b1 is None else round(b1 - b0, 1)}
print(json.dumps({"seconds": seconds, "appeals": r.appeals, "rss_mb": own + worker,  # shared pages counted twice
                  "rss": {"main": round(own), "worker": round(worker)}, "cpu": cpu, "load": os.getloadavg(),
                  "rates": rates, "evaluation": r.evaluation, "timings": r.timings, "workers": r.workers,
                  "counts": r.counts}))
"""


def _child(code: str, args: list[str], env: dict) -> str:
    return subprocess.run([sys.executable, "-c", code, *args], env=env, check=True,
                          capture_output=True, text=True).stdout


def _measure(url: str, scale: str, env: dict, label: str) -> list[dict]:
    _child(BUILD, [url, scale], env)
    out = _child(REPLAY, [url, scale], env)
    r = json.loads(out.strip().splitlines()[-1])
    rt, ev = r["rates"], r["evaluation"]
    pct = lambda v: "—" if v is None else f"{v * 100:.1f}%"  # noqa: E731
    print(f"  [{label}] {r['appeals']:,} 件；按时办结率 {pct(rt['on_time_rate'])}，满意率 {pct(rt['satisfaction_rate'])}，"
          f"退单率 {pct(rt['return_rate'])}")
    print(f"  [{label}] 留出集：宏F1 {ev['macro_f1']}，正确网格率 {pct(ev['right_grid_rate'])}，"
          f"重复件精确率 {pct(ev['duplicate_precision'])}、召回率 {pct(ev['duplicate_recall'])}")
    server = "" if r["cpu"].get("server") is None else f" + {r['cpu']['server']} s server"
    print(f"  [{label}] {r['seconds']:.1f} s wall, CPU {r['cpu']['main']} s main + {r['cpu']['workers']} s workers"
          f"{server}, RSS {r['rss']['main']} + {r['rss']['worker']} MB, "
          f"load {' '.join(f'{x:.1f}' for x in r['load'])}")
    print(f"  [{label}] timings: {r['timings']}")
    print(f"  [{label}] workers: {r['workers']}")
    full = scale == "full"
    return [
        {"name": f"replay demo year ({scale}, {label})", "value": round(r["seconds"], 1), "unit": "s",
         "target": 300.0 if full else None, "better": "lower"},
        {"name": f"replay throughput ({scale}, {label})", "value": round(r["appeals"] / r["seconds"], 1),
         "unit": "cases/s", "target": 980.0 if full else None, "better": "higher"},
        {"name": f"replay CPU, main + workers ({scale}, {label})",
         "value": round(r["cpu"]["main"] + r["cpu"]["workers"], 1), "unit": "s", "target": None, "better": "lower"},
        {"name": f"replay peak RSS ({scale}, {label})", "value": round(r["rss_mb"], 1), "unit": "MB",
         "target": 2048.0 if full else None, "better": "lower"},
        {"name": f"replay 按时办结率 ({label})", "value": rt["on_time_rate"] or 0.0, "unit": "ratio",
         "target": None, "better": "higher"},
        {"name": f"replay 满意率 ({label})", "value": rt["satisfaction_rate"] or 0.0, "unit": "ratio",
         "target": None, "better": "higher"},
        {"name": f"held-out category macro-F1 ({label})", "value": ev["macro_f1"], "unit": "",
         "target": 0.95, "better": "higher"},
        {"name": f"held-out right grid (named places) ({label})", "value": ev["right_grid_rate"] or 0.0,
         "unit": "ratio", "target": 0.98, "better": "higher"},
        {"name": f"held-out duplicate precision ({label})", "value": ev["duplicate_precision"] or 0.0,
         "unit": "ratio", "target": 0.95, "better": "higher"},
        {"name": f"held-out duplicate recall ({label})", "value": ev["duplicate_recall"] or 0.0,
         "unit": "ratio", "target": 0.90, "better": "higher"},
    ]


def run(quick: bool = False) -> list[dict]:
    scale = "small" if quick else "full"
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "JIEDAO_HOME": tmp, "TMPDIR": tmp}
        env.setdefault("JIEDAO_SECRET_KEY", "bench-secret")
        results += _measure(f"sqlite:///{tmp}/replay.sqlite", scale, env, "SQLite")
        pg = os.environ.get("JIEDAO_BENCH_PG_URL")
        if pg:
            import sqlalchemy as sa
            from sqlalchemy.engine import make_url

            base = make_url(pg).set(drivername="postgresql+psycopg")
            name = f"jiedao_bench_replay_{os.getpid()}"
            admin = sa.create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
            with admin.connect() as c:
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
                c.execute(sa.text(f'CREATE DATABASE "{name}"'))
            try:
                url = base.set(database=name).render_as_string(hide_password=False)
                results += _measure(url, scale, env, "PostgreSQL")
            finally:
                with admin.connect() as c:
                    c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
    return results


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
