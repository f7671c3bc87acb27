"""Pages and JSON API of the data hub: 一企一档 /hub/enterprises/{id}, 一楼一档
/hub/buildings/{code}, search /hub/search, sources and import runs /hub/sources, the
steward's review queue /hub/review and data quality /hub/quality; API twins under /api/hub.

Roles: data steward, admin and leader (district-wide) and street staff / street leaders,
who see only enterprises and buildings in their own street (scope via
:mod:`jiedao.auth.scope` on the golden street). Review decisions (POST, CSRF) are for
stewards and admins and go through LINK's :func:`jiedao.hub.link.decide_review`.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jiedao.auth.deps import csrf_protect, require_roles
from jiedao.auth.scope import Principal
from jiedao.errors import NotFound
from jiedao.hub import archive as ar
from jiedao.hub.models import ImportRun, Record, Review, Source
from jiedao.web.deps import get_session
from jiedao.web.nav import NavItem, add_nav
from jiedao.web.templating import render

router = APIRouter()

ARCHIVE_ROLES = ("steward", "admin", "leader", "street_staff")
STEWARDS = ("steward", "admin")
OVERVIEW_ROLES = ("steward", "admin", "leader")

add_nav(NavItem("hub_search", "企业档案", "/hub/search", roles=ARCHIVE_ROLES, order=60, icon="▣",
                prefix="/hub/search"))
add_nav(NavItem("hub_sources", "数据归集", "/hub/sources", roles=OVERVIEW_ROLES, order=61, icon="⇅",
                prefix="/hub/sources"))
add_nav(NavItem("hub_review", "匹配审核", "/hub/review", roles=STEWARDS, order=62, icon="⚖",
                prefix="/hub/review"))
add_nav(NavItem("hub_quality", "数据质量", "/hub/quality", roles=OVERVIEW_ROLES, order=63, icon="✓",
                prefix="/hub/quality"))

Viewer = Annotated[Principal, Depends(require_roles(*ARCHIVE_ROLES))]
Overseer = Annotated[Principal, Depends(require_roles(*OVERVIEW_ROLES))]
Steward = Annotated[Principal, Depends(require_roles(*STEWARDS))]
DB = Annotated[Session, Depends(get_session)]
EntityId = Annotated[int, Path(ge=1, le=2**31 - 1, description="档案编号（实体 ID）")]
BuildingCode = Annotated[str, Path(pattern=r"^\d{18}$", description="楼栋代码（18位）")]
SearchQ = Annotated[str, Query(min_length=0, max_length=100, description="企业名称、信用代码或地址")]
TAG = "数据归集 hub"
RUN_STATUS = {"ok": "成功", "failed": "失败", "running": "进行中"}


# ---------------------------------------------------------------- response models


class RunOut(BaseModel):
    id: int
    source_code: str
    source_name: str | None = None
    started_at: datetime
    finished_at: datetime | None
    status: str
    file: str | None
    n_read: int
    n_new: int
    n_changed: int
    n_unchanged: int
    n_vanished: int
    n_rejected: int
    error: str | None
    seconds: float | None


class SourceOut(BaseModel):
    code: str
    name: str
    department_code: str
    department_name: str | None
    entity_type: str
    rhythm: str
    connector: str
    location: str
    priority: int
    records: int = Field(description="当前记录数（不含已消失）")
    vanished: int = 0
    last_run: RunOut | None = None


class SourcesOut(BaseModel):
    sources: list[SourceOut]
    runs: list[RunOut]


class ReviewRecord(BaseModel):
    id: int
    source_code: str
    source_name: str | None
    name: str | None
    credit_code: str | None
    legal_rep: str | None
    phone: str | None
    address: str | None


class ReviewOut(BaseModel):
    id: int
    probability: float | None
    status: str
    a: ReviewRecord
    b: ReviewRecord
    detail: dict = Field(default_factory=dict)
    decided_by: str | None = None
    decided_at: datetime | None = None


class Decision(BaseModel):
    decision: Literal["accept", "reject"] = Field(description="accept：同一企业；reject：不同企业")


class QualityOut(BaseModel):
    code: str
    name: str
    department_code: str
    department_name: str
    entity_type: str
    records: int
    score: float | None
    mapped: list[str]
    completeness: dict[str, float | None]
    validity: dict[str, float | None]
    invalid: dict[str, int]
    duplicates: int
    duplicate_rate: float | None
    linked: int
    matched: int
    match_rate: float | None
    conflicts: int
    conflict_rate: float | None
    advice: list[str]


# ---------------------------------------------------------------- queries


def _resolver(request: Request, s: Session):
    from jiedao.geo.routes import _resolver as geo_resolver

    return geo_resolver(request, s)


def do_search(request: Request, s: Session, p: Principal, q: str) -> ar.SearchResult:
    """Search with the app's cached index (built on first use, rebuilt when the hub changes)."""
    q = (q or "").strip()
    if not q:
        return ar.SearchResult(query="", kind="名称", hits=[], total=0)
    index = ar.get_index(request.app.state, s)
    res = ar.search(s, p, q, index, resolver=_resolver(request, s))
    names = _street_names(s)
    for h in res.hits:
        h.street_name = names.get(h.street_code or "")
    return res


