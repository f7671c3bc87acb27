"""Landmark stage: places people name instead of an address, each with 1–3 aliases as
people say them (锦绣长江小区 → 锦绣长江; 江城市第三中学 → 三中; 地铁钟家村站 → 钟家村站).

Landmarks are every compound, school, market, hospital, mall and office tower from the
building stage, plus metro stations along generated lines and parks. An alias that two
landmarks would share is dropped (a landmark keeps at least one alias), so aliases
resolve to one place; a landmark left without any keeps its door address (路名+门牌号) instead.
"""

from __future__ import annotations

import math
import random

import numpy as np
import shapely
from shapely.geometry import LineString
from shapely.ops import nearest_points

from jiedao.demo import names
from jiedao.demo.buildings import _strip_community, road_core_of
from jiedao.demo.geography import km_to_lonlat_xy, sample_points
from jiedao.demo.pipeline import World

COMPOUND_SUFFIXES = ("小区", "花园", "家园", "新村", "公寓", "苑")
MALL_SUFFIXES = ("购物中心", "梦乐城", "广场", "百货", "天街", "天地", "世纪城", "城")


def compound_aliases(name: str) -> list[str]:
    """锦绣长江小区 → [锦绣长江, 锦绣长江花园?…]: the core, and the core + 小区 when different."""
    core = name
    for suf in COMPOUND_SUFFIXES:
        if name.endswith(suf) and len(name) > len(suf) + 1:
            core = name.removesuffix(suf)
            break
    out = [core]
    if not name.endswith("小区"):
        out.append(core + "小区")
    if len(core) >= 4:
        out.append(core[:2])
    return out


def school_aliases(name: str) -> list[str]:
    """江城市第三中学 → [三中, 第三中学, 市三中]; 钟家村小学 → [钟家村小]; …"""
    if name.startswith(names.CITY + "第") and name.endswith("中学"):
        num = name.removeprefix(names.CITY + "第").removesuffix("中学")
        return [f"{num}中", f"第{num}中学", f"市{num}中"]
    rest = name.removeprefix(names.DISTRICT)
    out = []
    if rest != name:
        out += [rest, "区" + rest]
    if rest.endswith(("小学", "中学")):
        out.append(rest.removesuffix("学"))
    elif rest.endswith("幼儿园"):
        out.append(rest.removesuffix("儿园"))
    return out or [name]


def market_aliases(name: str) -> list[str]:
    for suf in ("农贸市场", "菜市场"):
        if name.endswith(suf):
            core = name.removesuffix(suf)
            return [core + "菜场", core + "市场"] + ([core + "农贸"] if suf == "农贸市场" else [])
    return [name.removesuffix("市场") + "菜场"]


def hospital_aliases(name: str) -> list[str]:
    out = []
    for prefix, short in ((names.CITY, "市"), (names.DISTRICT, "区")):
        if name.startswith(prefix):
            rest = name.removeprefix(prefix).replace("第", "")
            out += [short + rest, rest]
            if rest == "人民医院":
                out.append("区医院")
    if not out:
        out.append(name.removesuffix("医院") + "医院门诊")
    return out


def mall_aliases(name: str) -> list[str]:
    for suf in MALL_SUFFIXES:
        if name.endswith(suf) and len(name) > len(suf) + 1:
            core = name.removesuffix(suf)
            return [core, core + "商场"]
    return [name + "商场"]


def office_aliases(name: str) -> list[str]:
    """越秀总部大厦 → [越秀总部, 越秀总部大楼]; 时代广场写字楼 → [时代广场, …]."""
    for kind in ("写字楼", "大厦", "中心"):
        if name.endswith(kind) and len(name) > len(kind) + 1:
            core = name.removesuffix(kind)
            return [core, core + "大楼", core + ("大厦" if kind != "大厦" else "中心")]
    return [name + "大楼"]


def metro_aliases(station: str) -> list[str]:
    """钟家村 → [钟家村地铁站, 钟家村站, 地铁钟家村]."""
    return [f"{station}地铁站", f"{station}站", f"地铁{station}"]


def park_aliases(name: str) -> list[str]:
    core = name.removesuffix("公园")
    return [core + "游园", core + "公园广场"] if len(core) < 2 else [core, core + "游园"]


def _grid_index(world: World):
    codes = [g["code"] for g in world.rows("geo_grid")]
    polys = [world.geoms[c] for c in codes]
    return codes, shapely.STRtree(polys)


def _grid_of(codes, tree, lon: float, lat: float) -> str | None:
    hits = tree.query(shapely.points(lon, lat), predicate="within")
    return codes[int(hits[0])] if len(hits) else None


