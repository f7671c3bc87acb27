"""Hub linkage and golden records on the six demo ledgers: seconds and peak memory of
linking (jiedao.hub.link.run_linkage) and building golden records (jiedao.hub.golden), and
their quality against the generator's truth (pairwise precision / recall, golden fields
correct).

A child process builds the demo district (without the appeals and hub stages) in a
temporary SQLite database, writes the ledgers (jiedao.demo.ledgers) and loads them (CORE's
loads); the linkage + golden step then runs in its own child process so its time and peak
RSS are its own. ``quick`` uses the small district. Set JIEDAO_BENCH_LEDGERS to a folder of
already written ledgers to skip writing them. Figures are printed, never asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

BUILD = r"""
import json, sys, time
from jiedao.db import Database
from jiedao.demo import build
from jiedao.demo.ledgers import write_ledgers
from jiedao.demo.pipeline import generate
build.DB_STAGES = [s for s in build.DB_STAGES if s[0] not in ("appeals", "hub")]
db = Database(sys.argv[1]); db.upgrade()
build.build_demo(db, small=sys.argv[2] == "small", progress=False)
if sys.argv[4] == "write":
    write_ledgers(generate(sys.argv[2]), sys.argv[3])
from jiedao.hub.sources import sync_sources
from jiedao.hub.loads import load_source
from jiedao.demo.hub import LOAD_ORDER
t0 = time.perf_counter()
n = 0
with db.session() as s:
    sync_sources(s)
for code in LOAD_ORDER:
    with db.session() as s:
        n += load_source(s, code, data_dir=sys.argv[3]).n_read
print(json.dumps({"rows": n, "load_seconds": time.perf_counter() - t0}))
"""

LINK = r"""
import json, resource, sys, time
from jiedao.db import Database
from jiedao.hub.link import run_linkage
from jiedao.hub.golden import build_golden
from jiedao.demo.hub import evaluate
db = Database(sys.argv[1])
out = {}
t0 = time.perf_counter()
for et in ("enterprise", "building"):
    with db.session() as s:
        t = time.perf_counter()
        summary = run_linkage(s, et, backend=sys.argv[3])
        out[f"link.{et}"] = time.perf_counter() - t
        out[f"summary.{et}"] = {k: summary[k] for k in ("records", "entities", "review_enqueued",
                                                         "new_entities", "link_stats")}
    with db.session() as s:
        t = time.perf_counter()
        g = build_golden(s, et)
        out[f"golden.{et}"] = time.perf_counter() - t
        out[f"golden_summary.{et}"] = g
out["seconds"] = time.perf_counter() - t0
out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
with db.session() as s:
    out["eval"] = evaluate(s, sys.argv[2])
print(json.dumps(out, default=str))
"""


def _child(code: str, args: list[str], env: dict) -> str:
    res = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                         text=True)
    if res.returncode:
        raise RuntimeError(res.stderr[-3000:])
    return res.stdout


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def run(quick: bool = False) -> list[dict]:
    scale = "small" if quick else "full"
    big = not quick
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "JIEDAO_HOME": tmp, "TMPDIR": tmp}
        env.setdefault("JIEDAO_SECRET_KEY", "bench-secret")
        url = f"sqlite:///{tmp}/hub.sqlite"
        ledgers = os.environ.get("JIEDAO_BENCH_LEDGERS") or os.path.join(tmp, "ledgers")
        mode = "reuse" if os.environ.get("JIEDAO_BENCH_LEDGERS") else "write"
        loaded = _last_json(_child(BUILD, [url, scale, ledgers, mode], env))
        res = _last_json(_child(LINK, [url, ledgers, "duckdb"], env))
    ev = res["eval"]
    rows = loaded["rows"]
    link_s = res["link.enterprise"] + res["link.building"]
    golden_s = res["golden.enterprise"] + res["golden.building"]
    print(f"  loaded {rows:,} rows in {loaded['load_seconds']:.1f} s")
    for et in ("enterprise", "building"):
        sm = res[f"summary.{et}"]
        print(f"  {et}: {sm['records']:,} records → {sm['entities']:,} entities, link "
              f"{res[f'link.{et}']:.1f} s, golden {res[f'golden.{et}']:.1f} s, review "
              f"{sm['review_enqueued']:,}; {sm['link_stats']}")
    print(f"  evaluation: {ev}")
    out = [
        {"name": f"hub link + golden, {rows:,} records ({scale})",
         "value": round(res["seconds"], 1), "unit": "s", "target": None, "better": "lower"},
        {"name": f"hub fuse = load + link + golden ({scale})",
         "value": round(loaded["load_seconds"] + res["seconds"], 1), "unit": "s",
         "target": 300.0 if big else None, "better": "lower"},
        {"name": f"hub link ({scale})", "value": round(link_s, 1), "unit": "s", "target": None,
         "better": "lower"},
        {"name": f"hub golden ({scale})", "value": round(golden_s, 1), "unit": "s",
         "target": None, "better": "lower"},
        {"name": f"hub link + golden peak RSS ({scale})", "value": round(res["rss_mb"]),
         "unit": "MB", "target": 4096.0 if big else None, "better": "lower"},
        {"name": f"hub link pairwise precision ({scale})", "value": ev.get("precision"),
         "unit": "", "target": 0.99, "better": "higher"},
        {"name": f"hub link pairwise recall ({scale})", "value": ev.get("recall"),
         "unit": "", "target": 0.97, "better": "higher"},
    ]
    if ev.get("golden_correct") is not None:
        out.append({"name": f"hub golden fields correct ({scale})",
                    "value": ev["golden_correct"], "unit": "", "target": 0.98,
                    "better": "higher"})
    return out


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
