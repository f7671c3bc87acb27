"""Archives built from the hub: 一企一档 (an enterprise's golden record with lineage, every
source record, its building, a timeline), 一楼一档 (a building with its enterprises,
occupancy, tax and 四上/高新 counts) and the search index behind name / credit code /
address search.

All functions are scope-aware: an enterprise belongs to the street (and community) of its
golden address; a caller outside that scope gets PermissionDenied. Queries use only
indexed lookups (golden by entity id, links by entity id, records by building code), so a
page costs a handful of small queries whatever the size of the hub. Name search runs on an
in-memory index (:class:`SearchIndex`: character-bigram prefilter + rapidfuzz), rebuilt when
the hub changes.
"""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict
from datetime import date, datetime

from pydantic import BaseModel, Field
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from jiedao.auth.scope import Principal, check_visible, is_visible
from jiedao.errors import NotFound
from jiedao.hub.models import Entity, Golden, ImportRun, Link, LinkModel, Record, Review, Source

FIELD_LABELS = {
    "name": "名称", "credit_code": "统一社会信用代码", "reg_no": "注册号", "legal_rep": "法定代表人",
    "phone": "联系电话", "address": "地址", "building_code": "楼栋", "grid_code": "网格",
    "street_code": "街道", "industry_code": "行业代码", "established": "成立日期", "status": "状态",
}
# record column shown in the side-by-side table for each golden field
RECORD_COLUMN = {"name": "name", "credit_code": "credit_code", "reg_no": "reg_no",
                 "legal_rep": "legal_rep", "phone": "phone", "address": "address_raw",
                 "building_code": "building_code", "industry_code": "industry_code",
                 "established": "established", "status": "status"}
METHODS = {"credit_code": "信用代码一致", "probabilistic": "概率匹配", "steward": "人工确认",
           "singleton": "单独成档"}
HIGHTECH = "高新技术企业"


# ---------------------------------------------------------------- response models


class Alternative(BaseModel):
    value: str | None
    source_code: str | None = None
    source_name: str | None = None
    record_id: int | None = None


class GoldenField(BaseModel):
    field: str
    label: str
    value: str | None
    source_code: str | None = Field(None, description="取值来源（数据源代码）")
    source_name: str | None = None
    record_id: int | None = None
    run_id: int | None = Field(None, description="取值所在的导入批次")
    at: datetime | None = Field(None, description="该值的载入时间")
    conflict: bool = False
    alternatives: list[Alternative] = Field(default_factory=list)


class SourceRecord(BaseModel):
    record_id: int
    source_code: str
    source_name: str
    department_name: str | None = None
    source_key: str
    name: str | None
    credit_code: str | None
    reg_no: str | None
    legal_rep: str | None
    phone: str | None
    address: str | None
    building_code: str | None
    industry_code: str | None
    established: date | None
    status: str | None
    extra: dict = Field(default_factory=dict)
    method: str | None = Field(None, description="关联方式")
    method_label: str | None = None
    probability: float | None = None
    vanished: bool = False
    first_run_id: int | None = None
    last_run_id: int | None = None
    updated_at: datetime | None = None


class BuildingRef(BaseModel):
    code: str
    name: str
    kind: str
    floors: int | None
    address: str | None
    grid_code: str
    grid_name: str | None
    community_code: str
    community_name: str | None
    street_code: str
    street_name: str | None


class TimelineEvent(BaseModel):
    at: datetime | None
    kind: str = Field(description="import / vanished / link / review / case / entity")
    text: str
    source_code: str | None = None
    run_id: int | None = None
    url: str | None = None


class Facts(BaseModel):
    sishang: str | None = Field(None, description="四上专业（在四上名录中时）")
    hightech: bool = False
    kxzx: bool = False
    tax_last_year: float | None = Field(None, description="上年度纳税额（万元）")
    employees: int | None = None


class EnterpriseArchive(BaseModel):
    id: int
    entity_type: str
    name: str | None
    credit_code: str | None
    street_code: str | None
    street_name: str | None
    retired: bool = False
    merged_into: int | None = None
    fields: list[GoldenField]
    conflicts: int = 0
    records: list[SourceRecord]
    sources: list[str] = Field(default_factory=list, description="出现在哪些数据源")
    building: BuildingRef | None = None
    facts: Facts
    timeline: list[TimelineEvent]


