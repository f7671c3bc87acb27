"""Read-side queries of the case screens: queues, inbox, timelines, area overviews.

Every query is limited to what the principal may see. A case is visible to district-wide
principals, to street/community staff of the place (``street_code`` / ``community_code``) and
to a department that has (or had) an assignment on it. A street office (``JD`` + street code)
is worked by the staff of that street, so street staff see and handle its assignments too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, exists, false, func, or_, select
from sqlalchemy.orm import Session, selectinload

from jiedao.cases.models import CHANNELS, Assignment, Case, ExtensionRequest, FollowUp
from jiedao.cases.sla import OPEN_STATES, used_fraction
from jiedao.cases.workflow import ASSIGNMENT_STATES, CASE_STATES
from jiedao.catalog.calendar import WorkCalendar
from jiedao.errors import NotFound, PermissionDenied

STATE_BADGE = {
    "received": "gray", "analysed": "amber", "dispatched": "blue", "returned": "red",
    "signed": "blue", "in_progress": "blue", "replied": "green", "closed": "green",
    "followed_up": "gray",
}
OPEN_CASE_STATES = ("received", "analysed", "dispatched", "returned", "signed", "in_progress",
                    "replied")
ACTION_LABELS = {
    "analyse": "研判", "dispatch": "派单", "reassign": "改派", "sign": "签收", "start": "开始办理",
    "return": "退单", "reply": "答复", "request_extension": "申请延期",
    "approve_extension": "批准延期", "reject_extension": "驳回延期", "supervise": "督办",
    "unsupervise": "取消督办", "close": "办结", "follow_up": "回访", "reopen": "重办",
}
ROLE_LABELS = {"main": "主办", "co": "协办"}
WARN_FRACTION = 0.75
# Operator queues: key → (label, case states, hint)
QUEUES = {
    "triage": ("待研判/待派单", ("received", "analysed"), "研判结果需人工确认后派单"),
    "returned": ("退单待处理", ("returned",), "部门退回，需改派或重新派单"),
    "replied": ("待办结", ("replied",), "部门已答复，核实后办结"),
    "closed": ("待回访", ("closed",), "已办结，回访诉求人满意度"),
}


# ---------------------------------------------------------------- scope


def handled_department(principal) -> str | None:
    """The department whose assignments ``principal`` works on: a handler's own department,
    or the street office of a street's staff; None for everyone else."""
    if principal is None:
        return None
    if principal.role == "handler" and principal.scope_level == "department":
        return principal.scope_code
    if principal.role == "street_staff" and principal.scope_level == "street":
        return "JD" + principal.scope_code
    return None


def restrict_cases(stmt, principal):
    """Limit a SELECT over :class:`Case` to the cases ``principal`` may see."""
    if principal is None:
        return stmt.where(false())
    level, code = principal.scope_level, principal.scope_code
    if level == "district":
        return stmt
    if not code:
        return stmt.where(false())
    if level == "street":
        office = exists().where(Assignment.case_id == Case.id,
                                Assignment.department_code == "JD" + code)
        return stmt.where(or_(Case.street_code == code, office))
    if level == "community":
        return stmt.where(Case.community_code == code)
    if level == "department":
        return stmt.where(exists().where(Assignment.case_id == Case.id,
                                         Assignment.department_code == code))
    return stmt.where(false())


def case_visible(principal, case: Case) -> bool:
    """The single-case version of :func:`restrict_cases`."""
    if principal is None:
        return False
    level, code = principal.scope_level, principal.scope_code
    if level == "district":
        return True
    if not code:
        return False
    depts = {a.department_code for a in case.assignments}
    if level == "street":
        return case.street_code == code or ("JD" + code) in depts
    if level == "community":
        return case.community_code == code
    if level == "department":
        return code in depts
    return False


def get_case(session: Session, principal, case_id: int) -> Case:
    """The case with its assignments and log, or NotFound / PermissionDenied (403)."""
    case = session.scalar(select(Case).where(Case.id == case_id).options(
        selectinload(Case.assignments).selectinload(Assignment.extensions),
        selectinload(Case.transitions), selectinload(Case.caller)))
    if case is None:
        raise NotFound(f"工单 {case_id} 不存在")
    if not case_visible(principal, case):
        raise PermissionDenied("无权查看：该工单不在您的数据范围内")
    return case


# ---------------------------------------------------------------- names


def department_names(session: Session) -> dict[str, str]:
    """Department code → name (district departments, utilities and street offices)."""
    from jiedao.catalog.models import Department

    return dict(session.execute(select(Department.code, Department.name)).all())


