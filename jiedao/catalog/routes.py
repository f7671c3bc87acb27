"""Browser and JSON API for the catalogue: the responsibility list (职责清单) and departments.

Reads the mirrored tables (catalog_department, catalog_matter, catalog_matter_cohandler) that
``jiedao.catalog.loader.sync_catalog`` fills. The catalogue is the same for every signed-in
user (it is the district's public division of work); login is still required.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from jiedao.auth.deps import require_user
from jiedao.auth.scope import Principal, is_visible
from jiedao.catalog.models import Department, Matter, MatterCoHandler
from jiedao.errors import NotFound
from jiedao.web.deps import get_session
from jiedao.web.templating import render

router = APIRouter()

User = Annotated[Principal, Depends(require_user)]
DB = Annotated[Session, Depends(get_session)]
MatterCode = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,20}$", description="事项编码")]
DeptCode = Annotated[str, Path(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,19}$", description="部门编码")]

URGENCIES = ("紧急", "较急", "一般")
KIND_LABELS = {"district": "区直部门", "utility": "公用事业单位", "street": "街道办事处"}
LEVEL_LABELS = {"district": "区直部门", "street": "属地街道"}
TAG = "职责清单 catalog"


# ---------------------------------------------------------------- response models


class DeptRef(BaseModel):
    code: str
    name: str


class SlaOut(BaseModel):
    urgency: str = Field(description="紧急程度：紧急 / 较急 / 一般")
    spec: str = Field(description="时限代码：2h（小时）、3d（自然日）、4wh（工作小时）、5wd（工作日）")
    label: str


class MatterOut(BaseModel):
    code: str
    level1: str
    level2: str
    name: str
    main_department: DeptRef
    co_handlers: list[DeptRef]
    handling_level: str = Field(description="district（区直部门办理）或 street（属地街道办理）")
    handling_level_label: str
    sla: list[SlaOut]
    keywords: list[str]
    examples: list[str]
    description: str


class DepartmentOut(BaseModel):
    code: str
    name: str
    kind: str
    kind_label: str
    street_code: str | None
    typical_matters: str
    main_matters: int = Field(description="主办事项数")
    co_matters: int = Field(description="协办事项数")
    local_matters: int = Field(0, description="街道办事处：在本辖区属地办理的事项数")


class DepartmentDetail(DepartmentOut):
    matters_main: list[MatterOut]
    matters_co: list[MatterOut]
    matters_local: list[MatterOut] = Field(
        description="街道办事处：由属地街道办理的事项（主办为 JD 的通用条目）")


# ---------------------------------------------------------------- queries


def sla_label(spec: str) -> str:
    """Human text of an SLA spec, e.g. "5wd" → "5个工作日" (raw text if unparseable)."""
    try:
        from jiedao.catalog.calendar import parse_sla

        return parse_sla(spec).label()
    except Exception:
        return str(spec)


def _dept_names(s: Session) -> dict[str, str]:
    return dict(s.execute(select(Department.code, Department.name)).all())


def matter_out(m: Matter, names: dict[str, str]) -> MatterOut:
    """The API shape of one matter (department names looked up in ``names``)."""
    sla = m.sla or {}
    order = [u for u in URGENCIES if u in sla] + [u for u in sla if u not in URGENCIES]
    return MatterOut(
        code=m.code, level1=m.level1, level2=m.level2, name=m.name,
        main_department=DeptRef(code=m.main_department_code,
                                name=names.get(m.main_department_code, m.main_department_code)),
        co_handlers=[DeptRef(code=c.department_code, name=names.get(c.department_code,
                                                                    c.department_code))
                     for c in m.co_handlers],
        handling_level=m.handling_level,
        handling_level_label=LEVEL_LABELS.get(m.handling_level, m.handling_level),
        sla=[SlaOut(urgency=u, spec=str(sla[u]), label=sla_label(sla[u])) for u in order],
        keywords=list(m.keywords or []), examples=list(m.examples or []),
        description=m.description or "")


def _matches(m: MatterOut, terms: list[str]) -> bool:
    hay = " ".join([m.code, m.name, m.level1, m.level2, m.description, m.main_department.name,
                    *m.keywords, *m.examples, *(c.name for c in m.co_handlers)]).lower()
    return all(t in hay for t in terms)


def search_matters(s: Session, q: str | None = None, level1: str | None = None,
                   department: str | None = None) -> list[MatterOut]:
    """Matters whose name, keywords, examples or departments contain every word of ``q``,
    optionally within one level-1 class or handled (主办 or 协办) by ``department``."""
    stmt = select(Matter).options(selectinload(Matter.co_handlers)).order_by(Matter.code)
    if level1:
        stmt = stmt.where(Matter.level1 == level1)
    if department:
        co = select(MatterCoHandler.matter_code).where(MatterCoHandler.department_code == department)
        stmt = stmt.where((Matter.main_department_code == department) | Matter.code.in_(co))
    names = _dept_names(s)
    out = [matter_out(m, names) for m in s.scalars(stmt)]
    terms = [t for t in (q or "").lower().split() if t]
    return [m for m in out if _matches(m, terms)] if terms else out


def matter_tree(matters: list[MatterOut]) -> list[tuple[str, list[tuple[str, list[MatterOut]]]]]:
    """Group matters level1 → level2, keeping first-seen order."""
    tree: dict[str, dict[str, list[MatterOut]]] = {}
    for m in matters:
        tree.setdefault(m.level1, {}).setdefault(m.level2, []).append(m)
    return [(l1, list(l2s.items())) for l1, l2s in tree.items()]


def get_matter(s: Session, code: str) -> MatterOut:
    m = s.get(Matter, code)
    if m is None:
        raise NotFound(f"事项 {code} 不存在")
    return matter_out(m, _dept_names(s))


def list_departments(s: Session) -> list[DepartmentOut]:
    """Every department with its numbers of main and co-handled matters."""
    main = dict(s.execute(select(Matter.main_department_code, func.count())
                          .group_by(Matter.main_department_code)).all())
    co = dict(s.execute(select(MatterCoHandler.department_code, func.count())
                        .group_by(MatterCoHandler.department_code)).all())
    local = s.scalar(select(func.count()).select_from(Matter)
                     .where(Matter.handling_level == "street")) or 0
    kind_order = {k: i for i, k in enumerate(KIND_LABELS)}
    rows = s.scalars(select(Department)).all()
    rows = sorted(rows, key=lambda d: (kind_order.get(d.kind, 9), d.street_code or "", d.code))
    return [DepartmentOut(code=d.code, name=d.name, kind=d.kind,
                          kind_label=KIND_LABELS.get(d.kind, d.kind), street_code=d.street_code,
                          typical_matters=d.typical_matters or "",
                          main_matters=main.get(d.code, 0), co_matters=co.get(d.code, 0),
                          local_matters=local if d.kind == "street" and d.street_code else 0)
            for d in rows]


def department_detail(s: Session, code: str) -> DepartmentDetail:
    """One department with the matters it leads, co-handles and (street offices) handles locally."""
    d = s.get(Department, code)
    if d is None:
        raise NotFound(f"部门 {code} 不存在")
    names = _dept_names(s)
    opts = selectinload(Matter.co_handlers)
    main = [matter_out(m, names) for m in s.scalars(
        select(Matter).options(opts).where(Matter.main_department_code == code)
        .order_by(Matter.code))]
    co_codes = select(MatterCoHandler.matter_code).where(MatterCoHandler.department_code == code)
    co = [matter_out(m, names) for m in s.scalars(
        select(Matter).options(opts).where(Matter.code.in_(co_codes)).order_by(Matter.code))]
    local: list[MatterOut] = []
    if d.kind == "street" and d.street_code:
        local = [matter_out(m, names) for m in s.scalars(
            select(Matter).options(opts).where(Matter.handling_level == "street")
            .order_by(Matter.code))]
    return DepartmentDetail(
        code=d.code, name=d.name, kind=d.kind, kind_label=KIND_LABELS.get(d.kind, d.kind),
        street_code=d.street_code, typical_matters=d.typical_matters or "",
        main_matters=len(main), co_matters=len(co), local_matters=len(local),
        matters_main=main, matters_co=co,
        matters_local=local)


def _level1s(s: Session) -> list[str]:
    return list(dict.fromkeys(s.scalars(select(Matter.level1).order_by(Matter.code))))


# ---------------------------------------------------------------- pages


@router.get("/catalog/matters", include_in_schema=False)
def matters_page(request: Request, p: User, s: DB, q: str = "", level1: str = "",
                 department: str = ""):
    """The responsibility list as a level1 → level2 → matter tree with a live search box."""
    q = q.strip()[:100]
    matters = search_matters(s, q, level1 or None, department or None)
    ctx = {"q": q, "level1": level1, "department": department, "matters": matters,
           "tree": matter_tree(matters), "level1s": _level1s(s),
           "total": s.scalar(select(func.count()).select_from(Matter)) or 0,
           "departments": list_departments(s), "filtered": bool(q or level1 or department)}
    if request.headers.get("hx-request") and request.headers.get("hx-target") == "matter-results":
        return render(request, "catalog/_matter_results.html", ctx)
    return render(request, "catalog/matters.html", ctx)


@router.get("/catalog/matters/{code}", include_in_schema=False)
def matter_page(request: Request, code: MatterCode, p: User, s: DB):
    """One matter: departments, handling level, SLA, keywords and example phrasings."""
    return render(request, "catalog/matter.html", {"m": get_matter(s, code)})


@router.get("/catalog/departments", include_in_schema=False)
def departments_page(request: Request, p: User, s: DB):
    """Departments grouped by kind, with their numbers of matters."""
    depts = list_departments(s)
    groups = [(label, [d for d in depts if d.kind == kind]) for kind, label in KIND_LABELS.items()]
    others = [d for d in depts if d.kind not in KIND_LABELS]
    if others:
        groups.append(("其他", others))
    return render(request, "catalog/departments.html",
                  {"groups": [g for g in groups if g[1]], "total": len(depts)})


@router.get("/catalog/departments/{code}", include_in_schema=False)
def department_page(request: Request, code: DeptCode, p: User, s: DB):
    """One department and its matters."""
    d = department_detail(s, code)
    street_link = bool(d.street_code) and is_visible(p, street_code=d.street_code)
    return render(request, "catalog/department.html", {"d": d, "street_link": street_link})


# ---------------------------------------------------------------- JSON API


@router.get("/api/catalog/matters", response_model=list[MatterOut], tags=[TAG],
            summary="职责清单事项（可按关键词、一级分类、部门筛选）")
def api_matters(
    p: User,
    s: DB,
    q: Annotated[str | None, Query(max_length=100, description="关键词（名称、关键词、示例表述）")] = None,
    level1: Annotated[str | None, Query(max_length=50, description="一级分类")] = None,
    department: Annotated[str | None, Query(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,19}$",
                                            description="部门编码（主办或协办）")] = None,
):
    return search_matters(s, q, level1, department)


@router.get("/api/catalog/matters/{code}", response_model=MatterOut, tags=[TAG],
            summary="事项详情", responses={404: {"description": "不存在"}})
def api_matter(code: MatterCode, p: User, s: DB):
    return get_matter(s, code)


@router.get("/api/catalog/departments", response_model=list[DepartmentOut], tags=[TAG],
            summary="部门列表（含主办、协办事项数）")
def api_departments(p: User, s: DB):
    return list_departments(s)


@router.get("/api/catalog/departments/{code}", response_model=DepartmentDetail, tags=[TAG],
            summary="部门详情及其事项", responses={404: {"description": "不存在"}})
def api_department(code: DeptCode, p: User, s: DB):
    return department_detail(s, code)