class TenantOut(BaseModel):
    id: int
    name: str | None
    credit_code: str | None
    floor: str | None = None
    room: str | None = None
    status: str | None = None
    sishang: str | None = None
    hightech: bool = False
    kxzx: bool = False
    tax_last_year: float | None = None
    employees: int | None = None
    sources: int = 0


class BuildingArchive(BaseModel):
    building: BuildingRef
    enterprises: list[TenantOut]
    counts: dict[str, int]
    tax_total: float = Field(description="入驻企业上年度纳税合计（万元）")
    employees_total: int = 0
    occupancy: float | None = Field(None, description="入驻率（街道楼宇台账）")
    ledger: dict = Field(default_factory=dict, description="街道楼宇台账中的楼宇信息")
    moved_out: list[TenantOut] = Field(default_factory=list,
                                       description="台账仍登记在本楼、但已迁出或注销的企业")


class SearchHit(BaseModel):
    id: int
    name: str | None
    credit_code: str | None
    address: str | None
    street_code: str | None
    street_name: str | None = None
    status: str | None = None
    matched: str = Field(description="命中的文字（名称、曾用名、简称、信用代码或地址）")
    matched_by: str = Field(description="name / credit_code / address")
    score: float


class SearchResult(BaseModel):
    query: str
    kind: str = Field(description="按名称 / 信用代码 / 地址")
    hits: list[SearchHit]
    total: int
    building: BuildingRef | None = Field(None, description="地址查询定位到的楼栋")


# ---------------------------------------------------------------- helpers


def _sources(session: Session) -> dict[str, tuple[str, str, str]]:
    """code → (name, department name, entity type)."""
    from jiedao.catalog.models import Department

    rows = session.execute(select(Source.code, Source.name, Department.name, Source.entity_type)
                           .join(Department, Department.code == Source.department_code,
                                 isouter=True)).all()
    return {c: (n, d or "", t) for c, n, d, t in rows}


def building_ref(session: Session, code: str | None) -> BuildingRef | None:
    """A building with its first standard address and the names of its grid and areas."""
    from jiedao.geo.models import Address, Building, Community, Grid, Street

    if not code:
        return None
    b = session.get(Building, code)
    if b is None:
        return None
    addr = session.scalars(select(Address.full).where(Address.building_code == code)
                           .order_by(Address.code).limit(1)).first()
    g = session.get(Grid, b.grid_code)
    c = session.get(Community, b.community_code)
    st = session.get(Street, b.street_code)
    return BuildingRef(code=b.code, name=b.name, kind=b.kind, floors=b.floors, address=addr,
                       grid_code=b.grid_code, grid_name=g.name if g else None,
                       community_code=b.community_code, community_name=c.name if c else None,
                       street_code=b.street_code, street_name=st.name if st else None)


def _street_name(session: Session, code: str | None) -> str | None:
    from jiedao.geo.models import Street

    if not code:
        return None
    st = session.get(Street, code)
    return st.name if st else None


def check_entity_visible(p: Principal, golden: dict[str, str | None]) -> None:
    """PermissionDenied unless the principal's scope holds the entity's golden street."""
    street = golden.get("street_code")
    grid = golden.get("grid_code")
    check_visible(p, street_code=street, community_code=grid[:12] if grid else None)


def entity_visible(p: Principal, street_code: str | None, grid_code: str | None = None) -> bool:
    return is_visible(p, street_code=street_code, community_code=grid_code[:12] if grid_code else None)


def _num(v) -> float | None:
    try:
        return None if v is None or v == "" else float(v)
    except (TypeError, ValueError):
        return None


def facts_of(records: list) -> Facts:
    """四上 / 高新 / 科技型中小 flags, tax and employees from an entity's source records."""
    f = Facts()
    for r in records:
        extra = r.extra or {}
        if r.vanished:
            continue
        if r.source_code == "tj_sishang":
            f.sishang = extra.get("speciality") or "四上企业"
        if r.source_code == "kjj_tech":
            kind = extra.get("tech_kind") or ""
            if kind == HIGHTECH:
                f.hightech = True
            elif "科技型中小" in kind:
                f.kxzx = True
        if r.source_code == "sw_taxpayers" and _num(extra.get("tax_last_year")) is not None:
            f.tax_last_year = round((f.tax_last_year or 0) + _num(extra.get("tax_last_year")), 2)
        for k in ("employees", "insured"):
            n = _num(extra.get(k))
            if n is not None:
                f.employees = max(f.employees or 0, int(n))
    return f