def matter_names(session: Session, codes) -> dict[str, dict]:
    """Matter code → {name, path, level} for the given codes."""
    from jiedao.catalog.models import Matter

    codes = [c for c in set(codes) if c]
    if not codes:
        return {}
    out = {}
    for m in session.scalars(select(Matter).where(Matter.code.in_(codes))):
        out[m.code] = {"name": m.name, "path": f"{m.level1} / {m.level2} / {m.name}",
                       "level": m.handling_level}
    return out


def place_names(session: Session, case: Case) -> dict:
    """Names of the case's street, community, grid and standard address (None when unknown)."""
    from jiedao.geo.models import Address, Community, Grid, Street

    out = {"street": None, "community": None, "grid": None, "address": None}
    if case.street_code and (st := session.get(Street, case.street_code)):
        out["street"] = st.name
    if case.community_code and (c := session.get(Community, case.community_code)):
        out["community"] = c.name
    if case.grid_code and (g := session.get(Grid, case.grid_code)):
        out["grid"] = g.name
    if case.address_code and (a := session.get(Address, case.address_code)):
        out["address"] = a.full
    return out


# ---------------------------------------------------------------- SLA


@dataclass(frozen=True)
class SlaStatus:
    """How much time an assignment has left, for the countdown badge."""

    text: str  # e.g. "剩余 2个工作日3小时" / "已超时 5小时"
    css: str  # green / amber / red / gray
    fraction: float  # share of the allowed time used
    overdue: bool
    warned: bool


def _duration(seconds: float, day_seconds: float | None) -> str:
    seconds = max(int(seconds), 0)
    minutes = seconds // 60
    if day_seconds:
        days, rest = divmod(seconds, int(day_seconds))
        hours = rest // 3600
        mins = (rest % 3600) // 60
        if days:
            return f"{days}个工作日" + (f"{hours}小时" if hours else "")
        return f"{hours}小时{mins}分" if hours else f"{mins}分钟"
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}天" + (f"{hours}小时" if hours else "")
    return f"{hours}小时{mins}分" if hours else f"{mins}分钟"


def sla_status(calendar: WorkCalendar, a: Assignment, now: datetime, working: bool = True) -> SlaStatus:
    """Remaining time of an assignment (working time when its SLA is in working units)."""
    if a.state not in OPEN_STATES:
        if a.state == "replied" and a.replied_at:
            late = a.replied_at > a.deadline
            return SlaStatus("超时答复" if late else "按时答复", "red" if late else "green",
                             1.0, late, a.warned)
        return SlaStatus(ASSIGNMENT_STATES.get(a.state, a.state), "gray", 0.0, False, False)
    frac = used_fraction(calendar, a.dispatched_at, a.deadline, now)
    if now >= a.deadline or a.overdue:
        if working:
            over = calendar.working_seconds_between(a.deadline, now)
            text = "已超时 " + (_duration(over, calendar.day_seconds) if over >= 60
                               else _duration((now - a.deadline).total_seconds(), None))
        else:
            text = "已超时 " + _duration((now - a.deadline).total_seconds(), None)
        return SlaStatus(text, "red", frac, True, True)
    if working:
        left = calendar.working_seconds_between(now, a.deadline)
        text = "剩余 " + _duration(left, calendar.day_seconds)
    else:
        text = "剩余 " + _duration((a.deadline - now).total_seconds(), None)
    warned = a.warned or frac >= WARN_FRACTION
    return SlaStatus(text, "amber" if warned else "green", frac, False, warned)


def sla_is_working(catalog, matter_code: str | None, urgency: str) -> bool:
    """Whether the matter's SLA for ``urgency`` counts working time (default yes)."""
    if catalog is None or not matter_code:
        return True
    try:
        return catalog.sla_for(matter_code, urgency).working
    except Exception:
        return True


# ---------------------------------------------------------------- lists


@dataclass
class CaseRow:
    id: int
    code: str
    title: str
    state: str
    state_label: str
    badge: str
    urgency: str
    channel: str
    matter: str | None
    department: str | None
    street: str | None
    received_at: datetime
    supervised: bool
    repeat_caller: bool
    overdue: bool = False
    extra: dict = field(default_factory=dict)


def _rows(session: Session, cases: list[Case]) -> list[CaseRow]:
    from jiedao.geo.models import Street

    depts = department_names(session)
    matters = matter_names(session, [c.matter_code for c in cases])
    streets = dict(session.execute(select(Street.code, Street.name)).all()) if cases else {}
    overdue_ids = set()
    if cases:
        overdue_ids = set(session.scalars(select(Assignment.case_id).where(
            Assignment.case_id.in_([c.id for c in cases]), Assignment.overdue.is_(True),
            Assignment.state.in_(OPEN_STATES))))
    return [CaseRow(
        id=c.id, code=c.code, title=c.title, state=c.state,
        state_label=CASE_STATES.get(c.state, c.state), badge=STATE_BADGE.get(c.state, "gray"),
        urgency=c.urgency, channel=CHANNELS.get(c.channel, c.channel),
        matter=(matters.get(c.matter_code) or {}).get("name"),
        department=depts.get(c.main_department_code) if c.main_department_code else None,
        street=streets.get(c.street_code) if c.street_code else None,
        received_at=c.received_at, supervised=c.supervised, repeat_caller=c.repeat_caller,
        overdue=c.id in overdue_ids) for c in cases]


