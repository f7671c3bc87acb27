"""Cockpit pages' server time over three years of demo cases (about 900,000; target ≤ 1 s).

Uses the three-year database that ``bench/cockpit.py`` builds and caches under ``var/bench/``
(full scale, or small with ``--quick``; ``JIEDAO_BENCH_PAGES_DB=<file>`` uses that SQLite file). The app is served in this process and each page is
requested through Starlette's TestClient by a logged-in user (the real /login form): the time
is the whole server work — metrics queries, database reads and template rendering — without
a network. Each page: the median of 3 requests after one warm-up request (the first request
of the run also builds the DuckDB mirror; that build is reported on its own).
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

PASSWORD = "jiedao2026"
HTML = {"accept": "text/html"}


def _cockpit_bench():
    spec = importlib.util.spec_from_file_location("bench_cockpit_db", Path(__file__).parent / "cockpit.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _median_ms(client, url: str, n: int = 3) -> float:
    r = client.get(url, headers=HTML)
    assert r.status_code == 200, (url, r.status_code, r.text[:300])
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.get(url, headers=HTML)
        times.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, (url, r.status_code)
    return statistics.median(times)


def run(quick: bool = False) -> list[dict]:
    import shutil
    import tempfile

    cb = _cockpit_bench()
    mode = cb._mode(quick) if hasattr(cb, "_mode") else ("small" if quick else "full")
    scale = {"small": "small×3", "full": "full×3", "replicated": "small×600"}.get(mode, mode)
    given = os.environ.get("JIEDAO_BENCH_PAGES_DB")  # an already built database file
    path = Path(given) if given else cb.bench_db(quick)
    if given:
        scale = Path(given).stem
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("JIEDAO_SECRET_KEY", "bench-secret")
        os.environ["JIEDAO_HOME"] = tmp  # the mirror goes to a fresh folder
        from jiedao.config import get_settings

        get_settings.cache_clear()
        work = Path(tmp) / "pages.sqlite"
        shutil.copy(path, work)
        from fastapi.testclient import TestClient
        from sqlalchemy import select

        from jiedao.cases.models import Case
        from jiedao.cockpit.metrics import Metrics
        from jiedao.db import Database
        from jiedao.web.app import create_app

        db = Database(f"sqlite:///{work}")
        app = create_app(db)
        m = Metrics.for_database(db)
        t0 = time.perf_counter()
        m.refresh(force=True)
        build = time.perf_counter() - t0
        month = m.latest_period("month")
        with db.session() as s:
            grid, dept, matter = s.execute(
                select(Case.grid_code, Case.main_department_code, Case.matter_code)
                .where(Case.grid_code.is_not(None), Case.main_department_code.is_not(None),
                       Case.matter_code.is_not(None)).order_by(Case.id.desc()).limit(1)).one()
        street, community = grid[:9], grid[:12]

        def client(user: str) -> TestClient:
            c = TestClient(app)
            r = c.post("/login", data={"username": user, "password": PASSWORD, "next": "/"},
                       headers=HTML, follow_redirects=False)
            assert r.status_code == 303, (user, r.status_code)
            return c

        leader = client("leader01")
        street_leader = client("leader." + street[-3:])
        handler = client("handler." + dept.lower()) if not dept.startswith("JD") else None
        pages = {
            "home /cockpit (district leader, month)": (leader, "/cockpit"),
            "home /cockpit (district leader, year)": (leader, "/cockpit?grain=year"),
            "home /cockpit (street leader)": (street_leader, "/cockpit"),
            "rankings /cockpit/rankings": (leader, "/cockpit/rankings"),
            "street page": (leader, f"/cockpit/streets/{street}"),
            "community page": (leader, f"/cockpit/communities/{community}"),
            "grid page": (leader, f"/cockpit/grids/{grid}"),
            "department page": (leader, f"/cockpit/departments/{dept}"),
            "matter (category) page": (leader, f"/cockpit/categories/{matter}"),
            "channels page": (leader, "/cockpit/channels"),
            "map values /cockpit/map.json (satisfied)": (leader, "/cockpit/map.json?metric=satisfied"),
            "drill-down close_ontime miss (year)": (
                leader, f"/cockpit/cases?metric=close_ontime&part=miss&period={month.key[:4]}"),
            "drill-down received (month, page 20)": (
                leader, f"/cockpit/cases?metric=received&period={month.key}&page=20"),
            "XLSX export of the streets table": (leader, "/cockpit?format=xlsx&table=by_street"),
            "data hub overview /cockpit/hub": (leader, "/cockpit/hub"),
        }
        if handler is not None:
            pages["home /cockpit (department handler)"] = (handler, "/cockpit")
        figs = [{"name": f"pages: mirror build before the first page ({scale})",
                 "value": round(build, 2), "unit": "s", "target": None, "better": "lower"}]
        worst = 0.0
        for name, (c, url) in pages.items():
            ms = _median_ms(c, url)
            worst = max(worst, ms)
            print(f"  [{scale}] {name}: {ms:.0f} ms  ({url})")
            figs.append({"name": f"{name} ({scale})", "value": round(ms, 1), "unit": "ms",
                         "target": 1000.0, "better": "lower"})
        figs.append({"name": f"slowest cockpit page ({scale})", "value": round(worst, 1), "unit": "ms",
                     "target": 1000.0, "better": "lower"})
        m.close()
        Metrics._instances.pop(db.url, None)
        db.dispose()
    return figs


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