# ---------------------------------------------------------------- 一企一档


def enterprise_archive(session: Session, p: Principal, entity_id: int) -> EnterpriseArchive:
    """The archive of one entity (scope-checked): golden fields with lineage and conflicts,
    every linked source record, its building, facts and a timeline."""
    ent = session.get(Entity, entity_id)
    if ent is None:
        raise NotFound(f"档案 {entity_id} 不存在")
    golden = session.scalars(select(Golden).where(Golden.entity_id == entity_id)).all()
    gv = {g.field: g.value for g in golden}
    check_entity_visible(p, gv)
    srcs = _sources(session)
    order = list(FIELD_LABELS)
    fields = []
    for g in sorted(golden, key=lambda g: (order.index(g.field) if g.field in order else 99, g.field)):
        alts = [Alternative(value=a.get("value"), source_code=a.get("source_code"),
                            source_name=srcs.get(a.get("source_code") or "", ("",))[0] or None,
                            record_id=a.get("record_id"))
                for a in (g.alternatives or []) if isinstance(a, dict)]
        fields.append(GoldenField(
            field=g.field, label=FIELD_LABELS.get(g.field, g.field), value=g.value,
            source_code=g.source_code, source_name=srcs.get(g.source_code or "", (None,))[0],
            record_id=g.record_id, run_id=g.run_id, at=g.at, conflict=bool(g.conflict),
            alternatives=alts))
    rows = session.execute(
        select(Record, Link.method, Link.probability, Link.at)
        .join(Link, Link.record_id == Record.id).where(Link.entity_id == entity_id)
        .order_by(Record.source_code, Record.id)).all()
    prio = {c: i for i, c in enumerate(sorted(srcs, key=lambda c: c))}
    records = []
    for r, method, prob, _at in sorted(rows, key=lambda x: (prio.get(x[0].source_code, 99), x[0].id)):
        name, dept, _ = srcs.get(r.source_code, (r.source_code, "", ""))
        extra = {k: v for k, v in (r.extra or {}).items() if k != "problems"}
        records.append(SourceRecord(
            record_id=r.id, source_code=r.source_code, source_name=name, department_name=dept,
            source_key=r.source_key, name=r.name, credit_code=r.credit_code, reg_no=r.reg_no,
            legal_rep=r.legal_rep, phone=r.phone, address=r.address_raw,
            building_code=r.building_code, industry_code=r.industry_code,
            established=r.established, status=r.status, extra=extra, method=method,
            method_label=METHODS.get(method or "", method), probability=prob, vanished=r.vanished,
            first_run_id=r.first_run_id, last_run_id=r.last_run_id, updated_at=r.updated_at))
    building = building_ref(session, gv.get("building_code"))
    timeline = _timeline(session, ent, [x[0] for x in rows], srcs, gv)
    return EnterpriseArchive(
        id=ent.id, entity_type=ent.entity_type, name=gv.get("name"), credit_code=gv.get("credit_code"),
        street_code=gv.get("street_code"), street_name=_street_name(session, gv.get("street_code")),
        retired=ent.retired, merged_into=ent.merged_into, fields=fields,
        conflicts=sum(1 for f in fields if f.conflict), records=records,
        sources=sorted({r.source_code for r in records if not r.vanished}),
        building=building, facts=facts_of([x[0] for x in rows]), timeline=timeline)