def _street_names(s: Session) -> dict[str, str]:
    from jiedao.geo.models import Street

    return dict(s.execute(select(Street.code, Street.name)).all())


def _run_out(r: ImportRun, names: dict[str, str]) -> RunOut:
    return RunOut(id=r.id, source_code=r.source_code, source_name=names.get(r.source_code),
                  started_at=r.started_at, finished_at=r.finished_at, status=r.status, file=r.file,
                  n_read=r.n_read, n_new=r.n_new, n_changed=r.n_changed, n_unchanged=r.n_unchanged,
                  n_vanished=r.n_vanished, n_rejected=r.n_rejected, error=r.error, seconds=r.seconds)


def sources_overview(s: Session, source: str | None = None, limit: int = 50) -> SourcesOut:
    """Every registered source with record counts and its last run, and the latest runs."""
    from jiedao.catalog.models import Department

    depts = dict(s.execute(select(Department.code, Department.name)).all())
    srcs = s.scalars(select(Source).order_by(Source.priority.desc(), Source.code)).all()
    names = {x.code: x.name for x in srcs}
    counts: dict[tuple[str, bool], int] = {
        (c, bool(v)): n for c, v, n in s.execute(
            select(Record.source_code, Record.vanished, func.count())
            .group_by(Record.source_code, Record.vanished))}
    last_ids = dict(s.execute(select(ImportRun.source_code, func.max(ImportRun.id))
                              .group_by(ImportRun.source_code)).all())
    last = {r.id: r for r in s.scalars(select(ImportRun).where(ImportRun.id.in_(list(last_ids.values()))))} \
        if last_ids else {}
    out = [SourceOut(code=x.code, name=x.name, department_code=x.department_code,
                     department_name=depts.get(x.department_code), entity_type=x.entity_type,
                     rhythm=x.rhythm, connector=x.connector, location=x.location,
                     priority=x.priority, records=counts.get((x.code, False), 0),
                     vanished=counts.get((x.code, True), 0),
                     last_run=_run_out(last[last_ids[x.code]], names) if x.code in last_ids else None)
           for x in srcs]
    stmt = select(ImportRun).order_by(ImportRun.id.desc()).limit(limit)
    if source:
        stmt = stmt.where(ImportRun.source_code == source)
    runs = [_run_out(r, names) for r in s.scalars(stmt)]
    return SourcesOut(sources=out, runs=runs)


def _review_record(r: Record | None, names: dict[str, str]) -> ReviewRecord:
    if r is None:
        return ReviewRecord(id=0, source_code="", source_name=None, name="（记录已删除）",
                            credit_code=None, legal_rep=None, phone=None, address=None)
    return ReviewRecord(id=r.id, source_code=r.source_code, source_name=names.get(r.source_code),
                        name=r.name, credit_code=r.credit_code, legal_rep=r.legal_rep,
                        phone=r.phone, address=r.address_raw)


def review_queue(s: Session, status: str = "pending", limit: int = 50, offset: int = 0) -> list[ReviewOut]:
    """The review queue (highest probability first) with both records of each pair."""
    names = dict(s.execute(select(Source.code, Source.name)).all())
    stmt = select(Review).order_by(Review.probability.desc(), Review.id).limit(limit).offset(offset)
    if status != "all":
        stmt = stmt.where(Review.status == status)
    rows = s.scalars(stmt).all()
    ids = {i for r in rows for i in (r.record_a, r.record_b)}
    recs = {r.id: r for r in s.scalars(select(Record).where(Record.id.in_(ids)))} if ids else {}
    return [ReviewOut(id=r.id, probability=r.probability, status=r.status,
                      a=_review_record(recs.get(r.record_a), names),
                      b=_review_record(recs.get(r.record_b), names), detail=r.detail or {},
                      decided_by=r.decided_by, decided_at=r.decided_at) for r in rows]


