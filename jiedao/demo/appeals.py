"""A deterministic year of citizen appeals and enterprise requests for the demo district (示例数据).

:class:`AppealGenerator` yields :class:`Appeal` records in time order, day by day (memory
stays small: only the current day and the scheduled follow-on calls of open bursts are
held). Full scale is about 294,000 appeals in the year (about 3,870 of them enterprise
requests), small scale about 1,500 over the same year.

What shapes the year
--------------------
* Weekly and daily rhythm: weekdays busier than weekends, statutory holidays quieter (春节
  quietest), an hourly curve with morning and afternoon peaks and a quiet night.
* Seasons per matter: 积水/内涝/噪音/空调/蚊虫 in summer (and on a few generated rainstorm
  days 积水 surges), 燃气/供暖/欠薪 in winter, 入学 in spring; 占道/烧烤/广场舞 in the
  evenings of summer.
* Bursts (events): the same problem at the same place reported by many callers within
  hours (停电, 停水, 爆管) or days (施工噪音, 广场舞); each caller phrases it, and often names
  the place, differently.
* Callers: a synthetic phone pool with repeat callers, a few frequent callers with dozens of
  calls (each with favourite matters and a home place), and callers who call again about
  the same problem a few days later (催办; the same event).
* Phrasing: :mod:`jiedao.demo.phrasing` (a grammar per matter seeded from the catalogue).

The public fields of an appeal (what a hotline export would hold)
-----------------------------------------------------------------
``seq`` (0-based, in time order), ``received_at`` (naive local time), ``channel``
(hotline / web / app / enterprise), ``kind`` (appeal / enterprise), ``phone``,
``caller_name`` (王先生… or None), ``enterprise`` (company name for enterprise requests),
``text``, ``location_text`` (the 诉求地址 an operator typed, or None).

The truth (kept apart from the text; what the metrics are measured against)
---------------------------------------------------------------------------
``matter_code``: the matter of the responsibility list (category label).
``urgency``: 紧急 / 较急 / 一般 as the situation really is (the text carries cues).
``names_place``: True when the text names a place precisely enough to find one grid
  (a full or partial standard address, a compound with or without 栋, a landmark or alias,
  a metro station exit). The right-grid rate is measured on these appeals only.
``place_kind``: how the place is named: address_full / address_road / compound_building /
  compound / landmark / metro / intersection / vague / none. ``intersection`` (two roads'
  crossing) and ``vague`` (我家楼下) do not count as naming a place.
``address_code``: the standard address when the mention identifies a building, else None.
``landmark_id``: the landmark (compound, school, station…) when one was named, else None.
``grid_code`` / ``community_code`` / ``street_code``: where the problem really is. Set for
  every appeal: for a vague or missing mention it is the caller's place, which an operator
  learns by asking back; for an intersection it is the grid containing the crossing point.
``asked_place``: what the caller answers when an operator asks back where the problem is: the
  standard address (for a home, shop or building), the landmark's name, or the two roads'
  crossing. A hotline operator learns it by asking; the replay's simulated operator types it
  into the location field when the analysis asks for the place (never otherwise).
``event``: burst id shared by every appeal about the same problem at the same place
  (duplicates), None for a one-off appeal. Duplicate precision/recall is measured on pairs.
``held_out``: the deterministic 20 % evaluation split (a hash of seed and seq); the replay
  trains the classifier on the other 80 % and reports macro-F1 on this split.
``caller_key``: the caller's identity (same person → same key), ``frequent_caller`` and
  ``follow_up`` (a caller calling again about the same event).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import json
import math
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from jiedao.demo import phrasing
from jiedao.demo.pipeline import DEFAULT_SEED, stage_rng

DEMO_YEAR = 2025
TOTALS = {"full": 294_000, "small": 1_500}
ENTERPRISE_SHARE = 3_870 / 294_000  # of all appeals; of seeds it is / (1 - EXTRA_SHARE)
HELD_OUT_MODULO = 5  # 1 in 5 → 20 %
# share of appeals that are follow-on calls of a burst or a repeat call: the seeds per day
# are scaled by (1 - this) so that the year's total lands near TOTALS
EXTRA_SHARE = 0.205

HOURS = (0.6, 0.35, 0.2, 0.15, 0.15, 0.25, 0.6, 1.6, 3.4, 4.6, 4.9, 4.4,
         3.3, 3.3, 4.3, 4.6, 4.4, 4.0, 3.4, 3.2, 3.3, 3.0, 2.2, 1.2)
WEEKEND_HOURS = tuple(h * f for h, f in zip(HOURS, (
    1.3, 1.3, 1.3, 1.2, 1.0, 0.9, 0.7, 0.6, 0.7, 0.9, 1.0, 1.0,
    1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.1, 1.2, 1.2, 1.2, 1.3, 1.3), strict=True))
OFFICE_HOURS = tuple(h if 8 <= i <= 17 and i != 12 else 0.02 for i, h in enumerate(HOURS))
WEEKDAY = (1.08, 1.05, 1.0, 1.0, 0.97, 0.74, 0.70)
MONTH = (0.95, 0.85, 0.95, 0.97, 1.0, 1.07, 1.15, 1.15, 1.02, 0.97, 0.95, 0.97)

SUMMER = ("空调", "噪音", "积水", "渍水", "内涝", "防汛", "蚊", "烧烤", "夜市", "占道", "游泳", "停电",
          "广场舞", "露天", "夜宵", "毛毛虫", "病媒", "蟑螂", "下水道", "排水", "断电", "水压")
WINTER = ("供暖", "暖气", "燃气", "煤气", "液化气", "停气", "取暖", "欠薪", "拖欠工资", "讨薪", "农民工")
SPRING = ("杨絮", "柳絮", "入学", "学位", "招生", "修剪", "疫苗", "病虫害", "幼儿园")
EVENING = ("烧烤", "夜市", "占道", "广场舞", "噪音", "夜间施工", "夜宵", "邻居", "酒吧", "喝酒", "蹦迪")
COMMON = ("噪音", "物业", "停车", "垃圾", "占道", "漏水", "停水", "停电", "电梯", "违停", "油烟", "施工")
RAIN = ("积水", "渍水", "内涝", "下水道", "排水")
OUTAGE = ("停电", "停水", "停气", "爆管", "信号灯", "没电", "断电", "跑水")
NOISY = ("施工", "广场舞", "噪音", "烧烤", "油烟", "喇叭", "装修")
DANGER = ("燃气泄漏", "井盖", "爆管", "信号灯", "积水", "电力设施", "危险化学品", "治安", "电梯",
          "高空", "倒伏", "地质", "防汛", "火灾", "消防通道")
SEASON_CURVES = {
    "summer": (0.45, 0.45, 0.6, 0.85, 1.2, 1.6, 1.95, 1.95, 1.4, 0.85, 0.55, 0.45),
    "winter": (1.9, 1.7, 1.2, 0.8, 0.6, 0.5, 0.5, 0.5, 0.6, 0.9, 1.4, 1.9),
    "spring": (0.8, 0.8, 1.0, 1.5, 1.8, 1.8, 1.4, 1.3, 1.0, 0.7, 0.6, 0.6),
}
# landmark kinds a matter is usually told by
LANDMARK_PREF = {
    "JY": "school", "WS0101": "hospital", "WS0102": "hospital", "SM0201": "market",
    "SC0302": "market", "YL0301": "park", "GA0101": "park", "WL0401": "park",
    "CG0101": "metro", "CG0604": "metro", "JT0301": "metro", "JT0101": "metro",
    "SC0201": "mall", "SM0101": "mall", "CG0701": "mall",
}
# share of appeals of a level-1 class that are about a place at all
PLACE_SHARE = {
    "城乡建设与管理": 0.95, "住房与物业": 0.9, "生态环境": 0.9, "公用事业": 0.85, "交通出行": 0.9,
    "水务": 0.95, "园林绿化": 0.95, "消防安全": 0.95, "基层治理": 0.92, "安全生产与应急": 0.9,
    "公安政法": 0.8, "市场监管": 0.6, "文化旅游体育": 0.5, "商务": 0.55, "卫生健康": 0.45,
    "教育": 0.45, "劳动和社会保障": 0.3, "民政与社会服务": 0.35, "企业服务": 0.5,
}
# level-2 classes that are mostly questions about a policy or a service, not about a place
PLACE_SHARE_L2 = {
    "户政管理": 0.1, "反诈": 0.1, "矛盾调解": 0.3, "婚姻登记": 0.05, "入学招生": 0.3, "学生资助": 0.05,
    "托育与生育": 0.2, "社会保险": 0.05, "就业创业": 0.1, "养老服务": 0.5, "社会救助": 0.4,
    "房屋交易": 0.5, "住房保障": 0.3, "房屋征收": 0.5, "消费维权": 0.5, "价格监管": 0.6,
    "惠企政策": 0.1, "科技创新": 0.1, "企业登记": 0.2, "营商环境": 0.3, "人才政策": 0.05,
    "辐射": 0.8, "医疗服务": 0.6, "社会组织": 0.1, "殡葬管理": 0.8,
}
ENTERPRISE_WEIGHT = {"企业服务": 6.0, "税务": 2.0, "政务服务": 1.5, "劳动和社会保障": 0.6,
                     "自然资源和规划": 0.5}
ENTERPRISE_MATTERS = {"QY0501": 3.0, "GY0101": 1.0, "SC0103": 0.3, "SS0101": 1.0}
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程魏"
COMPANY_PREFIX = ("江城", "临江", "楚天", "汉阳", "琴台", "鹦鹉洲", "长江", "知音", "晴川", "荆楚",
                  "鄂", "江汉", "龟山", "月湖", "翠微", "四新", "光谷", "江欣")
COMPANY_CORE = ("智造", "恒信", "华创", "鼎盛", "启明", "博远", "德润", "瑞丰", "宏图", "众联", "天成",
                "锐思", "云帆", "泰和", "嘉禾", "新源", "卓越", "中科", "凯达", "安泰")
COMPANY_TRADE = ("科技", "信息技术", "贸易", "建材", "餐饮管理", "物流", "生物医药", "电子", "文化传媒",
                 "建筑工程", "机械设备", "新材料", "软件", "商贸", "物业服务")


@dataclass(slots=True)
class Appeal:
    """One generated appeal: public fields, then the truth (see the module docstring)."""

    seq: int
    received_at: datetime
    channel: str
    kind: str
    phone: str
    caller_name: str | None
    enterprise: str | None
    text: str
    location_text: str | None
    matter_code: str
    urgency: str
    names_place: bool
    place_kind: str
    address_code: str | None
    landmark_id: int | None
    grid_code: str | None
    community_code: str | None
    street_code: str | None
    event: int | None
    held_out: bool
    caller_key: int
    frequent_caller: bool = False
    follow_up: bool = False
    asked_place: str | None = None

    def truth(self) -> dict[str, Any]:
        """The truth fields as a dict (for evaluation and JSON export)."""
        return {k: getattr(self, k) for k in (
            "matter_code", "urgency", "names_place", "place_kind", "address_code", "landmark_id",
            "grid_code", "community_code", "street_code", "event", "held_out", "caller_key",
            "frequent_caller", "follow_up", "asked_place")}


def is_held_out(seed: int, seq: int) -> bool:
    """The deterministic 20 % evaluation split of appeal ``seq`` under ``seed``."""
    return zlib.crc32(f"{seed}:{seq}".encode()) % HELD_OUT_MODULO == 0


# ---------------------------------------------------------------- places
@dataclass
class Places:
    """The district's nameable places, read from a generated World or from a database."""

    addresses: list[dict]  # code, full, road, number, compound, building_no, grid/community/street, kind
    landmarks: list[dict]  # id, name, kind, address_code, grid/community/street, lon, lat, aliases
    roads: list[tuple[str, Any]]  # (name, GeoJSON geometry text or None)
    grids: list[tuple[str, Any]]  # (code, GeoJSON geometry text or None)
    city: str = "江城市"
    district: str = "临江区"
    by_landmark: dict[int, dict] = field(init=False, repr=False)
    compound_landmark: dict[str, dict] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.addresses.sort(key=lambda a: a["code"])
        self.landmarks.sort(key=lambda m: m["id"])
        self.by_landmark = {m["id"]: m for m in self.landmarks}
        self.compound_landmark = {m["name"]: m for m in self.landmarks if m["kind"] == "compound"}

    @classmethod
    def from_world(cls, world) -> Places:
        """From the in-memory tables of :func:`jiedao.demo.pipeline.generate`."""
        kinds = {b["code"]: b["kind"] for b in world.rows("geo_building")}
        aliases: dict[int, list[str]] = {}
        for a in world.rows("geo_landmark_alias"):
            aliases.setdefault(a["landmark_id"], []).append(a["alias"])
        addrs = [{k: a[k] for k in ("code", "full", "road", "number", "compound", "building_no",
                                    "grid_code", "community_code", "street_code")}
                 | {"kind": kinds.get(a["building_code"], "residential")} for a in world.rows("geo_address")]
        lms = [{k: m[k] for k in ("id", "name", "kind", "address_code", "grid_code", "community_code",
                                  "street_code", "lon", "lat")} | {"aliases": sorted(aliases.get(m["id"], []))}
               for m in world.rows("geo_landmark")]
        d = world.rows("geo_district")[0]
        return cls(addrs, lms, [(r["name"], r.get("geometry")) for r in world.rows("geo_road")],
                   [(g["code"], g.get("geometry")) for g in world.rows("geo_grid")],
                   city=d.get("city") or "江城市", district=d["name"])

    @classmethod
    def from_session(cls, session) -> Places:
        """From the geo tables of a database (the demo district once written)."""
        from sqlalchemy import select

        from jiedao.geo import models as g

        addrs = [dict(r._mapping) for r in session.execute(
            select(g.Address.code, g.Address.full, g.Address.road, g.Address.number, g.Address.compound,
                   g.Address.building_no, g.Address.grid_code, g.Address.community_code,
                   g.Address.street_code, g.Building.kind)
            .join(g.Building, g.Building.code == g.Address.building_code))]
        aliases: dict[int, list[str]] = {}
        for lid, alias in session.execute(select(g.LandmarkAlias.landmark_id, g.LandmarkAlias.alias)):
            aliases.setdefault(lid, []).append(alias)
        lms = [dict(r._mapping) | {"aliases": sorted(aliases.get(r.id, []))} for r in session.execute(
            select(g.Landmark.id, g.Landmark.name, g.Landmark.kind, g.Landmark.address_code,
                   g.Landmark.grid_code, g.Landmark.community_code, g.Landmark.street_code,
                   g.Landmark.lon, g.Landmark.lat))]
        roads = [(n, geom) for n, geom in session.execute(select(g.Road.name, g.Road.geometry).order_by(g.Road.name))]
        grids = [(c, geom) for c, geom in session.execute(select(g.Grid.code, g.Grid.geometry).order_by(g.Grid.code))]
        d = session.execute(select(g.District.city, g.District.name)).first()
        return cls(addrs, lms, roads, grids, city=(d.city if d else None) or "江城市",
                   district=d.name if d else "临江区")

    def intersections(self, limit: int = 400) -> list[dict]:
        """Crossings of two named roads inside a grid: (road a, road b, grid codes)."""
        import shapely
        from shapely.geometry import shape

        from jiedao.geo.locate import GridIndex

        roads = sorted((n, shape(json.loads(g))) for n, g in self.roads if g)
        grids = [(c, shape(json.loads(g))) for c, g in self.grids if g]
        if len(roads) < 2 or not grids:
            return []
        index = GridIndex([c for c, _ in grids], [g for _, g in grids])
        tree = shapely.STRtree([g for _, g in roads])
        street = {a["grid_code"]: (a["community_code"], a["street_code"]) for a in self.addresses}
        out = []
        for i, (name, geom) in enumerate(roads):
            for j in sorted(int(k) for k in tree.query(geom, predicate="intersects")):
                if j <= i:
                    continue
                pt = geom.intersection(roads[j][1])
                if pt.is_empty:
                    continue
                p = pt if pt.geom_type == "Point" else pt.representative_point()
                grid = index.grid_at(p.x, p.y)
                if grid is None:
                    continue
                comm, st = street.get(grid, (grid[:12], grid[:9]))
                out.append({"a": name, "b": roads[j][0], "grid_code": grid, "community_code": comm,
                            "street_code": st})
                if len(out) >= limit:
                    return out
        return out


