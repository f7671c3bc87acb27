"""Pages of the early warnings (预警): the list (filter by kind and status, scoped to the
caller) and one warning with the test that found it, its cases and the one-click
"转为主动治理任务" (POST with the session's CSRF token) that opens a proactive case."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jiedao.auth import audit
from jiedao.auth.deps import csrf_protect, require_roles
from jiedao.auth.scope import Principal
from jiedao.cockpit import warnings as W
from jiedao.web.deps import get_session
from jiedao.web.nav import NavItem, add_nav
from jiedao.web.templating import render

router = APIRouter(include_in_schema=False)

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


@router.get("/cockpit/warnings")
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


@router.get("/cockpit/warnings/{warning_id}")
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


@router.post("/cockpit/warnings/{warning_id}/task", dependencies=CSRF)
def warning_to_task(request: Request, warning_id: WarningId, p: Tasker):
    """Turn the warning into a proactive-governance case and open that case."""
    from jiedao.cases.runtime import get_pipeline

    pipeline = get_pipeline(request.app)
    try:
        with request.app.state.db.session() as s:
            case = W.to_task(s, warning_id, p, actor=audit.actor_for(p), pipeline=pipeline)
            case_id = case.id
    except IntegrityError:  # a simultaneous click made the task first: show it
        with request.app.state.db.session() as s:
            w = W.get_warning(s, warning_id, p)
            case_id = w.task_case_id
            if case_id is None:
                raise
    return RedirectResponse(f"/cases/{case_id}?ok=intake", status_code=303)


@router.post("/cockpit/warnings/{warning_id}/dismiss", dependencies=CSRF)
def warning_dismiss(warning_id: WarningId, p: Tasker, s: DB):
    """Mark the warning as dismissed (忽略)."""
    W.dismiss(s, warning_id, p, actor=audit.actor_for(p))
    return RedirectResponse(f"/cockpit/warnings/{warning_id}?ok=dismiss", status_code=303)
