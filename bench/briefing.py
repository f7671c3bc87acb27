"""Monthly briefing (月度分析报告): build + render (HTML, DOCX, PDF) of the latest month on the
three-year database that bench/cockpit.py builds and caches under var/bench/ (``--quick``: its
small variant). Target: the whole briefing ≤ 30 s. The DuckDB mirror sync is timed apart (the
first query of a process syncs it; pages and the CLI reuse it afterwards)."""

from __future__ import annotations

import importlib.util
import os
import tempfile
import time
from pathlib import Path


def _cockpit_bench():
    spec = importlib.util.spec_from_file_location("bench_cockpit", Path(__file__).with_name("cockpit.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(quick: bool = False) -> list[dict]:
    path = Path(os.environ.get("JIEDAO_BENCH_BRIEFING_DB") or _cockpit_bench().bench_db(quick))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("JIEDAO_SECRET_KEY", "bench-secret")
        os.environ["JIEDAO_HOME"] = tmp
        from jiedao.cockpit import briefing as br
        from jiedao.cockpit.metrics import Metrics
        from jiedao.db import Database

        db = Database(f"sqlite:///{path}")
        m = Metrics(db, refresh_seconds=10**9)
        t0 = time.perf_counter()
        m.refresh(force=True)
        sync = time.perf_counter() - t0
        period = m.latest_period("month")
        t0 = time.perf_counter()
        b = br.build_briefing(db, period, metrics=m)
        build = time.perf_counter() - t0
        times = {}
        for fmt in ("html", "docx", "pdf"):
            t = time.perf_counter()
            try:
                br.render(b, fmt)
            except br.PdfUnavailable:
                continue
            times[fmt] = time.perf_counter() - t
        total = build + sum(times.values())
        print(f"  {period.label}：受理 {br.fmt_count(b.summary['received'].value)} 件；镜像同步 {sync:.1f} 秒，"
              f"生成 {build:.1f} 秒，" + "，".join(f"{k} {v:.1f} 秒" for k, v in times.items()))
        m.close()
    figs = [{"name": "briefing mirror sync", "value": round(sync, 2), "unit": "s", "target": None, "better": "lower"},
            {"name": "briefing build", "value": round(build, 2), "unit": "s", "target": None, "better": "lower"}]
    figs += [{"name": f"briefing render {k}", "value": round(v, 2), "unit": "s", "target": None, "better": "lower"}
             for k, v in times.items()]
    figs.append({"name": "monthly briefing (build + html + docx + pdf)", "value": round(total, 2), "unit": "s",
                 "target": 30, "better": "lower"})
    return figs
