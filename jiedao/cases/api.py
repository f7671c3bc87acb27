"""REST API for cases (``/api/cases``): intake, scoped lists, case detail, workflow actions.

Thin routes over :mod:`jiedao.cases.intake` and :mod:`jiedao.cases.service`:

* ``POST /api/cases`` takes a case in through the app's pipeline (analysis and, when nothing
  is in doubt, automatic dispatch). The transaction is committed *before* the answer is sent;
  an ``Idempotency-Key`` header makes retries safe (the retry answers 200 with the first case
  instead of 201 with a new one).
* ``GET /api/cases`` lists the cases inside the caller's scope (district roles: all; street /
  community staff: their area; department handlers: cases with an assignment of theirs).
* ``GET /api/cases/{id}`` is one case with assignments, the transition log and follow-ups.
  The caller's phone and name are masked; ``unmask=1`` (operator, admin) shows them and writes
  an audit row.
* ``POST /api/cases/{id}/actions/{action}`` applies one workflow action with optimistic
  locking (``expected_version``): 409 with the Chinese reason for a conflict or an illegal
  transition, 422 naming the field for malformed input, 403 for an actor who may not; nothing
  changes on any error.

Browser sessions must send the CSRF token (``X-CSRF-Token``); bearer API tokens need none.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jiedao import clock
from jiedao.auth import audit
from jiedao.auth import service as auth_service
from jiedao.auth.deps import (
    bearer_token,
    client_ip,
    csrf_protect,
    get_principal,
    require_user,
    set_principal,
)
from jiedao.auth.scope import Principal, is_visible, restrict
from jiedao.cases import intake, service
from jiedao.cases import workflow as wf
from jiedao.cases.models import CHANNELS, KINDS, Assignment, Case, FollowUp
from jiedao.catalog.models import Department, Matter
from jiedao.errors import PermissionDenied, Problem, ValidationError

TAG = "工单 cases"
router = APIRouter(prefix="/api/cases", tags=[TAG], dependencies=[Depends(csrf_protect)])

User = Annotated[Principal, Depends(require_user)]

# Who may take a case in through the API (integrators hold tokens of such users).
INTAKE_ROLES = ("operator", "admin", "steward", "street_staff")
# Actions and who may do them. Handler actions are further limited to the actor's own
# assignment (its department, or for street staff the street office of their street).
HANDLER_ACTIONS = ("sign", "start", "return", "reply", "request-extension")
OPERATOR_ACTIONS = ("dispatch", "locate", "reassign", "close", "follow-up")
ACTION_ROLES = {
    **{a: ("handler", "street_staff") for a in HANDLER_ACTIONS},
    **{a: ("operator", "admin") for a in OPERATOR_ACTIONS},
    "decide-extension": ("operator", "leader", "admin"),
    "supervise": ("leader", "admin"),
}
WORKFLOW_METHOD = {
    "sign": "sign", "start": "start", "return": "return_", "reply": "reply",
    "request-extension": "request_extension", "decide-extension": "decide_extension",
    "reassign": "reassign", "supervise": "supervise", "close": "close", "follow-up": "follow_up",
}
ActionName = Literal["sign", "start", "return", "reply", "request-extension", "decide-extension",
                     "reassign", "dispatch", "locate", "supervise", "close", "follow-up"]
UNMASK_ROLES = ("operator", "admin")
MAX_REASON = 2000
IDEMPOTENCY_RE = re.compile(r"^[\x21-\x7e]{1,80}$")
CLOSED_STATES = ("closed", "followed_up")
ACTION_LABELS = {
    "analyse": "智能研判", "dispatch": "派单", "locate": "核实地点", "reassign": "改派", "sign": "签收",
    "start": "开始办理", "return": "退单", "reply": "答复", "request_extension": "申请延期",
    "approve_extension": "批准延期", "reject_extension": "驳回延期", "supervise": "督办",
    "unsupervise": "取消督办", "close": "办结", "follow_up": "回访", "reopen": "重办",
}


# ---------------------------------------------------------------- models


class CaseIn(BaseModel):
    """A new case (诉求). Only ``text`` is required; the analysis finds category and place."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "text": "琴台大道88号锦绣长江小区门口烧烤摊占道经营，油烟很大，晚上十点后还很吵",
        "phone": "13812345678", "name": "张先生", "channel": "api"}]})

    text: str = Field(description=f"诉求内容（1–{service.MAX_TEXT} 字）")
    channel: str = Field("api", description="渠道：" + "、".join(f"{k}={v}" for k, v in CHANNELS.items()))
    kind: str = Field("appeal", description="类型：" + "、".join(f"{k}={v}" for k, v in KINDS.items()))
    urgency: str | None = Field(None, description="紧急程度：紧急 / 较急 / 一般；不填由研判决定")
    phone: str | None = Field(None, max_length=30, description="来电号码（手机或固话）")
    name: str | None = Field(None, max_length=64, description="诉求人姓名")
    enterprise: str | None = Field(None, max_length=200, description="企业名称（企业诉求）")
    location_text: str | None = Field(None, max_length=300, description="地点描述")
    lon: float | None = Field(None, description="经度（WGS-84）")
    lat: float | None = Field(None, description="纬度（WGS-84）")
    auto_dispatch: bool = Field(True, description="研判无疑问时自动派单")


