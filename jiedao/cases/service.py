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

from sqlalchemy import bindparam, select
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
    """The caller with this phone (created when new), its ``case_count`` unchanged."""
    phone = normalise_phone(phone)
    h = phone_hash(phone)
    caller = session.scalar(select(Caller).where(Caller.phone_hash == h))
    if caller is None:
        caller = Caller(phone_hash=h, phone=phone, name=name, enterprise=enterprise,
                        first_seen=at, case_count=0)
        session.add(caller)
        session.flush()
    return caller


def count_call(session: Session, phone: str, name: str | None, at: datetime,
               enterprise: str | None = None) -> Caller:
    """The caller with this phone with one more case counted, in ONE statement.

    ``INSERT … ON CONFLICT (phone_hash) DO UPDATE SET case_count = case_count + 1
    RETURNING …`` (PostgreSQL and SQLite): a new caller starts at 1; a known one keeps its
    name and first-seen time. Two concurrent first calls from one phone cannot both insert.
    """
    phone = normalise_phone(phone)
    row = session.connection().execute(_caller_upsert(session.get_bind().dialect.name), {
        "phone_hash": phone_hash(phone), "phone": phone, "name": name, "enterprise": enterprise,
        "first_seen": at, "case_count": 1}).one()._asdict()
    return _adopt_row(session, Caller, row)


_UPSERTS: dict[str, object] = {}


def _caller_upsert(dialect: str):
    """The caller upsert statement of a dialect, built once (a cached compiled form)."""
    stmt = _UPSERTS.get(dialect)
    if stmt is None:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        table = Caller.__table__
        stmt = _UPSERTS[dialect] = dialect_insert(table).on_conflict_do_update(
            index_elements=[table.c.phone_hash], set_={"case_count": table.c.case_count + 1},
        ).returning(*table.c)
    return stmt


def _adopt_row(session: Session, model, row: dict):
    """The session's object for a row just written by a Core statement (no reload)."""
    from sqlalchemy.orm import make_transient_to_detached
    from sqlalchemy.orm.attributes import set_committed_value

    obj = session.identity_map.get(session.identity_key(model, row["id"]))
    if obj is not None:
        for k, v in row.items():
            set_committed_value(obj, k, v)
        return obj
    obj = model(**row)
    make_transient_to_detached(obj)
    session.add(obj)
    return obj


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


_BY_KEY = select(Case.id).where(Case.idempotency_key == bindparam("key"))


def case_by_key(session: Session, idempotency_key: str) -> Case | None:
    """The case recorded with this idempotency key (assignments and transitions loaded)."""
    case_id = session.connection().scalar(_BY_KEY, {"key": idempotency_key})
    return None if case_id is None else load_case(session, case_id)


def create_case(session: Session, *, text: str, channel: str, actor: str, kind: str = "appeal",
                urgency: str = "一般", phone: str | None = None, name: str | None = None,
                enterprise: str | None = None, location_text: str | None = None, lon=None, lat=None,
                idempotency_key: str | None = None, at: datetime | None = None,
                flush: bool = True, check_key: bool = True) -> tuple[Case, bool]:
    """Record a new case in state *received*. Returns (case, created).

    With an ``idempotency_key`` a retry returns the case created the first time instead of a
    second one (a concurrent twin loses on the key's unique index at flush or commit). The
    caller's transaction commit is what makes the case durable; acknowledge only after it.
    ``flush=False`` returns the new case outside the session (no id yet; ``caller_id`` is
    set) so that intake writes it once, with everything the analysis adds, by
    :func:`write_new_case`. ``check_key=False`` (with ``flush=False``, on PostgreSQL) skips
    the look-up of the key: the write then skips a taken key and raises :class:`KeyTaken`
    (roll back and retry with the look-up) — one round trip less for the usual fresh key.
    """
    if idempotency_key and (check_key or flush or session.get_bind().dialect.name != "postgresql"):
        existing = case_by_key(session, idempotency_key)
        if existing is not None:
            return existing, False
    probs = validate_intake(text=text, channel=channel, kind=kind, urgency=urgency, lon=lon, lat=lat)
    if probs:
        raise ValidationError(probs)
    at = at or clock.now()
    caller = count_call(session, phone, name, at, enterprise) if phone else None
    text = text.strip()
    case = Case(
        version=0, code=new_case_code(at), channel=channel, kind=kind, title=text[:60], text=text,
        caller=caller, caller_id=caller.id if caller else None, location_text=location_text,
        lon=float(lon) if lon is not None else None, lat=float(lat) if lat is not None else None,
        urgency=urgency, state="received", idempotency_key=idempotency_key, created_by=actor,
        received_at=at, updated_at=at, repeat_caller=bool(caller and caller.case_count > 1),
        supervised=False, reopen_count=0, satisfaction=None, closed_at=None,
        main_department_code=None, assignments=[], transitions=[],
    )
    if flush:
        session.add(case)
        session.flush()
    return case, True


