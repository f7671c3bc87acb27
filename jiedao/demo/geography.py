"""Geography stages: the district outline with its river edge, then streets, communities
and grids as nested clipped Voronoi partitions, so every level exactly tiles its parent.

Generation works in a local planar frame in kilometres (x east, y north, origin at the
district centre); :func:`to_lonlat` maps to WGS-84 around lon 114.2, lat 30.55 and rounds
to 1e-6 degree (about 0.1 m). Geometries are stored as GeoJSON text.
"""

from __future__ import annotations

import math
import random

import numpy as np
import shapely
from shapely.geometry import LineString, MultiPoint, Point, Polygon
from shapely.geometry.base import BaseGeometry

from jiedao.demo import names
from jiedao.demo.pipeline import World

LON0, LAT0 = 114.2, 30.55
KM_PER_DEG_LON = 111.32 * math.cos(math.radians(LAT0))
KM_PER_DEG_LAT = 110.95
PRECISION = 1e-6


# ---------------------------------------------------------------- coordinates & GeoJSON
def km_to_lonlat_xy(x: float, y: float) -> tuple[float, float]:
    """One km-frame point to (lon, lat) rounded to 6 decimals."""
    return round(LON0 + x / KM_PER_DEG_LON, 6), round(LAT0 + y / KM_PER_DEG_LAT, 6)


def to_lonlat(geom: BaseGeometry) -> BaseGeometry:
    """Map a km-frame geometry to lon/lat on a 1e-6 degree precision grid."""
    scale = np.array([1 / KM_PER_DEG_LON, 1 / KM_PER_DEG_LAT])
    offset = np.array([LON0, LAT0])
    g = shapely.transform(geom, lambda c: c * scale + offset)
    return shapely.set_precision(g, PRECISION)


def fit_to_parent(children: list[BaseGeometry], parent: BaseGeometry) -> list[BaseGeometry]:
    """Make rounded children tile their rounded parent exactly (on the precision grid).

    Rounding each polygon on its own leaves hairline gaps and overhangs along long edges;
    overhangs are trimmed and every gap joins the child that touches it most.
    """
    out = [_polygonal(shapely.intersection(c, parent, grid_size=PRECISION)) for c in children]
    gaps = shapely.difference(parent, shapely.union_all(out, grid_size=PRECISION),
                              grid_size=PRECISION)
    for piece in _polygon_parts(gaps):
        probe = piece.buffer(3 * PRECISION)
        best = max(range(len(out)), key=lambda i: shapely.intersection(out[i], probe).area)
        out[best] = _polygonal(shapely.union(out[best], piece, grid_size=PRECISION))
    fixed = []
    for c in out:
        parts = _polygon_parts(c)
        fixed.append(parts[0] if len(parts) == 1 else c)
    return fixed


def _ring(coords) -> list:
    return [[round(x, 6), round(y, 6)] for x, y in coords]


def geojson(geom: BaseGeometry) -> str:
    """Compact GeoJSON text of a (Multi)Polygon, LineString or Point, 6 decimals."""
    gt = geom.geom_type
    if gt == "Polygon":
        body = '{"type":"Polygon","coordinates":' + _poly_coords(geom) + "}"
    elif gt == "MultiPolygon":
        inner = ",".join(_poly_coords(p) for p in geom.geoms)
        body = '{"type":"MultiPolygon","coordinates":[' + inner + "]}"
    elif gt == "LineString":
        body = '{"type":"LineString","coordinates":' + _dump(_ring(geom.coords)) + "}"
    elif gt == "Point":
        body = f'{{"type":"Point","coordinates":[{round(geom.x, 6)!r},{round(geom.y, 6)!r}]}}'
    else:
        raise ValueError(f"unsupported geometry {gt}")
    return body


def _dump(coords: list) -> str:
    return "[" + ",".join(f"[{x!r},{y!r}]" for x, y in coords) + "]"


def _poly_coords(p: Polygon) -> str:
    rings = [p.exterior, *p.interiors]
    return "[" + ",".join(_dump(_ring(r.coords)) for r in rings) + "]"


def centroid_of(geom: BaseGeometry) -> tuple[float, float]:
    """A centroid inside the geometry (representative point when the centroid falls outside)."""
    c = geom.centroid
    if not geom.contains(c):
        c = geom.representative_point()
    return round(c.x, 6), round(c.y, 6)


# ---------------------------------------------------------------- sampling & partition
def sample_points(poly: BaseGeometry, n: int, rng: random.Random) -> list[tuple[float, float]]:
    """``n`` uniformly random points strictly inside ``poly`` (rejection sampling)."""
    minx, miny, maxx, maxy = poly.bounds
    shapely.prepare(poly)
    out: list[tuple[float, float]] = []
    while len(out) < n:
        k = max(16, 2 * (n - len(out)))
        xs = np.array([minx + (maxx - minx) * rng.random() for _ in range(k)])
        ys = np.array([miny + (maxy - miny) * rng.random() for _ in range(k)])
        inside = shapely.contains_xy(poly, xs, ys)
        for x, y, ok in zip(xs.tolist(), ys.tolist(), inside.tolist(), strict=True):
            if ok and len(out) < n:
                out.append((x, y))
    return out


