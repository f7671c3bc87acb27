"""Find the grid (网格) for a point and for an address or landmark named in free text.

``GridIndex`` holds every grid polygon in a shapely STRtree; ``grid_at(lon, lat)`` answers
in microseconds. ``AddressResolver`` loads the standard addresses and landmarks once into
dictionaries and resolves text such as "琴台大道88号锦绣长江小区5栋" or "万达广场门口"
to an address, building, grid, community and street with a confidence; when it is unsure
it answers with low confidence and a list of candidates instead of guessing.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import shapely
import shapely.ops
from rapidfuzz import fuzz, process
from shapely.geometry import shape
from sqlalchemy import select
from sqlalchemy.orm import Session

from jiedao.geo.address import AddressParser, ParsedAddress, compound_core, normalize
from jiedao.geo.models import (
    Address,
    Community,
    District,
    Grid,
    Landmark,
    LandmarkAlias,
    Road,
    Street,
)

_M_PER_DEG = 111_320.0


# ---------------------------------------------------------------- point → grid


class GridIndex:
    """Spatial index of grid polygons: an STRtree over prepared geometries, bucketed into
    cells so that a point lookup is a list index plus at most a few point-in-polygon tests."""

    def __init__(self, codes: Sequence[str], geometries: Sequence, parents: dict | None = None):
        order = sorted(range(len(codes)), key=lambda i: codes[i])
        self.codes = [codes[i] for i in order]
        self.geoms = [geometries[i] for i in order]
        self._parents = parents or {}
        shapely.prepare(self.geoms)
        self._tree = shapely.STRtree(self.geoms)
        self._build_cells()

    def _build_cells(self) -> None:
        """Bucket the extent into cells (candidates from the STRtree) for constant-time lookups.

        A cell wholly inside one grid answers without any geometry test; other cells keep
        their few candidate grids for an exact prepared point-in-polygon test.
        """
        self._cells: list[tuple[int, ...]] = []
        self._full: list[int] = []
        if not self.geoms:
            self._extent = (0.0, 0.0, -1.0, -1.0)
            return
        b = shapely.total_bounds(self.geoms)
        minx, miny, maxx, maxy = (float(v) for v in b)
        side = max(8, min(512, int(math.sqrt(len(self.geoms)) * 4)))
        w = (maxx - minx) / side or 1e-9
        h = (maxy - miny) / side or 1e-9
        self._extent = (minx, miny, maxx, maxy)
        self._side, self._fx, self._fy = side, 1.0 / w, 1.0 / h
        xs = [minx + i * w for i in range(side)]
        ys = [miny + j * h for j in range(side)]
        boxes = shapely.box([x for _ in ys for x in xs], [y for y in ys for _ in xs],
                            [x + w for _ in ys for x in xs], [y + h for y in ys for _ in xs])
        cell_idx, geom_idx = self._tree.query(boxes, predicate="intersects")
        cands: list[list[int]] = [[] for _ in range(side * side)]
        for c, g in zip(cell_idx.tolist(), geom_idx.tolist(), strict=True):
            cands[c].append(g)
        self._cells = [tuple(sorted(c)) for c in cands]
        single = [k for k, c in enumerate(self._cells) if len(c) == 1]
        self._full = [-1] * len(self._cells)
        if single:
            inside = shapely.contains_properly(
                [self.geoms[self._cells[k][0]] for k in single], [boxes[k] for k in single])
            for k, ok in zip(single, inside.tolist(), strict=True):
                if ok:
                    self._full[k] = self._cells[k][0]

    @classmethod
    def from_session(cls, session: Session) -> GridIndex:
        """Index every grid of the database that has a geometry."""
        codes, geoms, parents = [], [], {}
        rows = session.execute(select(Grid.code, Grid.geometry, Grid.community_code, Grid.street_code)
                               .where(Grid.geometry.is_not(None)))
        for code, geometry, community, street in rows:
            codes.append(code)
            geoms.append(shape(json.loads(geometry)))
            parents[code] = (community, street)
        return cls(codes, geoms, parents)

    @classmethod
    def from_features(cls, features: Iterable[dict]) -> GridIndex:
        """Index GeoJSON features whose properties carry ``code``."""
        codes, geoms = [], []
        for f in features:
            codes.append(str(f["properties"]["code"]))
            geoms.append(shape(f["geometry"]))
        return cls(codes, geoms)

    def __len__(self) -> int:
        return len(self.codes)

    def parents(self, grid_code: str) -> tuple[str | None, str | None]:
        """(community code, street code) of a grid (from the codes when not loaded)."""
        return self._parents.get(grid_code, (grid_code[:12], grid_code[:9]))

    def grid_at(self, lon: float, lat: float) -> str | None:
        """Code of the grid containing the point (boundary counts; lowest code wins), or None."""
        minx, miny, maxx, maxy = self._extent
        try:
            if not (minx <= lon <= maxx and miny <= lat <= maxy):  # also False for NaN
                return None
        except TypeError:
            return None
        side = self._side
        k = min(int((lat - miny) * self._fy), side - 1) * side + min(int((lon - minx) * self._fx),
                                                                      side - 1)
        full = self._full[k]
        if full >= 0:
            return self.codes[full]
        geoms = self.geoms
        for i in self._cells[k]:
            if shapely.intersects_xy(geoms[i], lon, lat):
                return self.codes[i]
        return None

    def grid_at_many(self, lons: Sequence[float], lats: Sequence[float]) -> list[str | None]:
        """``grid_at`` for many points in one vectorised query."""
        points = shapely.points(list(lons), list(lats))
        out: list[str | None] = [None] * len(points)
        pts_idx, geom_idx = self._tree.query(points, predicate="intersects")
        for p, g in sorted(zip(pts_idx.tolist(), geom_idx.tolist(), strict=True)):
            if out[p] is None:
                out[p] = self.codes[g]
        return out

    def nearest_grid(self, lon: float, lat: float, max_distance_m: float = 300.0) -> str | None:
        """The grid containing the point, else the nearest one within ``max_distance_m``."""
        inside = self.grid_at(lon, lat)
        if inside or not len(self.codes):
            return inside
        found = self.nearest(lon, lat, max_distance_m)
        return found[0] if found else None

    def nearest(self, lon: float, lat: float, max_distance_m: float = 300.0) -> tuple[str, float] | None:
        """(code, distance in metres) of the nearest grid within ``max_distance_m``, or None."""
        if not (math.isfinite(lon) and math.isfinite(lat)):
            return None
        coslat = max(math.cos(math.radians(lat)), 0.01)
        max_deg = max_distance_m / (_M_PER_DEG * coslat)  # generous bound; refined below
        pt = shapely.Point(lon, lat)
        idx = self._tree.query(pt, predicate="dwithin", distance=max_deg)
        best = None
        for i in sorted(idx):
            a, b = shapely.ops.nearest_points(self.geoms[i], pt)
            d = math.hypot((a.x - b.x) * _M_PER_DEG * coslat, (a.y - b.y) * _M_PER_DEG)
            if d <= max_distance_m and (best is None or d < best[1]):
                best = (self.codes[i], d)
        return best


# ---------------------------------------------------------------- text → place


@dataclass(frozen=True)
class Candidate:
    """A place the text may mean, with a score 0..1."""

    name: str
    kind: str  # address / compound / landmark / road
    score: float
    grid_code: str | None = None
    address_code: str | None = None
    lon: float | None = None
    lat: float | None = None


@dataclass(frozen=True)
class Resolution:
    """Where a text points to. Codes are None when unknown; confidence is 0..1."""

    address_code: str | None = None
    building_code: str | None = None
    grid_code: str | None = None
    community_code: str | None = None
    street_code: str | None = None
    lon: float | None = None
    lat: float | None = None
    confidence: float = 0.0
    matched_by: str | None = None  # address / compound / landmark / road / None
    matched_name: str | None = None
    candidates: tuple[Candidate, ...] = ()
    parsed: ParsedAddress | None = field(default=None, compare=False, repr=False)

    @property
    def found(self) -> bool:
        return self.grid_code is not None

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in (
            "address_code", "building_code", "grid_code", "community_code", "street_code",
            "lon", "lat", "confidence", "matched_by", "matched_name")}
        d["candidates"] = [c.__dict__ for c in self.candidates]
        return d


@dataclass(frozen=True)
class _Addr:
    code: str
    full: str
    road: str
    number: str
    compound: str | None
    building_no: str | None
    building_code: str
    grid_code: str
    community_code: str
    street_code: str
    lon: float
    lat: float


@dataclass(frozen=True)
class _Mark:
    id: int
    name: str
    kind: str
    lon: float
    lat: float
    address_code: str | None
    grid_code: str
    community_code: str
    street_code: str


_NUM_RE = re.compile(r"(\d+)")


class AddressResolver:
    """Resolve addresses and landmarks in text to standard addresses and grids.

    Load once (``AddressResolver(session)``); each ``resolve`` is a handful of dictionary
    lookups plus a parse, with rapidfuzz only as a fallback for near-miss names.
    """

    def __init__(self, session: Session):
        self.addresses: list[_Addr] = [
            _Addr(*row) for row in session.execute(select(
                Address.code, Address.full, Address.road, Address.number, Address.compound,
                Address.building_no, Address.building_code, Address.grid_code,
                Address.community_code, Address.street_code, Address.lon, Address.lat))
        ]
        self.by_code = {a.code: a for a in self.addresses}
        self._by_full = {normalize(a.full): a for a in self.addresses}
        self._by_rnb: dict[tuple, list[_Addr]] = defaultdict(list)
        self._by_rn: dict[tuple, list[_Addr]] = defaultdict(list)
        self._by_road: dict[str, list[_Addr]] = defaultdict(list)
        self._by_cb: dict[tuple, list[_Addr]] = defaultdict(list)
        self._by_compound: dict[str, list[_Addr]] = defaultdict(list)
        for a in self.addresses:
            road, comp = normalize(a.road), normalize(a.compound or "") or None
            self._by_rnb[(road, a.number, a.building_no or "")].append(a)
            self._by_rn[(road, a.number)].append(a)
            self._by_road[road].append(a)
            if comp:
                self._by_compound[comp].append(a)
                if a.building_no:
                    self._by_cb[(comp, a.building_no)].append(a)
        self._core: dict[str, set[str]] = defaultdict(set)
        for comp in self._by_compound:
            core = compound_core(comp)
            if core != comp:
                self._core[core].add(comp)
        self._road_numbers = {
            road: sorted({(int(m.group(1)), a.number) for a in addrs
                          if (m := _NUM_RE.match(a.number))})
            for road, addrs in self._by_road.items()
        }
        # landmarks and their aliases
        self.landmarks: dict[int, _Mark] = {
            row[0]: _Mark(*row) for row in session.execute(select(
                Landmark.id, Landmark.name, Landmark.kind, Landmark.lon, Landmark.lat,
                Landmark.address_code, Landmark.grid_code, Landmark.community_code,
                Landmark.street_code))
        }
        self._mark_names: dict[str, list[tuple[int, bool]]] = defaultdict(list)
        for m in self.landmarks.values():
            self._mark_names[normalize(m.name)].append((m.id, False))
        for lid, alias in session.execute(select(LandmarkAlias.landmark_id, LandmarkAlias.alias)):
            key = normalize(alias)
            if key and (lid, False) not in self._mark_names[key]:
                self._mark_names[key].append((lid, True))
        self.district_names = set(session.scalars(select(District.name)))
        roads = set(self._by_road) | {normalize(r) for r in session.scalars(select(Road.name))}
        self.parser = AddressParser(
            roads=roads, compounds=self._by_compound,
            cities=set(session.scalars(select(District.city).distinct())),
            districts=self.district_names,
            streets=set(session.scalars(select(Street.name))),
            communities=set(session.scalars(select(Community.name))),
        )
        # one gazetteer for scanning free text: name → kinds
        self._gaz: dict[str, set[str]] = defaultdict(set)
        for r in roads:
            self._gaz[r].add("road")
        for core in self._core:
            if len(core) >= 3:
                self._gaz[core].add("compound")
        for c in self._by_compound:
            self._gaz[c].add("compound")
        for n in self._mark_names:
            if len(n) >= 2:
                self._gaz[n].add("landmark")
        self._gaz = dict(self._gaz)
        self._gaz_lens = sorted({len(k) for k in self._gaz}, reverse=True)
        self._fuzzy_choices = sorted(set(self._by_compound) | set(self._mark_names))

    # -- helpers

    @staticmethod
    def _from_addr(a: _Addr, conf: float, by: str, name: str | None = None,
                   candidates: tuple = ()) -> Resolution:
        return Resolution(a.code, a.building_code, a.grid_code, a.community_code, a.street_code,
                          a.lon, a.lat, round(conf, 3), by, name or a.full, candidates)

    @staticmethod
    def _cand(a: _Addr, score: float, kind: str = "address") -> Candidate:
        return Candidate(a.full, kind, round(score, 3), a.grid_code, a.code, a.lon, a.lat)

    def _group(self, addrs: list[_Addr], conf: float, by: str, name: str) -> Resolution:
        """A place made of several addresses (a compound, a door with many buildings)."""
        grids = Counter(a.grid_code for a in addrs)
        grid, count = grids.most_common(1)[0]
        in_grid = [a for a in addrs if a.grid_code == grid]
        lon = sum(a.lon for a in in_grid) / len(in_grid)
        lat = sum(a.lat for a in in_grid) / len(in_grid)
        cands = ()
        if len(grids) > 1:
            conf -= 0.15
            firsts = {}
            for a in addrs:
                firsts.setdefault(a.grid_code, a)
            cands = tuple(self._cand(firsts[g], (conf * n / len(addrs)), by)
                          for g, n in grids.most_common(5))
        a0 = in_grid[0]
        return Resolution(None, None, grid, a0.community_code, a0.street_code, lon, lat,
                          round(conf, 3), by, name, cands)

    def _mark(self, lid: int, conf: float, alias: bool, candidates: tuple = (),
              building_no: str | None = None) -> Resolution:
        m = self.landmarks[lid]
        a = self.by_code.get(m.address_code) if m.address_code else None
        if m.kind == "compound" or normalize(m.name) in self._by_compound:
            hits = self._by_cb.get((normalize(m.name), building_no)) if building_no else None
            if hits and len(hits) == 1:  # 云顶5栋: the alias names the compound, then its building
                return self._from_addr(hits[0], conf - 0.05, "landmark", m.name, candidates)
            a = None  # a compound is many buildings: do not claim the first one
            conf -= 0.1
        elif alias and len(m.name) > 2:
            conf -= 0.05
        return Resolution(a.code if a else None, a.building_code if a else None, m.grid_code,
                          m.community_code, m.street_code, m.lon, m.lat, round(conf, 3),
                          "landmark", m.name, candidates)

    def compound_places(self) -> Iterator[tuple[str, float, float]]:
        """(compound, lon, lat) of every point that stands for a whole residential compound when
        a place is resolved without a building: the compound's own point, its landmark's point,
        and the point of a door whose buildings all belong to it (the points ``resolve`` gives
        for 御景里小区, 御景里 as a landmark, or 建桥南三路89号). The compound is its normalised
        name, as :meth:`compound_of` gives for an address."""
        for comp, addrs in self._by_compound.items():
            r = self._group(addrs, 1.0, "compound", comp)
            yield comp, r.lon, r.lat
        for m in self.landmarks.values():
            comp = normalize(m.name)
            if (m.kind == "compound" or comp in self._by_compound) and m.lon is not None and m.lat is not None:
                yield comp, m.lon, m.lat
        for addrs in self._by_rn.values():
            comps = {normalize(a.compound or "") for a in addrs}
            if len(addrs) > 1 and len(comps) == 1 and (comp := comps.pop()):
                r = self._group(addrs, 1.0, "address", comp)
                yield comp, r.lon, r.lat

    def compound_of(self, address_code: str | None) -> str | None:
        """The normalised compound name of a standard address (None outside compounds)."""
        a = self.by_code.get(address_code or "")
        return (normalize(a.compound) or None) if a is not None and a.compound else None

    def _mark_cand(self, lid: int, score: float) -> Candidate:
        m = self.landmarks[lid]
        return Candidate(m.name, "landmark", round(score, 3), m.grid_code, m.address_code,
                         m.lon, m.lat)

    def _landmarks(self, name: str, conf: float, building_no: str | None = None) -> Resolution:
        """The landmark(s) called ``name``; several with one name stay undecided."""
        lids = self._mark_names[name]
        if len(lids) == 1:
            lid, alias = lids[0]
            short = alias and len(name) <= 2
            return self._mark(lid, conf - (0.15 if short else 0.0), alias,
                              building_no=building_no)
        cands = tuple(self._mark_cand(lid, 0.5) for lid, _ in lids[:5])
        grids = {self.landmarks[lid].grid_code for lid, _ in lids}
        if len(grids) == 1:  # same grid either way: the grid is known, the place is not
            m = self.landmarks[lids[0][0]]
            return Resolution(grid_code=m.grid_code, community_code=m.community_code,
                              street_code=m.street_code, lon=m.lon, lat=m.lat,
                              confidence=round(conf * 0.7, 3), matched_by="landmark",
                              matched_name=name, candidates=cands)
        return Resolution(confidence=0.3, matched_by="landmark", matched_name=name,
                          candidates=cands)

    def _compound_names(self, name: str) -> tuple[list[str], float]:
        """Known compound names for a written name, and how sure the match is."""
        if name in self._by_compound:
            return [name], 1.0
        core = compound_core(name)
        hits = sorted(self._core.get(core, set()) | ({core} if core in self._by_compound else set()))
        if hits:
            return hits, 0.9
        return [], 0.0

    def _from_parsed(self, p: ParsedAddress) -> Resolution | None:
        """Exact dictionary lookups for one parse; None when nothing is known."""
        road = p.road
        b = p.building_no or ""
        if road and p.number:
            hits = self._by_rnb.get((road, p.number, b))
            if hits and len(hits) == 1:
                conf = 1.0
                if p.compound and hits[0].compound and \
                        compound_core(p.compound) != compound_core(normalize(hits[0].compound)):
                    conf = 0.85
                return self._from_addr(hits[0], conf, "address")
            door = self._by_rn.get((road, p.number))
            if door:
                if len(door) == 1:
                    return self._from_addr(door[0], 0.75 if b else 0.95, "address")
                if not b:
                    return self._group(door, 0.85, "address", f"{road}{p.number}号")
        if p.compound:
            names, sure = self._compound_names(p.compound)
            if len(names) == 1:
                comp = names[0]
                if b and (hits := self._by_cb.get((comp, b))) and len(hits) == 1:
                    return self._from_addr(hits[0], 0.95 * sure, "compound")
                conf = (0.8 if not b else 0.65) * sure
                return self._group(self._by_compound[comp], conf, "compound", comp)
            if len(names) > 1:
                cands = []
                for comp in names[:5]:
                    g = self._group(self._by_compound[comp], 0.4, "compound", comp)
                    cands.append(Candidate(comp, "compound", 0.4, g.grid_code, None, g.lon, g.lat))
                return Resolution(confidence=0.3, matched_by="compound", matched_name=p.compound,
                                  candidates=tuple(cands))
        if road and road in self._by_road:
            return self._near_door(road, p.number)
        return None

    def _near_door(self, road: str, number: str | None) -> Resolution:
        """A known road with an unknown or missing door number: the nearest door on it."""
        addrs = self._by_road[road]
        m = _NUM_RE.match(number or "")
        if m:
            n = int(m.group(1))
            numbers = self._road_numbers.get(road, [])
            ranked = sorted(numbers, key=lambda t: (abs(t[0] - n), (t[0] - n) % 2, t[0]))
            if ranked:
                near, near_str = ranked[0]
                gap = abs(near - n)
                conf = 0.55 if gap <= 4 else 0.45 if gap <= 20 else 0.3
                door = self._by_rn[(road, near_str)]
                res = self._group(door, conf, "road", road)
                cands = tuple(self._cand(self._by_rn[(road, s)][0], conf * 0.9, "road")
                              for _, s in ranked[:5])
                return Resolution(None, None, res.grid_code if conf >= 0.45 else None,
                                  res.community_code if conf >= 0.45 else None,
                                  res.street_code, res.lon, res.lat, res.confidence, "road",
                                  road, cands)
        grids = Counter(a.grid_code for a in addrs)
        if len(grids) == 1:
            return self._group(addrs, 0.5, "road", road)
        streets = {a.street_code for a in addrs}
        first = {}
        for a in addrs:
            first.setdefault(a.grid_code, a)
        cands = tuple(self._cand(first[g], 0.2, "road") for g, _ in grids.most_common(5))
        return Resolution(street_code=streets.pop() if len(streets) == 1 else None,
                          confidence=0.2, matched_by="road", matched_name=road, candidates=cands)

    def _scan(self, s: str) -> list[tuple[int, str, set[str]]]:
        """Known names occurring in ``s``: (start, name, kinds), longest at each start."""
        out = []
        i, n = 0, len(s)
        while i < n:
            for ln in self._gaz_lens:
                if ln <= n - i and (kinds := self._gaz.get(s[i:i + ln])):
                    out.append((i, s[i:i + ln], kinds))
                    i += ln - 1
                    break
            i += 1
        return out

    def _fuzzy(self, queries: list[str], parsed: ParsedAddress) -> Resolution | None:
        """Near-miss compound/landmark names (rapidfuzz); decide only when clearly ahead."""
        scored: dict[str, float] = {}
        for q in queries:
            if len(q) < 3:
                continue
            for name, score, _ in process.extract(q, self._fuzzy_choices, scorer=fuzz.ratio,
                                                  limit=5, score_cutoff=60):
                scored[name] = max(scored.get(name, 0.0), score / 100.0)
        if not scored:
            return None
        targets: list[tuple[float, str, Resolution]] = []
        for name, score in sorted(scored.items(), key=lambda t: (-t[1], t[0])):
            if name in self._by_compound:
                targets.append((score, name, self._compound_place(name, parsed.building_no, 1.0)))
            for lid, _ in self._mark_names.get(name, ()):
                m = self.landmarks[lid]
                if normalize(m.name) in self._by_compound and name != normalize(m.name):
                    continue  # the compound itself is already a target
                targets.append((score, m.name, self._mark(lid, 1.0, False,
                                                          building_no=parsed.building_no)))
        if not targets:  # every near name was skipped above (a compound's own landmark…)
            return None
        targets.sort(key=lambda t: -t[0])
        cands, seen = [], set()
        for score, name, res in targets:
            key = (name, res.grid_code)
            if key not in seen:
                seen.add(key)
                cands.append(Candidate(name, res.matched_by or "compound",
                                       round(score, 3), res.grid_code, res.address_code,
                                       res.lon, res.lat))
        s1, best_name, best = targets[0]
        rivals = [t for t in targets if t[0] >= s1 - 0.08 and t[2].grid_code != best.grid_code]
        if s1 >= 0.8 and not rivals:
            conf = round(best.confidence * 0.75 * s1, 3)
            return Resolution(**{**best.__dict__, "confidence": conf, "matched_name": best_name,
                                 "candidates": tuple(cands[:5])})
        return Resolution(confidence=round(min(0.3, 0.3 * s1), 3), candidates=tuple(cands[:5]))

    def _compound_place(self, name: str, building_no: str | None, conf: float) -> Resolution:
        """A known compound (exact name) → the building if numbered, else the compound."""
        if building_no and (hits := self._by_cb.get((name, building_no))) and len(hits) == 1:
            return self._from_addr(hits[0], conf, "compound")
        return self._group(self._by_compound[name], conf * (0.8 if not building_no else 0.65),
                           "compound", name)

    # -- the entry point

    def resolve(self, text: str) -> Resolution:
        """Resolve free text to a standard address / grid. Never raises."""
        s = normalize(text or "")
        if not s:
            return Resolution()
        if s in self._by_full:
            return self._from_addr(self._by_full[s], 1.0, "address")
        parsed = self.parser.parse(s)
        best = self._from_parsed(parsed)
        if parsed.district and self.district_names and parsed.district not in self.district_names:
            if best is not None:  # an address in another district: do not claim it
                best = Resolution(candidates=(Candidate(best.matched_name or "", best.matched_by
                                                        or "address", best.confidence * 0.3,
                                                        best.grid_code, best.address_code,
                                                        best.lon, best.lat),),
                                  confidence=round(best.confidence * 0.3, 3), parsed=parsed)
            return best or Resolution(parsed=parsed)
        if best is None or best.confidence < 0.95:
            for start, name, kinds in self._scan(s)[:8]:
                found = []
                if "landmark" in kinds:
                    after = self.parser.parse(s[start + len(name):])
                    pc = parsed.compound
                    # 龙热印象花园 holds the alias 印象 but names some other, unknown place
                    inside = bool(pc and name in pc and pc != name and compound_core(pc) != name
                                  and pc not in self._by_compound)
                    found.append(self._landmarks(name, 0.45 if inside else 0.9, after.building_no))
                if kinds & {"road", "compound"} and start > 0:  # start 0 was parsed above
                    found.append(self._from_parsed(self.parser.parse(s[start:])))
                for r in found:
                    if r is not None and (best is None or r.confidence > best.confidence):
                        best = r
        if best is None or best.confidence < 0.5:
            queries = [q for q in (parsed.compound, s[:20]) if q]
            fz = self._fuzzy(queries, parsed)
            if fz is not None and (best is None or fz.confidence > best.confidence
                                   or (not best.candidates and fz.candidates)):
                if best is not None and fz.confidence <= best.confidence:
                    fz = Resolution(**{**best.__dict__, "candidates": fz.candidates})
                best = fz
        best = best or Resolution()
        return Resolution(**{**best.__dict__, "parsed": parsed})