def _timeline(session: Session, ent: Entity, recs: list, srcs: dict, gv: dict) -> list[TimelineEvent]:
    """Everything the platform knows, newest first: loads that brought or changed its records,
    vanished rows, steward decisions, merges/splits, and cases from callers of this enterprise."""
    ev: list[TimelineEvent] = []
    run_ids = {i for r in recs for i in (r.first_run_id, r.last_run_id, r.vanished_run_id) if i}
    runs = {r.id: r for r in session.scalars(select(ImportRun).where(ImportRun.id.in_(run_ids)))} \
        if run_ids else {}
    seen: set[tuple] = set()
    for r in recs:
        sname = srcs.get(r.source_code, (r.source_code,))[0]
        for rid, kind, text in ((r.first_run_id, "import", f"{sname}：首次载入该企业记录"),
                                (r.last_run_id, "import", f"{sname}：记录更新"),
                                (r.vanished_run_id, "vanished", f"{sname}：台账中已不再有该记录")):
            if not rid or (rid, kind, r.source_code) in seen:
                continue
            if kind == "import" and rid == r.first_run_id and (rid, "first") in seen:
                continue
            seen.add((rid, kind, r.source_code))
            if rid == r.first_run_id:
                seen.add((rid, "first"))
            if kind == "import" and rid == r.last_run_id and rid == r.first_run_id and \
                    text.endswith("记录更新"):
                continue
            run = runs.get(rid)
            ev.append(TimelineEvent(at=run.started_at if run else None, kind=kind,
                                    text=f"{text}（导入批次 #{rid}）", source_code=r.source_code,
                                    run_id=rid, url="/hub/sources#run-" + str(rid)))
    ev.append(TimelineEvent(at=ent.created_at, kind="entity", text=f"建立档案 #{ent.id}"))
    for h in ent.history or []:
        if isinstance(h, dict):
            ev.append(TimelineEvent(at=_dt(h.get("at")), kind="entity",
                                    text=h.get("text") or _history_text(h)))
    ids = [r.id for r in recs]
    if ids:
        for rv in session.scalars(select(Review).where(
                or_(Review.record_a.in_(ids), Review.record_b.in_(ids)),
                Review.status != "pending")):
            ev.append(TimelineEvent(at=rv.decided_at, kind="review", text=(
                f"数据管理员 {rv.decided_by or ''} {'确认' if rv.status == 'accepted' else '否定'}"
                f"记录 #{rv.record_a} 与 #{rv.record_b} 为同一企业")))
    ev += _cases(session, {r.name for r in recs if r.name} | ({gv["name"]} if gv.get("name") else set()))
    ev.sort(key=lambda e: e.at or datetime.min, reverse=True)
    return ev


def _dt(v) -> datetime | None:
    if isinstance(v, datetime):
        return v
    try:
        return datetime.fromisoformat(str(v)) if v else None
    except ValueError:
        return None


def _history_text(h: dict) -> str:
    kind = h.get("kind") or h.get("event") or ""
    other = h.get("entity_id") or h.get("from") or h.get("into") or ""
    return {"merge": f"与档案 #{other} 合并", "split": f"自档案 #{other} 拆分"}.get(kind, f"档案变更 {kind}")


_callers_cache: dict[str, tuple] = {}


def _callers_by_enterprise(session: Session) -> dict[str, list[int]]:
    """Enterprise name → caller ids, read once per database and refreshed when callers are
    added (one pass over the callers table instead of a scan per page)."""
    from jiedao.cases.models import Caller

    key = str(session.get_bind().url)
    top = session.scalar(select(func.max(Caller.id)))
    cached = _callers_cache.get(key)
    if cached is not None and cached[0] == top:
        return cached[1]
    by: dict[str, list[int]] = defaultdict(list)
    for cid, ent in session.execute(select(Caller.id, Caller.enterprise)
                                    .where(Caller.enterprise.isnot(None))):
        by[ent].append(cid)
    _callers_cache[key] = (top, dict(by))
    return _callers_cache[key][1]


def _cases(session: Session, names: set[str]) -> list[TimelineEvent]:
    """Cases whose caller was recorded as one of these enterprise names (at most 20)."""
    try:
        from jiedao.cases.models import Case
    except ImportError:  # pragma: no cover - cases capability absent
        return []
    by = _callers_by_enterprise(session) if names else {}
    callers = sorted({c for n in names for c in by.get(n, ())})[:200]
    if not callers:
        return []
    rows = session.execute(
        select(Case.id, Case.code, Case.title, Case.received_at)
        .where(Case.caller_id.in_(callers))
        .order_by(Case.received_at.desc()).limit(20)).all()
    return [TimelineEvent(at=r.received_at, kind="case", text=f"诉求 {r.code}：{r.title}",
                          url=f"/cases/{r.id}") for r in rows]