class CallerOut(BaseModel):
    name: str | None = Field(None, description="姓名（默认脱敏）")
    phone: str | None = Field(None, description="电话（默认脱敏）")
    enterprise: str | None = None
    masked: bool = True
    case_count: int = Field(0, description="该来电人的诉求总数")


class ExtensionOut(BaseModel):
    requested_at: datetime
    requested_by: str
    new_deadline: datetime
    reason: str
    status: str = Field(description="pending / approved / rejected")
    decided_by: str | None


class AssignmentOut(BaseModel):
    seq: int = Field(description="派单序号（操作时的 index）")
    department_code: str
    department_name: str
    role: str = Field(description="main（主办）/ co（协办）")
    state: str
    state_label: str
    round: int
    dispatched_at: datetime
    deadline: datetime
    signed_at: datetime | None
    replied_at: datetime | None
    reply: str | None
    warned: bool
    overdue: bool
    extensions: list[ExtensionOut]


class TransitionOut(BaseModel):
    seq: int
    at: datetime
    actor: str
    action: str
    action_label: str
    from_state: str
    to_state: str
    to_state_label: str
    reason: str | None
    assignment_seq: int | None


class FollowUpOut(BaseModel):
    at: datetime
    actor: str
    satisfaction: str
    comment: str | None
    round: int


class CaseSummary(BaseModel):
    id: int
    code: str = Field(description="公众查询码")
    channel: str
    kind: str
    title: str
    state: str
    state_label: str
    urgency: str
    matter_code: str | None
    matter_name: str | None
    street_code: str | None
    community_code: str | None
    grid_code: str | None
    main_department_code: str | None
    supervised: bool
    received_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    version: int = Field(description="乐观锁版本号：操作时作为 expected_version 提交")


class CaseDetail(CaseSummary):
    text: str
    location_text: str | None
    lon: float | None
    lat: float | None
    address_code: str | None
    category_confidence: float | None
    event_id: int | None
    repeat_caller: bool
    reopen_count: int
    satisfaction: str | None
    caller: CallerOut | None
    analysis: dict | None = Field(None, description="研判卡片")
    assignments: list[AssignmentOut]
    transitions: list[TransitionOut]
    followups: list[FollowUpOut]


class CasePage(BaseModel):
    items: list[CaseSummary]
    total: int
    page: int
    page_size: int


