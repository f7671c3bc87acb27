"""Pages of the case loop: operator workbench (intake, analysis card, dispatch, queues),
department inbox with SLA countdowns, the case page with its timeline and map, extension
approvals and the street view.

Every page requires a signed-in user and shows only cases in the caller's scope
(:mod:`jiedao.cases.queries`); every POST carries the session's CSRF token and, when it acts
on a case, the version the user saw (``expected_version``). A stale version or an action
somebody else already took answers 409 with a clear message and changes nothing.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from jiedao import clock
from jiedao.auth import audit
from jiedao.auth.deps import client_ip, csrf_protect, require_roles, require_user
from jiedao.auth.scope import Principal
from jiedao.cases import queries as q
from jiedao.cases.models import CHANNELS, URGENCIES, Case
from jiedao.cases.workflow import ASSIGNMENT_STATES, CASE_STATES, SATISFACTION
from jiedao.errors import (
    Conflict,
    JiedaoError,
    NotFound,
    PermissionDenied,
    Problem,
    ValidationError,
)
from jiedao.web.deps import get_session
from jiedao.web.nav import NavItem, add_nav
from jiedao.web.templating import render

router = APIRouter(include_in_schema=False)

add_nav(NavItem("cases_workbench", "工作台", "/cases/workbench", roles=("operator", "admin"),
                order=50, icon="✎", prefix="/cases/workbench"))
add_nav(NavItem("cases_inbox", "待办", "/cases/inbox", roles=("handler", "street_staff"),
                order=51, icon="✉", prefix="/cases/inbox"))
add_nav(NavItem("cases_area", "工单", "/cases/area",
                roles=("street_staff", "leader", "operator", "admin"), order=52, icon="▤",
                prefix="/cases/area"))

OPERATORS = ("operator", "admin")
APPROVERS = ("operator", "leader", "admin")
AREA_ROLES = ("street_staff", "leader", "operator", "admin", "steward")
INBOX_ROLES = ("handler", "street_staff")

User = Annotated[Principal, Depends(require_user)]
Operator = Annotated[Principal, Depends(require_roles(*OPERATORS))]
DB = Annotated[Session, Depends(get_session)]
CaseId = Annotated[int, Path(ge=1, le=2**31 - 1, description="工单编号")]
CSRF = [Depends(csrf_protect)]

CONFLICT_MESSAGE = ("操作未执行：该工单刚刚已被他人处理（例如已签收、已退单或已答复），"
                    "页面已显示最新状态，请确认后重试。")
DONE_MESSAGES = {
    "intake": "已受理", "dispatch": "已派单", "sign": "已签收", "start": "已开始办理",
    "return": "已退单，工单已退回受理员", "reply": "已答复", "request_extension": "延期申请已提交，等待审批",
    "approve_extension": "已批准延期，时限已更新", "reject_extension": "已驳回延期申请",
    "supervise": "已督办", "unsupervise": "已取消督办", "close": "已办结", "follow_up": "回访已记录",
    "reassign": "已改派", "locate": "地点已核实",
}
HANDLER_ACTIONS = ("sign", "start", "return", "reply", "request_extension")


# ---------------------------------------------------------------- shared objects


def _pipeline(request: Request):
    """The app's case pipeline (analyzer, dispatcher, catalog, calendar)."""
    from jiedao.cases.runtime import get_pipeline

    return get_pipeline(request.app)


def _catalog(request: Request):
    """The catalogue and calendar, loaded once per app (without building the analyzer)."""
    cached = getattr(request.app.state, "cases_ui_catalog", None)
    if cached is None:
        from jiedao.catalog.calendar import get_calendar
        from jiedao.catalog.loader import load_catalog

        cached = (load_catalog(), get_calendar())
        request.app.state.cases_ui_catalog = cached
    return cached


def _dispatcher(request: Request):
    from jiedao.cases.dispatch import Dispatcher

    catalog, calendar = _catalog(request)
    return Dispatcher(catalog, calendar)


def _safe_next(value: str | None, default: str) -> str:
    from jiedao.auth.routes import safe_next

    return safe_next(value, default)


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _with_ok(url: str, action: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}ok={action}"


def _notice(ok: str | None) -> str | None:
    return DONE_MESSAGES.get(ok or "")


