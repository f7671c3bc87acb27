"""Case service layer: load a case, apply a workflow action, write it back atomically.

The database rows are the record; :mod:`jiedao.cases.workflow` decides what may happen.
Writes use optimistic locking (``cases_case.version`` as SQLAlchemy's version column): when
two handlers act on the same case at once, the second flush matches no row and the caller
gets :class:`~jiedao.errors.Conflict` with nothing half-written (the session rolls back).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.orm.exc import StaleDataError

from jiedao import clock
from jiedao.cases import workflow as wf
from jiedao.cases.models import (
    CHANNELS,
    KINDS,
    URGENCIES,
    Assignment,
    Caller,
    Case,
    ExtensionRequest,
    FollowUp,
    TransitionLog,
)
from jiedao.config import get_settings
from jiedao.errors import Conflict, NotFound, Problem, ValidationError

MAX_TEXT = 5000  # characters; a hotline record longer than this is a paste accident
PHONE_RE = re.compile(r"^(?:\+?86)?1[3-9]\d{9}$|^0\d{2,3}-?\d{7,8}$")


def normalise_phone(raw: str) -> str:
    """Digits only, without a +86 prefix; raises ValidationError when it is not a phone."""
    s = re.sub(r"[\s\-()（）]", "", raw or "")
    if not PHONE_RE.match(s) and not PHONE_RE.match(raw or ""):
        raise ValidationError(Problem("电话号码格式不正确", field="phone"))
    s = s.removeprefix("+86")
    return s[2:] if s.startswith("86") and len(s) == 13 else s


def phone_hash(phone: str) -> str:
    """Keyed hash, so a leaked table cannot be reversed by enumerating phone numbers."""
    key = get_settings().secret_key.encode()
    return hmac.new(key, phone.encode(), hashlib.sha256).hexdigest()


def get_or_create_caller(session: Session, phone: str, name: str | None, at: datetime,
                         enterprise: str | None = None) -> Caller:
    phone = normalise_phone(phone)
    h = phone_hash(phone)
    caller = session.scalar(select(Caller).where(Caller.phone_hash == h))
    if caller is None:
        caller = Caller(phone_hash=h, phone=phone, name=name, enterprise=enterprise,
                        first_seen=at, case_count=0)
        session.add(caller)
        session.flush()
    return caller


def new_case_code(at: datetime) -> str:
    """Public tracking code: date + random part, unguessable so that tracking needs the code."""
    alphabet = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
    return at.strftime("%Y%m%d") + "".join(secrets.choice(alphabet) for _ in range(8))


def validate_intake(*, text: str | None, channel: str, kind: str = "appeal", urgency: str = "一般",
                    lon=None, lat=None, source: str | None = None, row: int | None = None) -> list[Problem]:
    """Every problem with an intake, each naming its field."""
    probs = []

    def bad(msg, fld):
        probs.append(Problem(msg, source=source, row=row, field=fld))

    if not text or not str(text).strip():
        bad("诉求内容不能为空", "text")
    elif len(text) > MAX_TEXT:
        bad(f"诉求内容过长（{len(text)} 字，上限 {MAX_TEXT} 字）", "text")
    if channel not in CHANNELS:
        bad(f"未知渠道 {channel!r}，可选：{', '.join(CHANNELS)}", "channel")
    if kind not in KINDS:
        bad(f"未知类型 {kind!r}，可选：{', '.join(KINDS)}", "kind")
    if urgency not in URGENCIES:
        bad(f"紧急程度必须是 {'/'.join(URGENCIES)} 之一", "urgency")
    if (lon is None) != (lat is None):
        bad("经度和纬度必须同时提供", "lon" if lon is None else "lat")
    elif lon is not None:
        try:
            lo, la = float(lon), float(lat)
        except (TypeError, ValueError):
            bad("坐标必须是数字", "lon")
        else:
            if not (-180 <= lo <= 180):
                bad("经度超出范围 [-180, 180]", "lon")
            if not (-90 <= la <= 90):
                bad("纬度超出范围 [-90, 90]", "lat")
    return probs


def create_case(session: Session, *, text: str, channel: str, actor: str, kind: str = "appeal",
                urgency: str = "一般", phone: str | None = None, name: str | None = None,
                enterprise: str | None = None, location_text: str | None = None, lon=None, lat=None,
                idempotency_key: str | None = None, at: datetime | None = None) -> tuple[Case, bool]:
    """Record a new case in state *received*. Returns (case, created).

    With an ``idempotency_key`` a retry returns the case created the first time instead of a
    second one. The caller's transaction commit is what makes the case durable; acknowledge
    only after it.
    """
    if idempotency_key:
        existing = session.scalar(select(Case).where(Case.idempotency_key == idempotency_key))
        if existing is not None:
            return existing, False
    probs = validate_intake(text=text, channel=channel, kind=kind, urgency=urgency, lon=lon, lat=lat)
    if probs:
        raise ValidationError(probs)
    at = at or clock.now()
    caller = None
    if phone:
        caller = get_or_create_caller(session, phone, name, at, enterprise)
        caller.case_count += 1
    text = text.strip()
    case = Case(
        version=0, code=new_case_code(at), channel=channel, kind=kind, title=text[:60], text=text,
        caller=caller, location_text=location_text, lon=float(lon) if lon is not None else None,
        lat=float(lat) if lat is not None else None, urgency=urgency, state="received",
        idempotency_key=idempotency_key, created_by=actor, received_at=at, updated_at=at,
        repeat_caller=bool(caller and caller.case_count > 1), assignments=[], transitions=[],
    )
    session.add(case)
    session.flush()
    return case, True


def _loaded(session: Session, case_id: int) -> Case | None:
    """The case if this session already holds it with its assignments (and their extensions)
    and transitions loaded. Re-selecting it would not refresh those attributes anyway (the
    identity map wins), so skipping the round trips changes nothing but the time."""
    from sqlalchemy import inspect

    case = session.identity_map.get(session.identity_key(Case, case_id))
    if case is None:
        return None
    state = inspect(case)
    if state.expired or state.deleted or {"assignments", "transitions"} & state.unloaded:
        return None
    if any("extensions" in inspect(a).unloaded for a in case.assignments):
        return None
    return case


def load_case(session: Session, case_id: int) -> Case:
    cached = _loaded(session, case_id)
    if cached is not None:
        return cached
    case = session.scalar(
        select(Case).where(Case.id == case_id).options(
            selectinload(Case.assignments).selectinload(Assignment.extensions),
            selectinload(Case.transitions),
        )
    )
    if case is None:
        raise NotFound(f"工单 {case_id} 不存在")
    return case


def to_state(case: Case) -> wf.CaseState:
    """The workflow's view of a case row."""
    return wf.CaseState(
        state=case.state, version=case.version, supervised=case.supervised,
        reopen_count=case.reopen_count, satisfaction=case.satisfaction,
        assignments=[
            wf.Assignment(
                department=a.department_code, role=a.role, deadline=a.deadline, state=a.state,
                round=a.round, reply=a.reply, signed_at=a.signed_at, replied_at=a.replied_at,
                extensions=[wf.Extension(e.requested_at, e.requested_by, e.new_deadline, e.reason,
                                         e.status, e.decided_by) for e in a.extensions],
            )
            for a in case.assignments
        ],
        transitions=[wf.Transition(t.at, t.actor, t.action, t.from_state, t.to_state, t.reason,
                                   t.assignment_seq) for t in case.transitions],
    )