class ActionIn(BaseModel):
    """Body of a workflow action. Which fields an action needs:

    * sign / start: ``index`` (optional: defaults to the caller's own assignment)
    * return: ``reason``; reply: ``text``; request-extension: ``new_deadline``, ``reason``
    * decide-extension: ``index``, ``approve`` (and ``reason`` when rejecting)
    * reassign: ``index``, ``department``, ``reason`` (``deadline`` optional, else from SLA)
    * dispatch: optional ``matter_code``, ``main``, ``co`` (default: the suggestion)
    * locate (核实地点, before dispatch): ``place``, what the caller answered when asked where
    * supervise: ``reason`` and ``on`` (true to raise, false to lower)
    * close: nothing; follow-up: ``satisfaction`` (满意/基本满意/不满意), ``comment``
    """

    model_config = ConfigDict(extra="forbid")

    expected_version: int = Field(ge=0, description="您看到的工单版本（version）")
    index: int | None = Field(None, ge=0, description="派单序号 assignments[].seq")
    reason: str | None = Field(None, description="原因（退单、改派、延期、督办、驳回时必填）")
    text: str | None = Field(None, description="答复内容")
    department: str | None = Field(None, max_length=20, description="改派的目标部门编码")
    deadline: datetime | None = Field(None, description="改派或重办的办理时限（不填按职责清单）")
    new_deadline: datetime | None = Field(None, description="延期后的时限")
    approve: bool | None = Field(None, description="是否批准延期")
    on: bool = Field(True, description="督办：true 列入，false 撤销")
    satisfaction: str | None = Field(None, description="满意 / 基本满意 / 不满意")
    comment: str | None = Field(None, max_length=2000, description="回访意见")
    matter_code: str | None = Field(None, max_length=20, description="派单：事项编码（改分类）")
    main: str | None = Field(None, max_length=20, description="派单：主办部门编码")
    co: list[str] | None = Field(None, max_length=10, description="派单：协办部门编码")
    place: str | None = Field(None, max_length=400, description="核实地点：回问来电人得到的地点（标准地址、小区楼栋或地标）")


# ---------------------------------------------------------------- helpers


def unprocessable(problems: list[Problem] | Problem, where: str | None = "body"
                  ) -> RequestValidationError:
    """A 422 naming each bad field, like FastAPI's own validation answers."""
    if isinstance(problems, Problem):
        problems = [problems]
    return RequestValidationError([
        {"type": "value_error", "loc": ((where,) if where else ()) + (p.field or "__root__",),
         "msg": p.message, "input": None} for p in problems])


def get_pipeline(app):
    """The app's shared CasePipeline (analyzer, dispatcher, catalog, calendar)."""
    from jiedao.cases.runtime import get_pipeline as _get

    return _get(app)


def visible_cases(stmt, p: Principal):
    """Restrict a SELECT over :class:`Case` to the principal's scope.

    Department principals see the cases with an assignment of their department (main or co,
    any round); everyone else goes through :func:`jiedao.auth.scope.restrict` on the case's
    street and community columns.
    """
    if p.scope_level == "department":
        return stmt.where(Case.id.in_(
            select(Assignment.case_id).where(Assignment.department_code == p.scope_code)))
    return restrict(stmt, p, street=Case.street_code, community=Case.community_code)


def can_see(p: Principal, case: Case) -> bool:
    """Whether ``p`` may see this case (the single-object twin of :func:`visible_cases`)."""
    if p.scope_level == "department":
        return any(a.department_code == p.scope_code for a in case.assignments)
    if is_visible(p, street_code=case.street_code, community_code=case.community_code):
        return True
    if p.scope_level == "street" and p.scope_code:
        office = "JD" + p.scope_code
        return any(a.department_code == office for a in case.assignments)
    return False


def check_case_visible(p: Principal, case: Case) -> None:
    if not can_see(p, case):
        raise PermissionDenied("无权查看：该工单不在您的数据范围内")


def _names(s: Session, model, codes, catalog=None, cache: dict | None = None) -> dict[str, str]:
    """code → name, from the in-memory catalogue when given, else (or for misses) the DB;
    ``cache`` (the pipeline's, rebuilt with it) keeps what the DB said (street offices)."""
    codes = {c for c in codes if c}
    out: dict[str, str] = {}
    if catalog is not None:
        lookup = catalog.by_dept if model is Department else catalog.by_code
        for c in codes:
            if c in lookup:
                out[c] = lookup[c].name
    missing = codes - set(out)
    if missing and cache is not None:
        for c in list(missing):
            if (model.__tablename__, c) in cache:
                out[c] = cache[(model.__tablename__, c)]
                missing.discard(c)
    if missing:
        found = dict(s.execute(select(model.code, model.name).where(model.code.in_(missing))).all())
        out.update(found)
        if cache is not None:
            cache.update({(model.__tablename__, c): n for c, n in found.items()})
    return out


def case_summary(case: Case, matter_names: dict[str, str]) -> CaseSummary:
    return CaseSummary(
        id=case.id, code=case.code, channel=case.channel, kind=case.kind, title=case.title,
        state=case.state, state_label=wf.CASE_STATES.get(case.state, case.state),
        urgency=case.urgency, matter_code=case.matter_code,
        matter_name=matter_names.get(case.matter_code) if case.matter_code else None,
        street_code=case.street_code, community_code=case.community_code,
        grid_code=case.grid_code, main_department_code=case.main_department_code,
        supervised=case.supervised, received_at=case.received_at, updated_at=case.updated_at,
        closed_at=case.closed_at, version=case.version)