# ---------------------------------------------------------------- matter profiles
@dataclass
class _Matter:
    code: str
    level1: str
    text: str  # name + keywords + level2, to look for tags
    weight: float
    season: tuple[float, ...]
    evening: bool
    rain: bool
    place_share: float
    landmark_kind: str | None
    burst_p: float
    burst_size: tuple[float, float]  # lognormal mu, sigma of (size - 1)
    burst_hours: float  # mean spread of a burst
    urgent: tuple[float, float]  # P(紧急), P(较急)
    street_level: bool


def _tags(text: str, words) -> bool:
    return any(w in text for w in words)


def _profiles(catalog, seed: int) -> list[_Matter]:
    out = []
    for m in catalog.matters:
        r = random.Random(zlib.crc32(f"{seed}:{m.code}".encode()))
        text = " ".join((m.name, m.level2, *m.keywords))
        w = math.exp(r.gauss(0, 0.8))
        if _tags(text, COMMON):
            w *= 2.5
        if _tags(text, SUMMER):
            season = SEASON_CURVES["summer"]
        elif _tags(text, WINTER):
            season = SEASON_CURVES["winter"]
        elif _tags(text, SPRING):
            season = SEASON_CURVES["spring"]
        else:
            season = (1.0,) * 12
        share = PLACE_SHARE_L2.get(m.level2, PLACE_SHARE.get(m.level1, 0.15))
        if m.level == "street":
            share = max(share, 0.9)
        if _tags(text, OUTAGE):
            burst = (0.35, (1.8, 0.8), 2.0)
        elif _tags(text, RAIN):
            burst = (0.25, (1.3, 0.7), 4.0)
        elif _tags(text, NOISY):
            burst = (0.10, (0.8, 0.5), 72.0)
        else:
            burst = (0.02, (0.4, 0.4), 48.0)
        danger = _tags(text, DANGER)
        pref = LANDMARK_PREF.get(m.code) or LANDMARK_PREF.get(m.code[:2])
        out.append(_Matter(m.code, m.level1, text, w, season, _tags(text, EVENING), _tags(text, RAIN),
                           share, pref, *burst, (0.10, 0.25) if danger else (0.01, 0.07),
                           m.level == "street"))
    return out


