"""Hub loads on the demo ledgers: a full load of every registered source, then an
incremental load after 1 % of the rows of every ledger changed (target ≤ 30 s), with the
peak memory of each load process (the loader plus its largest standardising worker).

A child process builds the demo district (without the appeals and hub stages) in a temporary
SQLite database — or PostgreSQL when JIEDAO_BENCH_PG_URL is set — and writes the six demo
ledgers (jiedao.demo.ledgers). Each load then runs in its own child process so its time and
peak RSS are its own. ``quick`` uses the small district.
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
from jiedao.demo.ledgers import write_ledgers
from jiedao.demo.pipeline import generate
build.DB_STAGES = [s for s in build.DB_STAGES if s[0] not in ("appeals", "hub")]
db = Database(sys.argv[1]); db.upgrade()
build.build_demo(db, small=sys.argv[2] == "small", progress=False)
world = generate(sys.argv[2])
write_ledgers(world, sys.argv[3])
from jiedao.hub.sources import sync_sources
with db.session() as s:
    sync_sources(s)
"""

LOAD = r"""
import json, resource, sys, time
from sqlalchemy import select
from jiedao.db import Database
from jiedao.hub.loads import load_source, run_summary
from jiedao.hub.models import Source
from jiedao.hub.standardise import Standardiser
db = Database(sys.argv[1])
t0 = time.perf_counter()
with db.session() as s:
    st = Standardiser.from_session(s)
    codes = list(s.scalars(select(Source.code).order_by(Source.code)))
t_std = time.perf_counter() - t0
runs = []
for code in codes:
    with db.session() as s:
        runs.append(run_summary(load_source(s, code, data_dir=sys.argv[2], standardiser=st)))
seconds = time.perf_counter() - t0
rss = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
       + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024  # loader + largest worker
print(json.dumps({"seconds": seconds, "resolver_seconds": t_std, "rss_mb": rss, "runs": runs}))
"""

CHANGE = r"""
import csv, json, random, sys
from pathlib import Path
from openpyxl import Workbook, load_workbook
d = Path(sys.argv[1]); rate = float(sys.argv[2]); r = random.Random(7)
def touch(v):
    return (str(v) if v is not None else "") + " "   # a trailing space: content changes
for p in d.glob("*.csv"):
    if p.name.startswith("truth"):
        continue
    enc = "gb18030" if p.name.startswith("scjg") else "utf-8"
    with p.open(encoding=enc, newline="") as f:
        rows = list(csv.reader(f))
    for row in rows[1:]:
        if r.random() < rate:
            row[-1] = touch(row[-1])
    with p.open("w", encoding=enc, newline="") as f:
        csv.writer(f).writerows(rows)
for p in d.glob("*.jsonl"):
    lines = p.read_text(encoding="utf-8").splitlines()
    out = []
    for line in lines:
        obj = json.loads(line)
        if r.random() < rate:
            k = list(obj)[-1]; obj[k] = touch(obj[k])
        out.append(json.dumps(obj, ensure_ascii=False))
    p.write_text("\n".join(out) + "\n", encoding="utf-8")
for p in d.glob("*.xlsx"):
    wb = load_workbook(p, read_only=True)
    new = Workbook(write_only=True)
    for ws in wb.worksheets:
        w2 = new.create_sheet(ws.title)
        for i, row in enumerate(ws.iter_rows(values_only=True)):
            row = list(row)
            if i and row and r.random() < rate:
                row[-1] = touch(row[-1])
            w2.append(row)
    wb.close(); new.save(p)
"""


def _child(code: str, args: list[str], env: dict) -> str:
    res = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                         text=True)
    if res.returncode:
        raise RuntimeError(res.stderr[-3000:])
    return res.stdout


def _load(url: str, ledgers: str, env: dict) -> dict:
    return json.loads(_child(LOAD, [url, ledgers], env).strip().splitlines()[-1])


def _measure(url: str, scale: str, tmp: str, env: dict, label: str) -> list[dict]:
    ledgers = os.path.join(tmp, f"ledgers-{label}")
    _child(BUILD, [url, scale, ledgers], env)
    full = _load(url, ledgers, env)
    _child(CHANGE, [ledgers, "0.01"], env)
    incr = _load(url, ledgers, env)
    rows = sum(r["read"] for r in full["runs"])
    changed = sum(r["changed"] for r in incr["runs"])
    for name, res in (("full", full), ("incremental", incr)):
        print(f"  [{label}] {name}: {res['seconds']:.1f} s (resolver {res['resolver_seconds']:.1f} s), "
              f"peak RSS {res['rss_mb']:.0f} MB")
        for r in res["runs"]:
            print(f"    {r['source']:<14} read {r['read']:>7,} new {r['new']:>7,} changed {r['changed']:>6,} "
                  f"unchanged {r['unchanged']:>7,} vanished {r['vanished']:>5,} rejected {r['rejected']:>6,} "
                  f"{r['seconds']:.1f}s")
    big = scale == "full"
    return [
        {"name": f"hub full load, {rows:,} rows ({scale}, {label})", "value": round(full["seconds"], 1),
         "unit": "s", "target": None, "better": "lower"},
        {"name": f"hub full load throughput ({scale}, {label})",
         "value": round(rows / full["seconds"]), "unit": "rows/s", "target": None, "better": "higher"},
        {"name": f"hub full load peak RSS ({scale}, {label})", "value": round(full["rss_mb"]),
         "unit": "MB", "target": 4096.0 if big else None, "better": "lower"},
        {"name": f"hub incremental load, {changed:,} changed = "
                 f"{changed / max(rows, 1):.1%} ({scale}, {label})",
         "value": round(incr["seconds"], 1), "unit": "s", "target": 30.0 if big else None,
         "better": "lower"},
        {"name": f"hub incremental load peak RSS ({scale}, {label})", "value": round(incr["rss_mb"]),
         "unit": "MB", "target": 4096.0 if big else None, "better": "lower"},
    ]


def run(quick: bool = False) -> list[dict]:
    scale = "small" if quick else "full"
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "JIEDAO_HOME": tmp, "TMPDIR": tmp}
        env.setdefault("JIEDAO_SECRET_KEY", "bench-secret")
        results += _measure(f"sqlite:///{tmp}/hub.sqlite", scale, tmp, env, "SQLite")
        pg = os.environ.get("JIEDAO_BENCH_PG_URL")
        if pg:
            import sqlalchemy as sa
            from sqlalchemy.engine import make_url

            base = make_url(pg).set(drivername="postgresql+psycopg")
            name = f"jiedao_bench_hub_{os.getpid()}"
            admin = sa.create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
            with admin.connect() as c:
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
                c.execute(sa.text(f'CREATE DATABASE "{name}"'))
            try:
                url = base.set(database=name).render_as_string(hide_password=False)
                results += _measure(url, scale, tmp, env, "PostgreSQL")
            finally:
                with admin.connect() as c:
                    c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
    return results


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