def case_detail(s: Session, case: Case, *, unmask: bool = False, catalog=None,
                new: bool = False, names: dict | None = None) -> CaseDetail:
    """The API shape of one case (caller masked unless ``unmask``). ``catalog`` and ``names``
    save the name look-ups; ``new`` (a case just created) skips the follow-up query."""
    depts = _names(s, Department, [a.department_code for a in case.assignments], catalog, names)
    matters = _names(s, Matter, [case.matter_code], catalog, names)
    caller = None
    if case.caller is not None:
        c = case.caller
        caller = CallerOut(
            name=c.name if unmask else (audit.mask_name(c.name) or None),
            phone=c.phone if unmask else audit.mask_phone(c.phone),
            enterprise=c.enterprise, masked=not unmask, case_count=c.case_count)
    followups = [] if new else s.scalars(select(FollowUp).where(FollowUp.case_id == case.id)
                                         .order_by(FollowUp.id)).all()
    base = case_summary(case, matters).model_dump()
    return CaseDetail(
        **base, text=case.text, location_text=case.location_text, lon=case.lon, lat=case.lat,
        address_code=case.address_code, category_confidence=case.category_confidence,
        event_id=case.event_id, repeat_caller=case.repeat_caller, reopen_count=case.reopen_count,
        satisfaction=case.satisfaction, caller=caller, analysis=case.analysis,
        assignments=[AssignmentOut(
            seq=a.seq, department_code=a.department_code,
            department_name=depts.get(a.department_code, a.department_code), role=a.role,
            state=a.state, state_label=wf.ASSIGNMENT_STATES.get(a.state, a.state), round=a.round,
            dispatched_at=a.dispatched_at, deadline=a.deadline, signed_at=a.signed_at,
            replied_at=a.replied_at, reply=a.reply, warned=a.warned, overdue=a.overdue,
            extensions=[ExtensionOut(
                requested_at=e.requested_at, requested_by=e.requested_by,
                new_deadline=e.new_deadline, reason=e.reason, status=e.status,
                decided_by=e.decided_by) for e in a.extensions])
            for a in case.assignments],
        transitions=[TransitionOut(
            seq=t.seq, at=t.at, actor=t.actor, action=t.action,
            action_label=ACTION_LABELS.get(t.action, t.action), from_state=t.from_state,
            to_state=t.to_state, to_state_label=wf.CASE_STATES.get(t.to_state, t.to_state),
            reason=t.reason, assignment_seq=t.assignment_seq) for t in case.transitions],
        followups=[FollowUpOut(at=f.at, actor=f.actor, satisfaction=f.satisfaction,
                               comment=f.comment, round=f.round) for f in followups])


def _jsonable(model: BaseModel | dict, status: int) -> JSONResponse:
    body = model if isinstance(model, dict) else model.model_dump(mode="json")
    return JSONResponse(body, status_code=status)


def _iso(v: datetime | None) -> str | None:
    return None if v is None else v.isoformat()


