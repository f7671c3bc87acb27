"""Road stage: a gently curved, rotated lattice of named roads clipped to the district.

Every fourth lattice line is an avenue (大道); the other lines are cut into roads (路) and
short streets (街) — sometimes a numbered series such as 芳草一路 / 芳草二路 — and short
lanes (巷) run between them. Door numbers are later assigned along each road's direction.
"""

from __future__ import annotations

import math
import random

import shapely
from shapely.geometry import LineString
from shapely.ops import substring

from jiedao.demo import names
from jiedao.demo.geography import geojson, to_lonlat
from jiedao.demo.pipeline import World


def _lattice_lines(district, rng: random.Random, angle: float) -> list[LineString]:
    minx, miny, maxx, maxy = district.bounds
    cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
    half = math.hypot(maxx - minx, maxy - miny) / 2 + 0.5
    ca, sa = math.cos(angle), math.sin(angle)
    lines = []
    v = -half + rng.uniform(0.1, 0.4)
    while v < half:
        amp, freq, ph = rng.uniform(0.0, 0.08), rng.uniform(0.3, 0.9), rng.uniform(0, 6.3)
        pts = []
        steps = 40
        for i in range(steps + 1):
            u = -half + 2 * half * i / steps
            w = v + amp * math.sin(freq * u + ph)
            pts.append((cx + u * ca - w * sa, cy + u * sa + w * ca))
        lines.append(LineString(pts))
        v += rng.uniform(0.3, 0.55)
    return lines


def _pieces(line: LineString, district, min_len: float) -> list[LineString]:
    g = line.intersection(district)
    parts = [g] if g.geom_type == "LineString" else list(getattr(g, "geoms", []))
    return [p for p in parts if p.geom_type == "LineString" and p.length >= min_len]


class _Namer:
    """Hands out unique road names per type from independently shuffled cores."""

    def __init__(self, rng: random.Random):
        self.pools = {}
        for kind in ("大道", "路", "街", "巷"):
            cores = list(names.ROAD_CORES)
            rng.shuffle(cores)
            # once plain cores run out: directional variants such as 琴台东路
            extra = [c + d for c in names.ROAD_CORES for d in "东西南北中"]
            rng.shuffle(extra)
            self.pools[kind] = extra + cores  # popped from the end: plain cores first
        self.used: dict[str, None] = {}

    def take(self, kind: str) -> str:
        pool = self.pools[kind]
        while pool:
            name = pool.pop() + kind
            if name not in self.used:
                self.used[name] = None
                return name
        raise ValueError(f"out of road names for {kind}")

    def series(self, k: int) -> list[str]:
        pool = self.pools["路"]
        while pool:
            core = pool.pop()
            cand = [f"{core}{names.CN_ORDINALS[i]}路" for i in range(k)]
            if all(c not in self.used for c in cand):
                for c in cand:
                    self.used[c] = None
                return cand
        raise ValueError("out of road names for a series")


def stage_roads(world: World, rng: random.Random) -> None:
    """Named roads (大道/路/街/巷) with GeoJSON LineStrings; about ``scale.roads + scale.lanes``."""
    district = world.ctx["km"][names.DISTRICT_CODE]
    angle = rng.uniform(-0.35, 0.35)
    fam_a = _lattice_lines(district, rng, angle)
    fam_b = _lattice_lines(district, rng, angle + math.pi / 2)
    avenues: list[LineString] = []
    ordinary: list[LineString] = []
    for fam in (fam_a, fam_b):
        offset = rng.randrange(4)
        for i, line in enumerate(fam):
            pieces = _pieces(line, district, 0.25)
            if (i + offset) % 4 == 0 and world.scale.name != "small":
                avenues.extend(p for p in pieces if p.length >= 1.5)
                ordinary.extend(p for p in pieces if p.length < 1.5)
            else:
                ordinary.extend(pieces)
    namer = _Namer(rng)
    roads: list[tuple[str, LineString]] = []
    for p in avenues:
        roads.append((namer.take("大道"), p))
    target = max(1, world.scale.roads - len(avenues))
    total = sum(p.length for p in ordinary)
    split = max(0.3, total / target)
    for p in ordinary:
        k = max(1, round(p.length / split))
        segs = [substring(p, p.length * i / k, p.length * (i + 1) / k) for i in range(k)]
        if k >= 2 and k <= 5 and rng.random() < 0.35:
            seg_names = namer.series(k)
        else:
            seg_names = [namer.take("街" if s.length < 0.7 * split else "路") for s in segs]
        roads.extend(zip(seg_names, segs, strict=True))
    # Lanes: short segments across the lattice, fully inside the district.
    ca, sa = math.cos(angle + math.pi / 2), math.sin(angle + math.pi / 2)
    shapely.prepare(district)
    lanes = 0
    attempts = 0
    minx, miny, maxx, maxy = district.bounds
    while lanes < world.scale.lanes and attempts < world.scale.lanes * 50:
        attempts += 1
        x, y = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
        half = rng.uniform(0.08, 0.2)
        seg = LineString([(x - half * ca, y - half * sa), (x + half * ca, y + half * sa)])
        if not district.contains(seg):
            continue
        roads.append((namer.take("巷"), seg))
        lanes += 1
    rows = world.rows("geo_road")
    world.ctx["roads_km"] = roads
    for i, (name, line) in enumerate(roads):
        rows.append({"id": i + 1, "name": name, "geometry": geojson(to_lonlat(line))})
