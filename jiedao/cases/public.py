"""Public pages (no login): submit an appeal, track it by its code, rate the handling.

* ``/public/submit``: text, place, phone, name. There is no session, so the form carries a
  signed, time-limited token (HMAC with the instance secret) instead of a session CSRF token;
  its random nonce is also the idempotency key, so a double click or a replayed form yields
  the same case. Submissions per client IP are limited per hour, counted in the database
  (the IP itself is not stored: only a keyed hash in ``created_by``).
* ``/public/track?code=…``: state and timeline, with no personal data (no text, no names, no
  phone, no staff accounts) — only the category, departments and times.
* ``/public/rate``: the caller rates a closed case with the code and the last four digits of
  the phone. Wrong answers are counted (audit log) and the case is locked for rating after
  five within a day.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jiedao import clock
from jiedao.auth import audit
from jiedao.auth.deps import client_ip
from jiedao.cases import service
from jiedao.cases import workflow as wf
from jiedao.cases.models import Case
from jiedao.catalog.models import Department, Matter
from jiedao.config import get_settings
from jiedao.errors import Conflict, ValidationError
from jiedao.web.templating import render

router = APIRouter(prefix="/public", include_in_schema=False)

FORM_MAX_AGE = 2 * 3600  # seconds a form token stays valid
RATE_LIMIT_PER_HOUR = 20  # submissions per client IP (override: app.state.public_rate_limit)
RATE_FAILURES_MAX = 5  # wrong phone digits per case per day before rating locks
CODE_RE = re.compile(r"^[0-9A-Z]{16}$")
MAX_PUBLIC_TEXT = 2000
ACTOR = "citizen"
PUBLIC_STEPS = {
    "analyse": "已受理，智能研判完成",
    "dispatch": "已派单至 {dept}",
    "reassign": "已改派至 {dept}",
    "sign": "{dept} 已签收",
    "start": "{dept} 开始办理",
    "return": "{dept} 退回，正在重新派单",
    "reply": "{dept} 已答复",
    "request_extension": "{dept} 申请延期",
    "approve_extension": "延期申请已批准",
    "reject_extension": "延期申请未获批准",
    "supervise": "已列入督办",
    "unsupervise": "已撤销督办",
    "close": "已办结",
    "follow_up": "已回访",
    "reopen": "回访不满意，重新办理（{dept}）",
}


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(get_settings().secret_key, salt="jiedao.public-form")


def form_token(purpose: str) -> str:
    """A signed token for one public form: purpose + a random nonce."""
    return _serializer().dumps({"p": purpose, "n": secrets.token_urlsafe(16)})


def check_form_token(token: str | None, purpose: str) -> str | None:
    """The nonce of a valid, unexpired token for ``purpose``; None otherwise."""
    if not token or len(token) > 300:
        return None
    try:
        data = _serializer().loads(token, max_age=FORM_MAX_AGE)
    except (SignatureExpired, BadSignature):
        return None
    if not isinstance(data, dict) or data.get("p") != purpose or not isinstance(data.get("n"), str):
        return None
    return data["n"]


def ip_tag(ip: str | None) -> str:
    """``public:<keyed hash of the IP>`` — counts submissions without storing the address."""
    key = get_settings().secret_key.encode()
    return "public:" + hmac.new(key, (ip or "?").encode(), hashlib.sha256).hexdigest()[:16]


def recent_submissions(s: Session, tag: str, within: timedelta = timedelta(hours=1)) -> int:
    since = clock.now() - within
    return s.scalar(select(func.count()).select_from(Case).where(
        Case.created_by == tag, Case.received_at >= since)) or 0


def public_timeline(s: Session, case: Case) -> dict:
    """What anyone holding the code may see: category, state, departments, times."""
    depts = dict(s.execute(select(Department.code, Department.name).where(
        Department.code.in_({a.department_code for a in case.assignments} or {""}))).all())
    steps = [{"at": case.received_at, "label": "诉求已提交"}]
    for t in case.transitions:
        a = case.assignments[t.assignment_seq] if t.assignment_seq is not None and \
            t.assignment_seq < len(case.assignments) else None
        label = PUBLIC_STEPS.get(t.action, wf.CASE_STATES.get(t.to_state, t.to_state))
        dept = depts.get(a.department_code, "承办部门") if a is not None else "承办部门"
        steps.append({"at": t.at, "label": label.format(dept=dept)})
    matter = s.get(Matter, case.matter_code) if case.matter_code else None
    main = next((a for a in reversed(case.assignments)
                 if a.role == "main" and a.state in wf.ACTIVE), None)
    return {
        "code": case.code,
        "received_at": case.received_at,
        "state": case.state,
        "state_label": wf.CASE_STATES.get(case.state, case.state),
        "category": f"{matter.level1} · {matter.name}" if matter else "待分类",
        "department": depts.get(main.department_code) if main else None,
        "deadline": main.deadline if main and case.state not in ("closed", "followed_up") else None,
        "satisfaction": case.satisfaction,
        "can_rate": case.state == "closed",
        "steps": steps,
    }


def _find(s: Session, code: str) -> Case | None:
    if not CODE_RE.match(code):
        return None
    case_id = s.scalar(select(Case.id).where(Case.code == code))
    return service.load_case(s, case_id) if case_id else None


# ---------------------------------------------------------------- submit


def _submit_form(request: Request, values: dict, errors: dict, status: int = 200):
    return render(request, "cases/public_submit.html", {
        "values": values, "errors": errors, "form_token": form_token("submit"),
        "max_text": MAX_PUBLIC_TEXT}, status_code=status)


@router.get("/submit")
def submit_page(request: Request):
    """The public appeal form."""
    return _submit_form(request, {}, {})


@router.post("/submit")
def submit_post(
    request: Request,
    text: Annotated[str, Form(max_length=100_000)] = "",
    place: Annotated[str, Form(max_length=1000)] = "",
    phone: Annotated[str, Form(max_length=100)] = "",
    name: Annotated[str, Form(max_length=200)] = "",
    form_token_: Annotated[str, Form(alias="form_token", max_length=400)] = "",
    website: Annotated[str, Form(max_length=200)] = "",  # honeypot: people leave it empty
):
    """Take the appeal in through the pipeline, commit, then show the tracking code."""
    values = {"text": text, "place": place, "phone": phone, "name": name}
    nonce = check_form_token(form_token_, "submit")
    if nonce is None or website:
        return _submit_form(request, values, {
            "form": "页面已过期或校验失败，请重新提交（内容已保留）"}, 403)
    errors = {}
    text, place, name = text.strip(), place.strip(), name.strip()
    if not text:
        errors["text"] = "请填写诉求内容"
    elif len(text) > MAX_PUBLIC_TEXT:
        errors["text"] = f"诉求内容过长（{len(text)} 字，上限 {MAX_PUBLIC_TEXT} 字）"
    if len(place) > 300:
        errors["place"] = "地点过长（上限 300 字）"
    if len(name) > 64:
        errors["name"] = "姓名过长（上限 64 字）"
    if not phone.strip():
        errors["phone"] = "请填写手机号码，用于回访和评价"
    else:
        try:
            phone = service.normalise_phone(phone)
        except ValidationError:
            errors["phone"] = "手机号码格式不正确"
    if errors:
        return _submit_form(request, values, errors, 422)
    from jiedao.cases.api import get_pipeline

    pipeline = get_pipeline(request.app)
    tag = ip_tag(client_ip(request))
    limit = getattr(request.app.state, "public_rate_limit", RATE_LIMIT_PER_HOUR)
    key = f"public:{nonce}"
    with request.app.state.db.session() as s:
        existing = s.scalar(select(Case.code).where(Case.idempotency_key == key))
        if existing is None and recent_submissions(s, tag) >= limit:
            return _submit_form(request, values, {
                "form": "提交过于频繁，请稍后再试；紧急情况请拨打 12345 热线"}, 429)
        try:
            case, _created = pipeline.submit(
                s, text=text, channel="web", actor=tag, location_text=place or None,
                phone=phone, name=name or None, idempotency_key=key)
        except ValidationError as e:
            return _submit_form(request, values, {p.field or "form": p.message
                                                  for p in e.problems}, 422)
        code = case.code
    # committed: now acknowledge
    return render(request, "cases/public_submitted.html", {"code": code}, status_code=201)


# ---------------------------------------------------------------- track


@router.get("/track")
def track_page(request: Request,
               code: Annotated[str | None, Query(max_length=40)] = None):
    """Status and timeline of a case by its code (no personal data)."""
    ctx = {"code": (code or "").strip().upper(), "case": None, "error": None}
    if code:
        with request.app.state.db.session() as s:
            case = _find(s, ctx["code"])
            if case is None:
                ctx["error"] = "未找到该查询码对应的诉求，请核对后重试"
            else:
                ctx["case"] = public_timeline(s, case)
    return render(request, "cases/public_track.html", ctx,
                  status_code=404 if ctx["error"] else 200)


# ---------------------------------------------------------------- rate


def _rate_form(request: Request, values: dict, errors: dict, status: int = 200):
    return render(request, "cases/public_rate.html", {
        "values": values, "errors": errors, "form_token": form_token("rate"),
        "choices": wf.SATISFACTION}, status_code=status)


@router.get("/rate")
def rate_page(request: Request, code: Annotated[str | None, Query(max_length=40)] = None):
    """The rating form (code + last four digits of the phone)."""
    return _rate_form(request, {"code": (code or "").strip().upper()}, {})


def _failures(s: Session, case_id: int) -> int:
    from jiedao.auth.models import AuditLog

    since = clock.now() - timedelta(days=1)
    return s.scalar(select(func.count()).select_from(AuditLog).where(
        AuditLog.action == "public_rate_fail", AuditLog.object_type == "case",
        AuditLog.object_id == str(case_id), AuditLog.at >= since)) or 0


@router.post("/rate")
def rate_post(
    request: Request,
    code: Annotated[str, Form(max_length=40)] = "",
    phone_last4: Annotated[str, Form(max_length=20)] = "",
    satisfaction: Annotated[str, Form(max_length=10)] = "",
    comment: Annotated[str, Form(max_length=10_000)] = "",
    form_token_: Annotated[str, Form(alias="form_token", max_length=400)] = "",
):
    """Record the caller's follow-up (满意/基本满意/不满意); 不满意 reopens the case."""
    code = code.strip().upper()
    values = {"code": code, "phone_last4": "", "satisfaction": satisfaction, "comment": comment}
    if check_form_token(form_token_, "rate") is None:
        return _rate_form(request, values, {"form": "页面已过期或校验失败，请重新提交"}, 403)
    errors = {}
    if not CODE_RE.match(code):
        errors["code"] = "查询码应为 16 位字母或数字"
    if not re.fullmatch(r"\d{4}", phone_last4.strip()):
        errors["phone_last4"] = "请填写手机号码后四位数字"
    if satisfaction not in wf.SATISFACTION:
        errors["satisfaction"] = "请选择满意度"
    if len(comment.strip()) > 500:
        errors["comment"] = "意见过长（上限 500 字）"
    if errors:
        return _rate_form(request, values, errors, 422)
    wrong = "查询码或手机号码后四位不正确"
    db = request.app.state.db
    with db.session() as s:
        case = _find(s, code)
        if case is None:
            return _rate_form(request, values, {"form": wrong}, 403)
        if _failures(s, case.id) >= RATE_FAILURES_MAX:
            return _rate_form(request, values, {"form": "验证失败次数过多，请明天再试或拨打 12345 热线"}, 429)
        phone = case.caller.phone if case.caller else ""
        if not phone or not hmac.compare_digest(phone[-4:].encode(), phone_last4.strip().encode()):
            audit.record(s, actor=ACTOR, action="public_rate_fail", object_type="case",
                         object_id=case.id, ip=None)
            failed = True
        else:
            failed = False
            if case.state != "closed":
                msg = "该诉求已评价，感谢您的反馈" if case.state == "followed_up" else \
                    f"该诉求当前“{wf.CASE_STATES.get(case.state, case.state)}”，办结后才能评价"
                return _rate_form(request, values, {"form": msg}, 409)
            from jiedao.cases.api import get_pipeline

            kw = {}
            if satisfaction == "不满意" and case.matter_code:
                kw["deadline"] = get_pipeline(request.app).dispatcher.deadline(
                    case.matter_code, case.urgency, clock.now())
            try:
                service.act(s, case.id, "follow_up", actor=ACTOR, satisfaction=satisfaction,
                            comment=comment.strip() or None, expected_version=case.version, **kw)
            except Conflict as e:
                s.rollback()
                return _rate_form(request, values, {"form": str(e)}, 409)
    if failed:  # the failure row is committed; answer the same way as an unknown code
        return _rate_form(request, values, {"form": wrong}, 403)
    return render(request, "cases/public_rated.html", {
        "code": code, "satisfaction": satisfaction, "reopened": satisfaction == "不满意"})