def _metro_lines(world: World, rng: random.Random) -> list[tuple[int, list[tuple[float, float]]]]:
    """Station points (km) of each metro line: a gently curved chord across the district."""
    district = world.ctx["km"][names.DISTRICT_CODE]
    minx, miny, maxx, maxy = district.bounds
    cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
    r = math.hypot(maxx - minx, maxy - miny)
    numbers = sorted(rng.sample(range(1, 12), world.scale.metro_lines))
    out = []
    for k, num in enumerate(numbers):
        phi = math.pi * k / max(1, world.scale.metro_lines) + rng.uniform(-0.3, 0.3)
        off = rng.uniform(-0.2, 0.2) * r
        nx, ny = -math.sin(phi), math.cos(phi)
        pts = []
        for i in range(9):
            u = -r + 2 * r * i / 8
            bend = rng.uniform(-0.04, 0.04) * r
            pts.append((cx + u * math.cos(phi) + (off + bend) * nx,
                        cy + u * math.sin(phi) + (off + bend) * ny))
        clipped = LineString(pts).intersection(district.buffer(-0.1))
        parts = [clipped] if clipped.geom_type == "LineString" else list(getattr(clipped, "geoms", []))
        parts = [p for p in parts if p.geom_type == "LineString"]
        if not parts:
            continue
        line = max(parts, key=lambda p: p.length)
        n = max(2, int(line.length / world.scale.metro_spacing_km) + 1)
        stations = []
        for i in range(n):
            p = line.interpolate(line.length * (i + 0.5) / n)
            stations.append((p.x, p.y))
        out.append((num, stations))
    return out


def stage_landmarks(world: World, rng: random.Random) -> None:
    """Landmarks with aliases: compounds, schools, markets, hospitals, malls, offices, metro, parks."""
    entries: list[tuple[dict, list[str]]] = []
    comm_name = {c["code"]: c["name"] for c in world.rows("geo_community")}

    def add(kind: str, name: str, place: dict, aliases: list[str]) -> None:
        row = {
            "name": name, "kind": kind, "lon": place["lon"], "lat": place["lat"],
            "address_code": place.get("address_code"), "grid_code": place["grid_code"],
            "community_code": place["community_code"], "street_code": place["street_code"],
        }
        door = f"{place['road']}{place['number']}号" if place.get("road") else None
        entries.append((row, [a for a in aliases if a and a != name], door))

    for c in world.ctx["compounds"]:
        add("compound", c["name"], c, compound_aliases(c["name"]))
    alias_fn = {"小学": school_aliases, "中学": school_aliases, "幼儿园": school_aliases,
                "菜市场": market_aliases, "医院": hospital_aliases, "商场": mall_aliases}
    kind_of = {"小学": "school", "中学": "school", "幼儿园": "school", "菜市场": "market",
               "医院": "hospital", "商场": "mall"}
    for f in world.ctx["facilities"]:
        add(kind_of[f["category"]], f["name"], f, alias_fn[f["category"]](f["name"]))
    for o in world.ctx["offices"]:
        add("office", o["name"], o, office_aliases(o["name"]))

    codes, tree = _grid_index(world)
    grid_rows = {g["code"]: g for g in world.rows("geo_grid")}
    used = {row["name"]: None for row, _, _ in entries}

    def place_at(x: float, y: float) -> dict | None:
        lon, lat = km_to_lonlat_xy(x, y)
        g = _grid_of(codes, tree, lon, lat)
        if g is None:
            return None
        gr = grid_rows[g]
        return {"lon": lon, "lat": lat, "grid_code": g, "community_code": gr["community_code"],
                "street_code": gr["street_code"]}

    roads_by_name = world.ctx["roads_km"]
    road_lines = np.array([line for _, line in roads_by_name], dtype=object)
    road_tree = shapely.STRtree(road_lines)
    for num, stations in _metro_lines(world, rng):
        for x, y in stations:
            place = place_at(x, y)
            if place is None:
                continue
            core = _strip_community(comm_name[place["community_code"]])
            road = roads_by_name[int(road_tree.query_nearest(shapely.points(x, y))[0])][0]
            road_core = road_core_of(road)
            for cand in (core, road_core, road, core + "北", core + "南", core + "东", core + "西"):
                name = f"地铁{num}号线{cand}站"
                if cand not in used and name not in used:
                    used[cand] = None
                    used[name] = None
                    add("metro", name, place, metro_aliases(cand))
                    break

    district = world.ctx["km"][names.DISTRICT_CODE]
    park_cores = list(names.PARK_CORES)
    rng.shuffle(park_cores)
    pts = sample_points(district.buffer(-0.05), world.scale.parks, rng)
    river = world.ctx.get("river_km")
    for i, (x, y) in enumerate(pts):
        if i == 0 and river is not None and not river.is_empty:
            # a riverside park: the district's point nearest to the river
            near = nearest_points(district.buffer(-0.05), river)[0]
            x, y = near.x, near.y
            name = "江滩公园"
        else:
            name = ""
            while park_cores:
                name = park_cores.pop() + "公园"
                if name not in used:
                    break
        place = place_at(x, y)
        if place is None or not name or name in used:
            continue
        used[name] = None
        add("park", name, place, park_aliases(name))

    # Drop aliases two landmarks would share or that equal another landmark's name.
    count: dict[str, int] = {}
    for row, aliases, _door in entries:
        count[row["name"]] = count.get(row["name"], 0) + 1
        for a in dict.fromkeys(aliases):
            count[a] = count.get(a, 0) + 1
    lrows = world.rows("geo_landmark")
    arows = world.rows("geo_landmark_alias")
    for lid, (row, aliases, door) in enumerate(entries, start=1):
        aliases = list(dict.fromkeys(aliases))
        # last resort: the door address people also use ("琴台大道88号那栋楼"), unique per door
        keep = [a for a in aliases if count[a] == 1][:3] or ([door] if door else aliases[:1])
        lrows.append({"id": lid, **row})
        for a in keep:
            arows.append({"id": len(arows) + 1, "landmark_id": lid, "alias": a})