# -- one statement for a new case with its assignments and transition log (PostgreSQL)

_WRITE: dict = {}


class KeyTaken(Exception):
    """The idempotency key of a new case is already taken (by a committed or a concurrent
    intake); nothing was written. Roll back and look the key up (``check_key=True``)."""


def _write_plan(dialect):
    """(SQL, case columns with bind processors, child columns) of the one-statement write.

    The case row is 30 parameters; each child table is ONE JSON parameter expanded by
    ``json_to_recordset`` — so the SQL is the same whatever the number of assignments and
    transitions, short and with few parameters: psycopg caches its parsing and prepares it
    on the server after a few uses.
    """
    plan = _WRITE.get(dialect.name)
    if plan is not None:
        return plan
    ctab, atab, ttab = Case.__table__, Assignment.__table__, TransitionLog.__table__
    ccols = []
    for col in ctab.columns:
        if col.name != "id":
            impl = col.type.dialect_impl(dialect)
            ccols.append((col, impl.bind_processor(dialect)))
    children = {}
    parts = [f"c AS (INSERT INTO {ctab.name} ({', '.join(c.name for c, _p in ccols)}) "
             f"VALUES ({', '.join(['%s'] * len(ccols))}) "
             "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id)"]
    for alias, table in (("a", atab), ("t", ttab)):
        cols = [c for c in table.columns if c.name not in ("id", "case_id")]
        children[alias] = cols
        names = ", ".join(c.name for c in cols)
        spec = ", ".join(f"{c.name} {dialect.type_compiler_instance.process(c.type)}" for c in cols)
        parts.append(f"{alias} AS (INSERT INTO {table.name} (case_id, {names}) SELECT c.id, "
                     f"{', '.join('x.' + c.name for c in cols)} FROM c, "
                     f"json_to_recordset(%s::json) AS x({spec}) RETURNING id, seq)")
    sql = ("WITH " + ", ".join(parts) + " SELECT (SELECT id FROM c), "
           "(SELECT array_agg(id ORDER BY seq) FROM a), (SELECT array_agg(id ORDER BY seq) FROM t)")
    plan = _WRITE[dialect.name] = (sql, ccols, children)
    return plan


def _value(obj, col):
    """A column's value on a new ORM object; an unset column gets its scalar default, set on
    the object too so that it holds every column once adopted by the session."""
    if col.key in obj.__dict__:
        return obj.__dict__[col.key]
    v = col.default.arg if col.default is not None else None
    setattr(obj, col.key, v)
    return v


def _json_rows(objs, cols) -> str:
    import json

    rows = []
    for obj in objs:
        row = {}
        for col in cols:
            v = _value(obj, col)
            row[col.name] = v.isoformat() if isinstance(v, datetime) else v
        rows.append(row)
    return json.dumps(rows, ensure_ascii=False)


def _scalar_defaults_only() -> bool:
    """Whether every column of the three tables has at most a scalar default (checked once:
    the write plan cannot run a Python callable default)."""
    ok = _WRITE.get("scalar_defaults")
    if ok is None:
        ok = _WRITE["scalar_defaults"] = all(
            col.default is None or col.default.is_scalar
            for table in (Case.__table__, Assignment.__table__, TransitionLog.__table__)
            for col in table.columns)
    return ok


def _can_write_in_one(session: Session, case: Case) -> bool:
    from sqlalchemy import inspect

    if session.get_bind().dialect.name != "postgresql" or not inspect(case).transient:
        return False
    if not _scalar_defaults_only():
        return False
    seqs = [a.seq for a in case.assignments], [t.seq for t in case.transitions]
    return (not any(a.extensions for a in case.assignments)
            and all(len(set(x)) == len(x) for x in seqs))