def _write_back(case: Case, new: wf.CaseState, at: datetime) -> None:
    case.version = new.version
    case.state, case.supervised = new.state, new.supervised
    case.reopen_count, case.satisfaction = new.reopen_count, new.satisfaction
    case.updated_at = at
    if new.state == "closed" and case.closed_at is None:
        case.closed_at = at
    elif new.state == "dispatched":
        case.closed_at = None  # reopened
    main = new.main()
    if main is not None:
        case.main_department_code = main.department
    for seq, a in enumerate(new.assignments):
        if seq < len(case.assignments):
            row = case.assignments[seq]
        else:
            row = Assignment(seq=seq, department_code=a.department, role=a.role, dispatched_at=at)
            case.assignments.append(row)
        if row.deadline != a.deadline:
            row.warned = row.overdue = False
        row.state, row.deadline, row.round = a.state, a.deadline, a.round
        row.reply, row.signed_at, row.replied_at = a.reply, a.signed_at, a.replied_at
        for i, e in enumerate(a.extensions):
            if i < len(row.extensions):
                row.extensions[i].status, row.extensions[i].decided_by = e.status, e.decided_by
            else:
                row.extensions.append(ExtensionRequest(
                    requested_at=e.requested_at, requested_by=e.requested_by,
                    new_deadline=e.new_deadline, reason=e.reason, status=e.status))
    for seq in range(len(case.transitions), len(new.transitions)):
        t = new.transitions[seq]
        case.transitions.append(TransitionLog(
            seq=seq, at=t.at, actor=t.actor, action=t.action, from_state=t.from_state,
            to_state=t.to_state, reason=t.reason, assignment_seq=t.assignment))


def act(session: Session, case_id: int, action: str, *, actor: str, expected_version: int | None = None,
        at: datetime | None = None, **kwargs) -> Case:
    """Apply one workflow action (``analyse``, ``dispatch``, ``sign``, ``reply``…) to a case.

    ``expected_version`` is the version the actor saw; a stale one is a Conflict. Concurrent
    writers are also caught at flush time by the version column.
    """
    at = at or clock.now()
    case = load_case(session, case_id)
    if expected_version is not None:
        wf.check_version(to_state(case), expected_version)
    method = getattr(wf.Workflow(to_state(case)), action, None)
    if method is None or action.startswith("_") or action == "done":
        raise ValidationError(Problem(f"未知操作 {action!r}", field="action"))
    new = method(at, actor, **kwargs)
    _write_back(case, new, at)
    if action == "follow_up":
        session.add(FollowUp(case_id=case.id, at=at, actor=actor, satisfaction=kwargs["satisfaction"],
                             comment=kwargs.get("comment"), round=new.round - (new.state == "dispatched")))
    try:
        session.flush()
    except (StaleDataError, IntegrityError):
        # a concurrent writer got there first (stale version, or the same assignment seq)
        raise Conflict("工单已被他人同时更新，请刷新后重试") from None
    return case