# ---------------------------------------------------------------- 一楼一档


def _golden_of(session: Session, ids: list[int], fields: tuple[str, ...]) -> dict[int, dict]:
    out: dict[int, dict] = defaultdict(dict)
    for i in range(0, len(ids), 900):
        for e, f, v in session.execute(select(Golden.entity_id, Golden.field, Golden.value).where(
                Golden.entity_id.in_(ids[i:i + 900]), Golden.field.in_(fields))):
            out[e][f] = v
    return out


def building_archive(session: Session, p: Principal, code: str) -> BuildingArchive:
    """One building (scope-checked) with the enterprises whose golden address is in it."""
    from jiedao.geo.models import Building

    b = session.get(Building, code)
    if b is None:
        raise NotFound(f"楼栋 {code} 不存在")
    check_visible(p, street_code=b.street_code, community_code=b.community_code)
    ref = building_ref(session, code)
    # every entity with a record here (indexed), kept when its golden building is this one
    cand = sorted({e for (e,) in session.execute(
        select(Link.entity_id).join(Record, Record.id == Link.record_id)
        .where(Record.building_code == code))})
    gold = _golden_of(session, cand, ("name", "credit_code", "building_code", "status"))
    here = [e for e in cand if gold.get(e, {}).get("building_code") == code]
    here_set = set(here)
    recs: dict[int, list] = defaultdict(list)
    for i in range(0, len(cand), 900):
        for r, e in session.execute(select(Record, Link.entity_id).join(
                Link, Link.record_id == Record.id).where(Link.entity_id.in_(cand[i:i + 900]))):
            recs[e].append(r)
    srcs = _sources(session)
    tenants, moved = [], []
    ledger: dict = {}
    for e in cand:
        g = gold.get(e, {})
        rs = recs.get(e, [])
        if srcs.get(rs[0].source_code, ("", "", ""))[2] == "building" if rs else False:
            for r in rs:
                ledger = {k: v for k, v in (r.extra or {}).items() if k != "problems"} | {
                    "name": r.name, "address": r.address_raw, "source_key": r.source_key}
            continue
        f = facts_of(rs)
        floor = room = None
        for r in rs:
            if r.source_code == "jd_tenants" and r.building_code == code:
                floor = floor or _s((r.extra or {}).get("floor"))
                room = room or _s((r.extra or {}).get("room"))
        if floor is None:
            m = re.search(r"(\d+)[层楼F](\d+)", next((r.address_raw or "" for r in rs
                                                      if r.building_code == code), ""))
            if m:
                floor, room = m.group(1), m.group(2)
        t = TenantOut(id=e, name=g.get("name"), credit_code=g.get("credit_code"), floor=floor,
                      room=room, status=g.get("status"), sishang=f.sishang, hightech=f.hightech,
                      kxzx=f.kxzx, tax_last_year=f.tax_last_year, employees=f.employees,
                      sources=len({r.source_code for r in rs}))
        (tenants if e in here_set else moved).append(t)
    tenants.sort(key=lambda t: (_int(t.floor), t.room or "", t.name or ""))
    active = [t for t in tenants if not _closed(t.status)]
    return BuildingArchive(
        building=ref, enterprises=tenants,
        counts={"enterprises": len(tenants), "active": len(active),
                "sishang": sum(1 for t in tenants if t.sishang),
                "hightech": sum(1 for t in tenants if t.hightech),
                "kxzx": sum(1 for t in tenants if t.kxzx),
                "floors_used": len({t.floor for t in active if t.floor})},
        tax_total=round(sum(t.tax_last_year or 0 for t in tenants), 2),
        employees_total=sum(t.employees or 0 for t in active),
        occupancy=_num(ledger.get("occupancy")), ledger=ledger, moved_out=moved[:200])


def _s(v) -> str | None:
    if v is None or v == "":
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).removesuffix("F").removesuffix("层")


def _int(v) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 9999


def _closed(status: str | None) -> bool:
    return bool(status) and any(w in status for w in ("注销", "吊销"))


# ---------------------------------------------------------------- search

