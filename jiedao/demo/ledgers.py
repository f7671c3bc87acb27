"""Six department ledgers for the demo district (示例数据), drawn from one hidden population.

:func:`write_ledgers` first draws the *true* population of market entities (companies,
branches, individual businesses 个体工商户 and deregistered ones) placed in the district's
real buildings and standard addresses — office towers hold many firms on many floors — and
then writes what each department would hold about them, with that department's shape and
flaws, plus the truth. Everything is deterministic for a given world (scale + seed) and RNG.
Rows are streamed to the files, only the population itself is kept in memory.

Scale: the full district (135 office towers) gives about 600,000 rows: registry ~277,000
(237,000 active + deregistered), tax ~200,000, social insurance ~100,000, 四上 1,072,
science 4,000+, building ledgers ~15,000. The small district gives about 2,000 rows.

Files (in ``out_dir``), named and shaped as registered in ``jiedao/hub/data/sources.yaml``
and its mappings (source code in bold):

``scjg_market_entities.csv`` — **scjg_registry**, 区市场监督管理局 market registry, CSV in
    **GBK**: 主体身份代码 (key), 统一社会信用代码 (~98% present; a few old 个体 have only the
    注册号), 注册号 (15 digits, entities registered before 2015-10), 企业名称 (current name),
    市场主体类型, 法定代表人, 联系电话, 住所, 行业代码 (GB/T 4754 with section letter, I6513),
    成立日期 (YYYY-MM-DD), 登记状态 (存续/注销/吊销 — deregistered rows stay), 注销日期,
    注册资本（万元）, 登记机关, 曾用名 (old name after a rename).
``sw_taxpayers.csv`` — **sw_taxpayers**, 区税务局 tax list, CSV UTF-8: 纳税人识别号 (key;
    = credit code, ~4% the old 15-character 税号 = division + organisation code, ~1.5%
    mistyped check character), 纳税人名称 (half-width brackets, old names ~4%), 法定代表人,
    生产经营地址 (address variants, moved firms' old address), 联系电话 (phone variants),
    登记日期 (YYYY/M/D), 纳税人状态 (正常/非正常/注销), 行业 (industry *name*), 主管税务所,
    上年度纳税额（万元）, 纳税信用等级. Includes stale rows of deregistered firms.
``tj_sishang.xlsx`` sheet 四上企业名录 — **tj_sishang**, statistics "四上" directory
    (1,072 in the full district): 统一社会信用代码 (key), 单位详细名称, 专业, 行业代码 (4
    digits), 单位负责人, 详细地址, 联系电话, 开业时间 (YYYYMM), 从业人员期末人数,
    营业收入（千元）, 统计用区划代码 (12 digits). The cleanest ledger.
``rsj_employers.jsonl`` — **rsj_employers**, 区人社局 social-insurance employers, JSON Lines:
    单位编号 (key), 单位名称 (abbreviations ~20%, 简称 ~5%, region dropped ~15%), 统一社会信用代码
    (~12% missing, ~2% mistyped), 法定代表人, 联系电话, 单位地址 (office firms often only
    "大厦 + 楼层"), 参保日期 (YYYYMMDD), 参保状态, 参保人数 (int), 经办机构. ~0.6% employers
    have a second account (duplicates inside the source).
``kjj_tech_enterprises.xlsx`` sheet 科技企业 — **kjj_tech**, 高新技术企业 (1,560) and
    科技型中小企业 (2,600) lists: 类别, 证书编号 (key), 企业名称 (the name on the certificate —
    the old name when the firm was renamed after certification), 统一社会信用代码, 认定日期
    (YYYY年M月D日), 有效期至, 技术领域, 所在街道, 通讯地址, 联系人, 联系人电话.
``jd_street_offices.sqlite`` — **jd_buildings** (entity type building): the street offices'
    building register kept in their own database (table ``ly_building``, pinyin column names;
    the hub reads it through the SQL connector, the query in sources.yaml names the columns
    as 楼宇编号, 楼宇名称, 所属街道, 楼宇地址, 产权单位, 物业联系电话, 建成时间, 面积, 入驻率, 楼层数),
    one row per office tower.
``jd_building_ledger.xlsx`` sheet 入驻企业 — **jd_tenants**, the street offices' tenant lists
    (~15,000 firms: 台账编号 key, 楼宇编号, 楼宇名称, 企业名称 as people write them — 简称, no
    有限公司, no region —, 统一社会信用代码 mostly blank, 所在楼层, 房号, 企业地址, 联系人, 联系电话,
    入驻时间 (YYYY.M.D), 从业人数, 上年度税收（万元）, 备注; stale rows of firms that moved out or
    closed).

Truth (for measuring linkage): ``truth_records.csv`` (source, source_key, entity_id,
stale 0/1, flaws ";"-joined among abbrev, short, no_region, add_region, brackets, old_name,
form_swap, no_code, bad_code, old_code, addr_variant, old_address, phone_variant,
duplicate) — entity_id is the enterprise id, or the 18-digit building code for
jd_buildings rows — and ``truth_entities.csv`` (entity_id and the true golden values:
kind, name, old_name, credit_code, reg_no, legal_rep, phone, address, building_code,
street_code, industry_code, established, status, employees, tax_amount (元), sishang,
hightech, kxzx).
``manifest.json`` lists files, row counts, seed and scale.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from jiedao.demo import ledger_names as ln
from jiedao.demo import names
from jiedao.demo.pipeline import World

DIVISION = names.DISTRICT_CODE
CN_DIGITS = "零一二三四五六七八九"
# source code → file, as registered in jiedao/hub/data/sources.yaml
SOURCE_FILES = {
    "scjg_registry": "scjg_market_entities.csv",
    "sw_taxpayers": "sw_taxpayers.csv",
    "tj_sishang": "tj_sishang.xlsx",
    "rsj_employers": "rsj_employers.jsonl",
    "kjj_tech": "kjj_tech_enterprises.xlsx",
    "jd_buildings": "jd_street_offices.sqlite",
    "jd_tenants": "jd_building_ledger.xlsx",
}
# the street offices' own database (SQLite here): table and columns as the office keeps them;
# the hub reads it through the SQL connector with the query registered in sources.yaml
STREET_DB_TABLE = "ly_building"
STREET_DB_COLUMNS = (("ly_bh", "TEXT PRIMARY KEY"), ("ly_mc", "TEXT"), ("jd_mc", "TEXT"),
                     ("ly_dz", "TEXT"), ("cq_dw", "TEXT"), ("wy_dh", "TEXT"), ("jc_sj", "TEXT"),
                     ("zjzmj", "INTEGER"), ("kzmj", "INTEGER"), ("rzl", "REAL"),
                     ("lcs", "INTEGER"))
TRUTH_RECORDS = "truth_records.csv"
TRUTH_ENTITIES = "truth_entities.csv"
REFERENCE_DAY = date(2025, 12, 31)  # ledgers are as of the end of 2025
EST_SPAN = (REFERENCE_DAY - date(1998, 1, 1)).days - 30


@dataclass(frozen=True)
class LedgerScale:
    """Sizes of the true population and of the selective lists."""

    population: int  # every market entity ever registered (incl. deregistered)
    cancelled_share: float
    office_firms_per_tower: int
    sishang: int
    hightech: int
    kxzx: int


LEDGER_SCALES = {
    "full": LedgerScale(277_000, 0.145, 111, 1072, 1560, 2600),
    "small": LedgerScale(900, 0.145, 30, 12, 15, 20),
}


@dataclass(slots=True)
class Ent:
    """One true market entity (the hidden population)."""

    id: int
    kind: str  # company / branch / individual
    name: str
    zihao: str
    region: str  # region prefix used in the name ("" for none)
    industry: int  # index into INDUSTRIES (companies) or SHOPS (individual)
    credit_code: str | None
    reg_no: str | None
    org_code: str
    legal_rep: str
    phone: str
    established: date
    status: str  # 存续 / 注销 / 吊销
    cancelled: date | None
    building: int  # index into the building table
    detail: str  # floor / room part after the standard address
    floor: int | None
    room: str | None
    employees: int
    revenue: float  # 千元 per year
    tax: float  # 元 per year
    old_name: str | None = None
    renamed: date | None = None
    prev_building: int | None = None  # building before a move (stale ledgers keep it)
    prev_detail: str = ""
    sishang: str | None = None
    hightech: date | None = None
    kxzx: date | None = None
    enttype: str = ""


@dataclass
class Bld:
    code: str
    name: str
    kind: str
    floors: int
    street_code: str
    address: str  # canonical standard address
    road: str
    number: str
    compound: str | None
    building_no: str | None


@dataclass
class LedgerSummary:
    """What :func:`write_ledgers` wrote: folder, files and row counts per source."""

    out_dir: Path
    scale: str
    seed: int
    files: dict[str, str] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    entities: int = 0

    @property
    def total(self) -> int:
        return sum(self.rows.values())


# ---------------------------------------------------------------- population


def _person(rng: random.Random) -> str:
    s = ln.SURNAMES[int(rng.random() * len(ln.SURNAMES))]
    g = ln.GIVEN[int(rng.random() * len(ln.GIVEN))]
    if rng.random() < 0.6:
        g += ln.GIVEN[int(rng.random() * len(ln.GIVEN))]
    return s + g


def _mobile(rng: random.Random) -> str:
    return "1" + "35789"[int(rng.random() * 5)] + f"{int(rng.random() * 1e9):09d}"


def _landline(rng: random.Random) -> str:
    return f"027-8{int(rng.random() * 1e7):07d}"


def _buildings(world: World) -> list[Bld]:
    addr = {a["building_code"]: a for a in world.rows("geo_address")}
    out = []
    for b in world.rows("geo_building"):
        a = addr.get(b["code"])
        if a is None:
            continue
        out.append(Bld(b["code"], b["name"], b["kind"], int(b["floors"] or 1), b["street_code"],
                       a["full"], a["road"], a["number"], a["compound"], a["building_no"]))
    return out


def _weighted_pick(rng: random.Random, items: list[int], cum: list[float]) -> int:
    import bisect

    return items[bisect.bisect_left(cum, rng.random() * cum[-1])]


def _cum(weights: list[float]) -> list[float]:
    out, t = [], 0.0
    for w in weights:
        t += w
        out.append(t)
    return out


class _Population:
    """Draws the true entities (deterministic for a given RNG and world)."""

    def __init__(self, world: World, rng: random.Random):
        self.rng = rng
        self.world = world
        self.scale = LEDGER_SCALES[world.scale.name]
        self.blds = _buildings(world)
        self.streets = {s["code"]: s["name"] for s in world.rows("geo_street")}
        self.used_names: set[str] = set()
        self.used_org: set[str] = set()
        by_kind: dict[str, list[int]] = {}
        for i, b in enumerate(self.blds):
            by_kind.setdefault(b.kind, []).append(i)
        self.offices = by_kind.get("office", [])
        self.commercial = by_kind.get("commercial", []) + by_kind.get("market", [])
        res = by_kind.get("residential", [])
        self.res_compound = [i for i in res if self.blds[i].compound]
        self.res_single = [i for i in res if not self.blds[i].compound] or self.res_compound
        if not self.commercial:
            self.commercial = self.res_single
        self.ind_cum = _cum([x[3] for x in ln.INDUSTRIES])
        self.shop_cum = _cum([x[3] for x in ln.SHOPS])
        self.ind_idx = list(range(len(ln.INDUSTRIES)))
        self.shop_idx = list(range(len(ln.SHOPS)))
        self.regno_seq = 0

    # names ----------------------------------------------------------------
    def _zihao(self) -> str:
        r = self.rng
        c = ln.ZIHAO_CHARS
        n = 3 if r.random() < 0.12 else 2
        return "".join(c[int(r.random() * len(c))] for _ in range(n))

    def _company_name(self, ind: int) -> tuple[str, str, str]:
        r = self.rng
        phrase = ln.INDUSTRIES[ind][0]
        for _ in range(50):
            z = self._zihao()
            if z[0] == z[1]:
                continue
            u = r.random()
            if u < 0.47:
                region, tpl = "江城", "{r}{z}{p}"
            elif u < 0.60:
                region, tpl = "江城市", "{r}{z}{p}"
            elif u < 0.72:
                region, tpl = "湖北", "{r}{z}{p}"
            elif u < 0.80:
                region, tpl = "江城市临江区", "{r}{z}{p}"
            elif u < 0.90:
                region, tpl = "江城", "{z}（{r}）{p}"
            else:
                region, tpl = "湖北省", "{r}{z}{p}"
            f = r.random()
            form = ("有限公司" if f < 0.62 else "有限责任公司" if f < 0.92 else
                    "股份有限公司" if f < 0.96 else "有限合伙企业")
            if form == "有限合伙企业":
                phrase2 = "投资管理" if phrase != "投资管理" else phrase
                name = tpl.format(r=region, z=z, p=phrase2) + "中心（有限合伙）"
            else:
                name = tpl.format(r=region, z=z, p=phrase) + form
            if name not in self.used_names:
                self.used_names.add(name)
                return name, z, region
        raise RuntimeError("out of company names")

    def _shop_name(self, shop: int, bld: Bld) -> tuple[str, str, str]:
        r = self.rng
        kind = ln.SHOPS[shop][0]
        for _ in range(50):
            u = r.random()
            if u < 0.3:
                core = ln.SURNAMES[int(r.random() * len(ln.SURNAMES))] + "记"
            elif u < 0.45:
                core = "老" + ln.SURNAMES[int(r.random() * len(ln.SURNAMES))] + "家"
            else:
                core = self._zihao()
            v = r.random()
            region = "临江区" if v < 0.62 else "江城市临江区" if v < 0.8 else ""
            mid = bld.road if r.random() < 0.15 else ""
            name = f"{region}{mid}{core}{kind}"
            if name not in self.used_names:
                self.used_names.add(name)
                return name, core, region
        raise RuntimeError("out of shop names")

    def _org(self) -> str:
        while True:
            body = f"{int(self.rng.random() * 1e8):08d}"
            if body not in self.used_org and body[0] != "0":
                self.used_org.add(body)
                return body

    # places -----------------------------------------------------------------
    def _detail(self, b: Bld) -> tuple[str, int | None, str | None]:
        r = self.rng
        if b.kind == "office":
            floor = _ri(r, 2, max(2, b.floors))
            room = f"{floor}{_ri(r, 1, 28):02d}"
            return f"{b.name}{floor}层{room}室", floor, room
        if b.kind in ("commercial", "market"):
            floor = _ri(r, 1, min(b.floors, 6))
            room = f"{floor}{_ri(r, 1, 40):02d}"
            return f"{b.name}{floor}楼{room}号", floor, room
        if b.compound:
            unit = _ri(r, 1, 4)
            floor = _ri(r, 1, max(1, b.floors))
            room = f"{floor}{_ri(r, 1, 4):02d}"
            return f"{unit}单元{room}室", floor, room
        return rng_choice(r, ["1楼门面", "门面", "1楼", "附1号门面", "101室"]), 1, None

    def _building(self, kind: str) -> int:
        r = self.rng
        if kind == "individual":
            u = r.random()
            pool = self.commercial if u < 0.5 else self.res_single if u < 0.9 else self.res_compound
        else:
            pool = self.commercial if r.random() < 0.45 else self.res_compound or self.res_single
        return pool[int(r.random() * len(pool))]

    # one entity ------------------------------------------------------------
    def draw(self) -> list[Ent]:
        r = self.rng
        sc = self.scale
        n = sc.population
        office_slots = sc.office_firms_per_tower * len(self.offices)
        ents: list[Ent] = []
        companies: list[int] = []
        # kinds: the first office_slots active companies go to office towers
        for i in range(n):
            u = r.random()
            kind = "company" if u < 0.38 else "branch" if u < 0.40 else "individual"
            ents.append(self._one(i + 1, kind))
            if kind != "individual":
                companies.append(i)
        # cancelled entities: the oldest tend to be gone
        n_cancel = round(n * sc.cancelled_share)
        for i in r.sample(range(n), n_cancel):
            e = ents[i]
            e.status = "注销" if r.random() < 0.85 else "吊销"
            lo = max(e.established + timedelta(days=200), date(2008, 1, 1))
            e.cancelled = lo + timedelta(days=int(r.random() * max(30, (REFERENCE_DAY - lo).days)))
            e.employees = 0
            e.tax = 0.0
        active_co = [i for i in companies if ents[i].status == "存续"]
        r.shuffle(active_co)
        for k, i in enumerate(active_co[:office_slots]):
            e = ents[i]
            e.building = self.offices[k % len(self.offices)]
            e.detail, e.floor, e.room = self._detail(self.blds[e.building])
        # some firms that closed down had their office in a tower too
        closed_co = [i for i in companies if ents[i].status != "存续"]
        for i in closed_co[: round(office_slots * 0.08)]:
            e = ents[i]
            e.building = self.offices[int(r.random() * len(self.offices))]
            e.detail, e.floor, e.room = self._detail(self.blds[e.building])
        self._moves(ents)
        self._renames(ents)
        self._lists(ents, active_co)
        return ents

    def _one(self, eid: int, kind: str) -> Ent:
        r = self.rng
        est = date(1998, 1, 1) + timedelta(days=int(r.random() ** 0.55 * EST_SPAN))
        b = self._building(kind)
        bld = self.blds[b]
        org = self._org()
        if kind == "individual":
            shop = _weighted_pick(r, self.shop_idx, self.shop_cum)
            name, z, region = self._shop_name(shop, bld)
            ind = shop
            prefix = "92"
            employees = int(r.random() * 5)
            revenue = round(r.lognormvariate(5.0, 0.8), 1)
            enttype = "个体工商户"
        else:
            ind = _weighted_pick(r, self.ind_idx, self.ind_cum)
            name, z, region = self._company_name(ind)
            prefix = "91"
            employees = max(1, int(r.lognormvariate(1.8, 1.3)))
            revenue = round(employees * r.lognormvariate(5.9, 0.9), 1)
            enttype = rng_choice(r, ["有限责任公司（自然人投资或控股）"] * 6 + ["有限责任公司（自然人独资）"] * 2
                                 + ["其他有限责任公司"])
            if "股份" in name:
                enttype = "股份有限公司（非上市、自然人投资或控股）"
            elif "合伙" in name:
                enttype = "有限合伙企业"
            if kind == "branch":
                name = name + rng_choice(r, ["临江分公司", "临江区分公司", f"{self.streets.get(bld.street_code, '')}分公司"])
                self.used_names.add(name)
                enttype = "有限责任公司分公司（自然人投资或控股）"
        old_register = est < date(2015, 10, 1)
        reg_no = None
        if old_register:
            self.regno_seq += 1
            reg_no = ln.make_regno(DIVISION, 10_000_000 + self.regno_seq * 7 % 89_999_999)
        # a few old individual businesses never got a credit code
        credit = None if (kind == "individual" and old_register and r.random() < 0.06) else \
            ln.make_uscc(prefix, DIVISION, org)
        detail, floor, room = self._detail(bld)
        tax = 0.0
        if kind == "individual":
            tax = round(r.random() * 3000, 2) if r.random() < 0.4 else 0.0
        else:
            tax = round(revenue * 1000 * r.uniform(0.01, 0.06), 2)
        e = Ent(
            id=eid, kind=kind, name=name, zihao=z, region=region, industry=ind,
            credit_code=credit, reg_no=reg_no, org_code=org, legal_rep=_person(r),
            phone=_mobile(r) if (kind == "individual" or r.random() < 0.55) else _landline(r),
            established=est, status="存续", cancelled=None, building=b, detail=detail,
            floor=floor, room=room, employees=employees, revenue=revenue, tax=tax,
            enttype=enttype,
        )
        return e

    def _moves(self, ents: list[Ent]) -> None:
        r = self.rng
        for e in ents:
            if e.status == "存续" and r.random() < 0.05:
                in_tower = self.blds[e.building].kind == "office"
                e.prev_building = (self.offices[int(r.random() * len(self.offices))]
                                   if in_tower and r.random() < 0.6 else self._building(e.kind))
                if e.prev_building == e.building:
                    e.prev_building = None
                    continue
                e.prev_detail, _, _ = self._detail(self.blds[e.prev_building])

    def _renames(self, ents: list[Ent]) -> None:
        r = self.rng
        for e in ents:
            if e.kind != "company" or r.random() >= 0.06:
                continue
            old = e.name
            # renamed: new trade name, or new industry phrase, same credit code
            if r.random() < 0.5:
                ind = _weighted_pick(r, self.ind_idx, self.ind_cum)
                new = old.replace(ln.INDUSTRIES[e.industry][0], ln.INDUSTRIES[ind][0], 1)
                if new != old and new not in self.used_names:
                    e.industry = ind
            else:
                nz = self._zihao()
                new = old.replace(e.zihao, nz, 1)
                if new != old and new not in self.used_names:
                    e.zihao = nz
            if new == old or new in self.used_names:
                continue
            self.used_names.add(new)
            e.old_name, e.name = old, new
            lo = e.established + timedelta(days=180)
            e.renamed = lo + timedelta(days=int(r.random() * max(30, (REFERENCE_DAY - lo).days - 60)))

    def _lists(self, ents: list[Ent], active_co: list[int]) -> None:
        r = self.rng
        sc = self.scale
        # 四上: the largest active companies whose industry has a speciality
        cands = [i for i in active_co if ln.INDUSTRIES[ents[i].industry][4]]
        cands.sort(key=lambda i: -ents[i].revenue)
        for i in cands[: sc.sishang]:
            e = ents[i]
            e.sishang = ln.INDUSTRIES[e.industry][4]
            e.revenue = max(e.revenue, 20_000 + r.random() * 200_000)
            e.employees = max(e.employees, 20 + int(r.lognormvariate(3.5, 0.9)))
            e.tax = max(e.tax, round(e.revenue * 1000 * r.uniform(0.01, 0.04), 2))
        tech = [i for i in active_co if ln.INDUSTRIES[ents[i].industry][5]
                and ents[i].established < date(2023, 1, 1)]
        tech.sort(key=lambda i: -(ents[i].employees + r.random() * 20))
        for i in tech[: sc.hightech]:
            e = ents[i]
            year = r.choice([2022, 2023, 2024, 2025])
            e.hightech = date(year, r.choice([10, 11, 12]), _ri(r, 1, 28))
            e.employees = max(e.employees, 10 + int(r.random() * 40))
        rest = [i for i in tech[sc.hightech // 3:] if ents[i].employees < 500]
        r.shuffle(rest)
        for i in rest[: sc.kxzx]:
            e = ents[i]
            e.kxzx = date(2025, _ri(r, 3, 11), _ri(r, 1, 28))


def _ri(r: random.Random, a: int, b: int) -> int:
    """Like ``randint`` but cheaper (one ``random()`` call)."""
    return a + int(r.random() * (b - a + 1))


def rng_choice(r: random.Random, seq: list[str]) -> str:
    return seq[int(r.random() * len(seq))]


# ---------------------------------------------------------------- flaws


def _cn_number(digits: str) -> str:
    """88 → 八十八, 105 → 一百零五 (door numbers written in Chinese)."""
    n = int(digits)
    if n < 10:
        return CN_DIGITS[n]
    if n < 100:
        t, u = divmod(n, 10)
        return ("" if t == 1 else CN_DIGITS[t]) + "十" + (CN_DIGITS[u] if u else "")
    if n < 1000:
        h, rest = divmod(n, 100)
        tail = "" if rest == 0 else ("零" + CN_DIGITS[rest] if rest < 10 else
                                     CN_DIGITS[rest // 10] + "十" + (CN_DIGITS[rest % 10] if rest % 10 else ""))
        return CN_DIGITS[h] + "百" + tail
    return digits


FORMS = ("股份有限公司", "有限责任公司", "有限公司")


class Flaws:
    """Realistic distortions of names, codes, addresses, phones; each returns (value, flaw)."""

    def __init__(self, rng: random.Random, pop: _Population):
        self.r = rng
        self.pop = pop

    def name(self, e: Ent, *, abbrev=0.0, short=0.0, no_region=0.0, add_region=0.0,
             brackets=0.0, old=0.0, form_swap=0.0, use_old_before: date | None = None) -> tuple[str, list[str]]:
        r = self.r
        flaws: list[str] = []
        name = e.name
        if e.old_name and (r.random() < old or (use_old_before and e.renamed and e.renamed > use_old_before)):
            name = e.old_name
            flaws.append("old_name")
        if e.kind == "individual":
            if e.region and r.random() < no_region:
                name = name.removeprefix(e.region) if name.startswith(e.region) else name
                flaws.append("no_region")
            elif not e.region and r.random() < add_region:
                name = "临江区" + name
                flaws.append("add_region")
            return name, flaws
        u = r.random()
        if u < short:
            core = name
            branch = ""
            if e.kind == "branch":
                for suf in ("临江分公司", "临江区分公司"):
                    if core.endswith(suf):
                        branch = "临江分公司"
            phrase = ln.INDUSTRIES[e.industry][0]
            z = e.zihao if e.zihao in core else core[:2]
            name = z + (phrase[:2] if r.random() < 0.7 else "公司") + branch
            flaws.append("short")
            return name, flaws
        if u < short + abbrev:
            for f in FORMS:
                if f in name:
                    name = name.replace(f, "", 1)
                    break
            flaws.append("abbrev")
        elif r.random() < form_swap:
            if "有限责任公司" in name:
                name = name.replace("有限责任公司", "有限公司", 1)
                flaws.append("form_swap")
            elif "有限公司" in name and "股份" not in name:
                name = name.replace("有限公司", "有限责任公司", 1)
                flaws.append("form_swap")
        if e.region and r.random() < no_region:
            if name.startswith(e.region):
                name = name[len(e.region):]
                flaws.append("no_region")
            elif f"（{e.region}）" in name:
                name = name.replace(f"（{e.region}）", "", 1)
                flaws.append("no_region")
        elif r.random() < add_region and not name.startswith(("江城", "湖北", "临江")):
            name = rng_choice(r, ["临江区", "江城市"]) + name
            flaws.append("add_region")
        if "（" in name and r.random() < brackets:
            name = name.replace("（", "(").replace("）", ")")
            flaws.append("brackets")
        return name, flaws

    def code(self, e: Ent, *, missing=0.0, bad=0.0, old=0.0, old_tax=False) -> tuple[str, list[str]]:
        r = self.r
        if e.credit_code is None:
            if e.reg_no and r.random() < 0.7:
                return e.reg_no, ["old_code"]
            return "", ["no_code"]
        u = r.random()
        if u < missing:
            return "", ["no_code"]
        if u < missing + bad:
            return mistype(e.credit_code, r), ["bad_code"]
        if u < missing + bad + old:
            if old_tax:
                return DIVISION + e.org_code + ln.org_check(e.org_code), ["old_code"]
            if e.reg_no:
                return e.reg_no, ["old_code"]
        code = e.credit_code
        if r.random() < 0.01:
            code = code.lower()
        return code, []

    def address(self, e: Ent, *, variant=0.3, stale=0.0, tower_only=0.0) -> tuple[str, list[str]]:
        r = self.r
        flaws: list[str] = []
        b_idx, detail = e.building, e.detail
        if e.prev_building is not None and r.random() < stale:
            b_idx, detail = e.prev_building, e.prev_detail
            flaws.append("old_address")
        b = self.pop.blds[b_idx]
        text = b.address + detail
        if r.random() >= variant:
            return text, flaws
        flaws.append("addr_variant")
        if b.kind == "office" and r.random() < tower_only:
            # "鹏程大厦15楼1502" with no road at all
            floor_room = detail.removeprefix(b.name)
            return b.name + floor_room.replace("层", "楼").replace("室", ""), flaws
        road_part = f"{b.road}{b.number}号"
        rest = text[len(names.CITY) + len(names.DISTRICT) + len(road_part):]
        prefix = rng_choice(r, ["", names.DISTRICT, names.DISTRICT, "湖北省" + names.CITY + names.DISTRICT,
                                names.CITY + names.DISTRICT, names.CITY])
        if r.random() < 0.25 and "-" not in b.number:
            road_part = f"{b.road}{_cn_number(b.number)}号"
        if b.building_no and r.random() < 0.6:
            bno = b.building_no
            new = rng_choice(r, [f"{bno}幢", f"{bno}座", f"{bno}号楼", f"{_cn_number(bno)}栋", f"{bno}#"])
            rest = rest.replace(f"{bno}栋", new, 1)
        if r.random() < 0.4:
            rest = rest.replace("层", rng_choice(r, ["楼", "F", "层"]), 1).replace("室", rng_choice(r, ["", "室", "号"]), 1)
        return prefix + road_part + rest, flaws

    def phone(self, e: Ent, *, variant=0.3, missing=0.0, other=0.0) -> tuple[str, list[str]]:
        r = self.r
        u = r.random()
        if u < missing:
            return "", []
        p = e.phone
        if u < missing + other:
            p = _mobile(r)  # a contact person's own phone
        if r.random() >= variant:
            return p, []
        if p.startswith("027-"):
            local = p[4:]
            return rng_choice(r, [f"(027){local}", f"027{local}", local, f"027 {local}", f"027-{local}"]), ["phone_variant"]
        return rng_choice(r, [f"{p[:3]} {p[3:7]} {p[7:]}", f"+86 {p}", f"{p[:3]}-{p[3:7]}-{p[7:]}", f"86{p}"]), ["phone_variant"]


def mistype(code: str, r: random.Random) -> str:
    """Change one character so the check character no longer fits (always detectable)."""
    while True:
        pos = int(r.random() * 17) if len(code) == 18 else int(r.random() * (len(code) - 1))
        c = ln.USCC_CHARSET[int(r.random() * 10)]
        if c != code[pos]:
            out = code[:pos] + c + code[pos + 1:]
            if len(out) != 18 or not ln.uscc_ok(out):
                return out


# ---------------------------------------------------------------- writers


class _Truth:
    def __init__(self, path: Path):
        self.f = path.open("w", encoding="utf-8", newline="")
        self.w = csv.writer(self.f)
        self.w.writerow(["source", "source_key", "entity_id", "stale", "flaws"])

    def add(self, source: str, key: str, entity_id: int | str, stale: bool, flaws: list[str]) -> None:
        self.w.writerow([source, key, entity_id, int(stale), ";".join(dict.fromkeys(flaws))])

    def close(self) -> None:
        self.f.close()


def _fmt_date(d: date | None, style: str) -> str:
    if d is None:
        return ""
    if style == "iso":
        return d.isoformat()
    if style == "slash":
        return f"{d.year}/{d.month}/{d.day}"
    if style == "compact":
        return d.strftime("%Y%m%d")
    if style == "month":
        return d.strftime("%Y%m")
    if style == "cn":
        return f"{d.year}年{d.month}月{d.day}日"
    if style == "dot":
        return f"{d.year}.{d.month}.{d.day}"
    raise ValueError(style)


def _industry(e: Ent) -> tuple:
    return ln.SHOPS[e.industry] if e.kind == "individual" else ln.INDUSTRIES[e.industry]


REGSTATE = {"存续": "存续（在营、开业、在册）", "注销": "注销", "吊销": "吊销，未注销"}


def _registry(out: Path, ents: list[Ent], fl: Flaws, truth: _Truth) -> int:
    r = fl.r
    n = 0
    with (out / SOURCE_FILES["scjg_registry"]).open("w", encoding="gbk", newline="") as f:
        w = csv.writer(f)
        w.writerow(["主体身份代码", "统一社会信用代码", "注册号", "企业名称", "市场主体类型", "法定代表人",
                    "联系电话", "住所", "行业代码", "成立日期", "登记状态", "注销日期",
                    "注册资本（万元）", "登记机关", "曾用名"])
        for e in ents:
            key = f"{DIVISION}{e.id:010d}"
            flaws: list[str] = []
            code, fx = fl.code(e, missing=0.005, bad=0.001)
            flaws += fx
            addr, fx = fl.address(e, variant=0.08)
            flaws += fx
            phone, fx = fl.phone(e, variant=0.05, other=0.08)
            flaws += fx
            cap = "" if e.kind == "individual" else rng_choice(r, ["10", "50", "100", "200", "500", "1000", "3000"])
            w.writerow([key, code if not code or len(code) == 18 else "", e.reg_no or "", e.name,
                        e.enttype, e.legal_rep, phone, addr, _industry(e)[1],
                        _fmt_date(e.established, "iso"), REGSTATE[e.status], _fmt_date(e.cancelled, "iso"),
                        cap, "江城市临江区市场监督管理局", e.old_name or ""])
            truth.add("scjg_registry", key, e.id, e.status != "存续", flaws)
            n += 1
    return n


def _tax(out: Path, ents: list[Ent], fl: Flaws, truth: _Truth) -> int:
    r = fl.r
    n = 0
    seen: set[str] = set()
    with (out / SOURCE_FILES["sw_taxpayers"]).open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["纳税人识别号", "纳税人名称", "法定代表人", "生产经营地址", "联系电话", "登记日期",
                    "纳税人状态", "行业", "主管税务所", "上年度纳税额（万元）", "纳税信用等级"])
        for e in ents:
            if e.kind == "individual":
                if r.random() >= (0.7 if e.status == "存续" else 0.02):
                    continue
            elif e.status != "存续" and r.random() >= 0.12:
                continue
            stale = e.status != "存续"
            flaws: list[str] = []
            code, fx = fl.code(e, missing=0.0, bad=0.015, old=0.04, old_tax=True)
            if not code or code.upper() in seen:
                continue  # the taxpayer id is the key: always present, never twice
            seen.add(code.upper())
            flaws += fx
            nm, fx = fl.name(e, old=0.04, brackets=0.6, form_swap=0.01)
            flaws += fx
            addr, fx = fl.address(e, variant=0.35, stale=0.5)
            flaws += fx
            phone, fx = fl.phone(e, variant=0.3, missing=0.05)
            flaws += fx
            state = "正常" if not stale else rng_choice(r, ["非正常", "注销", "正常"])
            grade = "" if e.kind == "individual" else rng_choice(r, ["A", "B", "B", "M", "M", "C"])
            w.writerow([code, nm, e.legal_rep, addr, phone, _fmt_date(e.established, "slash"), state,
                        _industry(e)[2], rng_choice(r, ln.TAX_OFFICES), f"{e.tax / 10000:.2f}", grade])
            truth.add("sw_taxpayers", code, e.id, stale, flaws)
            n += 1
    return n


def _sishang(out: Path, ents: list[Ent], fl: Flaws, truth: _Truth) -> int:
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("四上企业名录")
    ws.append(["统一社会信用代码", "单位详细名称", "专业", "行业代码", "单位负责人", "详细地址",
               "联系电话", "开业时间", "从业人员期末人数", "营业收入（千元）", "统计用区划代码"])
    n = 0
    for e in ents:
        if not e.sishang or not e.credit_code:
            continue
        flaws: list[str] = []
        nm, fx = fl.name(e, old=0.01)
        flaws += fx
        addr, fx = fl.address(e, variant=0.05)
        flaws += fx
        phone, fx = fl.phone(e, variant=0.1)
        flaws += fx
        b = fl.pop.blds[e.building]
        ws.append([e.credit_code, nm, e.sishang, ln.INDUSTRIES[e.industry][1][1:], e.legal_rep, addr,
                   phone, _fmt_date(e.established, "month"), e.employees, round(e.revenue, 1),
                   b.street_code + "000"])
        truth.add("tj_sishang", e.credit_code, e.id, False, flaws)
        n += 1
    wb.save(out / SOURCE_FILES["tj_sishang"])
    return n


def _social(out: Path, ents: list[Ent], fl: Flaws, truth: _Truth) -> int:
    r = fl.r
    n = 0
    with (out / SOURCE_FILES["rsj_employers"]).open("w", encoding="utf-8") as f:
        for e in ents:
            if e.kind == "individual":
                if e.status != "存续" or e.employees < 2 or r.random() >= 0.5:
                    continue
            elif e.status == "存续":
                if r.random() >= 0.8:
                    continue
            elif r.random() >= 0.05:
                continue
            copies = 2 if r.random() < 0.006 else 1  # a second account for the same employer
            for c in range(copies):
                key = f"42019{e.id:09d}" + ("" if c == 0 else f"{c:02d}")
                stale = e.status != "存续"
                flaws: list[str] = ["duplicate"] if c else []
                nm, fx = fl.name(e, abbrev=0.2, short=0.05, no_region=0.15, old=0.05, brackets=0.3,
                                 form_swap=0.02)
                flaws += fx
                code, fx = fl.code(e, missing=0.12, bad=0.02, old=0.01)
                flaws += fx
                addr, fx = fl.address(e, variant=0.4, stale=0.6, tower_only=0.3)
                flaws += fx
                phone, fx = fl.phone(e, variant=0.35, missing=0.05, other=0.15)
                flaws += fx
                insured = max(1, e.employees + int(r.gauss(0, 1))) if not stale else 0
                joined = e.established + timedelta(days=int(r.random() * 60)) if r.random() < 0.3 \
                    else e.established
                rec = {"单位编号": key, "单位名称": nm, "统一社会信用代码": code, "法定代表人": e.legal_rep,
                       "联系电话": phone, "单位地址": addr, "参保日期": _fmt_date(joined, "compact"),
                       "参保状态": "正常参保" if not stale else rng_choice(r, ["暂停缴费", "注销"]),
                       "参保人数": insured, "经办机构": "临江区社会保险管理局"}
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                truth.add("rsj_employers", key, e.id, stale, flaws)
                n += 1
    return n


def _tech(out: Path, ents: list[Ent], fl: Flaws, truth: _Truth) -> int:
    from openpyxl import Workbook

    r = fl.r
    n = 0
    streets = fl.pop.streets
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("科技企业")
    ws.append(["类别", "证书编号", "企业名称", "统一社会信用代码", "认定日期", "有效期至", "技术领域",
               "所在街道", "通讯地址", "联系人", "联系人电话"])
    seq = 0
    for e in ents:
        for cat, d in (("高新技术企业", e.hightech), ("科技型中小企业", e.kxzx)):
            if d is None:
                continue
            seq += 1
            key = f"GR{d.year}42{seq:06d}" if cat == "高新技术企业" else f"{d.year}{DIVISION}0{seq:05d}"
            flaws: list[str] = []
            nm, fx = fl.name(e, use_old_before=d, brackets=0.1)
            flaws += fx
            code, fx = fl.code(e, missing=0.03, bad=0.01)
            flaws += fx
            addr, fx = fl.address(e, variant=0.3, stale=0.3)
            flaws += fx
            phone, fx = fl.phone(e, variant=0.2, other=0.5)
            flaws += fx
            until = date(d.year + 3, d.month, d.day) if cat == "高新技术企业" else date(d.year + 1, 12, 31)
            ws.append([cat, key, nm, code, _fmt_date(d, "cn"), _fmt_date(until, "cn"),
                       ln.INDUSTRIES[e.industry][5] or "高技术服务",
                       streets.get(fl.pop.blds[e.building].street_code, ""), addr, _person(r), phone])
            truth.add("kjj_tech", key, e.id, False, flaws)
            n += 1
    wb.save(out / SOURCE_FILES["kjj_tech"])
    return n


def _street(out: Path, ents: list[Ent], fl: Flaws, truth: _Truth) -> tuple[int, int]:
    """The street offices' ledgers: buildings into their SQLite database, tenants into the
    入驻企业 sheet."""
    from openpyxl import Workbook

    r = fl.r
    pop = fl.pop
    office_set = set(pop.offices)
    per_building: dict[int, list[tuple[Ent, bool]]] = {bi: [] for bi in pop.offices}
    for e in ents:
        if e.building in office_set and e.status == "存续":
            if r.random() < 0.93:
                per_building[e.building].append((e, False))
        elif e.kind != "individual" and e.building in office_set and r.random() < 0.3:
            per_building[e.building].append((e, True))  # closed, still listed
        if e.prev_building in office_set and r.random() < 0.35:
            per_building[e.prev_building].append((e, True))  # moved out, still listed
    wb = Workbook(write_only=True)
    buildings: list[list] = []
    wst = wb.create_sheet("入驻企业")
    wst.append(["台账编号", "楼宇编号", "楼宇名称", "企业名称", "统一社会信用代码", "所在楼层", "房号",
                "企业地址", "联系人", "联系电话", "入驻时间", "从业人数", "上年度税收（万元）", "备注"])
    nb = nt = 0
    seq_by_street: dict[str, int] = {}
    for bi in sorted(per_building, key=lambda i: pop.blds[i].code):
        b = pop.blds[bi]
        street = pop.streets.get(b.street_code, "")
        seq_by_street[b.street_code] = seq_by_street.get(b.street_code, 0) + 1
        bkey = f"JD{b.street_code[-3:]}-LY{seq_by_street[b.street_code]:03d}"
        area = b.floors * r.uniform(1500, 2600)
        rows = per_building[bi]
        live = sum(1 for _, stale in rows if not stale)
        bname = b.name if r.random() < 0.8 else b.name + rng_choice(r, ["写字楼", "（写字楼）", "A座"])
        baddr = (b.address if r.random() < 0.5 else
                 f"{names.DISTRICT}{b.road}{b.number}号" if r.random() < 0.6 else
                 f"{b.road}{_cn_number(b.number)}号")
        btruth = ["addr_variant"] if baddr != b.address else []
        if bname != b.name:
            btruth.append("abbrev")
        buildings.append([bkey, bname, street, baddr, ln.ZIHAO_CHARS[bi % 97] + "置业有限公司",
                    _landline(r), _fmt_date(date(_ri(r, 1998, 2021), _ri(r, 1, 12), 1), "dot"),
                    round(area), round(area * 0.8), round(min(0.98, live / max(1, b.floors * 3) + 0.45), 2),
                    b.floors])
        truth.add("jd_buildings", bkey, b.code, False, btruth)
        nb += 1
        for k, (e, stale) in enumerate(rows, 1):
            key = f"{bkey}-{k:04d}"
            flaws: list[str] = []
            nm, fx = fl.name(e, abbrev=0.35, short=0.3, no_region=0.45, old=0.08, brackets=0.3,
                             form_swap=0.03)
            flaws += fx
            code, fx = fl.code(e, missing=0.7, bad=0.03)
            flaws += fx
            phone, fx = fl.phone(e, variant=0.4, missing=0.08, other=0.4)
            flaws += fx
            detail = e.detail
            if stale and e.prev_building == bi:
                detail = e.prev_detail
                flaws.append("old_address")
            floor = detail.removeprefix(b.name).split("层")[0] if "层" in detail else ""
            room = detail.split("层")[-1].removesuffix("室") if "层" in detail else ""
            u = r.random()
            if u < 0.5:
                addr = b.address + detail
            else:
                flaws.append("addr_variant")
                addr = (f"{names.DISTRICT}{b.road}{b.number}号{detail}" if u < 0.75 else
                        f"{b.name}{floor}楼{room}")
            moved_in = min(REFERENCE_DAY, max(e.established, date(2012, 1, 1)) + timedelta(days=int(r.random() * 900)))
            note = "" if not stale else rng_choice(r, ["已搬离", "", "疑似已注销", "联系不上"])
            wst.append([key, bkey, bname, nm, code, f"{floor}F" if floor and r.random() < 0.2 else floor,
                        room, addr, _person(r), phone, _fmt_date(moved_in, "dot"),
                        max(1, e.employees + int(r.gauss(0, 2))) if not stale else None,
                        round(e.tax / 10000 * r.uniform(0.8, 1.2), 2) if not stale and r.random() < 0.6 else None,
                        note])
            truth.add("jd_tenants", key, e.id, stale, flaws)
            nt += 1
    wb.save(out / SOURCE_FILES["jd_tenants"])
    write_street_db(out / SOURCE_FILES["jd_buildings"], buildings)
    return nb, nt


def write_street_db(path: Path, rows: list[list]) -> None:
    """(Re)write the street offices' building database (SQLite) with ``rows`` in
    STREET_DB_COLUMNS order."""
    import sqlite3

    path.unlink(missing_ok=True)
    con = sqlite3.connect(path)
    try:
        cols = ", ".join(f"{c} {t}" for c, t in STREET_DB_COLUMNS)
        con.execute(f"CREATE TABLE {STREET_DB_TABLE} ({cols})")
        marks = ", ".join("?" * len(STREET_DB_COLUMNS))
        con.executemany(f"INSERT INTO {STREET_DB_TABLE} VALUES ({marks})", rows)
        con.commit()
    finally:
        con.close()


def _write_entities(out: Path, ents: list[Ent], pop: _Population) -> None:
    with (out / TRUTH_ENTITIES).open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["entity_id", "kind", "name", "old_name", "credit_code", "reg_no", "legal_rep",
                    "phone", "address", "building_code", "street_code", "industry_code",
                    "established", "status", "employees", "tax_amount", "sishang", "hightech", "kxzx"])
        for e in ents:
            b = pop.blds[e.building]
            w.writerow([e.id, e.kind, e.name, e.old_name or "", e.credit_code or "", e.reg_no or "",
                        e.legal_rep, e.phone, b.address + e.detail, b.code, b.street_code,
                        _industry(e)[1], e.established.isoformat(), e.status, e.employees,
                        f"{e.tax:.2f}", e.sishang or "", int(e.hightech is not None),
                        int(e.kxzx is not None)])


def draw_population(world: World, rng: random.Random) -> list[Ent]:
    """The hidden true population for ``world`` (deterministic for the given RNG state)."""
    return _Population(world, rng).draw()


def write_ledgers(world: World, out_dir: str | Path, rng: random.Random | None = None) -> LedgerSummary:
    """Draw the population and write the ledgers, the truth and a manifest to ``out_dir``.

    ``rng`` defaults to the demo pipeline's stage RNG ``stage_rng(world.seed, "db:hub")``.
    """
    from jiedao.demo.pipeline import stage_rng

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = rng or stage_rng(world.seed, "db:hub")
    pop = _Population(world, rng)
    ents = pop.draw()
    summary = LedgerSummary(out_dir=out, scale=world.scale.name, seed=world.seed, entities=len(ents))
    truth = _Truth(out / TRUTH_RECORDS)
    try:
        # each ledger draws from its own RNG so that changing one never changes another
        for code, writer in (("scjg_registry", _registry), ("sw_taxpayers", _tax),
                             ("tj_sishang", _sishang), ("rsj_employers", _social),
                             ("kjj_tech", _tech), ("jd_tenants", _street)):
            fl = Flaws(random.Random(f"{world.seed}:{code}:{rng.random()}"), pop)
            n = writer(out, ents, fl, truth)
            if code == "jd_tenants":
                summary.rows["jd_buildings"], n = n
                summary.files["jd_buildings"] = SOURCE_FILES["jd_buildings"]
            summary.rows[code] = n
            summary.files[code] = SOURCE_FILES[code]
    finally:
        truth.close()
    _write_entities(out, ents, pop)
    (out / "manifest.json").write_text(json.dumps(
        {"label": "示例数据（合成，非真实）", "scale": summary.scale, "seed": summary.seed,
         "entities": summary.entities, "rows": summary.rows, "files": summary.files,
         "truth": {"records": TRUTH_RECORDS, "entities": TRUTH_ENTITIES}},
        ensure_ascii=False, indent=2), encoding="utf-8")
    return summary


def read_truth(out_dir: str | Path) -> Iterator[dict[str, Any]]:
    """Stream ``truth_records.csv`` rows as dicts (stale as bool, flaws as a list).

    ``entity_id`` is the enterprise id (digits) or, for ``jd_buildings`` rows, the 18-digit
    building code."""
    with (Path(out_dir) / TRUTH_RECORDS).open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            row["stale"] = row["stale"] == "1"
            row["flaws"] = [x for x in row["flaws"].split(";") if x]
            yield row


def default_dir(scale: str) -> Path:
    """``$JIEDAO_HOME/demo-ledgers/<scale>`` — where the demo's hub stage writes them."""
    from jiedao.config import get_settings

    return Path(get_settings().home) / "demo-ledgers" / scale