def _parse_float(value: str, fieldname: str, label: str, problems: list[Problem]) -> float | None:
    value = (value or "").strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        problems.append(Problem(f"{label}必须是数字", field=fieldname))
        return None


def _parse_deadline(value: str) -> datetime:
    try:
        return datetime.fromisoformat((value or "").strip())
    except ValueError:
        raise ValidationError(Problem("新的办理时限格式不正确（应为 日期 时间）",
                                      field="new_deadline")) from None


# ---------------------------------------------------------------- helpers for pages


def _departments(session: Session) -> dict[str, list]:
    """Departments for pickers: district departments and utilities, and street offices."""
    from jiedao.catalog.models import Department

    rows = session.scalars(select(Department).where(Department.code != "JD")
                           .order_by(Department.kind, Department.code)).all()
    return {"district": [d for d in rows if d.kind != "street"],
            "street": [d for d in rows if d.kind == "street"]}


def _matter_groups(catalog) -> list[tuple[str, list]]:
    groups: dict[str, list] = {}
    for m in catalog.matters:
        groups.setdefault(m.level1, []).append(m)
    return list(groups.items())


def _suggestion_view(session: Session, dispatcher, case: Case, matter_code: str | None) -> dict | None:
    """The dispatch suggestion for ``matter_code`` at the case's place, with names."""
    if not matter_code:
        return None
    from jiedao.geo.models import Street

    street = session.get(Street, case.street_code) if case.street_code else None
    try:
        s = dispatcher.suggest(matter_code, case.street_code, street.name if street else None)
    except NotFound:
        return None
    names = q.department_names(session)
    return {"matter_code": s.matter_code, "main": s.main, "main_name": names.get(s.main, s.main)
            if s.main else None, "co": list(s.co), "co_names": [names.get(c, c) for c in s.co],
            "level": s.level, "reasons": list(s.reasons), "complete": s.complete}


def _card_view(session: Session, case: Case, catalog) -> dict:
    """The stored analysis card, with matter names for the category candidates."""
    card = dict(case.analysis or {})
    cands = card.get("candidates") or []
    codes = [c[0] for c in cands if c] + [card.get("matter_code")]
    names = q.matter_names(session, codes)
    card["matter"] = names.get(card.get("matter_code"))
    card["candidate_rows"] = [{"code": c[0], "score": c[1], **(names.get(c[0]) or {"name": c[0],
                                                                                    "path": c[0]})}
                              for c in cands if c]
    loc = dict(card.get("location") or {})
    card["location"] = loc
    card["location_candidates"] = list(loc.get("candidates") or [])
    card["needs"] = list(card.get("needs_confirmation") or [])
    dup = list(card.get("duplicates") or [])
    card["duplicate_cases"] = []
    if dup:
        rows = session.execute(select(Case.id, Case.code, Case.title, Case.state)
                               .where(Case.id.in_(dup[:10]))).all()
        card["duplicate_cases"] = [{"id": r.id, "code": r.code, "title": r.title,
                                    "state": CASE_STATES.get(r.state, r.state)} for r in rows]
    return card


def _available(p: Principal, case: Case) -> dict:
    """What ``p`` may do on ``case`` now: per assignment seq and case-wide."""
    dept = q.handled_department(p)
    rnd = case.reopen_count + 1
    per: dict[int, list[str]] = {}
    for a in case.assignments:
        acts: list[str] = []
        if a.round == rnd and dept and a.department_code == dept:
            if a.state == "pending":
                acts += ["sign", "return"]
            elif a.state == "signed":
                acts += ["start", "reply", "return"]
            elif a.state == "in_progress":
                acts += ["reply"]
            if a.state in ("pending", "signed", "in_progress") and not any(
                    e.status == "pending" for e in a.extensions):
                acts.append("request_extension")
        if a.round == rnd and p.role in APPROVERS and any(e.status == "pending" for e in a.extensions):
            acts.append("decide_extension")
        if a.round == rnd and p.role in OPERATORS and a.state in ("pending", "signed", "in_progress"):
            acts.append("reassign")
        per[a.seq] = acts
    case_acts = []
    if p.role in OPERATORS:
        if case.state in ("analysed", "returned"):
            case_acts.append("dispatch")
        if case.state == "replied":
            case_acts.append("close")
        if case.state == "closed":
            case_acts.append("follow_up")
    if p.role in APPROVERS and case.state in q.OPEN_CASE_STATES:
        case_acts.append("unsupervise" if case.supervised else "supervise")
    return {"assignments": per, "case": case_acts}


