"""Where an appeal is: find place phrases in free text and resolve them to a standard address
and grid through :class:`jiedao.geo.locate.AddressResolver`; a point resolves by
:class:`jiedao.geo.locate.GridIndex`.

Place phrases are found with a gazetteer of the district's own names (roads, compounds,
landmarks and their aliases) extended by the address tail that follows (``88号``, ``5栋``,
``2单元``, ``C出口``, ``门口``…), plus patterns for places the gazetteer does not know
(``XX路12号``, ``XX小区``, ``XX小学门口``) and for crossings (``XX路和YY路交叉口``).

The locator never guesses: when nothing resolves confidently, when the best match is a fuzzy
one, or when two phrases point to places far apart, the grid stays empty, the candidates are
listed and :attr:`LocationResult.unsure` is set so that the operator is asked.
"""

from __future__ import annotations

import logging
import math
import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from jiedao.cases.analysis.card import Location
from jiedao.geo.address import compound_core, normalize
from jiedao.geo.locate import AddressResolver, GridIndex, Resolution
from jiedao.geo.models import Address, Landmark, LandmarkAlias, Road, Street

log = logging.getLogger(__name__)
_M_PER_DEG = 111_320.0
_CJK = "\u4e00-\u9fff"
_ROAD_TAIL_RE = re.compile(r"\d+(?:-\d+)?号(?:院)?")
_BUILDING_TAIL_RE = re.compile(r"(?:[\dA-Z]+栋)?(?:\d+单元)?(?:\d+(?:楼|层))?(?:\d+(?:室|号房))?")
_PLACE_TAIL_RE = re.compile(
    r"(?:地铁站|站)?(?:[A-Z]\d?(?:出口|口))?"
    r"(?:正门|大门|东门|西门|南门|北门|后门|侧门|门口|门前|对面|旁边|附近|楼下|里面|内|外|路口)?")
_CROSS_RE = re.compile(r"^(?:和|与|跟|同|、|交)$")
_CROSS_TAIL_RE = re.compile(r"(?:的)?(?:交叉口|交叉路口|十字路口|路口|交汇处|交界处|拐角|转角)")
# places the gazetteer does not know: a name of 2–6 characters before a place word
_UNKNOWN_RE = re.compile(
    rf"([{_CJK}]{{2,8}}(?:大道|大街|路|街|巷)\d+(?:-\d+)?号|"
    rf"[{_CJK}]{{2,8}}(?:小区|花园|家园|新村|公寓|苑|大厦|广场|中心|地铁站|小学|中学|幼儿园|医院|市场|菜场|公园))")
_LEAD_WORDS = ("我们这边", "我们这里", "我们那边", "我们家", "我们", "我家", "住在", "位于", "就在",
               "在", "住", "到", "从", "去", "是", "的", "那个", "这个", "这边", "那边", "附近", "旁边")


@dataclass(frozen=True)
class Phrase:
    """A place phrase in the (normalised) text."""

    start: int
    end: int
    text: str  # as written (normalised), with its tail
    core: str  # what is resolved
    kind: str  # address / compound / landmark / road / crossing / unknown


@dataclass(frozen=True)
class LocationResult:
    location: Location
    unsure: bool  # a place was named but not resolved with confidence
    named: bool  # the text (or the case) names a place at all
    reasons: tuple[str, ...] = ()


def _dist_m(lon1, lat1, lon2, lat2) -> float:
    coslat = math.cos(math.radians((lat1 + lat2) / 2))
    return math.hypot((lon1 - lon2) * _M_PER_DEG * coslat, (lat1 - lat2) * _M_PER_DEG)