_CODE_RE = re.compile(r"^[0-9A-Za-z]{15,18}$")
_ADDR_RE = re.compile(r"(路|街|道|巷|号|栋|幢|座|单元|室|层|大厦|中心|广场|小区)")


class SearchIndex:
    """Names (golden name, every source's name core), credit codes and addresses of the
    hub's enterprises, held in memory for fuzzy search.

    A query's character bigrams select candidates from an inverted index (numpy arrays), and
    rapidfuzz ranks them. Entries carry the entity's street and grid for scope filtering."""

    def __init__(self, version: tuple):
        self.version = version
        self.texts: list[str] = []
        self.owner: list[int] = []  # entry → entity id
        self.kind: list[str] = []  # entry → "名称" / "曾用名·简称"
        self.info: dict[int, tuple] = {}  # entity → (name, credit, address, street, grid, status)
        self.codes: dict[str, int] = {}
        self.postings = {}
        self.built_seconds = 0.0

    @classmethod
    def build(cls, session: Session) -> SearchIndex:
        import numpy as np

        from jiedao.hub.standardise import NameStandardiser, normalise_name

        t0 = time.perf_counter()
        idx = cls(index_version(session))
        ns = NameStandardiser()
        ent_ids = select(Entity.id).where(Entity.entity_type == "enterprise", Entity.retired.is_(False))
        info: dict[int, dict] = defaultdict(dict)
        for e, f, v in session.execute(select(Golden.entity_id, Golden.field, Golden.value).where(
                Golden.field.in_(("name", "credit_code", "address", "street_code", "grid_code",
                                  "status")), Golden.entity_id.in_(ent_ids))):
            info[e][f] = v
        seen: set[tuple[int, str]] = set()
        bigram: dict[str, list[int]] = defaultdict(list)

        def add(e: int, text: str, kind: str) -> None:
            if not text or (e, text) in seen:
                return
            seen.add((e, text))
            i = len(idx.texts)
            idx.texts.append(text)
            idx.owner.append(e)
            idx.kind.append(kind)
            for g in {text[k:k + 2] for k in range(max(1, len(text) - 1))}:
                bigram[g].append(i)

        for e, d in info.items():
            idx.info[e] = (d.get("name"), d.get("credit_code"), d.get("address"),
                           d.get("street_code"), d.get("grid_code"), d.get("status"))
            if d.get("name"):
                add(e, ns.core(d["name"]) or normalise_name(d["name"]), "名称")
            if d.get("credit_code"):
                idx.codes[d["credit_code"]] = e
        for e, core, cc, reg in session.execute(
                select(Link.entity_id, Record.name_core, Record.credit_code, Record.reg_no)
                .join(Record, Record.id == Link.record_id)
                .where(Link.entity_id.in_(ent_ids))):
            if e not in idx.info:
                continue
            if core:
                add(e, core, "曾用名·简称")
            for c in (cc, reg):
                if c:
                    idx.codes.setdefault(c, e)
        idx.postings = {g: np.asarray(v, dtype=np.int32) for g, v in bigram.items()}
        idx.built_seconds = round(time.perf_counter() - t0, 3)
        return idx

    def __len__(self) -> int:
        return len(self.texts)

    def _visible(self, p: Principal, e: int) -> bool:
        inf = self.info.get(e)
        return inf is not None and entity_visible(p, inf[3], inf[4])

    def _hit(self, e: int, matched: str, by: str, score: float) -> SearchHit:
        name, cc, addr, street, _grid, status = self.info[e]
        return SearchHit(id=e, name=name, credit_code=cc, address=addr, street_code=street,
                         status=status, matched=matched, matched_by=by, score=round(score, 1))

    def by_name(self, q: str, p: Principal, limit: int = 20) -> list[SearchHit]:
        """Fuzzy name search: bigram prefilter, rapidfuzz WRatio ranking, best per entity."""
        import numpy as np
        from rapidfuzz import fuzz, process

        from jiedao.hub.standardise import NameStandardiser, normalise_name

        core = NameStandardiser().core(q) or normalise_name(q)
        if not core:
            return []
        grams = {core[k:k + 2] for k in range(max(1, len(core) - 1))}
        lists = [self.postings[g] for g in grams if g in self.postings]
        if not lists:
            return []
        allp = np.concatenate(lists)
        ids, counts = np.unique(allp, return_counts=True)
        need = max(1, int(len(grams) * 0.5))
        keep = ids[counts >= need]
        if len(keep) > 3000:
            order = np.argsort(-counts[counts >= need], kind="stable")[:3000]
            keep = keep[order]
        cand = {int(i): self.texts[int(i)] for i in keep}
        best: dict[int, tuple[float, str]] = {}
        for text, score, i in process.extract(core, cand, scorer=fuzz.WRatio, limit=400,
                                              score_cutoff=60):
            e = self.owner[i]
            if e in best and best[e][0] >= score:
                continue
            if not self._visible(p, e):
                continue
            best[e] = (score + (2 if self.kind[i] == "名称" else 0), text)
        hits = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:limit]
        return [self._hit(e, text, "name", min(100.0, s)) for e, (s, text) in hits]

    def by_code(self, q: str, p: Principal) -> list[SearchHit]:
        code = q.strip().upper()
        e = self.codes.get(code)
        if e is None or not self._visible(p, e):
            return []
        return [self._hit(e, code, "credit_code", 100.0)]