def queue_counts(session: Session, principal) -> dict[str, int]:
    """Number of cases in each operator queue (see :data:`QUEUES`)."""
    stmt = restrict_cases(select(Case.state, func.count()).group_by(Case.state), principal)
    by_state = dict(session.execute(stmt).all())
    return {k: sum(by_state.get(s, 0) for s in states) for k, (_, states, _) in QUEUES.items()}


def queue(session: Session, principal, name: str, limit: int = 50) -> list[CaseRow]:
    """Cases waiting in operator queue ``name`` (oldest first)."""
    if name not in QUEUES:
        raise NotFound(f"队列 {name} 不存在")
    states = QUEUES[name][1]
    stmt = restrict_cases(select(Case).where(Case.state.in_(states)), principal)
    cases = list(session.scalars(stmt.order_by(Case.updated_at, Case.id).limit(limit)))
    return _rows(session, cases)


def case_list(session: Session, principal, *, street: str | None = None,
              community: str | None = None, grid: str | None = None, state: str | None = None,
              q: str | None = None, overdue: bool = False, matter_level1: str | None = None,
              limit: int = 50, offset: int = 0) -> tuple[list[CaseRow], int]:
    """A filtered page of visible cases (newest first) and the total count."""
    from jiedao.catalog.models import Matter

    stmt = restrict_cases(select(Case), principal)
    if street:
        stmt = stmt.where(Case.street_code == street)
    if community:
        stmt = stmt.where(Case.community_code == community)
    if grid:
        stmt = stmt.where(Case.grid_code == grid)
    if state == "open":
        stmt = stmt.where(Case.state.in_(OPEN_CASE_STATES))
    elif state:
        stmt = stmt.where(Case.state == state)
    if q:
        like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(or_(Case.text.like(like, escape="\\"), Case.code == q.strip().upper(),
                              Case.location_text.like(like, escape="\\")))
    if overdue:
        stmt = stmt.where(exists().where(Assignment.case_id == Case.id,
                                         Assignment.overdue.is_(True),
                                         Assignment.state.in_(OPEN_STATES)))
    if matter_level1:
        stmt = stmt.where(Case.matter_code.in_(select(Matter.code).where(
            Matter.level1 == matter_level1)))
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    cases = list(session.scalars(stmt.order_by(Case.received_at.desc(), Case.id.desc())
                                 .limit(limit).offset(offset)))
    return _rows(session, cases), total


@dataclass
class InboxRow:
    case_id: int
    code: str
    title: str
    case_state: str
    case_state_label: str
    version: int
    seq: int
    role: str
    state: str
    state_label: str
    urgency: str
    matter: str | None
    place: str | None
    dispatched_at: datetime
    deadline: datetime
    sla: SlaStatus
    supervised: bool
    pending_extension: bool


INBOX_TABS = {
    "todo": ("待签收", ("pending",)),
    "doing": ("办理中", ("signed", "in_progress")),
    "done": ("已答复", ("replied",)),
    "returned": ("已退回", ("returned",)),
}


def inbox(session: Session, principal, tab: str, *, calendar: WorkCalendar, now: datetime,
          catalog=None, limit: int = 100) -> tuple[list[InboxRow], dict[str, int]]:
    """The department's assignments of the current round in ``tab`` (most urgent first) and
    the count of every tab."""
    dept = handled_department(principal)
    if dept is None:
        raise PermissionDenied("只有部门处置人和街道工作人员有待办")
    current = and_(Assignment.department_code == dept,
                   Assignment.round == Case.reopen_count + 1)
    counts_stmt = (select(Assignment.state, func.count()).join(Case, Case.id == Assignment.case_id)
                   .where(current).group_by(Assignment.state))
    by_state = dict(session.execute(counts_stmt).all())
    counts = {k: sum(by_state.get(s, 0) for s in states) for k, (_, states) in INBOX_TABS.items()}
    states = INBOX_TABS.get(tab, INBOX_TABS["todo"])[1]
    order = Assignment.deadline if tab in ("todo", "doing") else Assignment.id.desc()
    rows = session.execute(
        select(Assignment, Case).join(Case, Case.id == Assignment.case_id)
        .where(current, Assignment.state.in_(states)).order_by(order).limit(limit)
        .options(selectinload(Assignment.extensions))).all()
    matters = matter_names(session, [c.matter_code for _, c in rows])
    out = []
    for a, c in rows:
        out.append(InboxRow(
            case_id=c.id, code=c.code, title=c.title, case_state=c.state,
            case_state_label=CASE_STATES.get(c.state, c.state), version=c.version, seq=a.seq,
            role=ROLE_LABELS.get(a.role, a.role), state=a.state,
            state_label=ASSIGNMENT_STATES.get(a.state, a.state), urgency=c.urgency,
            matter=(matters.get(c.matter_code) or {}).get("name"), place=c.location_text,
            dispatched_at=a.dispatched_at, deadline=a.deadline,
            sla=sla_status(calendar, a, now, sla_is_working(catalog, c.matter_code, c.urgency)),
            supervised=c.supervised,
            pending_extension=any(e.status == "pending" for e in a.extensions)))
    return out, counts