def new_case_json(s: Session, case: Case, catalog=None, names: dict | None = None) -> dict:
    """The JSON of :func:`case_detail` for a case just created (no follow-ups, caller masked),
    built directly: the intake answer is the hot path, and building the pydantic models only
    to dump them again cost more than the rest of the answer. Same keys, same values
    (``tests/cases/test_api.py`` compares the two)."""
    depts = _names(s, Department, [a.department_code for a in case.assignments], catalog, names)
    matters = _names(s, Matter, [case.matter_code], catalog, names)
    c = case.caller
    caller = None if c is None else {
        "name": audit.mask_name(c.name) or None, "phone": audit.mask_phone(c.phone),
        "enterprise": c.enterprise, "masked": True, "case_count": c.case_count}
    return {
        "id": case.id, "code": case.code, "channel": case.channel, "kind": case.kind,
        "title": case.title, "state": case.state,
        "state_label": wf.CASE_STATES.get(case.state, case.state), "urgency": case.urgency,
        "matter_code": case.matter_code,
        "matter_name": matters.get(case.matter_code) if case.matter_code else None,
        "street_code": case.street_code, "community_code": case.community_code,
        "grid_code": case.grid_code, "main_department_code": case.main_department_code,
        "supervised": case.supervised, "received_at": _iso(case.received_at),
        "updated_at": _iso(case.updated_at), "closed_at": _iso(case.closed_at),
        "version": case.version, "text": case.text, "location_text": case.location_text,
        "lon": case.lon, "lat": case.lat, "address_code": case.address_code,
        "category_confidence": case.category_confidence, "event_id": case.event_id,
        "repeat_caller": case.repeat_caller, "reopen_count": case.reopen_count,
        "satisfaction": case.satisfaction, "caller": caller, "analysis": case.analysis,
        "assignments": [{
            "seq": a.seq, "department_code": a.department_code,
            "department_name": depts.get(a.department_code, a.department_code), "role": a.role,
            "state": a.state, "state_label": wf.ASSIGNMENT_STATES.get(a.state, a.state),
            "round": a.round, "dispatched_at": _iso(a.dispatched_at), "deadline": _iso(a.deadline),
            "signed_at": _iso(a.signed_at), "replied_at": _iso(a.replied_at), "reply": a.reply,
            "warned": a.warned, "overdue": a.overdue, "extensions": [{
                "requested_at": _iso(e.requested_at), "requested_by": e.requested_by,
                "new_deadline": _iso(e.new_deadline), "reason": e.reason, "status": e.status,
                "decided_by": e.decided_by} for e in a.extensions],
        } for a in case.assignments],
        "transitions": [{
            "seq": t.seq, "at": _iso(t.at), "actor": t.actor, "action": t.action,
            "action_label": ACTION_LABELS.get(t.action, t.action), "from_state": t.from_state,
            "to_state": t.to_state, "to_state_label": wf.CASE_STATES.get(t.to_state, t.to_state),
            "reason": t.reason, "assignment_seq": t.assignment_seq} for t in case.transitions],
        "followups": [],
    }


# ---------------------------------------------------------------- domain functions


def intake_case(db, pipeline, principal: Principal | None, body: CaseIn,
                idempotency_key: str | None, *, bearer: str | None = None,
                request: Request | None = None, as_json: bool = False
                ) -> tuple[CaseDetail | dict, bool]:
    """Submit ``body`` through the pipeline and COMMIT; returns (detail, created).

    ``as_json``: a new case's detail as its JSON dict (:func:`new_case_json`), not the model.

    ``idempotency_key`` is the client's key; it is stored per user (``api:<user id>:<key>``).
    With ``bearer`` (a raw API token) the caller is authenticated inside the intake's own
    transaction — one SELECT, no separate connection, none at all when this process found
    the token live in the last seconds (``auth.service.BEARER_CACHE_SECONDS``) — instead of
    being given as ``principal``. The first attempt does not look the key up: on PostgreSQL the insert skips
    a taken key (:class:`~jiedao.cases.service.KeyTaken`), and a retry of the request — or a
    concurrent twin that lost the unique-key race — then finds and returns the first case.
    """
    probs = service.validate_intake(text=body.text, channel=body.channel, kind=body.kind,
                                    urgency=body.urgency or "一般", lon=body.lon, lat=body.lat)
    for attempt in range(3):
        try:
            with db.session() as s:
                p = principal
                if bearer is not None:
                    # a token seen live in the last seconds is not looked up again
                    p = (auth_service.cached_bearer(db.engine, bearer)
                         or auth_service.principal_for_bearer(s.connection(), bearer))
                    if request is not None:
                        set_principal(request, p, "token")
                        require_user(request, p)  # 401 unless the token is live
                    elif p is None:
                        raise PermissionDenied("API 令牌无效或已撤销")
                key = _intake_key(p, idempotency_key)
                if probs:
                    raise unprocessable(probs)
                case, created = intake.submit(
                    s, pipeline.analyzer, pipeline.dispatcher, text=body.text,
                    channel=body.channel, actor=audit.actor_for(p),
                    auto_dispatch=body.auto_dispatch, urgency=body.urgency,
                    phone=body.phone or None, name=body.name or None,
                    enterprise=body.enterprise or None, location_text=body.location_text or None,
                    lon=body.lon, lat=body.lat, kind=body.kind, idempotency_key=key,
                    check_key=attempt > 0)
                catalog, names = getattr(pipeline, "catalog", None), getattr(pipeline, "names", None)
                if created and as_json:
                    detail = new_case_json(s, case, catalog, names)
                else:
                    detail = case_detail(s, case, catalog=catalog, new=created, names=names)
            return detail, created  # committed: the with-block has exited
        except ValidationError as e:
            raise unprocessable(e.problems) from None
        except service.KeyTaken:
            continue  # rolled back: the next attempt looks the key up and answers its case
        except IntegrityError:
            if not idempotency_key or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _intake_key(p: Principal, idempotency_key: str | None) -> str | None:
    """Who may take cases in, and the stored form of their idempotency key."""
    if p.role not in INTAKE_ROLES:
        raise PermissionDenied("无权受理诉求")
    if idempotency_key is None:
        return None
    if not IDEMPOTENCY_RE.match(idempotency_key):
        raise unprocessable(Problem("幂等键必须是 1–80 个可见 ASCII 字符", field="Idempotency-Key"),
                            where=None)
    return f"api:{p.user_id}:{idempotency_key}"


