"""Fusing the six demo ledgers end to end: generate → load → link → golden.

Three child processes (so each peak RSS is that step's own):

1. ``prepare``: the demo district without appeals (geography, catalogue, users) in a fresh
   SQLite file, and the full ledgers (~600,000 rows) written by the generator;
2. ``fuse``: register sources, load every ledger, link, build golden records — seconds and
   peak memory (targets ≤ 300 s, ≤ 4 GB), and the result against the generator's truth
   (pairwise precision ≥ 0.99, recall ≥ 0.97, golden fields ≥ 98 %);
3. ``incremental``: 1 % of the rows of the three largest ledgers changed, then load
   (target ≤ 30 s) and link + golden again.

``prepare_hub(tmp, scale)`` / ``fuse_hub`` are reused by ``bench/hub_archive.py``.
Quick mode uses the small district.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import csv, json, os, resource, sys, time
mode, url, data_dir, scale = sys.argv[1:5]
from jiedao.db import Database
db = Database(url)
out = {}
def cpu():  # user + sys of this process and its finished children (standardising workers)
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime
if mode == "prepare":
    db.upgrade()
    from jiedao.demo import build
    build.DB_STAGES = [st for st in build.DB_STAGES if st[0] in ("catalog", "users")]
    t0 = time.perf_counter()
    build.build_demo(db, small=scale == "small", progress=False)
    out["district_seconds"] = time.perf_counter() - t0
    from jiedao.demo.ledgers import write_ledgers
    from jiedao.demo.pipeline import generate
    t0 = time.perf_counter()
    s = write_ledgers(generate(scale), data_dir)
    out["generate_seconds"] = time.perf_counter() - t0
    out["rows"] = s.rows
    out["records"] = s.total
elif mode == "fuse":
    from jiedao.demo.hub import evaluate, fuse
    tim = {}
    t0, c0 = time.perf_counter(), cpu()
    with db.session() as ses:
        counts = fuse(ses, data_dir, timings=tim, guard=True)
    out["fuse_seconds"] = time.perf_counter() - t0
    out["fuse_cpu"] = cpu() - c0
    out["loadavg"] = os.getloadavg()[0]
    out["timings"] = tim
    out["errors"] = counts.get("hub_errors", [])
    if not out["errors"]:
        with db.session() as ses:
            out["evaluation"] = evaluate(ses, data_dir)
elif mode == "incremental":
    from jiedao.demo.hub import fuse
    from jiedao.demo.ledgers import SOURCE_FILES
    changed = 0
    for code, enc in (("scjg_registry", "gbk"), ("sw_taxpayers", "utf-8")):
        p = os.path.join(data_dir, SOURCE_FILES[code])
        with open(p, encoding=enc, newline="") as f:
            rows = list(csv.reader(f))
        col = rows[0].index("联系电话")
        for i in range(1, len(rows), 100):
            rows[i][col] = "027-6" + f"{i % 10000000:07d}"
            changed += 1
        with open(p, "w", encoding=enc, newline="") as f:
            csv.writer(f).writerows(rows)
    p = os.path.join(data_dir, SOURCE_FILES["rsj_employers"])
    with open(p, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for i in range(0, len(lines), 100):
        rec = json.loads(lines[i]); rec["联系电话"] = "027-6" + f"{i % 10000000:07d}"
        lines[i] = json.dumps(rec, ensure_ascii=False); changed += 1
    with open(p, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    out["changed_rows"] = changed
    from jiedao.hub.loads import load_source
    t0, c0 = time.perf_counter(), cpu()
    n_changed = 0
    for code in ("scjg_registry", "sw_taxpayers", "rsj_employers"):
        with db.session() as ses:
            run = load_source(ses, code, data_dir=data_dir)
            n_changed += run.n_changed
    out["load_seconds"] = time.perf_counter() - t0
    out["load_cpu"] = cpu() - c0
    out["n_changed"] = n_changed
    tim = {}
    t0, c0 = time.perf_counter(), cpu()
    with db.session() as ses:  # every ledger again (unchanged ones only hashed), saved model
        counts = fuse(ses, data_dir, timings=tim, guard=True, retrain=False)
    out["refuse_seconds"] = time.perf_counter() - t0
    out["refuse_cpu"] = cpu() - c0
    out["loadavg"] = os.getloadavg()[0]
    out["timings"] = tim
    from jiedao.hub.link import latest_model
    with db.session() as ses:  # how much of the record graph the incremental re-link re-clustered
        m = latest_model(ses, "enterprise").metrics
        out["relinked_records"] = m.get("relinked_records")
        out["relink_incremental"] = m.get("incremental")
out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out, ensure_ascii=False, default=str))
"""