def case_page(request: Request, session: Session, p: Principal, case_id: int, *,
              error: str | None = None, problems=None, status_code: int = 200,
              revealed_phone: str | None = None, notice: str | None = None):
    """Render the case page (also used to show a refused action with the fresh state)."""
    case = q.get_case(session, p, case_id)
    catalog, calendar = _catalog(request)
    now = clock.now()
    names = q.department_names(session)
    working = q.sla_is_working(catalog, case.matter_code, case.urgency)
    assignments = [{
        "row": a, "department": names.get(a.department_code, a.department_code),
        "role": q.ROLE_LABELS.get(a.role, a.role),
        "state_label": ASSIGNMENT_STATES.get(a.state, a.state),
        "current": a.round == case.reopen_count + 1,
        "sla": q.sla_status(calendar, a, now, working),
        "pending_extension": next((e for e in a.extensions if e.status == "pending"), None),
    } for a in case.assignments]
    caller = case.caller
    return render(request, "cases/case.html", {
        "case": case, "state_label": CASE_STATES.get(case.state, case.state),
        "badge": q.STATE_BADGE.get(case.state, "gray"),
        "channel": CHANNELS.get(case.channel, case.channel),
        "matter": q.matter_names(session, [case.matter_code]).get(case.matter_code),
        "main_department": names.get(case.main_department_code),
        "place": q.place_names(session, case),
        "card": _card_view(session, case, catalog) if case.analysis else None,
        "caller": caller and {"name": audit.mask_name(caller.name),
                              "phone": revealed_phone or audit.mask_phone(caller.phone),
                              "revealed": revealed_phone is not None,
                              "case_count": caller.case_count},
        "can_reveal": p.role in OPERATORS,
        "assignments": assignments,
        "timeline": q.timeline(session, case),
        "followups": q.followups(session, case.id),
        "allowed": _available(p, case),
        "satisfaction": SATISFACTION,
        "error": error, "problems": problems or [],
        "notice": notice or _notice(request.query_params.get("ok")),
        "departments": _departments(session),
        "has_map": bool(case.grid_code or case.lon is not None),
        "default_deadline": now.replace(second=0, microsecond=0),
    }, status_code=status_code)


def _refused(request: Request, p: Principal, case_id: int, exc: JiedaoError):
    """Show the case page again with the reason the action was refused (nothing changed)."""
    if isinstance(exc, (NotFound, PermissionDenied)):
        raise exc
    problems = [pr.as_dict() for pr in getattr(exc, "problems", [])]
    if isinstance(exc, ValidationError):
        message = "；".join(pr["message"] for pr in problems) or str(exc)
        status = 422
    elif type(exc) is Conflict:
        message, status = CONFLICT_MESSAGE, 409
    else:  # IllegalTransition: the workflow's own Chinese reason
        message, status = f"操作未执行：{exc}", exc.status_code
    with request.app.state.db.session() as s:
        return case_page(request, s, p, case_id, error=message, problems=problems,
                         status_code=status)


# ---------------------------------------------------------------- workbench


def _workbench(request: Request, s: Session, p: Principal, *, form: dict | None = None,
               problems=None, status_code: int = 200):
    tab = request.query_params.get("queue") or "triage"
    if tab not in q.QUEUES:
        tab = "triage"
    return render(request, "cases/workbench.html", {
        "form": form or {"channel": "hotline", "urgency": ""},
        "problems": problems or [],
        "problem_fields": {pr.field for pr in (problems or []) if pr.field},
        "channels": CHANNELS, "urgencies": URGENCIES,
        "idempotency_key": (form or {}).get("idempotency_key") or uuid.uuid4().hex,
        "queues": q.QUEUES, "counts": q.queue_counts(s, p), "tab": tab,
        "rows": q.queue(s, p, tab), "extensions": len(q.pending_extensions(s, p)),
        "notice": _notice(request.query_params.get("ok")),
    }, status_code=status_code)


@router.get("/cases/workbench")
def workbench(request: Request, p: Operator, s: DB):
    """受理工作台: intake form and the operator queues."""
    return _workbench(request, s, p)