def list_cases(s: Session, p: Principal, *, state=None, matter=None, street=None, community=None,
               department=None, channel=None, supervised=None, date_from: date | None = None,
               date_to: date | None = None, page: int = 1, page_size: int = 50) -> CasePage:
    """Cases in ``p``'s scope matching the filters, newest first, one page."""
    stmt = visible_cases(select(Case), p)
    if state:
        stmt = stmt.where(Case.state == state)
    if matter:
        stmt = stmt.where(Case.matter_code == matter)
    if street:
        stmt = stmt.where(Case.street_code == street)
    if community:
        stmt = stmt.where(Case.community_code == community)
    if department:
        stmt = stmt.where(Case.id.in_(select(Assignment.case_id)
                                      .where(Assignment.department_code == department)))
    if channel:
        stmt = stmt.where(Case.channel == channel)
    if supervised is not None:
        stmt = stmt.where(Case.supervised == supervised)
    if date_from:
        stmt = stmt.where(Case.received_at >= datetime.combine(date_from, time.min))
    if date_to:
        stmt = stmt.where(Case.received_at < datetime.combine(date_to + timedelta(days=1), time.min))
    total = s.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    rows = s.scalars(stmt.order_by(Case.received_at.desc(), Case.id.desc())
                     .offset((page - 1) * page_size).limit(page_size)).all()
    matters = _names(s, Matter, [c.matter_code for c in rows])
    return CasePage(items=[case_summary(c, matters) for c in rows], total=total, page=page,
                    page_size=page_size)


def _own_assignment(p: Principal, case: Case, index: int | None) -> int:
    """The assignment index a handler acts on: theirs, of the current round."""
    mine = {p.scope_code} if p.scope_level == "department" else (
        {"JD" + p.scope_code} if p.scope_level == "street" and p.scope_code else set())
    rnd = case.reopen_count + 1
    if index is not None:
        if index >= len(case.assignments):
            raise unprocessable(Problem(f"派单序号 {index} 不存在", field="index"))
        if case.assignments[index].department_code not in mine:
            raise PermissionDenied("只能操作本部门的派单")
        return index
    own = [a for a in case.assignments if a.department_code in mine and a.round == rnd]
    active = [a for a in own if a.state in wf.ACTIVE]
    if not (active or own):
        raise PermissionDenied("该工单没有派给您所在的部门")
    return (active or own)[-1].seq


def _need_text(value: str | None, fld: str, what: str, limit: int = MAX_REASON) -> str:
    if value is None or not value.strip():
        raise unprocessable(Problem(f"{what}不能为空", field=fld))
    if len(value) > limit:
        raise unprocessable(Problem(f"{what}过长（{len(value)} 字，上限 {limit} 字）", field=fld))
    return value.strip()


def _need_department(s: Session, code: str | None, fld: str) -> str:
    if not code:
        raise unprocessable(Problem("请填写部门编码", field=fld))
    if s.get(Department, code) is None:
        raise unprocessable(Problem(f"未知部门 {code!r}", field=fld))
    return code