def _cum(weights) -> list[float]:
    return list(itertools.accumulate(weights))


def _choice(rng: random.Random, items, cum: list[float]):
    return items[bisect.bisect_right(cum, rng.random() * cum[-1])]


# ---------------------------------------------------------------- the generator
class AppealGenerator:
    """Iterate the year's appeals in time order: ``for a in AppealGenerator(places, catalog): …``."""

    def __init__(self, places: Places, catalog, *, seed: int = DEFAULT_SEED, scale: str = "full",
                 year: int = DEMO_YEAR, total: int | None = None):
        self.places, self.catalog, self.seed, self.year = places, catalog, seed, year
        self.scale = scale
        self.total = total if total is not None else TOTALS[scale]
        self.book = phrasing.phrasebook(catalog)
        self.matters = _profiles(catalog, seed)
        self.by_code = {p.code: p for p in self.matters}
        self._prepare_places()

    # ---- static tables ------------------------------------------------------------------
    def _prepare_places(self) -> None:
        p = self.places
        if not p.addresses:
            raise ValueError("示例辖区没有标准地址：请先生成辖区")
        kind_w = {"residential": 1.0, "commercial": 0.8, "office": 0.5, "market": 0.7}
        self.addr_cum = _cum(kind_w.get(a["kind"], 0.5) for a in p.addresses)
        self.biz_addrs = [a for a in p.addresses if a["kind"] in ("office", "commercial")] or p.addresses
        self.lm_by_kind: dict[str, list[dict]] = {}
        for m in p.landmarks:
            self.lm_by_kind.setdefault(m["kind"], []).append(m)
        self.crossings = p.intersections()

    def _day_weights(self, rain_days: set[date]) -> list[tuple[date, float]]:
        import chinese_calendar

        out = []
        d = date(self.year, 1, 1)
        while d.year == self.year:
            w = WEEKDAY[d.weekday()] * MONTH[d.month - 1]
            try:
                on_holiday, name = chinese_calendar.get_holiday_detail(d)
            except NotImplementedError:
                on_holiday, name = d.weekday() >= 5, None
            if name and on_holiday:
                w = 0.45 if name == "Spring Festival" else 0.6
            elif name and not on_holiday:  # 调休 make-up workday
                w = 0.95 * MONTH[d.month - 1]
            if d in rain_days:
                w *= 1.25
            out.append((d, w))
            d += timedelta(days=1)
        return out

    # ---- per-appeal pieces --------------------------------------------------------------
    def _phone(self, rng: random.Random, landline: bool = False) -> str:
        while True:
            if landline:
                p = f"027-8{int(rng.random() * 10_000_000):07d}"
            else:
                p = f"1{'3578935789'[int(rng.random() * 10)]}{int(rng.random() * 1_000_000_000):09d}"
            if p not in self._phones:
                self._phones.add(p)
                return p

    def _new_caller(self, rng: random.Random, enterprise: bool = False) -> dict:
        key = len(self._callers)
        if enterprise:
            company = (COMPANY_PREFIX[int(rng.random() * len(COMPANY_PREFIX))]
                       + COMPANY_CORE[int(rng.random() * len(COMPANY_CORE))]
                       + COMPANY_TRADE[int(rng.random() * len(COMPANY_TRADE))] + "有限公司")
            c = {"key": key, "phone": self._phone(rng, landline=rng.random() < 0.5),
                 "name": SURNAMES[int(rng.random() * len(SURNAMES))] + ("经理" if rng.random() < 0.5 else "女士"),
                 "company": company, "home": self.biz_addrs[int(rng.random() * len(self.biz_addrs))]}
        else:
            name = None
            if rng.random() < 0.7:
                name = SURNAMES[int(rng.random() * len(SURNAMES))] + ("先生" if rng.random() < 0.5 else "女士")
            c = {"key": key, "phone": self._phone(rng), "name": name, "company": None,
                 "home": _choice(rng, self.places.addresses, self.addr_cum)}
        self._callers.append(c)
        return c

    def _mention(self, rng: random.Random, target: dict, tkind: str) -> tuple[str, str, str | None, int | None]:
        """(text, place_kind, address_code, landmark_id) naming ``target`` one way or another."""
        p = self.places
        suffix = ("", "", "", "门口", "附近", "旁边", "楼下", "对面")
        if tkind == "address":
            a = target
            lm = p.compound_landmark.get(a["compound"]) if a["compound"] else None
            r = rng.random()
            if r < 0.35 or (not a["compound"] and r < 0.6):
                full = a["full"]
                cut = rng.random()
                if cut < 0.35:
                    full = full.removeprefix(p.city)
                elif cut < 0.6:
                    full = full.removeprefix(p.city).removeprefix(p.district)
                return full, "address_full", a["code"], None
            if not a["compound"] or r < 0.55:
                text = f"{a['road']}{a['number']}号"
                if a["building_no"] and rng.random() < 0.6:
                    text += f"{a['building_no']}栋"
                    return text, "address_road", a["code"], None
                if a["building_no"]:
                    return text + _pick(rng, suffix), "address_road", None, lm["id"] if lm else None
                return text + _pick(rng, suffix), "address_road", a["code"], None
            name = a["compound"]
            if lm and lm["aliases"] and rng.random() < 0.5:
                name = _pick(rng, [x for x in lm["aliases"] if len(x) >= 3] or [name])
            if a["building_no"] and rng.random() < 0.7:
                no = a["building_no"]
                unit = _pick(rng, ("栋", "栋", "栋", "幢", "座"))
                if rng.random() < 0.15 and no.isdigit() and int(no) <= 10:
                    no = "一二三四五六七八九十"[int(no) - 1]
                extra = _pick(rng, ("", "", "", "1单元", "2单元", "楼下", "门口"))
                return f"{name}{no}{unit}{extra}", "compound_building", a["code"], lm["id"] if lm else None
            return name + _pick(rng, ("", "小区里", "门口", "里面", "旁边")).removeprefix(
                "小区" if name.endswith("小区") else "~"), "compound", None, lm["id"] if lm else None
        if tkind == "landmark":
            m = target
            name = m["name"] if rng.random() < 0.5 or not m["aliases"] else _pick(rng, m["aliases"])
            if m["kind"] == "metro":
                exit_ = _pick(rng, ("", "A口", "B口", "C口", "D口", "C出口", "B出口"))
                base = name if name.endswith(("站", "地铁站")) else name + "站"
                return f"{base}{exit_}{_pick(rng, ('附近', '旁边', '出来', '', '门口'))}", "metro", None, m["id"]
            return name + _pick(rng, suffix), "landmark", None, m["id"]
        x = target  # intersection
        joint = _pick(rng, ("和{b}交叉口", "与{b}交汇处", "{b}路口", "和{b}的十字路口", "跟{b}交界那里"))
        return x["a"] + joint.format(b=x["b"]), "intersection", None, None

    def _place_for(self, rng: random.Random, prof: _Matter, caller: dict | None) -> dict:
        """Where the problem is, and how the caller names it (or doesn't)."""
        home = caller["home"] if caller else None
        if rng.random() > prof.place_share:
            a = home or _choice(rng, self.places.addresses, self.addr_cum)
            return {"target": a, "tkind": "address", "mention": None, "place_kind": "none"}
        r = rng.random()
        lms = self.lm_by_kind.get(prof.landmark_kind or "", [])
        if lms and r < 0.55:
            return {"target": lms[int(rng.random() * len(lms))], "tkind": "landmark"}
        if r < 0.12 and self.lm_by_kind.get("metro"):
            ms = self.lm_by_kind["metro"]
            return {"target": ms[int(rng.random() * len(ms))], "tkind": "landmark"}
        if r < 0.22:
            pool = [m for k, v in self.lm_by_kind.items() if k != "compound" for m in v]
            if pool:
                return {"target": pool[int(rng.random() * len(pool))], "tkind": "landmark"}
        if r < 0.25 and self.crossings:
            return {"target": self.crossings[int(rng.random() * len(self.crossings))], "tkind": "intersection"}
        a = home if home is not None and rng.random() < 0.5 else _choice(rng, self.places.addresses, self.addr_cum)
        return {"target": a, "tkind": "address"}

    def _render(self, rng: random.Random, proto: dict) -> dict:
        """Text and location fields of one call (each caller says it in their own words)."""
        place = proto["place"]
        mention, pkind, addr, lmid = None, place.get("place_kind", "none"), None, None
        if place.get("place_kind") != "none":
            if rng.random() < 0.07:
                mention, pkind = _pick(rng, ("我家楼下", "我们小区", "小区门口", "路边", "我们这栋楼",
                                             "家附近", "单位旁边")), "vague"
            else:
                mention, pkind, addr, lmid = self._mention(rng, place["target"], place["tkind"])
        t = place["target"]
        tkind = place["tkind"]
        # what the caller says when asked where (no randomness: the generated year is unchanged)
        asked = (t["full"] if tkind == "address" else t["name"] if tkind == "landmark"
                 else f"{t['a']}与{t['b']}交叉口")
        text = phrasing.compose(rng, self.book[proto["matter"]], place=mention, urgency=proto["urgency"],
                                channel=proto["channel"], company=proto["caller"]["company"],
                                follow_up=proto.get("follow_up", False),
                                consult=self.by_code[proto["matter"]].place_share < 0.5)
        loc = mention if mention and pkind != "vague" and proto["channel"] == "hotline" and rng.random() < 0.5 else None
        return {"text": text, "location_text": loc, "names_place": pkind not in ("none", "vague", "intersection"),
                "place_kind": pkind, "address_code": addr, "landmark_id": lmid, "asked_place": asked,
                "grid_code": t["grid_code"], "community_code": t["community_code"], "street_code": t["street_code"]}

    # ---- the year -----------------------------------------------------------------------
    def __iter__(self) -> Iterator[Appeal]:
        rng = stage_rng(self.seed, "appeals")
        self._phones: set[str] = set()
        self._callers: list[dict] = []
        summer_days = [date(self.year, 5, 1) + timedelta(days=i) for i in range(150)]
        rain_days = set(rng.sample(summer_days, 18))
        days = self._day_weights(rain_days)
        wsum = sum(w for _, w in days)
        seeds_total = self.total * (1 - EXTRA_SHARE)
        n_frequent = max(2, round(self.total / 12_000))
        frequent = [self._new_caller(rng) for _ in range(n_frequent)]
        for c in frequent:
            c["favourites"] = rng.sample([m.code for m in self.matters if m.place_share >= 0.8], 3)
        p_frequent = n_frequent * 45 / self.total
        p_enterprise = ENTERPRISE_SHARE / (1 - EXTRA_SHARE)
        codes = [m.code for m in self.matters]
        # matter weights per (month, hour bucket, rain) — cumulative, for bisect sampling
        cums: dict[tuple[int, int, bool], list[float]] = {}
        for mo in range(12):
            for bucket in range(3):  # night, day, evening
                for rain in (False, True):
                    ws = []
                    for m in self.matters:
                        w = m.weight * m.season[mo]
                        if m.evening:
                            w *= (2.0, 0.6, 3.0)[bucket]
                        if rain and m.rain:
                            w *= 10
                        ws.append(w)
                    cums[(mo, bucket, rain)] = _cum(ws)
        ent_w = [ENTERPRISE_MATTERS.get(m.code, ENTERPRISE_WEIGHT.get(m.level1, 0.0)) for m in self.matters]
        ent_cum = _cum(ent_w)
        hour_cum = {"weekday": _cum(HOURS), "weekend": _cum(WEEKEND_HOURS), "office": _cum(OFFICE_HOURS)}
        pending: list[tuple[datetime, int, dict]] = []
        counter = itertools.count()
        events = itertools.count(1)
        seq = 0
        carry = 0.0
        end = datetime(self.year + 1, 1, 1)
        for d, w in days:
            carry += seeds_total * w / wsum
            n = int(carry)
            carry -= n
            workday = d.weekday() < 5
            rain = d in rain_days
            for _ in range(n):
                enterprise = rng.random() < p_enterprise
                hours = hour_cum["office" if enterprise else ("weekday" if workday else "weekend")]
                hour = _choice(rng, range(24), hours)
                at = datetime(d.year, d.month, d.day, hour, int(rng.random() * 60), int(rng.random() * 60))
                bucket = 0 if hour < 7 else (1 if hour < 18 else 2)
                caller, freq = None, False
                if enterprise:
                    caller = self._new_caller(rng, enterprise=True) if rng.random() < 0.8 or not self._ent_callers() \
                        else _pick(rng, self._ent_callers())
                    matter = _choice(rng, codes, ent_cum)
                    channel = "enterprise"
                else:
                    r = rng.random()
                    if r < p_frequent:
                        caller, freq = _pick(rng, frequent), True
                    elif r < p_frequent + 0.17 and len(self._callers) > n_frequent + 10:
                        caller = self._callers[n_frequent + int(rng.random() * (len(self._callers) - n_frequent))]
                        if caller["company"]:
                            caller = self._new_caller(rng)
                    else:
                        caller = self._new_caller(rng)
                    if freq and rng.random() < 0.7:
                        matter = _pick(rng, caller["favourites"])
                    else:
                        matter = _choice(rng, codes, cums[(d.month - 1, bucket, rain)])
                    rc = rng.random()
                    channel = "hotline" if rc < 0.88 else ("app" if rc < 0.95 else "web")
                prof = self.by_code[matter]
                ru = rng.random()
                urgency = "紧急" if ru < prof.urgent[0] else ("较急" if ru < sum(prof.urgent) else "一般")
                place = self._place_for(rng, prof, caller)
                proto = {"at": at, "matter": matter, "urgency": urgency, "channel": channel,
                         "caller": caller, "place": place, "event": None, "frequent": freq}
                # bursts: the same problem at the same place, other callers, within hours/days
                extras: list[dict] = []
                if place.get("place_kind") != "none" and not enterprise and rng.random() < prof.burst_p:
                    size = 1 + int(math.exp(rng.gauss(*prof.burst_size)))
                    size = min(size, 60 if self.scale == "full" else 8)
                    proto["event"] = next(events)
                    for _k in range(size):
                        dt = timedelta(hours=rng.expovariate(1 / prof.burst_hours))
                        t2 = at + dt
                        if prof.evening and dt > timedelta(hours=12):
                            t2 = t2.replace(hour=18 + int(rng.random() * 5))
                        if t2 <= at:
                            t2 = at + timedelta(minutes=1 + int(rng.random() * 30))
                        extras.append({**proto, "at": t2, "caller": self._new_caller(rng), "frequent": False,
                                       "channel": "hotline" if rng.random() < 0.9 else "app"})
                # a caller calling again a few days later about the same problem (催办)
                if not enterprise and rng.random() < 0.04:
                    if proto["event"] is None:
                        proto["event"] = next(events)
                        for e in extras:
                            e["event"] = proto["event"]
                    t2 = at + timedelta(days=1 + rng.random() * 8)
                    t2 = t2.replace(hour=8 + int(rng.random() * 12))
                    extras.append({**proto, "at": t2, "follow_up": True})
                heapq.heappush(pending, (at, next(counter), proto))
                for e in extras:
                    if e["at"] < end:
                        heapq.heappush(pending, (e["at"], next(counter), e))
            day_end = datetime(d.year, d.month, d.day) + timedelta(days=1)
            while pending and pending[0][0] < day_end:
                at, _, proto = heapq.heappop(pending)
                fields = self._render(rng, proto)
                c = proto["caller"]
                yield Appeal(
                    seq=seq, received_at=at, channel=proto["channel"],
                    kind="enterprise" if proto["channel"] == "enterprise" else "appeal",
                    phone=c["phone"], caller_name=c["name"], enterprise=c["company"],
                    matter_code=proto["matter"], urgency=proto["urgency"], event=proto["event"],
                    held_out=is_held_out(self.seed, seq), caller_key=c["key"],
                    frequent_caller=proto["frequent"], follow_up=proto.get("follow_up", False), **fields)
                seq += 1

    def _ent_callers(self) -> list[dict]:
        return [c for c in self._callers[-200:] if c["company"]]

    def chunks(self, size: int = 5000) -> Iterator[list[Appeal]]:
        """The year in lists of at most ``size`` appeals (time order kept)."""
        chunk: list[Appeal] = []
        for a in self:
            chunk.append(a)
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def _pick(rng: random.Random, seq):
    return seq[int(rng.random() * len(seq))]


