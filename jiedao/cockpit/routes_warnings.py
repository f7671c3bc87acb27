"""The early warnings (预警): pages — the list (filter by kind and status, scoped to the
caller) and one warning with the test that found it, its cases and the one-click
"转为主动治理任务" (POST with the session's CSRF token) that opens a proactive case — and the
same as JSON under ``/api/warnings`` for integrators (bearer token; documented at /docs)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jiedao.auth import audit
from jiedao.auth.deps import csrf_protect, require_roles
from jiedao.auth.scope import Principal
from jiedao.cockpit import warnings as W
from jiedao.web.deps import get_session
from jiedao.web.nav import NavItem, add_nav
from jiedao.web.templating import render

router = APIRouter()
TAG = "预警 warnings"

VIEW_ROLES = ("leader", "admin", "operator", "street_staff")
TASK_ROLES = ("leader", "admin", "operator", "street_staff")
add_nav(NavItem("cockpit_warnings", "预警", "/cockpit/warnings", roles=("leader", "admin", "operator"),
                order=8, icon="⚠", prefix="/cockpit/warnings"))

Viewer = Annotated[Principal, Depends(require_roles(*VIEW_ROLES))]
Tasker = Annotated[Principal, Depends(require_roles(*TASK_ROLES))]
DB = Annotated[Session, Depends(get_session)]
WarningId = Annotated[int, Path(ge=1, le=2**31 - 1, description="预警编号")]
CSRF = [Depends(csrf_protect)]
PER_PAGE = 50


@router.get("/cockpit/warnings", include_in_schema=False)
def warnings_page(request: Request, p: Viewer, s: DB,
                  kind: Annotated[str | None, Query(max_length=20)] = None,
                  status: Annotated[str | None, Query(max_length=12)] = "open",
                  page: Annotated[int, Query(ge=1, le=10_000)] = 1):
    """Warnings in the caller's scope, newest period first, then by score."""
    kind = kind if kind in W.WARNING_KINDS else None
    status = status if status in W.WARNING_STATUSES else None
    rows = W.list_warnings(s, p, status=status, kind=kind, limit=PER_PAGE + 1,
                           offset=(page - 1) * PER_PAGE)
    more = len(rows) > PER_PAGE
    return render(request, "cockpit/warnings.html", {
        "rows": rows[:PER_PAGE], "kinds": W.WARNING_KINDS, "statuses": W.WARNING_STATUSES,
        "kind": kind, "status": status or "", "page": page, "more": more,
        "counts": W.count_warnings(s, p, status=status),
    })


@router.get("/cockpit/warnings/{warning_id}", include_in_schema=False)
def warning_page(request: Request, warning_id: WarningId, p: Viewer, s: DB,
                 ok: Annotated[str | None, Query(max_length=20)] = None):
    """One warning: how it was found (the test in words), its cases, the task button."""
    from jiedao.cases.models import CHANNELS, Case
    from jiedao.cases.queries import matter_names

    w = W.get_warning(s, warning_id, p)
    cases = W.warning_cases(s, w, p)
    task = s.get(Case, w.task_case_id) if w.task_case_id else None
    return render(request, "cockpit/warning_detail.html", {
        "w": w, "kind_label": W.WARNING_KINDS.get(w.kind, w.kind),
        "status_label": W.WARNING_STATUSES.get(w.status, w.status), "explain": W.explain(w),
        "cases": cases, "hidden": len(w.case_ids or []) - len(cases), "task": task,
        "matters": matter_names(s, [c.matter_code for c in cases] + [w.matter_code]),
        "channels": CHANNELS, "can_task": p.role in TASK_ROLES, "ok": ok,
    })


@router.post("/cockpit/warnings/{warning_id}/task", dependencies=CSRF, include_in_schema=False)
def warning_to_task(request: Request, warning_id: WarningId, p: Tasker):
    """Turn the warning into a proactive-governance case and open that case."""
    case_id, _ = _to_task(request, warning_id, p)
    return RedirectResponse(f"/cases/{case_id}?ok=intake", status_code=303)


def _to_task(request: Request, warning_id: int, p: Principal) -> tuple[int, str]:
    """(case id, case code) of the warning's task, made now or by a simultaneous request."""
    from jiedao.cases.models import Case
    from jiedao.cases.runtime import get_pipeline

    pipeline = get_pipeline(request.app)
    try:
        with request.app.state.db.session() as s:
            case = W.to_task(s, warning_id, p, actor=audit.actor_for(p), pipeline=pipeline)
            return case.id, case.code
    except IntegrityError:  # a simultaneous click made the task first: show it
        with request.app.state.db.session() as s:
            w = W.get_warning(s, warning_id, p)
            if w.task_case_id is None:
                raise
            return w.task_case_id, s.get(Case, w.task_case_id).code


