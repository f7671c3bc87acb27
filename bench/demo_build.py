"""Demo district build: seconds and peak memory of a full build into a fresh SQLite file,
and the time to reuse it (what a second `make demo` pays).

Runs the build in a child process so that the peak RSS is the build's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, os, resource, sys, time
from jiedao.db import Database
from jiedao.demo.build import build_demo, ensure_demo
db = Database(sys.argv[1]); db.upgrade()
r = build_demo(db, small=sys.argv[2] == "small", progress=False)
t0 = time.perf_counter()
again = ensure_demo(db, small=sys.argv[2] == "small", progress=False)
reuse = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": r["seconds"], "reuse": reuse, "reused": again["reused"],
                  "rss_mb": rss, "counts": r["counts"], "timings": r["timings"]}))
"""


def run(quick: bool = False) -> list[dict]:
    scale = "small" if quick else "full"
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "JIEDAO_HOME": tmp}
        env.setdefault("JIEDAO_SECRET_KEY", "bench-secret")
        url = f"sqlite:///{tmp}/demo.sqlite"
        out = subprocess.run([sys.executable, "-c", CHILD, url, scale], env=env, check=True,
                             capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    print(f"  counts: {r['counts']}")
    return [
        {"name": f"demo build ({scale}, SQLite)", "value": r["seconds"], "unit": "s",
         "target": 180.0, "better": "lower"},
        {"name": f"demo build peak RSS ({scale})", "value": r["rss_mb"], "unit": "MB",
         "target": None, "better": "lower"},
        {"name": "demo reuse (fingerprint match)", "value": r["reuse"], "unit": "s",
         "target": 5.0, "better": "lower"},
    ]


if __name__ == "__main__":
    for fig in run(quick="--quick" in sys.argv):
        print(fig)
