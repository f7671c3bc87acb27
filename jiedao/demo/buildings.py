"""Buildings and standard addresses.

Each grid receives residential compounds (小区, 5–40 buildings numbered 1栋…), stand-alone
residential and commercial buildings, public facilities (schools, markets, hospitals,
malls) and, around two or three business centres, exactly ``scale.offices`` office towers.
Every building gets exactly one standard address on its nearest road; door numbers grow
along the road's direction, odd on the left side and even on the right. A compound shares
one door number and its buildings differ by 栋. Building code = grid code + 3 digits;
address code = building code + "-01".
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely.geometry import Point

from jiedao.demo import names
from jiedao.demo.geography import allocate, km_to_lonlat_xy
from jiedao.demo.pipeline import World


def canonical_address(road: str, number: str, compound: str | None, building_no: str | None) -> str:
    """The contract's canonical standard-address text (geo_address.full)."""
    return (
        f"{names.CITY}{names.DISTRICT}{road}{number}号"
        f"{compound or ''}{(building_no + '栋') if building_no else ''}"
    )


@dataclass
class _Item:
    """A building waiting for its place and address."""

    kind: str  # residential / commercial / office / school / market / hospital
    name: str = ""
    floors: int = 0
    compound: str | None = None
    building_no: str | None = None
    facility: dict | None = None  # public facility description for the landmark stage
    x: float = 0.0
    y: float = 0.0
    half: float = 0.01


@dataclass
class _Entity:
    """One door: a compound (many buildings, one door number) or a stand-alone building."""

    items: list[_Item]
    grid: str
    x: float = 0.0
    y: float = 0.0
    road: str = ""
    number: str = ""
    extra: dict = field(default_factory=dict)


RES_FLOORS = [(6, 3), (7, 2), (11, 2), (18, 3), (26, 2), (32, 3), (33, 2), (34, 1)]


def _floors(rng: random.Random, kind: str) -> int:
    if kind == "residential":
        return rng.choices([f for f, _ in RES_FLOORS], [w for _, w in RES_FLOORS])[0]
    lo, hi = {
        "standalone": (3, 8), "commercial": (2, 12), "office": (15, 60), "school": (3, 5),
        "market": (1, 2), "hospital": (5, 20), "mall": (4, 8),
    }[kind]
    return rng.randint(lo, hi)


def _place(poly, n: int, rng: random.Random) -> tuple[list[tuple[float, float]], float, float]:
    """``n`` well-spaced points inside ``poly`` (km), away from its border.

    Returns the points, the lattice spacing and a footprint half-size that keeps a
    footprint inside the polygon.
    """
    margin = 0.012
    inner = poly.buffer(-margin)
    while inner.is_empty or inner.area < poly.area * 0.2:
        margin /= 2
        inner = poly.buffer(-margin)
    shapely.prepare(inner)
    minx, miny, maxx, maxy = inner.bounds
    s = math.sqrt(inner.area / (n * 1.4))
    for _ in range(30):
        ox, oy = rng.random() * s, rng.random() * s
        xs = np.arange(minx + ox, maxx, s)
        ys = np.arange(miny + oy, maxy, s)
        gx, gy = np.meshgrid(xs, ys)
        gx = gx.ravel() + (np.array([rng.random() for _ in range(gx.size)]) - 0.5) * 0.4 * s
        gy = gy.ravel() + (np.array([rng.random() for _ in range(gy.size)]) - 0.5) * 0.4 * s
        ok = shapely.contains_xy(inner, gx, gy)
        cand = list(zip(gx[ok].tolist(), gy[ok].tolist(), strict=True))
        if len(cand) >= n:
            break
        s *= 0.85
    else:  # pathological sliver: fall back to random points
        from jiedao.demo.geography import sample_points

        cand = sample_points(inner, n, rng)
    idx = sorted(rng.sample(range(len(cand)), n))
    pts = [cand[i] for i in idx]
    half = min(0.33 * s, margin * 0.7)
    return pts, s, half