@router.get("/cases/workbench/queue")
def workbench_queue(request: Request, p: Operator, s: DB):
    """One queue panel (htmx fragment)."""
    tab = request.query_params.get("queue") or "triage"
    if tab not in q.QUEUES:
        raise NotFound(f"队列 {tab} 不存在")
    return render(request, "cases/_queue.html", {
        "queues": q.QUEUES, "counts": q.queue_counts(s, p), "tab": tab, "rows": q.queue(s, p, tab)})


@router.post("/cases/workbench/intake", dependencies=CSRF)
def intake(
    request: Request,
    p: Operator,
    text: Annotated[str, Form()] = "",
    phone: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    location_text: Annotated[str, Form()] = "",
    lon: Annotated[str, Form()] = "",
    lat: Annotated[str, Form()] = "",
    channel: Annotated[str, Form()] = "hotline",
    urgency: Annotated[str, Form()] = "",
    idempotency_key: Annotated[str, Form()] = "",
):
    """Record the appeal and analyse it (no automatic dispatch); show the analysis card."""
    from jiedao.cases import intake as intake_mod

    form = {"text": text, "phone": phone, "name": name, "location_text": location_text,
            "lon": lon, "lat": lat, "channel": channel, "urgency": urgency,
            "idempotency_key": idempotency_key}
    problems: list[Problem] = []
    lo = _parse_float(lon, "lon", "经度", problems)
    la = _parse_float(lat, "lat", "纬度", problems)
    if urgency and urgency not in URGENCIES:
        problems.append(Problem(f"紧急程度必须是 {'/'.join(URGENCIES)} 之一", field="urgency"))
    if len(location_text) > 300:
        problems.append(Problem("地点描述过长（上限 300 字）", field="location_text"))
    if len(name) > 64:
        problems.append(Problem("姓名过长（上限 64 字）", field="name"))
    if not problems:
        try:
            pipe = _pipeline(request)
            with request.app.state.db.session() as s:
                case, _ = intake_mod.submit(
                    s, pipe.analyzer, pipe.dispatcher, text=text, channel=channel,
                    actor=audit.actor_for(p), auto_dispatch=False, urgency=urgency or None,
                    phone=phone.strip() or None, name=name.strip() or None,
                    location_text=location_text.strip() or None, lon=lo, lat=la,
                    idempotency_key=("ui:" + idempotency_key[:64]) if idempotency_key else None)
                case_id = case.id
            return _redirect(f"/cases/{case_id}/triage")
        except ValidationError as e:
            problems = list(e.problems)
    with request.app.state.db.session() as s:
        return _workbench(request, s, p, form=form, problems=problems, status_code=422)


# ---------------------------------------------------------------- triage and dispatch


def _triage(request: Request, s: Session, p: Principal, case_id: int, *, error: str | None = None,
            status_code: int = 200, matter_code: str | None = None):
    case = q.get_case(s, p, case_id)
    if case.state not in ("analysed", "returned"):
        return _redirect(f"/cases/{case.id}")
    catalog, _ = _catalog(request)
    dispatcher = _dispatcher(request)
    card = _card_view(s, case, catalog)
    chosen = matter_code or case.matter_code
    last_return = next((t for t in reversed(case.transitions) if t.action == "return"), None)
    names = q.department_names(s)
    return render(request, "cases/triage.html", {
        "case": case, "card": card, "place": q.place_names(s, case),
        "state_label": CASE_STATES.get(case.state, case.state),
        "badge": q.STATE_BADGE.get(case.state, "gray"),
        "suggestion": _suggestion_view(s, dispatcher, case, case.matter_code),
        "override": _suggestion_view(s, dispatcher, case, chosen),
        "chosen_matter": chosen,
        "matter_groups": _matter_groups(catalog), "departments": _departments(s),
        "last_return": last_return,
        "returned_by": names.get(case.assignments[last_return.assignment_seq].department_code)
        if last_return is not None and last_return.assignment_seq is not None else None,
        "caller": case.caller and {"name": audit.mask_name(case.caller.name),
                                   "phone": audit.mask_phone(case.caller.phone),
                                   "case_count": case.caller.case_count},
        "channel": CHANNELS.get(case.channel, case.channel),
        "error": error, "notice": _notice(request.query_params.get("ok")),
    }, status_code=status_code)