def generate_appeals(places: Places, catalog=None, *, seed: int = DEFAULT_SEED, scale: str = "full",
                     year: int = DEMO_YEAR, total: int | None = None) -> AppealGenerator:
    """The year's appeals for ``places`` (iterate the result; it can be iterated again)."""
    if catalog is None:
        from jiedao.catalog.loader import load_catalog

        catalog = load_catalog()
    return AppealGenerator(places, catalog, seed=seed, scale=scale, year=year, total=total)


# ---------------------------------------------------------------- build_demo stage
def db_stage(session, world, rng, tables) -> dict[str, int]:
    """``build_demo`` stage "appeals": generate the year for the district just written and
    replay it through the real case engine (:func:`jiedao.cases.replay.replay_year`).

    Shows its phases on the build's progress bar (``world.ctx["progress"]`` when present) and
    keeps the replay's evaluation and rates in the ``demo_appeals`` meta entry.
    """
    from jiedao.cases.replay import replay_year
    from jiedao.db import set_meta

    bar = world.ctx.get("progress")
    tasks: dict[str, Any] = {}
    seen: dict[str, int] = {}

    def progress(phase: str, done: int, total: int) -> None:
        if bar is None:
            return
        if phase not in tasks:
            tasks[phase] = bar.add(f"诉求{phase}", total)
            seen[phase] = 0
        bar.advance(tasks[phase], done - seen[phase])
        seen[phase] = done

    r = replay_year(session, seed=world.seed, scale=world.scale.name, progress=progress)
    for task in tasks.values():
        bar.finish(task)
    # jiedao_meta.value holds 1,000 characters: phase totals only, and the least useful parts
    # go first should it still not fit
    summary = {"appeals": r.appeals, "evaluation": r.evaluation, "rates": r.rates,
               "timings": {k: v for k, v in r.timings.items() if "." not in k}, "training": r.training}
    for drop in (None, "timings", "training"):
        summary.pop(drop, None)
        value = json.dumps(summary, ensure_ascii=False, sort_keys=True, default=str)
        if len(value) <= 1000:
            break
    set_meta(session, "demo_appeals", value)
    world.ctx["appeals_replay"] = r
    return {"appeals": r.appeals, **{k: int(v) for k, v in r.counts.items()}}