def perform_action(s: Session, pipeline, p: Principal, case_id: int, action: str,
                   body: ActionIn, *, at: datetime | None = None) -> Case:
    """Check scope, role and input, then apply ``action`` under optimistic locking.

    Raises NotFound (404), PermissionDenied (403), RequestValidationError (422) or
    Conflict/IllegalTransition (409); the caller's session rolls back on any of them.
    """
    at = at or clock.now()
    action = action.replace("_", "-")
    if action not in ACTION_ROLES:
        raise unprocessable(Problem(f"未知操作 {action!r}", field="action"), where="path")
    case = service.load_case(s, case_id)
    check_case_visible(p, case)
    if p.role not in ACTION_ROLES[action]:
        from jiedao.auth.models import ROLES

        labels = "、".join(ROLES[r] for r in ACTION_ROLES[action])
        what = ACTION_LABELS.get(action.replace("-", "_"), "延期审批")
        raise PermissionDenied(f"无权执行“{what}”：需要以下角色之一：{labels}")
    actor = audit.actor_for(p)
    kw: dict = {}
    if action in HANDLER_ACTIONS:
        kw["index"] = _own_assignment(p, case, body.index)
    if action == "return":
        kw["reason"] = _need_text(body.reason, "reason", "退单原因")
    elif action == "reply":
        kw["text"] = _need_text(body.text, "text", "答复内容", service.MAX_TEXT)
    elif action == "request-extension":
        if body.new_deadline is None:
            raise unprocessable(Problem("请填写延期后的时限", field="new_deadline"))
        kw.update(new_deadline=body.new_deadline,
                  reason=_need_text(body.reason, "reason", "延期原因"))
    elif action == "decide-extension":
        if body.index is None:
            raise unprocessable(Problem("请指定派单序号", field="index"))
        if body.approve is None:
            raise unprocessable(Problem("请填写是否批准（approve）", field="approve"))
        kw.update(index=body.index, approve=body.approve,
                  reason=body.reason.strip() if body.reason and body.reason.strip() else None)
        if not body.approve:
            kw["reason"] = _need_text(body.reason, "reason", "驳回原因")
    elif action == "reassign":
        if body.index is None:
            raise unprocessable(Problem("请指定要改派的派单序号", field="index"))
        dept = _need_department(s, body.department, "department")
        kw.update(index=body.index, department=dept,
                  reason=_need_text(body.reason, "reason", "改派原因"),
                  deadline=body.deadline or pipeline.dispatcher.deadline(
                      case.matter_code, case.urgency, at))
    elif action == "supervise":
        kw.update(on=body.on, reason=_need_text(body.reason, "reason", "督办原因"))
    elif action == "follow-up":
        if body.satisfaction not in wf.SATISFACTION:
            raise unprocessable(Problem(f"满意度必须是 {'/'.join(wf.SATISFACTION)} 之一",
                                        field="satisfaction"))
        kw.update(satisfaction=body.satisfaction, comment=(body.comment or "").strip() or None)
        if body.satisfaction == "不满意" and case.matter_code:
            kw["deadline"] = body.deadline or pipeline.dispatcher.deadline(
                case.matter_code, case.urgency, at)
    if action == "locate":
        from jiedao.cases.place import confirm_place

        try:
            return confirm_place(s, pipeline.analyzer, case, body.place, expected_version=body.expected_version,
                                 at=at, principal=p)
        except ValidationError as e:
            raise unprocessable(e.problems) from None
    if action == "dispatch":
        if body.matter_code is not None and s.get(Matter, body.matter_code) is None:
            raise unprocessable(Problem(f"未知事项分类 {body.matter_code!r}", field="matter_code"))
        main = _need_department(s, body.main, "main") if body.main else None
        co = [_need_department(s, c, "co") for c in body.co] if body.co is not None else None
        wf.check_version(service.to_state(case), body.expected_version)
        try:
            return intake.dispatch(s, pipeline.dispatcher, case, actor=actor, at=at,
                                   matter_code=body.matter_code, main=main, co=co)
        except ValidationError as e:
            raise unprocessable(e.problems) from None
    try:
        return service.act(s, case.id, WORKFLOW_METHOD[action], actor=actor,
                           expected_version=body.expected_version, at=at, **kw)
    except ValidationError as e:
        raise unprocessable(e.problems) from None


# ---------------------------------------------------------------- routes

ERRORS = {401: {"description": "未登录"}, 403: {"description": "无权限或不在数据范围内"},
          404: {"description": "工单不存在"}, 409: {"description": "状态不允许或版本冲突"},
          422: {"description": "参数有误（problems 中列出字段）"}}