@router.get("/cases/{case_id}/triage")
def triage(request: Request, case_id: CaseId, p: Operator, s: DB):
    """The analysis card and the dispatch suggestion: accept in one click or override."""
    return _triage(request, s, p, case_id)


@router.get("/cases/{case_id}/suggest")
def suggest_fragment(request: Request, case_id: CaseId, p: Operator, s: DB,
                     matter_code: Annotated[str, Query(max_length=20)] = ""):
    """The department pickers pre-filled for another matter (htmx fragment)."""
    case = q.get_case(s, p, case_id)
    return render(request, "cases/_depts.html", {
        "override": _suggestion_view(s, _dispatcher(request), case, matter_code or None),
        "departments": _departments(s), "case": case})


@router.post("/cases/{case_id}/dispatch", dependencies=CSRF)
def dispatch(
    request: Request,
    case_id: CaseId,
    p: Operator,
    expected_version: Annotated[int, Form()],
    mode: Annotated[str, Form()] = "accept",
    matter_code: Annotated[str, Form(max_length=20)] = "",
    main: Annotated[str, Form(max_length=20)] = "",
    co: Annotated[list[str], Form()] = [],  # noqa: B006 - FastAPI form default
    location: Annotated[str, Form(max_length=4)] = "",
):
    """派单: accept the suggestion, or dispatch with the operator's matter/departments/place."""
    from jiedao.cases import intake as intake_mod

    try:
        pipe = _pipeline(request)
        with request.app.state.db.session() as s:
            case = q.get_case(s, p, case_id)
            if case.version != expected_version:
                raise Conflict(CONFLICT_MESSAGE)
            if mode == "accept":
                intake_mod.dispatch(s, pipe.dispatcher, case, actor=audit.actor_for(p))
            else:
                if location:
                    _apply_location(s, p, case, location, request)
                if not matter_code:
                    raise ValidationError(Problem("请选择事项分类", field="matter_code"))
                co_list = [c for c in dict.fromkeys(co) if c and c != main]
                intake_mod.dispatch(s, pipe.dispatcher, case, actor=audit.actor_for(p),
                                    matter_code=matter_code, main=main or None,
                                    co=co_list if main else None)
    except JiedaoError as e:
        if isinstance(e, PermissionDenied):
            raise
        if isinstance(e, NotFound):
            if "事项" not in str(e) and "部门" not in str(e):
                raise
            e = ValidationError(Problem(str(e), field="matter_code"))
        if isinstance(e, ValidationError):
            message, status = "派单未执行：" + "；".join(pr.message for pr in e.problems), 422
        elif type(e) is Conflict:
            message, status = CONFLICT_MESSAGE, 409
        else:
            message, status = f"派单未执行：{e}", e.status_code
        with request.app.state.db.session() as s:
            case = q.get_case(s, p, case_id)
            if case.state not in ("analysed", "returned"):
                return case_page(request, s, p, case_id, error=message, status_code=status)
            return _triage(request, s, p, case_id, error=message, status_code=status,
                           matter_code=matter_code or None)
    return _redirect(f"/cases/{case_id}?ok=dispatch")


@router.post("/cases/{case_id}/locate", dependencies=CSRF)
def locate(
    request: Request,
    case_id: CaseId,
    p: Operator,
    expected_version: Annotated[int, Form()],
    place: Annotated[str, Form(max_length=400)] = "",
):
    """核实地点: the place the caller gave when asked back; the card and duplicates are redone."""
    from jiedao.cases.place import confirm_place

    try:
        pipe = _pipeline(request)
        with request.app.state.db.session() as s:
            case = q.get_case(s, p, case_id)
            confirm_place(s, pipe.analyzer, case, place, expected_version=expected_version, principal=p,
                          ip=client_ip(request))
    except (ValidationError, Conflict) as e:
        message = "；".join(pr.message for pr in e.problems) if isinstance(e, ValidationError) else str(e)
        status = 422 if isinstance(e, ValidationError) else 409
        with request.app.state.db.session() as s:
            return _triage(request, s, p, case_id, error=f"地点未更新：{message}", status_code=status)
    return _redirect(f"/cases/{case_id}/triage?ok=locate")


