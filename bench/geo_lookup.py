"""Grid lookup time per point on the demo district (GridIndex.grid_at), plus address
resolution time per text (AddressResolver.resolve) on the demo's standard addresses."""

from __future__ import annotations

import random
import statistics
import time


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run(quick: bool = False) -> list[dict]:
    from sqlalchemy import func, select

    from jiedao.db import get_database
    from jiedao.geo.locate import AddressResolver, GridIndex
    from jiedao.geo.models import Address, Grid

    db = get_database()
    with db.session() as s:
        if not s.scalar(select(func.count()).select_from(Grid)):
            raise RuntimeError("数据库中没有网格，请先运行 jiedao demo")
        t0 = time.perf_counter()
        index = GridIndex.from_session(s)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        resolver = AddressResolver(s)
        load_s = time.perf_counter() - t0
        fulls = list(s.scalars(select(Address.full).order_by(Address.code)))

    rng = random.Random(11)
    minx, miny, maxx, maxy = (min(g.bounds[0] for g in index.geoms), min(g.bounds[1] for g in index.geoms),
                              max(g.bounds[2] for g in index.geoms), max(g.bounds[3] for g in index.geoms))
    n = 2_000 if quick else 20_000
    points = [(rng.uniform(minx, maxx), rng.uniform(miny, maxy)) for _ in range(n)]
    for lon, lat in points[:200]:  # warm up
        index.grid_at(lon, lat)
    times, hits = [], 0
    clock = time.perf_counter_ns
    for lon, lat in points:
        t = clock()
        code = index.grid_at(lon, lat)
        times.append((clock() - t) / 1000)
        hits += code is not None

    texts = rng.sample(fulls, min(len(fulls), 500 if quick else 3000))
    rtimes = []
    for text in texts:
        t = clock()
        resolver.resolve(text[6:])  # without city+district: the exact-text shortcut is skipped
        rtimes.append((clock() - t) / 1000)
    return [
        {"name": f"grid_at mean ({len(index)} grids, {n} random points, {hits / n:.0%} inside)",
         "value": round(statistics.fmean(times), 2), "unit": "µs/point", "target": 100.0,
         "better": "lower"},
        {"name": "grid_at p99", "value": round(_percentile(times, 0.99), 2), "unit": "µs/point",
         "target": 100.0, "better": "lower"},
        {"name": "GridIndex build", "value": round(build_s, 3), "unit": "s", "target": None,
         "better": "lower"},
        {"name": "AddressResolver load", "value": round(load_s, 3), "unit": "s", "target": None,
         "better": "lower"},
        {"name": f"resolve mean ({len(texts)} standard addresses)",
         "value": round(statistics.fmean(rtimes), 1), "unit": "µs/text", "target": None,
         "better": "lower"},
        {"name": "resolve p99", "value": round(_percentile(rtimes, 0.99), 1), "unit": "µs/text",
         "target": None, "better": "lower"},
    ]


if __name__ == "__main__":
    for fig in run():
        print(fig)