def _review_out(s: Session, rv: Review) -> ReviewOut:
    names = dict(s.execute(select(Source.code, Source.name)).all())
    recs = {r.id: r for r in s.scalars(select(Record).where(Record.id.in_((rv.record_a, rv.record_b))))}
    return ReviewOut(id=rv.id, probability=rv.probability, status=rv.status,
                     a=_review_record(recs.get(rv.record_a), names),
                     b=_review_record(recs.get(rv.record_b), names), detail=rv.detail or {},
                     decided_by=rv.decided_by, decided_at=rv.decided_at)


def _decide(s: Session, review_id: int, accept: bool, p: Principal):
    from jiedao.hub.link import decide_review

    return decide_review(s, review_id, accept, p.username)


def quality_rows(request: Request, s: Session) -> list[QualityOut]:
    """Per-source quality, cached per app while the hub does not change (60 s at most)."""
    from jiedao.hub.quality import advice, compute_quality

    version = ar.index_version(s)
    cached = getattr(request.app.state, "hub_quality", None)
    if cached and cached[0] == version and time.monotonic() - cached[1] < 60:
        return cached[2]
    rows = [QualityOut(**{k: v for k, v in q.as_dict().items() if k in QualityOut.model_fields},
                       advice=advice(q)) for q in compute_quality(s)]
    request.app.state.hub_quality = (version, time.monotonic(), rows)
    return rows


# ---------------------------------------------------------------- pages


@router.get("/hub/search", include_in_schema=False)
def search_page(request: Request, p: Viewer, s: DB, q: SearchQ = ""):
    """Search enterprises by name (fuzzy), credit code or address."""
    t0 = time.perf_counter()
    res = do_search(request, s, p, q)
    ctx = {"q": q, "result": res, "ms": round((time.perf_counter() - t0) * 1000)}
    if request.headers.get("hx-request"):
        return render(request, "hub/_hits.html", ctx)
    return render(request, "hub/search.html", ctx)


@router.get("/hub/enterprises/{entity_id}", include_in_schema=False)
def enterprise_page(request: Request, entity_id: EntityId, p: Viewer, s: DB):
    """一企一档: golden record with lineage and conflicts, source records, building, timeline."""
    a = ar.enterprise_archive(s, p, entity_id)
    cols = [("name", "名称"), ("credit_code", "信用代码"), ("reg_no", "注册号"), ("legal_rep", "法定代表人"),
            ("phone", "电话"), ("address", "地址"), ("industry_code", "行业"), ("established", "成立日期"),
            ("status", "状态")]
    golden = {f.field: f for f in a.fields}
    return render(request, "hub/enterprise.html", {"a": a, "cols": cols, "golden": golden})


@router.get("/hub/buildings/{code}", include_in_schema=False)
def building_page(request: Request, code: BuildingCode, p: Viewer, s: DB):
    """一楼一档: the building with its enterprises, occupancy, tax and 四上/高新 counts."""
    from jiedao.geo.routes import BUILDING_KINDS

    b = ar.building_archive(s, p, code)
    return render(request, "hub/building.html", {"b": b, "kind_label": BUILDING_KINDS.get(
        b.building.kind, b.building.kind)})


@router.get("/hub/sources", include_in_schema=False)
def sources_page(request: Request, p: Overseer, s: DB,
                 source: Annotated[str | None, Query(max_length=40)] = None):
    """Registered sources, their record counts and the latest import runs."""
    return render(request, "hub/sources.html", {"o": sources_overview(s, source), "source": source,
                                                "run_status": RUN_STATUS})


@router.get("/hub/review", include_in_schema=False)
def review_page(request: Request, p: Steward, s: DB,
                status: Annotated[Literal["pending", "accepted", "rejected", "all"], Query()] = "pending",
                ok: Annotated[str | None, Query(max_length=20)] = None):
    """The steward's queue of borderline pairs."""
    counts = dict(s.execute(select(Review.status, func.count()).group_by(Review.status)).all())
    return render(request, "hub/review.html", {"items": review_queue(s, status), "status": status,
                                               "counts": counts, "ok": ok})