def index_version(session: Session) -> tuple:
    """Changes when a load, new entities or a retrained linkage model may have changed the
    hub (three indexed MAX lookups; archive pages themselves always read the live tables)."""
    return (session.scalar(select(func.max(ImportRun.id))),
            session.scalar(select(func.max(Entity.id))),
            session.scalar(select(func.max(LinkModel.id))))


_lock = threading.Lock()


def get_index(state, session: Session, max_age: float = 30.0) -> SearchIndex:
    """The app's search index. Built on first use; when :func:`index_version` changes
    (checked at most every ``max_age`` seconds) it is rebuilt in a background thread while
    the previous index keeps answering."""
    cached = getattr(state, "hub_search", None)
    now = time.monotonic()
    if cached is not None and now - cached[1] < max_age:
        return cached[0]
    version = index_version(session)
    if cached is not None:
        state.hub_search = (cached[0], now)
        if cached[0].version != version and not getattr(state, "hub_search_building", False):
            state.hub_search_building = True
            db = getattr(state, "db", None)
            threading.Thread(target=_rebuild, args=(state, db), daemon=True).start()
        return cached[0]
    with _lock:
        cached = getattr(state, "hub_search", None)
        if cached is None:
            cached = (SearchIndex.build(session), time.monotonic())
            state.hub_search = cached
        return cached[0]


def _rebuild(state, db) -> None:
    try:
        if db is None:
            return
        with db.session() as s:
            idx = SearchIndex.build(s)
        state.hub_search = (idx, time.monotonic())
    finally:
        state.hub_search_building = False


def search(session: Session, p: Principal, q: str, index: SearchIndex, resolver=None,
           limit: int = 20) -> SearchResult:
    """Search enterprises by credit code (exact, old registration numbers too), address
    (resolved to a building: its enterprises) or name (fuzzy). Only entities in scope."""
    q = (q or "").strip()
    if _CODE_RE.match(q) and any(c.isdigit() for c in q):
        hits = index.by_code(q, p)
        if hits:
            return SearchResult(query=q, kind="信用代码", hits=hits, total=len(hits))
    if resolver is not None and _ADDR_RE.search(q) and re.search(r"\d|[一二三四五六七八九十]", q):
        r = resolver.resolve(q)
        if r.building_code and r.confidence >= 0.6:
            ref = building_ref(session, r.building_code)
            if ref is not None and is_visible(p, street_code=ref.street_code,
                                              community_code=ref.community_code):
                arch = building_archive(session, p, r.building_code)
                hits = [SearchHit(id=t.id, name=t.name, credit_code=t.credit_code,
                                  address=ref.address, street_code=ref.street_code,
                                  street_name=ref.street_name, status=t.status,
                                  matched=ref.address or ref.name, matched_by="address",
                                  score=round(r.confidence * 100, 1))
                        for t in arch.enterprises[:limit]]
                return SearchResult(query=q, kind="地址", hits=hits, total=len(arch.enterprises),
                                    building=ref)
    hits = index.by_name(q, p, limit)
    return SearchResult(query=q, kind="名称", hits=hits, total=len(hits))