@router.post("/cockpit/warnings/{warning_id}/dismiss", dependencies=CSRF, include_in_schema=False)
def warning_dismiss(warning_id: WarningId, p: Tasker, s: DB):
    """Mark the warning as dismissed (忽略)."""
    W.dismiss(s, warning_id, p, actor=audit.actor_for(p))
    return RedirectResponse(f"/cockpit/warnings/{warning_id}?ok=dismiss", status_code=303)


# ---------------------------------------------------------------- JSON API


class WarningOut(BaseModel):
    id: int
    kind: str
    kind_label: str
    status: str
    status_label: str
    title: str
    score: float
    matter_code: str | None
    grid_code: str | None
    street_code: str | None
    community_code: str | None
    window_start: str
    window_end: str
    case_count: int
    task_case_id: int | None
    url: str


class WarningDetailOut(WarningOut):
    explain: list[str]
    detail: dict
    case_ids: list[int]  # only the cases the caller may see


class WarningListOut(BaseModel):
    warnings: list[WarningOut]
    counts: dict[str, int]  # per kind, for the status asked
    more: bool


class TaskOut(BaseModel):
    warning_id: int
    case_id: int
    case_code: str
    url: str


def _out(w, cls=WarningOut, **extra):
    return cls(id=w.id, kind=w.kind, kind_label=W.WARNING_KINDS.get(w.kind, w.kind), status=w.status,
               status_label=W.WARNING_STATUSES.get(w.status, w.status), title=w.title, score=w.score,
               matter_code=w.matter_code, grid_code=w.grid_code, street_code=w.street_code,
               community_code=w.community_code, window_start=w.window_start.isoformat(),
               window_end=w.window_end.isoformat(), case_count=len(w.case_ids or []),
               task_case_id=w.task_case_id, url=f"/cockpit/warnings/{w.id}", **extra)


Kind = Annotated[Literal[tuple(W.WARNING_KINDS)] | None, Query(description="类型：" + "、".join(
    f"{k}={v}" for k, v in W.WARNING_KINDS.items()))]
Status = Annotated[Literal[(*W.WARNING_STATUSES, "all")], Query(description="状态：" + "、".join(
    f"{k}={v}" for k, v in W.WARNING_STATUSES.items()) + "；all = 全部")]


@router.get("/api/warnings", response_model=WarningListOut, tags=[TAG], summary="预警列表（按调用者范围）")
def api_warnings(p: Viewer, s: DB, kind: Kind = None, status: Status = "open",
                 limit: Annotated[int, Query(ge=1, le=500)] = 50,
                 offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0):
    """Warnings the caller may see, newest period first, then by score."""
    st = None if status == "all" else status
    rows = W.list_warnings(s, p, status=st, kind=kind, limit=limit + 1, offset=offset)
    return WarningListOut(warnings=[_out(w) for w in rows[:limit]], counts=W.count_warnings(s, p, status=st),
                          more=len(rows) > limit)


@router.get("/api/warnings/{warning_id}", response_model=WarningDetailOut, tags=[TAG], summary="一条预警")
def api_warning(warning_id: WarningId, p: Viewer, s: DB):
    """One warning with how it was found and the ids of its cases the caller may see."""
    w = W.get_warning(s, warning_id, p)
    ids = [c.id for c in W.warning_cases(s, w, p)]
    return _out(w, WarningDetailOut, explain=W.explain(w), detail=w.detail or {}, case_ids=ids)


@router.post("/api/warnings/{warning_id}/task", response_model=TaskOut, tags=[TAG],
             summary="转为主动治理任务（重复调用返回同一工单）", dependencies=CSRF)
def api_warning_to_task(request: Request, warning_id: WarningId, p: Tasker):
    """Turn the warning into a proactive-governance case (idempotent)."""
    case_id, code = _to_task(request, warning_id, p)
    return TaskOut(warning_id=warning_id, case_id=case_id, case_code=code, url=f"/cases/{case_id}")


@router.post("/api/warnings/{warning_id}/dismiss", response_model=WarningOut, tags=[TAG],
             summary="忽略预警", dependencies=CSRF)
def api_warning_dismiss(warning_id: WarningId, p: Tasker, s: DB):
    """Mark the warning dismissed (忽略); a re-scan keeps it dismissed."""
    return _out(W.dismiss(s, warning_id, p, actor=audit.actor_for(p)))