def child(mode: str, url: str, data_dir: str, scale: str, home: str) -> dict:
    """Run one step in a child process; returns its JSON summary."""
    env = {**os.environ, "JIEDAO_HOME": home}
    env.setdefault("JIEDAO_SECRET_KEY", "bench-secret")
    r = subprocess.run([sys.executable, "-c", CHILD, mode, url, data_dir, scale], env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def prepare_hub(tmp: str, scale: str) -> tuple[str, str, dict, dict]:
    """District + ledgers + fused hub in ``tmp``; returns (url, data_dir, prepare, fuse)."""
    url = f"sqlite:///{tmp}/hub.sqlite"
    data_dir = str(Path(tmp) / "ledgers")
    prep = child("prepare", url, data_dir, scale, tmp)
    fused = child("fuse", url, data_dir, scale, tmp)
    return url, data_dir, prep, fused


def run(quick: bool = False) -> list[dict]:
    scale = "small" if quick else "full"
    with tempfile.TemporaryDirectory() as tmp:
        url, data_dir, prep, fused = prepare_hub(tmp, scale)
        inc = child("incremental", url, data_dir, scale, tmp)
    print(f"  ledgers: {prep['rows']} ({prep['records']:,} rows)")
    print(f"  fuse steps: {fused['timings']}")
    print(f"  incremental re-fuse steps: {inc['timings']} (re-link incremental: "
          f"{inc.get('relink_incremental')})")
    if fused.get("errors"):
        print(f"  errors: {fused['errors']}")
    out = [
        {"name": "records", "value": float(prep["records"]), "unit": "rows", "target": None,
         "better": "higher"},
        {"name": "generate ledgers", "value": round(prep["generate_seconds"], 1), "unit": "s",
         "target": None, "better": "lower"},
        {"name": "fuse (load + link + golden)", "value": round(fused["fuse_seconds"], 1), "unit": "s",
         "target": 300.0, "better": "lower"},
        {"name": "fuse CPU time (user+sys, incl. workers)", "value": round(fused["fuse_cpu"], 1),
         "unit": "s", "target": None, "better": "lower"},
        {"name": "load average during fuse (1 min, at end)", "value": round(fused["loadavg"], 1),
         "unit": "", "target": None, "better": "lower"},
        {"name": "fuse peak memory", "value": round(fused["rss_mb"], 1), "unit": "MB",
         "target": 4096.0, "better": "lower"},
        {"name": "incremental load (1% changed)", "value": round(inc["load_seconds"], 1), "unit": "s",
         "target": 30.0, "better": "lower"},
        {"name": "incremental load CPU time", "value": round(inc["load_cpu"], 1), "unit": "s",
         "target": None, "better": "lower"},
        {"name": "incremental rows changed", "value": float(inc["n_changed"]), "unit": "rows",
         "target": None, "better": "higher"},
        {"name": "incremental re-fuse (load + link + golden)", "value": round(inc["refuse_seconds"], 1),
         "unit": "s", "target": None, "better": "lower"},
        {"name": "incremental re-fuse CPU time", "value": round(inc["refuse_cpu"], 1), "unit": "s",
         "target": None, "better": "lower"},
        {"name": "load average during re-fuse (1 min, at end)", "value": round(inc["loadavg"], 1),
         "unit": "", "target": None, "better": "lower"},
        {"name": "records re-linked by the incremental re-link (enterprise)",
         "value": float(inc.get("relinked_records") or 0), "unit": "rows", "target": None,
         "better": "lower"},
    ]
    ev = fused.get("evaluation")
    if ev:
        out += [
            {"name": "pairwise precision", "value": ev["precision"], "unit": "", "target": 0.99,
             "better": "higher"},
            {"name": "pairwise recall", "value": ev["recall"], "unit": "", "target": 0.97,
             "better": "higher"},
            {"name": "golden fields correct", "value": ev["golden_correct"] or 0.0, "unit": "",
             "target": 0.98, "better": "higher"},
        ]
        print(f"  golden fields: {ev.get('golden_fields')}")
    return out