def _voronoi_cells(parent: Polygon, seeds: list[tuple[float, float]]) -> list[BaseGeometry]:
    vor = shapely.voronoi_polygons(MultiPoint(seeds), extend_to=parent, ordered=True)
    cells = list(vor.geoms)
    return [c.intersection(parent) for c in cells]


def _polygon_parts(g: BaseGeometry) -> list[Polygon]:
    if g.geom_type == "Polygon":
        return [g] if not g.is_empty else []
    return [p for p in getattr(g, "geoms", []) if p.geom_type == "Polygon" and not p.is_empty]


def partition(parent: Polygon, n: int, rng: random.Random, lloyd: int = 2) -> list[Polygon]:
    """Split ``parent`` into ``n`` Voronoi cells (Lloyd-relaxed) that exactly tile it.

    Cells that the parent's concave outline cuts into several pieces keep the piece with
    their seed; the other pieces join the neighbour they share the longest border with.
    Cells come back in reading order (north to south, then west to east).
    """
    if n <= 1:
        return [parent]
    seeds = sample_points(parent, n, rng)
    for _ in range(lloyd):
        new = []
        for cell, s in zip(_voronoi_cells(parent, seeds), seeds, strict=True):
            c = cell.centroid
            if cell.is_empty:
                new.append(s)
                continue
            if not cell.contains(c):
                c = cell.representative_point()
            new.append((c.x, c.y))
        seeds = new
    cells = _voronoi_cells(parent, seeds)
    mains: list[BaseGeometry] = []
    orphans: list[tuple[int, Polygon]] = []
    for i, (cell, s) in enumerate(zip(cells, seeds, strict=True)):
        parts = _polygon_parts(cell)
        if len(parts) <= 1:
            mains.append(parts[0] if parts else cell)
            continue
        sp = Point(s)
        parts.sort(key=lambda p: (not p.contains(sp), -p.area))
        mains.append(parts[0])
        orphans.extend((i, p) for p in parts[1:])
    pending = orphans
    for _ in range(5):
        if not pending:
            break
        left = []
        for owner, piece in pending:
            best, best_len = None, 0.0
            for j, m in enumerate(mains):
                if j == owner or not m.intersects(piece):
                    continue
                shared = piece.boundary.intersection(m.boundary).length
                if shared > best_len + 1e-12:
                    best, best_len = j, shared
            if best is None:
                left.append((owner, piece))
            else:
                mains[best] = _merge(mains[best], piece)
        pending = left
    for owner, piece in pending:  # isolated piece: keep it with its own cell
        mains[owner] = _merge(mains[owner], piece)
    band = math.sqrt(parent.area / n)
    order = sorted(
        range(n),
        key=lambda i: (-math.floor(mains[i].centroid.y / band), mains[i].centroid.x),
    )
    return [mains[i] for i in order]


def _polygonal(g: BaseGeometry) -> BaseGeometry:
    """Only the polygons of ``g`` (overlays may add dust lines or points)."""
    if g.geom_type in ("Polygon", "MultiPolygon"):
        return g
    parts = _polygon_parts(g)
    return parts[0] if len(parts) == 1 else shapely.multipolygons(parts)


def _merge(a: BaseGeometry, b: BaseGeometry) -> BaseGeometry:
    u = shapely.union(a, b, grid_size=None)
    parts = _polygon_parts(u)
    if len(parts) == 1:
        return parts[0]
    return u


def allocate(total: int, weights: list[float], minimum: int) -> list[int]:
    """Split ``total`` into integers ∝ ``weights``, each at least ``minimum`` (largest remainder)."""
    n = len(weights)
    rest = total - minimum * n
    if rest < 0:
        raise ValueError("total too small for the minimum")
    s = sum(weights)
    shares = [w / s * rest for w in weights]
    out = [minimum + int(math.floor(x)) for x in shares]
    short = total - sum(out)
    order = sorted(range(n), key=lambda i: (-(shares[i] - math.floor(shares[i])), i))
    for i in order[:short]:
        out[i] += 1
    return out


# ---------------------------------------------------------------- stages
def _blob(rng: random.Random, a: float, b: float, k: int = 96) -> Polygon:
    harmonics = [(m, rng.uniform(0.02, 0.07), rng.uniform(0, 2 * math.pi)) for m in range(2, 6)]
    pts = []
    for i in range(k):
        t = 2 * math.pi * i / k
        r = 1 + sum(amp * math.sin(m * t + ph) for m, amp, ph in harmonics)
        pts.append((a * r * math.cos(t), b * r * math.sin(t)))
    return Polygon(pts)