class Locator:
    """Place extraction + resolution, built once per pipeline from the database."""

    def __init__(self, session: Session, resolver: AddressResolver | None = None,
                 grid_index: GridIndex | None = None, *, accept: float = 0.6,
                 far_apart_m: float = 600.0, cache_size: int = 50_000):
        self.resolver = resolver or AddressResolver(session)
        self.grid_index = grid_index or GridIndex.from_session(session)
        self.accept = accept
        self.far_apart_m = far_apart_m
        self.street_names = dict(session.execute(select(Street.code, Street.name)).all())
        gaz: dict[str, str] = {}
        for r in session.scalars(select(Road.name)):
            gaz[normalize(r)] = "road"
        road_pts: dict[str, list] = defaultdict(list)
        for road, comp, lon, lat in session.execute(
                select(Address.road, Address.compound, Address.lon, Address.lat)):
            gaz[normalize(road)] = "road"
            road_pts[normalize(road)].append((lon, lat))
            if comp:
                c = normalize(comp)
                gaz.setdefault(c, "compound")
                core = compound_core(c)
                if len(core) >= 3:
                    gaz.setdefault(core, "compound")
        for name in session.scalars(select(Landmark.name)):
            gaz.setdefault(normalize(name), "landmark")
        for alias in session.scalars(select(LandmarkAlias.alias)):
            a = normalize(alias)
            if len(a) >= 2:
                gaz.setdefault(a, "landmark")
        self._gaz = {k: v for k, v in gaz.items() if k}
        # lengths of the names by their first two characters (longest first): a scan position
        # tries only the lengths of names that start there
        by_prefix: dict[str, set[int]] = defaultdict(set)
        for k in self._gaz:
            if len(k) >= 2:
                by_prefix[k[:2]].add(len(k))
        self._by_prefix = {p: tuple(sorted(ls, reverse=True)) for p, ls in by_prefix.items()}
        self._road_pts = {r: np.asarray(p, dtype=float) for r, p in road_pts.items()}
        self._cache: dict[str, Resolution] = {}
        self._located: dict[tuple, LocationResult] = {}
        self._cache_size = cache_size

    # -- extraction

    def _scan(self, s: str) -> list[tuple[int, int, str]]:
        """Gazetteer names in ``s``, longest match first, left to right, not overlapping."""
        out = []
        gaz, by_prefix = self._gaz, self._by_prefix
        i, n = 0, len(s)
        while i < n:
            for ln in by_prefix.get(s[i:i + 2], ()):
                if ln <= n - i and (kind := gaz.get(s[i:i + ln])):
                    out.append((i, i + ln, kind))
                    i += ln
                    break
            else:
                if kind := gaz.get(s[i]):
                    out.append((i, i + 1, kind))
                i += 1
        return out

    def phrases(self, text: str) -> list[Phrase]:
        """Place phrases in ``text`` (normalised), left to right."""
        s = normalize(text or "")
        hits = self._scan(s)
        out: list[Phrase] = []
        used_until = -1
        k = 0
        while k < len(hits):
            start, end, kind = hits[k]
            if start < used_until:
                k += 1
                continue
            # a crossing: ROAD (和|与…) ROAD 路口
            if kind == "road" and k + 1 < len(hits) and hits[k + 1][2] == "road" \
                    and _CROSS_RE.match(s[end:hits[k + 1][0]] or "_"):
                e2 = hits[k + 1][1]
                if m := _CROSS_TAIL_RE.match(s, e2):
                    out.append(Phrase(start, m.end(), s[start:m.end()],
                                      s[start:end] + "|" + s[hits[k + 1][0]:e2], "crossing"))
                    used_until = m.end()
                    k += 2
                    continue
            pos, kinds = end, [kind]
            if kind == "road" and (m := _ROAD_TAIL_RE.match(s, pos)):
                pos = m.end()
                kinds.append("number")
            # adjacent names merge: road+number+compound+building
            while k + 1 < len(hits) and hits[k + 1][0] == pos and hits[k + 1][2] in ("compound", "landmark"):
                k += 1
                pos = hits[k][1]
                kinds.append(hits[k][2])
            if m := _BUILDING_TAIL_RE.match(s, pos):
                pos = m.end()
            core_end = pos
            if m := _PLACE_TAIL_RE.match(s, pos):
                pos = m.end()
            if kind == "road" and "number" not in kinds and len(kinds) == 1:
                kind_out = "road"
            elif "number" in kinds:
                kind_out = "address"
            else:
                kind_out = kinds[-1] if kinds[-1] != "number" else "address"
            out.append(Phrase(start, pos, s[start:pos], s[start:core_end], kind_out))
            used_until = pos
            k += 1
        # places the gazetteer does not know
        for m in _UNKNOWN_RE.finditer(s):
            if any(p.start <= m.start() < p.end or m.start() <= p.start < m.end() for p in out):
                continue
            core = m.group(1)
            for w in _LEAD_WORDS:
                idx = core.rfind(w)
                if 0 <= idx < len(core) - len(w) - 1:
                    core = core[idx + len(w):]
            if len(core) >= 3:
                out.append(Phrase(m.start(), m.end(), core, core, "unknown"))
        out.sort(key=lambda p: p.start)
        return out

    # -- resolution

    def _resolve(self, core: str) -> Resolution:
        r = self._cache.get(core)
        if r is None:
            try:
                r = self.resolver.resolve(core)
            except Exception:  # the resolver promises not to raise; never let a place sink intake
                log.exception("地址解析出错：%r", core)
                r = Resolution()
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[core] = r
        return r

    def _crossing(self, phrase: Phrase) -> tuple[Resolution | None, str]:
        a, b = phrase.core.split("|", 1)
        pa, pb = self._road_pts.get(a), self._road_pts.get(b)
        if pa is None or pb is None or not len(pa) or not len(pb):
            return None, "路口所在道路无门牌数据"
        coslat = math.cos(math.radians(float(pa[0, 1])))
        dx = (pa[:, None, 0] - pb[None, :, 0]) * _M_PER_DEG * coslat
        dy = (pa[:, None, 1] - pb[None, :, 1]) * _M_PER_DEG
        d = np.hypot(dx, dy)
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        if d[i, j] > 250:
            return None, f"{a}与{b}相距较远，未找到路口"
        lon, lat = (pa[i, 0] + pb[j, 0]) / 2, (pa[i, 1] + pb[j, 1]) / 2
        grid = self.grid_index.nearest_grid(float(lon), float(lat), 150)
        if grid is None:
            return None, "路口不在任何网格内"
        community, street = self.grid_index.parents(grid)
        return Resolution(None, None, grid, community, street, float(lon), float(lat), 0.8, "road",
                          f"{a}与{b}交叉口"), ""

    def _to_location(self, text: str, r: Resolution, *, keep_grid: bool, candidates=()) -> Location:
        cands = tuple(c if isinstance(c, dict) else
                      {"name": c.name, "kind": c.kind, "score": c.score, "grid_code": c.grid_code,
                       "address_code": c.address_code, "lon": c.lon, "lat": c.lat}
                      for c in (candidates or r.candidates))
        if not keep_grid:
            return Location(text=text, confidence=round(float(r.confidence), 3),
                            matched_by=r.matched_by, candidates=cands,
                            street_code=None, street_name=None)
        street = r.street_code
        return Location(text=text, address_code=r.address_code, building_code=r.building_code,
                        grid_code=r.grid_code, community_code=r.community_code, street_code=street,
                        street_name=self.street_names.get(street) if street else None,
                        lon=r.lon, lat=r.lat, confidence=round(float(r.confidence), 3),
                        matched_by=r.matched_by, candidates=cands)

    def _cand_of(self, r: Resolution, name: str) -> dict:
        return {"name": r.matched_name or name, "kind": r.matched_by or "place",
                "score": round(float(r.confidence), 3), "grid_code": r.grid_code,
                "address_code": r.address_code, "lon": r.lon, "lat": r.lat}

    def locate_text(self, text: str) -> LocationResult:
        """Resolve the place named in free text (or say that it is unsure).

        The answer depends only on the place phrases found (the first six), so it is memoised
        by them: the same place named the same way is resolved once (results are immutable)."""
        phrases = self.phrases(text)
        if not phrases:
            return LocationResult(Location(), unsure=False, named=False)
        key = tuple((p.text, p.core, p.kind) for p in phrases[:6])
        got = self._located.get(key)
        if got is None:
            if len(self._located) >= self._cache_size:
                self._located.clear()
            got = self._located[key] = self._from_phrases(phrases)
        return got

    def _from_phrases(self, phrases: list[Phrase]) -> LocationResult:
        scored: list[tuple[Phrase, Resolution]] = []
        notes: list[str] = []
        for p in phrases[:6]:
            if p.kind == "crossing":
                r, why = self._crossing(p)
                if r is None:
                    notes.append(why)
                    continue
            else:
                r = self._resolve(p.core)
                if p.kind == "landmark" and len(p.core) <= 2 and p.end - p.start <= 2:
                    # a bare two-character alias ("江滩", "云顶") may be an ordinary word
                    r = Resolution(**{**r.__dict__, "confidence": r.confidence * 0.7})
            if r.confidence > 0 or r.candidates:
                scored.append((p, r))
        if not scored:
            p = phrases[0]
            return LocationResult(Location(text=p.text), unsure=True, named=True,
                                  reasons=tuple(notes) or (f"“{p.text}”未能匹配到标准地址",))
        sure = [(p, r) for p, r in scored if r.grid_code and r.confidence >= self.accept]
        if not sure:
            p, r = max(scored, key=lambda t: t[1].confidence)
            cands = list(r.candidates)
            if r.grid_code and not any(
                    (c.grid_code if not isinstance(c, dict) else c["grid_code"]) == r.grid_code
                    for c in cands):
                cands.insert(0, self._cand_of(r, p.core))
            return LocationResult(self._to_location(p.text, r, keep_grid=False, candidates=cands),
                                  unsure=True, named=True,
                                  reasons=(f"“{p.text}”匹配把握不足（{r.confidence:.2f}），请确认地点",))
        # the most specific, most confident phrase wins; far-apart rivals make it unsure
        rank = {"address": 3, "compound": 2, "landmark": 2, "road": 1, None: 0}
        p, r = max(sure, key=lambda t: (t[1].confidence, rank.get(t[1].matched_by, 0), t[0].end - t[0].start))
        rivals = [(q, s) for q, s in sure if s.grid_code != r.grid_code and None not in (s.lon, r.lon)
                  and _dist_m(s.lon, s.lat, r.lon, r.lat) > self.far_apart_m]
        if rivals:
            cands = [self._cand_of(r, p.core)] + [self._cand_of(s, q.core) for q, s in rivals[:4]]
            names = "、".join([p.text] + [q.text for q, _ in rivals[:2]])
            return LocationResult(self._to_location(p.text, r, keep_grid=False, candidates=cands),
                                  unsure=True, named=True,
                                  reasons=(f"文中提到多个相距较远的地点（{names}），请确认",))
        return LocationResult(self._to_location(p.text, r, keep_grid=True), unsure=False, named=True)

    def locate_point(self, lon: float, lat: float) -> Location | None:
        """The grid at a point (None when outside every grid)."""
        grid = self.grid_index.grid_at(lon, lat)
        if grid is None:
            return None
        community, street = self.grid_index.parents(grid)
        return Location(grid_code=grid, community_code=community, street_code=street,
                        street_name=self.street_names.get(street), lon=lon, lat=lat,
                        confidence=0.95, matched_by="point")

    def locate(self, text: str, *, location_text: str | None = None, lon: float | None = None,
               lat: float | None = None) -> LocationResult:
        """Place of a case: a given point first, then the location field, then the text."""
        from_text = None
        if location_text and location_text.strip():
            from_text = self.locate_text(location_text)
            if not from_text.named:  # the field holds a place we cannot parse: still a place
                from_text = LocationResult(Location(text=location_text.strip()[:300]), unsure=True,
                                           named=True, reasons=("地点字段未能匹配到标准地址",))
        if from_text is None or (from_text.unsure and text):
            in_text = self.locate_text(text)
            if from_text is None or (in_text.named and not in_text.unsure):
                from_text = in_text
        if lon is not None and lat is not None:
            try:
                point = self.locate_point(float(lon), float(lat))
            except (TypeError, ValueError):
                point = None
            if point is not None:
                loc = from_text.location
                if loc.grid_code == point.grid_code and loc.address_code:
                    point = Location(**{**point.__dict__, "text": loc.text, "address_code": loc.address_code,
                                        "building_code": loc.building_code, "confidence": 0.98})
                elif loc.text:
                    point = Location(**{**point.__dict__, "text": loc.text})
                return LocationResult(point, unsure=False, named=True)
            return LocationResult(Location(text=from_text.location.text, lon=float(lon), lat=float(lat),
                                           candidates=from_text.location.candidates),
                                  unsure=True, named=True, reasons=("坐标不在本区任何网格内",))
        return from_text