@router.post("/hub/review/{review_id}", include_in_schema=False, dependencies=[Depends(csrf_protect)])
def review_decide(request: Request, review_id: EntityId, p: Steward, s: DB,
                  decision: Annotated[Literal["accept", "reject"], Form()],
                  status: Annotated[str, Form(max_length=20)] = "pending"):
    """Accept or reject one pair; the decision holds on every later linkage run."""
    rv = _decide(s, review_id, decision == "accept", p)
    if request.headers.get("hx-request"):
        return render(request, "hub/_review_item.html", {"r": _review_out(s, rv), "status": status})
    st = status if status in ("pending", "accepted", "rejected", "all") else "pending"
    return RedirectResponse(f"/hub/review?status={st}&ok={decision}", status_code=303)


@router.get("/hub/quality", include_in_schema=False)
def quality_page(request: Request, p: Overseer, s: DB):
    """Per-source quality so the steward knows which department's ledger needs fixing."""
    from jiedao.hub.quality import FIELDS, VALIDITY_LABELS

    return render(request, "hub/quality.html", {"rows": quality_rows(request, s), "fields": FIELDS,
                                                "validity_labels": VALIDITY_LABELS})


# ---------------------------------------------------------------- JSON API


@router.get("/api/hub/search", response_model=ar.SearchResult, tags=[TAG],
            summary="企业检索：名称（模糊）、统一社会信用代码或地址")
def api_search(request: Request, p: Viewer, s: DB,
               q: Annotated[str, Query(min_length=1, max_length=100, description="名称、信用代码或地址")]):
    return do_search(request, s, p, q)


@router.get("/api/hub/enterprises/{entity_id}", response_model=ar.EnterpriseArchive, tags=[TAG],
            summary="一企一档：黄金记录（字段来源、冲突）、各部门原始记录、所在楼栋、时间线",
            responses={403: {"description": "不在数据范围内"}, 404: {"description": "不存在"}})
def api_enterprise(entity_id: EntityId, p: Viewer, s: DB):
    return ar.enterprise_archive(s, p, entity_id)


@router.get("/api/hub/buildings/{code}", response_model=ar.BuildingArchive, tags=[TAG],
            summary="一楼一档：楼栋、入驻企业、入驻率、税收合计、四上/高新企业数",
            responses={403: {"description": "不在数据范围内"}, 404: {"description": "不存在"}})
def api_building(code: BuildingCode, p: Viewer, s: DB):
    return ar.building_archive(s, p, code)


@router.get("/api/hub/sources", response_model=SourcesOut, tags=[TAG],
            summary="数据源与最近导入批次")
def api_sources(p: Overseer, s: DB, source: Annotated[str | None, Query(max_length=40)] = None,
                limit: Annotated[int, Query(ge=1, le=500)] = 50):
    return sources_overview(s, source, limit)


@router.get("/api/hub/review", response_model=list[ReviewOut], tags=[TAG], summary="待审核的记录对")
def api_review(p: Steward, s: DB,
               status: Annotated[Literal["pending", "accepted", "rejected", "all"], Query()] = "pending",
               limit: Annotated[int, Query(ge=1, le=500)] = 50,
               offset: Annotated[int, Query(ge=0)] = 0):
    return review_queue(s, status, limit, offset)


@router.post("/api/hub/review/{review_id}", response_model=ReviewOut, tags=[TAG],
             summary="审核一对记录：accept 同一企业 / reject 不同企业（下次关联时生效并保持）",
             dependencies=[Depends(csrf_protect)], responses={404: {"description": "不存在"}})
def api_review_decide(review_id: EntityId, body: Decision, p: Steward, s: DB):
    return _review_out(s, _decide(s, review_id, body.decision == "accept", p))


@router.get("/api/hub/quality", response_model=list[QualityOut], tags=[TAG], summary="各数据源质量")
def api_quality(request: Request, p: Overseer, s: DB):
    return quality_rows(request, s)


__all__ = ["router", "do_search", "sources_overview", "review_queue", "quality_rows", "NotFound"]
