"""Archive pages and search on the fused full demo hub: latency of 一企一档 (page and API),
一楼一档 (office towers), and search by name (fuzzy), credit code and address, through the
real app (TestClient, logged in as the data steward). Target: p95 ≤ 200 ms each.

The hub is built with ``bench/hub_fuse.py``'s ``prepare_hub``; the search index is built
once on the first search (its build time is reported separately).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, random, resource, statistics, sys, time
url = sys.argv[1]
from fastapi.testclient import TestClient
from sqlalchemy import select
from jiedao.db import Database
from jiedao.geo.models import Address, Building
from jiedao.hub.models import Golden
from jiedao.hub.standardise import NameStandardiser
from jiedao.web.app import create_app
db = Database(url)
app = create_app(db)
c = TestClient(app)
c.get("/login")
r = c.post("/login", data={"username": "steward01", "password": "jiedao2026", "next": "/"},
           headers={"accept": "text/html"}, follow_redirects=False)
assert r.status_code == 303, r.text[:200]
rng = random.Random(5)
with db.session() as s:
    names = s.execute(select(Golden.entity_id, Golden.value).where(Golden.field == "name")).all()
    codes = [v for (v,) in s.execute(select(Golden.value).where(Golden.field == "credit_code"))]
    towers = list(s.scalars(select(Building.code).where(Building.kind == "office")))
    addrs = list(s.scalars(select(Address.full).where(Address.building_code.in_(towers))))
ent = rng.sample(names, min(60, len(names)))
ns = NameStandardiser()
qs = [ns.core(v)[: max(2, len(ns.core(v)) - 1)] for _, v in rng.sample(names, min(40, len(names)))]
cs = rng.sample(codes, min(40, len(codes)))
ads = rng.sample(addrs, min(20, len(addrs)))
bs = rng.sample(towers, min(20, len(towers)))
t0 = time.perf_counter(); c.get("/api/hub/search", params={"q": "科技"}); index_s = time.perf_counter() - t0
c.get("/api/hub/search", params={"q": addrs[0]})  # loads the address resolver once per app
def timed(urls, **kw):
    out = []
    for u, p in urls:
        t = time.perf_counter(); resp = c.get(u, params=p, **kw); out.append((time.perf_counter() - t) * 1000)
        assert resp.status_code == 200, (u, resp.status_code, resp.text[:200])
    out.sort()
    return {"p50": statistics.median(out), "p95": out[min(len(out) - 1, int(len(out) * 0.95))], "n": len(out)}
html = {"headers": {"accept": "text/html"}}
res = {
  "index_seconds": index_s,
  "enterprise_page": timed([(f"/hub/enterprises/{e}", None) for e, _ in ent], **html),
  "enterprise_api": timed([(f"/api/hub/enterprises/{e}", None) for e, _ in ent]),
  "building_page": timed([(f"/hub/buildings/{b}", None) for b in bs], **html),
  "search_name": timed([("/api/hub/search", {"q": q}) for q in qs]),
  "search_page": timed([("/hub/search", {"q": q}) for q in qs[:20]], **html),
  "search_code": timed([("/api/hub/search", {"q": q}) for q in cs]),
  "search_address": timed([("/api/hub/search", {"q": q}) for q in ads]),
  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}
print(json.dumps(res))
"""


def _hub_fuse():
    spec = importlib.util.spec_from_file_location("bench_hub_fuse", Path(__file__).with_name("hub_fuse.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(quick: bool = False) -> list[dict]:
    scale = "small" if quick else "full"
    with tempfile.TemporaryDirectory() as tmp:
        url, _data, prep, fused = _hub_fuse().prepare_hub(tmp, scale)
        print(f"  fuse: {fused['fuse_seconds']:.1f} s, peak {fused['rss_mb']:.0f} MB, steps {fused['timings']}")
        print(f"  errors: {fused.get('errors')}; evaluation: {fused.get('evaluation')}")
        env = {**os.environ, "JIEDAO_HOME": tmp}
        env.setdefault("JIEDAO_SECRET_KEY", "bench-secret")
        r = subprocess.run([sys.executable, "-c", CHILD, url], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-3000:])
        res = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"  hub of {prep['records']:,} ledger rows; search index built in {res['index_seconds']:.1f} s")
    out = []
    for key, label in (("enterprise_page", "一企一档 page"), ("enterprise_api", "一企一档 API"),
                       ("building_page", "一楼一档 page"), ("search_name", "search by name"),
                       ("search_page", "search page"), ("search_code", "search by credit code"),
                       ("search_address", "search by address")):
        out.append({"name": f"{label} p95", "value": round(res[key]["p95"], 1), "unit": "ms",
                    "target": 200.0, "better": "lower"})
        print(f"  {label}: p50 {res[key]['p50']:.1f} ms, p95 {res[key]['p95']:.1f} ms (n={res[key]['n']})")
    out.append({"name": "search index build", "value": round(res["index_seconds"], 2), "unit": "s",
                "target": None, "better": "lower"})
    out.append({"name": "app peak memory", "value": round(res["rss_mb"], 1), "unit": "MB",
                "target": None, "better": "lower"})
    return out