@router.post("", status_code=201, response_model=CaseDetail, summary="受理诉求（研判并自动派单）",
             responses={200: {"description": "同一幂等键的重试：返回首次创建的工单",
                              "model": CaseDetail}, **ERRORS})
def api_create_case(
    request: Request,
    body: CaseIn,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", description="客户端生成的唯一键（≤80 个可见 ASCII 字符）；"
        "重试时带同一个键不会产生第二个工单")] = None,
):
    """Take in one case. It is committed before this answers 201 (or 200 for a retry).

    Bearer-token callers (integrations, the hotline system) are authenticated inside the
    intake's transaction; browser sessions as everywhere else (CSRF checked by the router).
    """
    bearer = bearer_token(request)
    principal = None if bearer is not None else require_user(request, get_principal(request))
    detail, created = intake_case(request.app.state.db, get_pipeline(request.app), principal,
                                  body, idempotency_key, bearer=bearer, request=request,
                                  as_json=True)
    return _jsonable(detail, 201 if created else 200)


@router.get("", response_model=CasePage, summary="工单列表（按数据范围）",
            responses={401: ERRORS[401], 422: ERRORS[422]})
def api_list_cases(
    request: Request,
    p: User,
    state: Annotated[Literal[tuple(wf.CASE_STATES)] | None, Query(  # type: ignore[valid-type]
        description="状态：" + "、".join(f"{k}={v}" for k, v in wf.CASE_STATES.items()))] = None,
    matter: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,20}$", description="事项编码")] = None,
    street: Annotated[str | None, Query(pattern=r"^\d{9}$", description="街道代码")] = None,
    community: Annotated[str | None, Query(pattern=r"^\d{12}$", description="社区代码")] = None,
    department: Annotated[str | None, Query(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,19}$",
                                            description="承办部门编码")] = None,
    channel: Annotated[Literal[tuple(CHANNELS)] | None, Query(description="渠道")] = None,  # type: ignore[valid-type]
    supervised: Annotated[bool | None, Query(description="督办件")] = None,
    date_from: Annotated[date | None, Query(description="受理日期起（含）")] = None,
    date_to: Annotated[date | None, Query(description="受理日期止（含）")] = None,
    page: Annotated[int, Query(ge=1, le=100000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=200)] = 50,
):
    if date_from and date_to and date_to < date_from:
        raise unprocessable(Problem("结束日期不能早于开始日期", field="date_to"), where="query")
    with request.app.state.db.session() as s:
        return list_cases(s, p, state=state, matter=matter, street=street, community=community,
                          department=department, channel=channel, supervised=supervised,
                          date_from=date_from, date_to=date_to, page=page, page_size=page_size)


@router.get("/{case_id}", response_model=CaseDetail, summary="工单详情（派单、流转记录、回访）",
            responses={k: v for k, v in ERRORS.items() if k != 409})
def api_get_case(
    request: Request,
    p: User,
    case_id: Annotated[int, Path(ge=1, le=2**62)],
    unmask: Annotated[bool, Query(description="显示完整电话和姓名（受理员、管理员；记入审计）")] = False,
):
    if unmask and p.role not in UNMASK_ROLES:
        raise PermissionDenied("无权查看未脱敏的个人信息")
    with request.app.state.db.session() as s:
        case = service.load_case(s, case_id)
        check_case_visible(p, case)
        if unmask and case.caller is not None:
            audit.record(s, principal=p, action="unmask", object_type="case", object_id=case.id,
                         detail={"fields": ["phone", "name"], "code": case.code},
                         ip=client_ip(request))
        detail = case_detail(s, case, unmask=unmask)
    return detail


@router.post("/{case_id}/actions/{action}", response_model=CaseDetail,
             summary="工单操作：签收、开始办理、退单、答复、延期、审批、改派、核实地点、派单、督办、办结、回访",
             responses=ERRORS)
def api_case_action(
    request: Request,
    p: User,
    case_id: Annotated[int, Path(ge=1, le=2**62)],
    action: Annotated[ActionName, Path(description="操作名")],
    body: ActionIn,
):
    """Apply one action; the answer is the case after the (committed) change."""
    pipeline = get_pipeline(request.app) if action in ("dispatch", "locate", "reassign", "follow-up") else None
    with request.app.state.db.session() as s:
        case = perform_action(s, pipeline, p, case_id, action, body)
        detail = case_detail(s, case)
    return detail