def _apply_location(s: Session, p: Principal, case: Case, location: str, request: Request) -> None:
    """Put the operator's chosen location candidate on the case (audited)."""
    from jiedao.geo.models import Grid

    cands = list(((case.analysis or {}).get("location") or {}).get("candidates") or [])
    try:
        cand = cands[int(location)]
    except (ValueError, IndexError):
        raise ValidationError(Problem("所选地点不存在", field="location")) from None
    grid = s.get(Grid, cand.get("grid_code") or "")
    if grid is None:
        raise ValidationError(Problem("所选地点没有对应网格", field="location"))
    case.grid_code, case.community_code, case.street_code = (grid.code, grid.community_code,
                                                             grid.street_code)
    case.address_code = cand.get("address_code") or None
    if cand.get("lon") is not None and cand.get("lat") is not None:
        case.lon, case.lat = float(cand["lon"]), float(cand["lat"])
    audit.record(s, principal=p, action="case_locate", object_type="case", object_id=case.code,
                 detail={"candidate": cand.get("name"), "grid": grid.code},
                 ip=client_ip(request))


# ---------------------------------------------------------------- inbox and approvals


@router.get("/cases/inbox")
def inbox_page(request: Request, p: Annotated[Principal, Depends(require_roles(*INBOX_ROLES))],
               s: DB, tab: Annotated[str, Query(max_length=10)] = "todo"):
    """待办: the department's assignments with SLA countdowns and quick actions."""
    if tab not in q.INBOX_TABS:
        tab = "todo"
    catalog, calendar = _catalog(request)
    rows, counts = q.inbox(s, p, tab, calendar=calendar, now=clock.now(), catalog=catalog)
    dept = q.handled_department(p)
    return render(request, "cases/inbox.html", {
        "rows": rows, "counts": counts, "tab": tab, "tabs": q.INBOX_TABS,
        "department": q.department_names(s).get(dept, dept),
        "notice": _notice(request.query_params.get("ok")),
        "overdue": sum(1 for r in rows if r.sla.overdue),
        "warned": sum(1 for r in rows if r.sla.warned and not r.sla.overdue),
    })


@router.get("/cases/extensions")
def extensions_page(request: Request, p: Annotated[Principal, Depends(require_roles(*APPROVERS))],
                    s: DB):
    """延期审批: pending extension requests in the caller's scope."""
    return render(request, "cases/extensions.html", {
        "rows": q.pending_extensions(s, p), "notice": _notice(request.query_params.get("ok"))})


# ---------------------------------------------------------------- street view