@dataclass
class ExtensionRow:
    id: int
    case_id: int
    code: str
    title: str
    version: int
    seq: int
    department: str
    requested_at: datetime
    requested_by: str
    old_deadline: datetime
    new_deadline: datetime
    reason: str


def pending_extensions(session: Session, principal, limit: int = 100) -> list[ExtensionRow]:
    """Extension requests waiting for a decision, in the principal's scope (oldest first)."""
    depts = department_names(session)
    stmt = (select(ExtensionRequest, Assignment, Case)
            .join(Assignment, Assignment.id == ExtensionRequest.assignment_id)
            .join(Case, Case.id == Assignment.case_id)
            .where(ExtensionRequest.status == "pending")
            .order_by(ExtensionRequest.requested_at).limit(limit))
    stmt = restrict_cases(stmt, principal)
    return [ExtensionRow(
        id=e.id, case_id=c.id, code=c.code, title=c.title, version=c.version, seq=a.seq,
        department=depts.get(a.department_code, a.department_code), requested_at=e.requested_at,
        requested_by=e.requested_by, old_deadline=a.deadline, new_deadline=e.new_deadline,
        reason=e.reason) for e, a, c in session.execute(stmt).all()]


# ---------------------------------------------------------------- one case


def timeline(session: Session, case: Case) -> list[dict]:
    """The transition log as display rows: time, actor (with display name), action, from → to,
    reason and the department of the assignment concerned."""
    from jiedao.auth.models import User

    actors = {t.actor for t in case.transitions}
    names = dict(session.execute(select(User.username, User.display_name)
                                 .where(User.username.in_(actors))).all()) if actors else {}
    depts = department_names(session)
    out = []
    for t in case.transitions:
        dept = None
        if t.assignment_seq is not None and t.assignment_seq < len(case.assignments):
            dept = depts.get(case.assignments[t.assignment_seq].department_code)
        out.append({
            "seq": t.seq, "at": t.at, "actor": t.actor, "actor_name": names.get(t.actor),
            "action": t.action, "action_label": ACTION_LABELS.get(t.action, t.action),
            "from": CASE_STATES.get(t.from_state, t.from_state),
            "to": CASE_STATES.get(t.to_state, t.to_state), "changed": t.from_state != t.to_state,
            "reason": t.reason, "department": dept})
    return out


def followups(session: Session, case_id: int) -> list[FollowUp]:
    return list(session.scalars(select(FollowUp).where(FollowUp.case_id == case_id)
                                .order_by(FollowUp.at, FollowUp.id)))


# ---------------------------------------------------------------- area


def area_overview(session: Session, principal, *, street: str | None = None,
                  community: str | None = None, now: datetime | None = None) -> dict:
    """Counts by state, open cases per sub-area (grid, or street for the whole district) and
    the overdue list for the principal's area (optionally narrowed to ``street``)."""
    conds = []
    if street:
        conds.append(Case.street_code == street)
    if community:
        conds.append(Case.community_code == community)
    by_state = dict(session.execute(
        restrict_cases(select(Case.state, func.count()).where(*conds).group_by(Case.state),
                       principal)).all())
    key = Case.grid_code if street or community else Case.street_code
    open_by_area = dict(session.execute(
        restrict_cases(select(key, func.count()).where(*conds, Case.state.in_(OPEN_CASE_STATES),
                                                       key.is_not(None)).group_by(key),
                       principal)).all())
    overdue_rows, overdue_total = case_list(session, principal, street=street,
                                            community=community, overdue=True, limit=20)
    return {
        "by_state": {s: by_state.get(s, 0) for s in CASE_STATES},
        "total": sum(by_state.values()),
        "open": sum(by_state.get(s, 0) for s in OPEN_CASE_STATES),
        "open_by_area": open_by_area,
        "overdue": overdue_rows,
        "overdue_total": overdue_total,
    }
