"""Early-warning scan (jiedao.cockpit.warnings) time as of the end of the demo year.

Uses the cockpit benchmark's cached three-year database (``bench/cockpit.py``: the demo year
2025 replayed through the case engine, full scale ≈ 294,000 appeals a year, plus two shifted
copies; or its "replicated" variant, the small year copied 600 times, ≈ 300,000 cases a year);
``--quick`` uses the small-scale one. The scan looks back at most 98 days, so only
the last quarter of 2025 is read. Each step is timed (load, names, each detector), then the
findings are stored in a transaction that is rolled back (the cached database is not changed).
The first scan in a process also loads jieba's dictionary (included, as in ``jiedao cockpit scan``).
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path


def _cockpit_bench():
    spec = importlib.util.spec_from_file_location("bench_cockpit", Path(__file__).with_name("cockpit.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _database(quick: bool) -> Path:
    """The newest cached cockpit database of that scale (any version serves: the scan only
    needs a replayed year), else the cockpit benchmark builds one."""
    import os

    folder = Path(os.environ.get("JIEDAO_BENCH_DIR", "var/bench")).resolve()
    for scale in (("small",) if quick else ("full", "replicated")):
        cached = sorted(folder.glob(f"cockpit-{scale}-*.sqlite"), key=lambda p: p.stat().st_mtime)
        if cached:
            return cached[-1]
    return _cockpit_bench().bench_db(quick)


def run(quick: bool) -> list[dict]:
    from jiedao.cockpit import warnings as W
    from jiedao.db import Database

    path = _database(quick)
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    scale = path.name.split("-")[1]
    t: dict = {}
    with db.engine.connect() as conn:
        trans = conn.begin()
        from sqlalchemy.orm import Session

        s = Session(bind=conn)
        t0 = time.perf_counter()
        W.find(s)  # cold: imports scipy.stats, loads jieba's dictionary
        t_cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        as_of, findings = W.find(s, timings=t)
        t_find = time.perf_counter() - t0
        W.store(s, findings)
        t_total = time.perf_counter() - t0
        s.close()
        trans.rollback()
    db.dispose()
    counts = {k: sum(1 for f in findings if f.kind == k) for k in W.WARNING_KINDS}
    print(f"  as of {as_of}: {t['rows']:,} cases read; found {counts}")
    target = 10.0 if quick else 120.0
    out = [
        {"name": f"warnings scan, warm: find + store ({scale}, {t['rows']:,} cases in 98 days)", "value": round(t_total, 2),
         "unit": "s", "target": target, "better": "lower"},
        {"name": f"warnings find, warm ({scale})", "value": round(t_find, 2), "unit": "s",
         "target": target, "better": "lower"},
        {"name": f"warnings find, cold process ({scale})", "value": round(t_cold, 2), "unit": "s",
         "target": None, "better": "lower"},
    ]
    for step in ("load", "names", "spike", "recurring", "repeat_caller", "new_term"):
        if step in t:
            out.append({"name": f"warnings step {step} ({scale})", "value": round(t[step], 3),
                        "unit": "s", "target": None, "better": "lower"})
    for k, n in counts.items():
        out.append({"name": f"warnings found {k} ({scale})", "value": n, "unit": "",
                    "target": None, "better": "info"})
    return out