def stage_district(world: World, rng: random.Random) -> None:
    """The district outline: an irregular blob whose north-west side is cut by the river."""
    a, b = world.scale.size_km
    blob = _blob(rng, a, b)
    # River centre line: a gentle meander across the north-west of the blob.
    xs = np.linspace(-2 * a, 2 * a, 60)
    wiggle = [rng.uniform(0.05, 0.12) * b, rng.uniform(0.6, 1.1), rng.uniform(0, 6.28)]
    river_pts = [
        (x, 0.62 * b + 0.35 * x * b / a + wiggle[0] * math.sin(wiggle[1] * x / a * 3 + wiggle[2]))
        for x in xs
    ]
    river = LineString(river_pts)
    beyond = Polygon([*river_pts, (2 * a, 4 * b), (-2 * a, 4 * b)])
    district = blob.difference(beyond.buffer(0.02 * b))
    parts = _polygon_parts(district)
    district = max(parts, key=lambda p: p.area)
    world.ctx["km"] = {names.DISTRICT_CODE: district}
    world.ctx["river_km"] = river.intersection(blob.buffer(0.1 * a))
    ll = to_lonlat(district)
    world.geoms[names.DISTRICT_CODE] = ll
    lon, lat = centroid_of(ll)
    world.rows("geo_district").append(
        {
            "code": names.DISTRICT_CODE, "name": names.DISTRICT, "city": names.CITY,
            "geometry": geojson(ll), "centroid_lon": lon, "centroid_lat": lat,
        }
    )


def _area_rows(world: World, parent: str, cells: list[Polygon], make) -> list[dict]:
    """Rows for the children of ``parent``: ``make(i) -> (code, name, parent columns)``."""
    lls = fit_to_parent([to_lonlat(c) for c in cells], world.geoms[parent])
    rows = []
    for i, (cell, ll) in enumerate(zip(cells, lls, strict=True)):
        code, name, parents = make(i)
        world.geoms[code] = ll
        world.ctx["km"][code] = cell
        lon, lat = centroid_of(ll)
        rows.append({"code": code, "name": name, **parents, "geometry": geojson(ll),
                     "centroid_lon": lon, "centroid_lat": lat})
    return rows


def stage_streets(world: World, rng: random.Random) -> None:
    """13 (or 2) streets tiling the district."""
    district = world.ctx["km"][names.DISTRICT_CODE]
    cells = partition(district, world.scale.streets, rng, lloyd=3)
    world.rows("geo_street").extend(_area_rows(
        world, names.DISTRICT_CODE, cells,
        lambda i: (f"{names.DISTRICT_CODE}{i + 1:03d}", names.STREETS[i] + "街道",
                   {"district_code": names.DISTRICT_CODE}),
    ))


def _community_names(rng: random.Random, n: int) -> list[str]:
    cores = list(names.COMMUNITY_CORES)
    rng.shuffle(cores)
    out: list[str] = []
    seen: dict[str, None] = {}
    for suffix in names.COMMUNITY_SUFFIXES:
        for core in cores:
            name = core + suffix
            if name not in seen:
                seen[name] = None
                out.append(name + "社区")
            if len(out) == n:
                return out
    raise ValueError("not enough community names")


def stage_communities(world: World, rng: random.Random) -> None:
    """Communities tiling each street; the total is exactly ``scale.communities`` (191)."""
    streets = world.rows("geo_street")
    km = world.ctx["km"]
    weights = [km[s["code"]].area * rng.uniform(0.85, 1.15) for s in streets]
    counts = allocate(world.scale.communities, weights, world.scale.min_communities_per_street)
    pool = _community_names(rng, world.scale.communities)
    rows = world.rows("geo_community")
    k = 0
    for s, n in zip(streets, counts, strict=True):
        cells = partition(km[s["code"]], n, rng)
        rows.extend(_area_rows(
            world, s["code"], cells,
            lambda i, s=s, k=k: (f"{s['code']}{i + 1:03d}", pool[k + i], {"street_code": s["code"]}),
        ))
        k += n


def stage_grids(world: World, rng: random.Random) -> None:
    """Grids (网格) tiling each community, about ``scale.grids`` in all, named <社区>第N网格."""
    comms = world.rows("geo_community")
    km = world.ctx["km"]
    if world.scale.grids % len(comms) == 0 and len(comms) <= 10:
        counts = [world.scale.grids // len(comms)] * len(comms)
    else:
        weights = [km[c["code"]].area * rng.lognormvariate(0, 0.25) for c in comms]
        counts = allocate(world.scale.grids, weights, 3)
    rows = world.rows("geo_grid")
    for c, n in zip(comms, counts, strict=True):
        cells = partition(km[c["code"]], n, rng)
        rows.extend(_area_rows(
            world, c["code"], cells,
            lambda i, c=c: (f"{c['code']}{i + 1:03d}", f"{c['name']}第{i + 1}网格",
                            {"community_code": c["code"], "street_code": c["street_code"]}),
        ))