class _Names:
    """Unique names for compounds, offices and facilities."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: dict[str, None] = {}
        combos = [(p, c) for p in names.COMPOUND_PREFIXES for c in names.COMPOUND_CORES]
        rng.shuffle(combos)
        self.compound_combos = combos
        offices = [(p, k) for p in names.OFFICE_PREFIXES for k in names.OFFICE_KINDS]
        rng.shuffle(offices)
        self.office_combos = offices

    def unique(self, name: str) -> bool:
        if name in self.used:
            return False
        self.used[name] = None
        return True

    def compound(self) -> str:
        while self.compound_combos:
            p, c = self.compound_combos.pop()
            core = p + c
            # the stripped form (alias) must be unique too: one suffix per core
            if core in self.used:
                continue
            self.used[core] = None
            suffix = self.rng.choice(names.COMPOUND_SUFFIXES)
            if c in ("家园", "新城", "城") and suffix in ("家园", "新村"):
                suffix = "小区"
            name = core + suffix
            if self.unique(name):
                return name
        raise ValueError("out of compound names")

    def office(self) -> str:
        while self.office_combos:
            p, k = self.office_combos.pop()
            if self.unique(p + k):
                return p + k
        raise ValueError("out of office names")


def _compound_sizes(rng: random.Random, total: int, max_size: int) -> list[int]:
    sizes = []
    left = total
    while left >= 5:
        size = int(rng.triangular(5, max_size + 1, min(max_size, 9)))
        size = max(5, min(size, max_size, left))
        sizes.append(size)
        left -= size
    return sizes


def _facility_plan(scale) -> list[tuple[str, str]]:
    """(building kind, facility category) for every public facility."""
    plan = []
    plan += [("school", "小学")] * scale.primary_schools
    plan += [("school", "中学")] * scale.middle_schools
    plan += [("school", "幼儿园")] * scale.kindergartens
    plan += [("market", "菜市场")] * scale.markets
    plan += [("hospital", "医院")] * scale.hospitals
    plan += [("commercial", "商场")] * scale.malls
    return plan


def stage_buildings(world: World, rng: random.Random) -> None:
    """About ``scale.buildings`` buildings (exactly ``scale.offices`` offices) and their addresses."""
    scale = world.scale
    km = world.ctx["km"]
    grids = world.rows("geo_grid")
    gcodes = [g["code"] for g in grids]
    gpoly = [km[c] for c in gcodes]
    areas = [p.area for p in gpoly]
    cents = [p.centroid for p in gpoly]
    namer = _Names(rng)
    items_by_grid: dict[str, list[_Item]] = {c: [] for c in gcodes}
    compounds_by_grid: dict[str, list[list[_Item]]] = {c: [] for c in gcodes}

    # Business centres and office towers (写字楼).
    district = km[names.DISTRICT_CODE]
    from jiedao.demo.geography import sample_points

    n_cbd = 1 if scale.name == "small" else 3
    cbds = sample_points(district.buffer(-0.15 * math.sqrt(district.area)), n_cbd, rng)
    sigma = 0.12 * math.sqrt(district.area)
    cbd_w = [
        sum(math.exp(-((c.x - x) ** 2 + (c.y - y) ** 2) / (2 * sigma**2)) for x, y in cbds) + 1e-4
        for c in cents
    ]
    cap = [4 if scale.name != "small" else 2] * len(gcodes)
    for _ in range(scale.offices):
        w = [cbd_w[i] if cap[i] > 0 else 0.0 for i in range(len(gcodes))]
        i = rng.choices(range(len(gcodes)), w)[0]
        cap[i] -= 1
        items_by_grid[gcodes[i]].append(
            _Item("office", name=namer.office(), floors=_floors(rng, "office"))
        )

    # Public facilities; named later from their community or road.
    for kind, cat in _facility_plan(scale):
        i = rng.choices(range(len(gcodes)), areas)[0]
        floors = _floors(rng, "mall" if cat == "商场" else kind)
        items_by_grid[gcodes[i]].append(_Item(kind, floors=floors, facility={"category": cat}))

    placed = sum(len(v) for v in items_by_grid.values())
    rest = scale.buildings - placed
    n_commercial = round(rest * scale.commercial_share)
    com_w = [a * (1 + 3 * w) for a, w in zip(areas, cbd_w, strict=True)]
    for i in rng.choices(range(len(gcodes)), com_w, k=n_commercial):
        prefix = rng.choice(names.OFFICE_PREFIXES + names.COMPOUND_PREFIXES)
        items_by_grid[gcodes[i]].append(
            _Item("commercial", name=prefix + rng.choice(names.COMMERCIAL_KINDS),
                  floors=_floors(rng, "commercial"))
        )
    residential = rest - n_commercial

    # Residential compounds, then stand-alone residential buildings.
    density = [a * rng.lognormvariate(0, 0.45) for a in areas]
    capacity = [max(12, int(a / 0.0012)) - len(items_by_grid[c]) for a, c in zip(areas, gcodes, strict=True)]
    max_size = min(40, max(5, residential // 4))
    sizes = _compound_sizes(rng, int(residential * 0.92), max_size)
    sizes.sort(reverse=True)
    for size in sizes:
        w = [density[i] if capacity[i] >= size else 0.0 for i in range(len(gcodes))]
        if not any(w):
            w = density
        i = rng.choices(range(len(gcodes)), w)[0]
        capacity[i] -= size
        cname = namer.compound()
        floors = _floors(rng, "residential")
        members = [
            _Item("residential", name=f"{cname}{k}栋", floors=floors, compound=cname,
                  building_no=str(k))
            for k in range(1, size + 1)
        ]
        compounds_by_grid[gcodes[i]].append(members)
    standalone = residential - sum(sizes)
    counts = allocate(standalone, [max(c, 1) * d for c, d in zip(capacity, density, strict=True)], 0)
    for c, n in zip(gcodes, counts, strict=True):
        for _ in range(n):
            items_by_grid[c].append(_Item("residential", floors=_floors(rng, "standalone")))

    # Place buildings inside their grid; compounds take neighbouring lattice points.
    entities: list[_Entity] = []
    for code, poly in zip(gcodes, gpoly, strict=True):
        comps = compounds_by_grid[code]
        singles = items_by_grid[code]
        n = sum(len(m) for m in comps) + len(singles)
        if n == 0:
            continue
        pts, _s, half = _place(poly, n, rng)
        theta = rng.uniform(0, math.pi)
        dx, dy = math.cos(theta), math.sin(theta)
        pts.sort(key=lambda p: p[0] * dx + p[1] * dy)
        k = 0
        for members in comps:
            for it in sorted(members, key=lambda m: int(m.building_no)):
                it.x, it.y = pts[k]
                it.half = half
                k += 1
            gx = sum(m.x for m in members) / len(members)
            gy = sum(m.y for m in members) / len(members)
            entities.append(_Entity(members, code, gx, gy))
        for it in singles:
            it.x, it.y = pts[k]
            it.half = half
            k += 1
            entities.append(_Entity([it], code, it.x, it.y))

    _assign_addresses(world, entities, rng)
    _name_facilities(world, entities, rng, namer)
    _emit(world, entities, rng)


def _assign_addresses(world: World, entities: list[_Entity], rng: random.Random) -> None:
    roads = world.ctx["roads_km"]
    lines = np.array([line for _, line in roads], dtype=object)
    tree = shapely.STRtree(lines)
    pts = shapely.points([(e.x, e.y) for e in entities])
    idx = tree.query_nearest(pts, all_matches=False)
    nearest = np.empty(len(entities), dtype=int)
    nearest[idx[0]] = idx[1]
    ts = shapely.line_locate_point(lines[nearest], pts)
    by_road: dict[int, list[tuple[float, int, int]]] = {}
    for ei, (e, ri, t) in enumerate(zip(entities, nearest.tolist(), ts.tolist(), strict=True)):
        line = lines[ri]
        a = line.interpolate(max(0.0, t - 0.005))
        b = line.interpolate(min(line.length, t + 0.005))
        cross = (b.x - a.x) * (e.y - a.y) - (b.y - a.y) * (e.x - a.x)
        side = 1 if cross >= 0 else 0  # 1: left, odd numbers; 0: right, even numbers
        by_road.setdefault(ri, []).append((t, side, ei))
    for ri, lst in by_road.items():
        lst.sort()
        last = {0: 0, 1: -1}
        prev: dict[int, tuple[int, _Entity, float] | None] = {0: None, 1: None}
        for t, side, ei in lst:
            e = entities[ei]
            e.road = roads[ri][0]
            parity = 1 if side else 2
            p = prev[side]
            single = len(e.items) == 1 and e.items[0].compound is None
            if (
                single and p is not None and p[1] is not None and len(p[1].items) == 1
                and p[1].items[0].compound is None and "-" not in p[1].number
                and t - p[2] < 0.04 and e.items[0].kind in ("commercial", "residential")
                and rng.random() < 0.3
            ):
                e.number = f"{p[0]}-1"
                prev[side] = (p[0], None, t)
                continue
            base = 2 * int(t * 1000 / 25) + parity
            num = max(last[side] + 2, base)
            last[side] = num
            e.number = str(num)
            prev[side] = (num, e, t)


def road_core_of(road: str) -> str:
    """芳草二路 → 芳草, 琴台东路 → 琴台, 龙阳大道 → 龙阳."""
    return re.sub(r"[东西南北中]?[一二三四五六七八九十]?(大道|路|街|巷)$", "", road) or road


def _strip_community(name: str) -> str:
    core = name.removesuffix("社区")
    for suf in ("新村", "花园", "东", "西", "南", "北", "中"):
        if core.endswith(suf) and len(core) > len(suf) + 1:
            return core.removesuffix(suf)
    return core


def _name_facilities(world: World, entities: list[_Entity], rng: random.Random, namer: _Names) -> None:
    comm_name = {c["code"]: c["name"] for c in world.rows("geo_community")}
    middle_numbers = list(range(1, 40))
    rng.shuffle(middle_numbers)
    hospitals = list(names.HOSPITAL_NAMES)
    malls = list(names.MALL_NAMES)
    rng.shuffle(malls)
    first_primary = True
    for e in entities:
        it = e.items[0]
        if it.facility is None:
            if it.kind == "residential" and not it.name:
                it.name = f"{e.road}{e.number}号居民楼"
            continue
        cat = it.facility["category"]
        core = _strip_community(comm_name[e.grid[:12]])
        road_core = road_core_of(e.road)
        candidates: list[str] = []
        if cat == "小学":
            if first_primary:
                candidates.append(f"{names.DISTRICT}实验小学")
                first_primary = False
            candidates += [f"{core}小学", f"{road_core}小学", f"{e.road}小学"]
        elif cat == "中学":
            while middle_numbers:
                n = middle_numbers.pop()
                candidates.append(f"{names.CITY}第{_cn_number(n)}中学")
                if rng.random() < 0.25:
                    candidates.insert(0, f"{names.DISTRICT}{core}中学")
                break
        elif cat == "幼儿园":
            candidates += [f"{core}幼儿园", f"{road_core}幼儿园", f"{e.road}幼儿园"]
        elif cat == "菜市场":
            kind = rng.choice(["菜市场", "农贸市场"])
            candidates += [f"{core}{kind}", f"{road_core}{kind}", f"{e.road}菜市场"]
        elif cat == "医院":
            if hospitals:
                candidates.append(hospitals.pop(0))
            candidates.append(f"{core}医院")
        elif cat == "商场":
            if malls:
                candidates.append(malls.pop())
            candidates += [f"{core}购物中心", f"{road_core}购物中心"]
        candidates.append(f"{e.road}{e.number}号{cat}")
        for cand in candidates:
            if namer.unique(cand):
                it.name = cand
                break
        it.facility["name"] = it.name


def _cn_number(n: int) -> str:
    digits = "零一二三四五六七八九"
    if n < 10:
        return digits[n]
    if n < 20:
        return "十" + (digits[n % 10] if n % 10 else "")
    return digits[n // 10] + "十" + (digits[n % 10] if n % 10 else "")


def _rect_geojson(x0: float, y0: float, x1: float, y1: float) -> str:
    """GeoJSON text of an axis-aligned km rectangle (a building footprint) in lon/lat."""
    (a, b), (c, d) = km_to_lonlat_xy(x0, y0), km_to_lonlat_xy(x1, y1)
    ring = ",".join(f"[{x!r},{y!r}]" for x, y in ((a, b), (c, b), (c, d), (a, d), (a, b)))
    return '{"type":"Polygon","coordinates":[[' + ring + "]]}"


def _emit(world: World, entities: list[_Entity], rng: random.Random) -> None:
    grid_rows = {g["code"]: g for g in world.rows("geo_grid")}
    seq: dict[str, int] = {}
    brows = world.rows("geo_building")
    arows = world.rows("geo_address")
    compounds = world.ctx.setdefault("compounds", [])
    facilities = world.ctx.setdefault("facilities", [])
    offices = world.ctx.setdefault("offices", [])
    for e in entities:
        g = grid_rows[e.grid]
        first_addr = None
        for it in e.items:
            n = seq.get(e.grid, 0) + 1
            seq[e.grid] = n
            if n > 999:
                raise ValueError(f"grid {e.grid} has more than 999 buildings")
            bcode = f"{e.grid}{n:03d}"
            lon, lat = km_to_lonlat_xy(it.x, it.y)
            hx, hy = it.half, it.half * rng.uniform(0.45, 0.8)
            foot = _rect_geojson(it.x - hx, it.y - hy, it.x + hx, it.y + hy)
            brows.append({
                "code": bcode, "name": it.name, "kind": it.kind, "compound": it.compound,
                "floors": it.floors, "lon": lon, "lat": lat, "geometry": foot,
                "grid_code": e.grid, "community_code": g["community_code"],
                "street_code": g["street_code"],
            })
            acode = f"{bcode}-01"
            arows.append({
                "code": acode,
                "full": canonical_address(e.road, e.number, it.compound, it.building_no),
                "road": e.road, "number": e.number, "compound": it.compound,
                "building_no": it.building_no, "building_code": bcode, "grid_code": e.grid,
                "community_code": g["community_code"], "street_code": g["street_code"],
                "lon": lon, "lat": lat,
            })
            if first_addr is None:
                first_addr = (acode, lon, lat)
            place = {"building_code": bcode, "address_code": acode, "lon": lon, "lat": lat,
                     "grid_code": e.grid, "community_code": g["community_code"],
                     "street_code": g["street_code"], "name": it.name, "road": e.road,
                     "number": e.number}
            if it.facility is not None:
                facilities.append({**place, "category": it.facility["category"], "kind": it.kind})
            elif it.kind == "office":
                offices.append({**place, "floors": it.floors})
        if e.items[0].compound:
            glon, glat = km_to_lonlat_xy(e.x, e.y)
            gpoly = world.geoms[e.grid]
            if not gpoly.contains(Point(glon, glat)):
                glon, glat = first_addr[1], first_addr[2]
            compounds.append({
                "name": e.items[0].compound, "address_code": first_addr[0], "lon": glon,
                "lat": glat, "grid_code": e.grid, "community_code": g["community_code"],
                "street_code": g["street_code"], "buildings": len(e.items), "road": e.road,
                "number": e.number,
            })