def write_new_case(session: Session, case: Case) -> None:
    """Write a new case built in memory (``create_case(flush=False)``) with its assignments and
    transitions; the case is then a persistent object of ``session`` with its id.

    On PostgreSQL this is ONE statement — ``WITH c AS (INSERT … RETURNING id), a AS (INSERT
    INTO cases_assignment SELECT c.id, x.* FROM c, json_to_recordset(…)), t AS (…) SELECT
    ids`` — and the objects are adopted by the session as if just loaded (no ORM unit of
    work, no reload). Elsewhere (SQLite: no round trips to save) the ORM flushes them (three
    statements). A taken idempotency key raises :class:`KeyTaken` (PostgreSQL: the insert
    does nothing) or IntegrityError (here or at commit); nothing of the case is written.
    """
    from sqlalchemy.orm import make_transient_to_detached

    if not _can_write_in_one(session, case):
        session.add(case)
        session.flush()
        return
    sql, ccols, children = _write_plan(session.get_bind().dialect)
    params = []
    for col, proc in ccols:
        v = _value(case, col)
        params.append(proc(v) if proc is not None and v is not None else v)
    params.append(_json_rows(case.assignments, children["a"]))
    params.append(_json_rows(case.transitions, children["t"]))
    case_id, a_ids, t_ids = session.connection().exec_driver_sql(sql, tuple(params)).one()
    if case_id is None:
        raise KeyTaken(case.idempotency_key)
    case.id = case_id
    for objs, ids in ((case.assignments, a_ids), (case.transitions, t_ids)):
        ordered = sorted(objs, key=lambda o: o.seq)
        for obj, new_id in zip(ordered, ids or (), strict=True):
            obj.id, obj.case_id = new_id, case_id
    for obj in (case, *case.assignments, *case.transitions):
        make_transient_to_detached(obj)
    session.add(case)


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
            row = Assignment(seq=seq, department_code=a.department, role=a.role, dispatched_at=at,
                             sign_deadline=None, warned=False, overdue=False, extensions=[])
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


def apply_action(case: Case, action: str, *, actor: str, at: datetime, **kwargs) -> wf.CaseState:
    """Run one workflow action on ``case`` in memory (rows changed or added, nothing flushed)."""
    return apply_actions(case, [(action, kwargs)], actor=actor, at=at)


def apply_actions(case: Case, steps, *, actor: str, at: datetime) -> wf.CaseState:
    """Run workflow actions ``[(action, kwargs), …]`` one after the other on ``case`` in
    memory; the rows take the final state once (as many version steps as actions)."""
    state = to_state(case)
    for action, kwargs in steps:
        method = getattr(wf.Workflow(state), action, None)
        if method is None or action.startswith("_") or action == "done":
            raise ValidationError(Problem(f"未知操作 {action!r}", field="action"))
        state = method(at, actor, **kwargs)
    _write_back(case, state, at)
    return state


def act(session: Session, case_id: int | Case, action: str, *, actor: str,
        expected_version: int | None = None, at: datetime | None = None, **kwargs) -> Case:
    """Apply one workflow action (``analyse``, ``dispatch``, ``sign``, ``reply``…) to a case.

    ``expected_version`` is the version the actor saw; a stale one is a Conflict. Concurrent
    writers are also caught at flush time by the version column. ``case_id`` may be a case
    of this session; a new one that is not flushed yet is acted on as it is.
    """
    at = at or clock.now()
    if isinstance(case_id, Case):
        case = case_id if case_id.id is None else load_case(session, case_id.id)
    else:
        case = load_case(session, case_id)
    if expected_version is not None:
        wf.check_version(to_state(case), expected_version)
    new = apply_action(case, action, actor=actor, at=at, **kwargs)
    if action == "follow_up":
        session.add(FollowUp(case_id=case.id, at=at, actor=actor, satisfaction=kwargs["satisfaction"],
                             comment=kwargs.get("comment"), round=new.round - (new.state == "dispatched")))
    try:
        session.flush()
    except (StaleDataError, IntegrityError):
        # a concurrent writer got there first (stale version, or the same assignment seq)
        raise Conflict("工单已被他人同时更新，请刷新后重试") from None
    return case