@router.get("/cases/area")
def area_page(
    request: Request,
    p: Annotated[Principal, Depends(require_roles(*AREA_ROLES))],
    s: DB,
    street: Annotated[str | None, Query(pattern=r"^\d{9}$")] = None,
    grid: Annotated[str | None, Query(pattern=r"^\d{15}$")] = None,
    state: Annotated[str | None, Query(max_length=16)] = None,
    kw: Annotated[str | None, Query(max_length=100)] = None,
    overdue: Annotated[bool, Query()] = False,
    level1: Annotated[str | None, Query(max_length=50)] = None,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
):
    """工单 · 辖区: counts by state, overdue cases, a grid map coloured by open cases and a
    filterable list, for the caller's street or community (district roles choose a street)."""
    from jiedao.auth.scope import check_visible
    from jiedao.geo.models import Community, Grid, Street

    community = None
    if p.scope_level == "street":
        street = p.scope_code
    elif p.scope_level == "community":
        community = p.scope_code
        street = p.scope_code[:9]
    elif p.scope_level != "district":
        raise PermissionDenied("无权访问：辖区工单视图需要街道、社区或全区范围")
    if street:
        if s.get(Street, street) is None:
            raise NotFound(f"街道 {street} 不存在")
        check_visible(p, street_code=street, community_code=community)
    if grid:
        g = s.get(Grid, grid)
        if g is None:
            raise NotFound(f"网格 {grid} 不存在")
        check_visible(p, street_code=g.street_code, community_code=g.community_code)
    if state and state not in CASE_STATES and state != "open":
        state = None
    overview = q.area_overview(s, p, street=street, community=community)
    per_page = 30
    rows, total = q.case_list(s, p, street=street, community=community, grid=grid, state=state,
                              q=kw, overdue=overdue, matter_level1=level1, limit=per_page,
                              offset=(page - 1) * per_page)
    if community:
        geo = f"/api/geo/boundaries.geojson?level=grid&parent={community}"
        title = s.get(Community, community).name
    elif street:
        geo = f"/api/geo/boundaries.geojson?level=grid&parent={street}"
        title = s.get(Street, street).name
    else:
        geo = "/api/geo/boundaries.geojson?level=street"
        title = "全区"
    catalog, _ = _catalog(request)
    from urllib.parse import urlencode

    params = {k: v for k, v in {"street": street if p.scope_level == "district" else None,
                                "grid": grid, "state": state, "kw": kw,
                                "overdue": "1" if overdue else None, "level1": level1}.items() if v}
    return render(request, "cases/area.html", {
        "overview": overview, "rows": rows, "total": total, "page": page,
        "pages": max(1, (total + per_page - 1) // per_page), "params": params,
        "street": street, "community": community, "grid": grid, "title": title,
        "streets": s.scalars(select(Street).order_by(Street.code)).all()
        if p.scope_level == "district" else [],
        "states": CASE_STATES, "state": state, "kw": kw or "", "overdue": overdue,
        "level1s": catalog.level1_names(), "level1": level1,
        "map": {"geojson": geo, "counts": json.dumps(overview["open_by_area"]),
                "level": "grid" if street else "street",
                "click": ("/cases/area?" + (f"street={street}&" if p.scope_level == "district"
                                            else "") + "grid={code}") if street
                else "/cases/area?street={code}"},
        "state_urls": {st: "/cases/area?" + urlencode({**{k: v for k, v in params.items()
                                                          if k != "state"}, "state": st})
                       for st in CASE_STATES},
        "page_base": urlencode(params),
        "can_choose_street": p.scope_level == "district",
    })


# ---------------------------------------------------------------- case page and actions


@router.get("/cases/{case_id}")
def case_view(request: Request, case_id: CaseId, p: User, s: DB):
    """The case: header, text, caller (masked), place and map, assignments, timeline."""
    return case_page(request, s, p, case_id)


@router.get("/cases/{case_id}/map.json")
def case_map(case_id: CaseId, p: User, s: DB):
    """The case's grid polygon and point as GeoJSON (visible to whoever sees the case)."""
    from jiedao.geo.models import Grid

    case = q.get_case(s, p, case_id)
    features = []
    if case.grid_code and (g := s.get(Grid, case.grid_code)) is not None and g.geometry:
        features.append({"type": "Feature", "geometry": json.loads(g.geometry),
                         "properties": {"code": g.code, "name": g.name, "kind": "grid"}})
    point = [case.lon, case.lat] if case.lon is not None and case.lat is not None else None
    return JSONResponse({"type": "FeatureCollection", "features": features, "point": point,
                         "label": case.location_text or case.code})


@router.post("/cases/{case_id}/reveal-phone", dependencies=CSRF)
def reveal_phone(request: Request, case_id: CaseId, p: Operator):
    """显示号码: the caller's full phone number, for operators; every reveal is audited."""
    with request.app.state.db.session() as s:
        case = q.get_case(s, p, case_id)
        if case.caller is None:
            raise NotFound("该工单没有来电号码")
        phone = case.caller.phone
        audit.record(s, principal=p, action="reveal_phone", object_type="case",
                     object_id=case.code, detail={"caller_id": case.caller.id},
                     ip=client_ip(request))
    if request.headers.get("hx-request"):
        return HTMLResponse(f'<span class="phone revealed" id="caller-phone">{_esc(phone)}</span>')
    with request.app.state.db.session() as s:
        return case_page(request, s, p, case_id, revealed_phone=phone)


def _esc(v: str) -> str:
    from markupsafe import escape

    return str(escape(v))


@router.post("/cases/{case_id}/act", dependencies=CSRF)
def act(
    request: Request,
    case_id: CaseId,
    p: User,
    action: Annotated[str, Form(max_length=24)],
    expected_version: Annotated[int, Form()],
    seq: Annotated[int | None, Form()] = None,
    reason: Annotated[str, Form(max_length=2000)] = "",
    text: Annotated[str, Form(max_length=5000)] = "",
    new_deadline: Annotated[str, Form(max_length=30)] = "",
    satisfaction: Annotated[str, Form(max_length=8)] = "",
    comment: Annotated[str, Form(max_length=2000)] = "",
    department: Annotated[str, Form(max_length=20)] = "",
    next: Annotated[str, Form(max_length=500)] = "",
):
    """One workflow action on the case, as the signed-in user, against ``expected_version``."""
    from jiedao.cases import service

    actor = audit.actor_for(p)
    try:
        with request.app.state.db.session() as s:
            case = q.get_case(s, p, case_id)
            kwargs = _action_kwargs(request, p, case, action, seq=seq, reason=reason, text=text,
                                    new_deadline=new_deadline, satisfaction=satisfaction,
                                    comment=comment, department=department)
            wf_action = {"return": "return_", "approve_extension": "decide_extension",
                         "reject_extension": "decide_extension",
                         "unsupervise": "supervise"}.get(action, action)
            service.act(s, case.id, wf_action, actor=actor, expected_version=expected_version,
                        **kwargs)
    except JiedaoError as e:
        return _refused(request, p, case_id, e)
    default = f"/cases/{case_id}"
    return _redirect(_with_ok(_safe_next(next, default) if next else default, action))


def _action_kwargs(request: Request, p: Principal, case: Case, action: str, *, seq, reason, text,
                   new_deadline, satisfaction, comment, department) -> dict:
    """Check that ``p`` may take ``action`` and turn the form into workflow arguments."""
    reason, text, comment = reason.strip(), text.strip(), comment.strip()

    def need(value, message, fieldname):
        if not value:
            raise ValidationError(Problem(message, field=fieldname))

    def assignment():
        need(seq is not None, "缺少派单序号", "seq")
        if not 0 <= seq < len(case.assignments):
            raise ValidationError(Problem("派单不存在", field="seq"))
        return case.assignments[seq]

    if action in HANDLER_ACTIONS:
        a = assignment()
        if q.handled_department(p) != a.department_code:
            raise PermissionDenied("无权操作：这不是您所在部门的派单")
        if action in ("sign", "start"):
            return {"index": seq}
        if action == "return":
            need(reason, "退单必须填写原因", "reason")
            return {"index": seq, "reason": reason}
        if action == "reply":
            need(text, "答复内容不能为空", "text")
            return {"index": seq, "text": text}
        need(reason, "延期申请必须填写原因", "reason")
        need(new_deadline, "请填写新的办理时限", "new_deadline")
        return {"index": seq, "new_deadline": _parse_deadline(new_deadline), "reason": reason}
    if action in ("approve_extension", "reject_extension"):
        if p.role not in APPROVERS:
            raise PermissionDenied("无权操作：只有受理员和领导可以审批延期")
        assignment()
        if action == "reject_extension":
            need(reason, "驳回延期必须填写原因", "reason")
        return {"index": seq, "approve": action == "approve_extension", "reason": reason or None}
    if action in ("supervise", "unsupervise"):
        if p.role not in APPROVERS:
            raise PermissionDenied("无权操作：只有受理员和领导可以督办")
        need(reason, "督办必须填写原因" if action == "supervise" else "取消督办必须填写原因",
             "reason")
        return {"on": action == "supervise", "reason": reason}
    if p.role not in OPERATORS:
        raise PermissionDenied("无权操作：该操作只限受理员")
    if action == "close":
        return {}
    if action == "follow_up":
        if satisfaction not in SATISFACTION:
            raise ValidationError(Problem(f"请选择满意度：{'/'.join(SATISFACTION)}",
                                          field="satisfaction"))
        deadline = None
        if satisfaction == "不满意" and case.matter_code:
            deadline = _dispatcher(request).deadline(case.matter_code, case.urgency, clock.now())
        return {"satisfaction": satisfaction, "comment": comment or None, "deadline": deadline}
    if action == "reassign":
        a = assignment()
        need(department, "请选择改派部门", "department")
        need(reason, "改派必须填写原因", "reason")
        from sqlalchemy.orm import object_session

        from jiedao.catalog.models import Department

        if case.matter_code:
            deadline = _dispatcher(request).deadline(case.matter_code, case.urgency, clock.now())
        else:
            deadline = a.deadline
        if object_session(case).get(Department, department) is None:
            raise ValidationError(Problem(f"部门 {department} 不存在", field="department"))
        return {"index": seq, "department": department, "deadline": deadline, "reason": reason}
    raise ValidationError(Problem(f"未知操作 {action!r}", field="action"))
