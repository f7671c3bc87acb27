"""Open311 GeoReport v2 at ``/open311/v2/`` (JSON, and XML for the same resources).

* ``services.{json,xml}`` — the responsibility list: ``service_code`` = matter code,
  ``service_name``, ``description``, ``group`` = level-1 class, ``keywords``, ``type`` realtime,
  ``metadata`` true (every service has the attributes below).
* ``services/{code}.{fmt}`` — service definition: attributes (urgency, landmark).
* ``requests.{fmt}`` GET — filters ``service_request_id`` (comma list; overrides the others),
  ``service_code`` (comma list), ``start_date``/``end_date`` (W3C, ≤ 90 days; default the
  last 90 days), ``status`` open/closed. Without ``api_key`` the answer is the public view (no
  description, no exact point, no address below the community); with a Jiedao API token
  (``api_key`` or ``Authorization: Bearer``) it is the full view inside the token's scope.
* ``requests.{fmt}`` POST — ``api_key`` (a Jiedao API token, required), ``service_code``,
  ``lat``/``long`` or ``address_string`` (or ``address_id``), ``description``, ``email``,
  ``phone``, ``first_name``, ``last_name``, ``attribute[code]``. The case goes through the real
  intake pipeline and is committed before the answer: ``[{"service_request_id", "token",
  "service_notice", "account_id"}]``. An ``Idempotency-Key`` header makes retries safe.
* ``requests/{id}.{fmt}`` and ``tokens/{token}.{fmt}``.

``service_request_id`` is the case's public code. Errors follow the spec:
``[{"code": 400, "description": "..."}]`` with the same HTTP status.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from xml.sax.saxutils import escape

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from jiedao import clock
from jiedao.auth import audit
from jiedao.auth.scope import Principal
from jiedao.cases import intake, service
from jiedao.cases import workflow as wf
from jiedao.cases.models import URGENCIES, Case
from jiedao.catalog.models import Department, Matter
from jiedao.config import get_settings
from jiedao.errors import JiedaoError, ValidationError

router = APIRouter(prefix="/open311/v2", tags=["Open311 GeoReport v2"])

SUBMIT_ROLES = ("operator", "admin", "steward", "street_staff")
CLOSED = ("closed", "followed_up")
MAX_RANGE = timedelta(days=90)
MAX_RESULTS = 1000
FORMATS = ("json", "xml")
ATTRIBUTES = [
    {"variable": True, "code": "urgency", "datatype": "singlevaluelist", "required": False,
     "datatype_description": "紧急程度，不填由系统研判", "order": 1,
     "description": "紧急程度", "values": [{"key": u, "name": u} for u in URGENCIES]},
    {"variable": True, "code": "landmark", "datatype": "string", "required": False,
     "datatype_description": "附近的小区、学校、地铁站等", "order": 2,
     "description": "附近地标"},
]
ATTRIBUTE_CODES = {a["code"] for a in ATTRIBUTES}


class Open311Error(Exception):
    def __init__(self, status: int, description: str):
        self.status, self.description = status, description
        super().__init__(description)


# ---------------------------------------------------------------- encoding


def _xml_value(tag: str, value) -> str:
    if isinstance(value, list):
        item = {"values": "value", "attributes": "attribute"}.get(tag, "item")
        return f"<{tag}>" + "".join(_xml_value(item, v) for v in value) + f"</{tag}>"
    if isinstance(value, dict):
        return f"<{tag}>" + "".join(_xml_value(k, v) for k, v in value.items()) + f"</{tag}>"
    if value is None:
        return f"<{tag}/>"
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"<{tag}>{escape(str(value))}</{tag}>"


def render_xml(root: str, item: str | None, data) -> str:
    """Spec-shaped XML: ``<root><item>…</item>…</root>`` (or one object under root)."""
    if item is None:
        body = "".join(_xml_value(k, v) for k, v in data.items())
    else:
        body = "".join(_xml_value(item, d) for d in data)
    return f'<?xml version="1.0" encoding="utf-8"?><{root}>{body}</{root}>'


def _answer(fmt: str, data, root: str, item: str | None, status: int = 200) -> Response:
    if fmt == "xml":
        return Response(render_xml(root, item, data), status_code=status,
                        media_type="text/xml; charset=utf-8")
    return JSONResponse(data, status_code=status)


def _error(fmt: str, status: int, description: str) -> Response:
    data = [{"code": status, "description": description}]
    return _answer(fmt if fmt in FORMATS else "json", data, "errors", "error", status)


def _fmt(fmt: str) -> str:
    if fmt not in FORMATS:
        raise Open311Error(404, f"不支持的格式 .{fmt}（可用 .json / .xml）")
    return fmt


def _w3c(d: datetime | None) -> str | None:
    """Naive local time → W3C with the configured offset (+08:00)."""
    if d is None:
        return None
    from zoneinfo import ZoneInfo

    return d.replace(tzinfo=ZoneInfo(get_settings().timezone)).isoformat(timespec="seconds")


def parse_w3c(value: str, name: str) -> datetime:
    """A W3C datetime parameter as naive local time (400 naming the parameter if bad)."""
    from zoneinfo import ZoneInfo

    try:
        d = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise Open311Error(400, f"{name} 不是有效的 W3C 时间（如 2026-03-01T00:00:00+08:00）") from None
    if d.tzinfo is not None:
        d = d.astimezone(ZoneInfo(get_settings().timezone)).replace(tzinfo=None)
    return d


# ---------------------------------------------------------------- auth and tokens


def principal_for_key(request: Request, api_key: str | None) -> Principal | None:
    """The principal of an ``api_key`` parameter (a Jiedao API token), else of the request."""
    from jiedao.auth import service as auth_service
    from jiedao.auth.deps import get_principal

    if api_key:
        with request.app.state.db.session() as s:
            tok = auth_service.find_api_token(s, api_key)
            if tok is None:
                raise Open311Error(403, "api_key 无效或已吊销")
            return auth_service.principal_for(tok.user, tok)
    return get_principal(request)  # a bearer token or a signed-in browser


def _tokens() -> URLSafeSerializer:
    return URLSafeSerializer(get_settings().secret_key, salt="jiedao.open311-token")


def token_for(case_id: int) -> str:
    """An opaque token for a submitted request (signed case id; no table needed)."""
    return _tokens().dumps(case_id)


def case_id_for_token(token: str) -> int | None:
    try:
        v = _tokens().loads(token)
    except BadSignature:
        return None
    return v if isinstance(v, int) else None


# ---------------------------------------------------------------- services


def services(s: Session) -> list[dict]:
    """The service list from the responsibility list."""
    out = []
    for m in s.scalars(select(Matter).order_by(Matter.code)):
        out.append({
            "service_code": m.code, "service_name": m.name,
            "description": m.description or f"{m.level1} / {m.level2} / {m.name}",
            "metadata": True, "type": "realtime",
            "keywords": ",".join(m.keywords or []), "group": m.level1,
        })
    return out


def service_definition(s: Session, code: str) -> dict:
    if s.get(Matter, code) is None:
        raise Open311Error(404, f"service_code {code} 不存在")
    return {"service_code": code, "attributes": ATTRIBUTES}


# ---------------------------------------------------------------- requests


def _visible(p: Principal | None, case: Case) -> bool:
    from jiedao.cases.api import can_see

    return p is not None and can_see(p, case)


def request_out(case: Case, names: dict, full: bool) -> dict:
    """One case as a GeoReport service request (public view unless ``full``)."""
    main = next((a for a in reversed(case.assignments)
                 if a.role == "main" and a.state in wf.ACTIVE), None)
    status = "closed" if case.state in CLOSED else "open"
    notes = wf.CASE_STATES.get(case.state, case.state)
    if main is not None and main.reply and status == "closed" and full:
        notes = f"{notes}：{main.reply}"
    address = names.get(("community", case.community_code)) or names.get(
        ("street", case.street_code))
    if full:
        address = names.get(("address", case.address_code)) or case.location_text or address
    return {
        "service_request_id": case.code,
        "status": status,
        "status_notes": notes,
        "service_name": names.get(("matter", case.matter_code)),
        "service_code": case.matter_code,
        "description": case.text if full else None,
        "agency_responsible": names.get(("dept", main.department_code)) if main else None,
        "service_notice": None,
        "requested_datetime": _w3c(case.received_at),
        "updated_datetime": _w3c(case.updated_at),
        "expected_datetime": _w3c(main.deadline) if main and status == "open" else None,
        "address": address,
        "address_id": case.address_code if full else None,
        "zipcode": None,
        "lat": case.lat if full else None,
        "long": case.lon if full else None,
        "media_url": None,
    }


def _names(s: Session, cases: list[Case]) -> dict:
    from jiedao.geo.models import Address, Community, Street

    out: dict = {}
    for kind, model, attr in (("matter", Matter, "matter_code"), ("community", Community,
                                                                 "community_code"),
                              ("street", Street, "street_code")):
        codes = {getattr(c, attr) for c in cases} - {None}
        if codes:
            for code, name in s.execute(select(model.code, model.name).where(model.code.in_(codes))):
                out[(kind, code)] = name
    codes = {c.address_code for c in cases} - {None}
    if codes:
        for code, full in s.execute(select(Address.code, Address.full).where(Address.code.in_(codes))):
            out[("address", code)] = full
    depts = {a.department_code for c in cases for a in c.assignments}
    if depts:
        for code, name in s.execute(select(Department.code, Department.name)
                                    .where(Department.code.in_(depts))):
            out[("dept", code)] = name
    return out


def find_requests(s: Session, p: Principal | None, params) -> list[dict]:
    """GET requests: filters per the spec, public view or the principal's scoped full view."""
    from jiedao.cases.api import visible_cases

    stmt = select(Case).options(selectinload(Case.assignments))
    ids = [x.strip() for x in (params.get("service_request_id") or "").split(",") if x.strip()]
    if ids:
        if len(ids) > 100:
            raise Open311Error(400, "service_request_id 一次最多 100 个")
        stmt = stmt.where(Case.code.in_(ids))
    else:
        codes = [x.strip() for x in (params.get("service_code") or "").split(",") if x.strip()]
        if codes:
            stmt = stmt.where(Case.matter_code.in_(codes))
        start = parse_w3c(params["start_date"], "start_date") if params.get("start_date") else None
        end = parse_w3c(params["end_date"], "end_date") if params.get("end_date") else None
        if start and end and end < start:
            raise Open311Error(400, "end_date 不能早于 start_date")
        if start and end and end - start > MAX_RANGE:
            raise Open311Error(400, "start_date 与 end_date 的跨度不能超过 90 天")
        if start is None and end is None:
            end = clock.now() + timedelta(minutes=1)
        if start is None:
            start = end - MAX_RANGE
        stmt = stmt.where(Case.received_at >= start)
        if end is not None:
            stmt = stmt.where(Case.received_at <= end)
        statuses = {x.strip() for x in (params.get("status") or "").split(",") if x.strip()}
        if statuses - {"open", "closed"}:
            raise Open311Error(400, "status 只能是 open 或 closed")
        if statuses == {"open"}:
            stmt = stmt.where(Case.state.not_in(CLOSED))
        elif statuses == {"closed"}:
            stmt = stmt.where(Case.state.in_(CLOSED))
    full = p is not None
    if full:
        stmt = visible_cases(stmt, p)
    cases = s.scalars(stmt.order_by(Case.received_at.desc(), Case.id.desc()).limit(MAX_RESULTS)).all()
    names = _names(s, list(cases))
    return [request_out(c, names, full) for c in cases]


def _form_fields(form) -> tuple[dict, dict]:
    fields, attributes = {}, {}
    for k, v in form.multi_items():
        if not isinstance(v, str):
            raise Open311Error(400, f"{k} 必须是文本（本接口不接收文件，请用 media_url）")
        m = re.fullmatch(r"attribute\[(.+)\]", k)
        if m:
            attributes[m.group(1)] = v.strip()
        else:
            fields[k] = v.strip()
    return fields, attributes


def submit_request(request: Request, p: Principal, fields: dict, attributes: dict,
                   idempotency_key: str | None) -> dict:
    """POST requests: validate, take in through the pipeline, commit, then answer."""
    from jiedao.cases.api import get_pipeline

    code = fields.get("service_code") or ""
    description = fields.get("description") or ""
    lat, lon = fields.get("lat") or None, fields.get("long") or None
    address = fields.get("address_string") or None
    address_id = fields.get("address_id") or None
    if not code:
        raise Open311Error(400, "缺少 service_code")
    if lat is None and lon is None and not address and not address_id:
        raise Open311Error(400, "必须提供地点：lat 与 long，或 address_string，或 address_id")
    for name in ("lat", "long"):
        v = fields.get(name)
        if v:
            try:
                float(v)
            except ValueError:
                raise Open311Error(400, f"{name} 必须是数字") from None
    unknown = set(attributes) - ATTRIBUTE_CODES
    if unknown:
        raise Open311Error(400, f"未知属性 attribute[{sorted(unknown)[0]}]")
    urgency = attributes.get("urgency") or None
    if urgency and urgency not in URGENCIES:
        raise Open311Error(400, f"attribute[urgency] 必须是 {'/'.join(URGENCIES)} 之一")
    landmark = attributes.get("landmark") or None
    first, last = fields.get("first_name") or "", fields.get("last_name") or ""
    if re.search(r"[\u4e00-\u9fff]", first + last):
        name = (last + first) or None  # Chinese order: family name first, no space
    else:
        name = " ".join(x for x in (first, last) if x) or None
    email = fields.get("email") or None
    if email and (len(email) > 200 or "@" not in email):
        raise Open311Error(400, "email 格式不正确")
    if name and len(name) > 64:
        raise Open311Error(400, "first_name/last_name 过长")
    location = address or landmark
    if address and landmark:
        location = f"{address}（{landmark}）"
    if location and len(location) > 300:
        raise Open311Error(400, "address_string 过长（上限 300 字）")
    text = description
    if address_id and not location:
        from jiedao.geo.models import Address

        with request.app.state.db.session() as s:
            row = s.get(Address, address_id)
            if row is None:
                raise Open311Error(400, f"address_id {address_id} 不存在")
            location = row.full
    probs = service.validate_intake(text=text, channel="open311", urgency=urgency or "一般",
                                    lon=lon, lat=lat)
    if probs:
        field = {"text": "description", "lon": "long"}.get(probs[0].field, probs[0].field)
        raise Open311Error(400, f"{field}: {probs[0].message}")
    pipeline = get_pipeline(request.app)
    db = request.app.state.db
    key = f"open311:{p.user_id}:{idempotency_key}" if idempotency_key else None
    with db.session() as s:
        if s.get(Matter, code) is None:
            raise Open311Error(400, f"service_code {code} 不存在（见 services.json）")
    for attempt in range(3):
        try:
            with db.session() as s:
                case, created = intake.submit(
                    s, pipeline.analyzer, pipeline.dispatcher, text=text, channel="open311",
                    actor=audit.actor_for(p), urgency=urgency, phone=fields.get("phone") or None,
                    name=name, location_text=location, lon=lon, lat=lat, idempotency_key=key)
                if created:
                    card = dict(case.analysis or {})
                    card["open311"] = {"service_code": code, "email": email,
                                       "device_id": fields.get("device_id") or None,
                                       "account_id": fields.get("account_id") or None,
                                       "media_url": fields.get("media_url") or None}
                    case.analysis = card
                state, deadline = case.state, None
                main = next((a for a in case.assignments if a.role == "main"), None)
                if main is not None:
                    deadline = main.deadline
                out = {"service_request_id": case.code, "token": token_for(case.id),
                       "account_id": None}
            break
        except ValidationError as e:
            f = e.problems[0].field
            raise Open311Error(400, f"{ {'text': 'description'}.get(f, f) }: {e.problems[0].message}") from None
        except IntegrityError:
            if not key or attempt == 2:
                raise
    if state == "dispatched" and deadline is not None:
        out["service_notice"] = f"已受理并派单，办理时限 {deadline:%Y-%m-%d %H:%M}"
    else:
        out["service_notice"] = "已受理，正在人工分派"
    return out


# ---------------------------------------------------------------- routes


def _handle(fmt: str, fn, root: str, item: str | None, status: int = 200) -> Response:
    try:
        fmt = _fmt(fmt)
        return _answer(fmt, fn(), root, item, status)
    except Open311Error as e:
        return _error(fmt, e.status, e.description)
    except JiedaoError as e:
        return _error(fmt, e.status_code, str(e))


@router.get("/services.{fmt}", summary="服务列表（职责清单事项）")
def get_services(request: Request, fmt: str):
    def run():
        with request.app.state.db.session() as s:
            return services(s)
    return _handle(fmt, run, "services", "service")


@router.get("/services/{code}.{fmt}", summary="服务定义（属性）")
def get_service_definition(request: Request, code: str, fmt: str):
    def run():
        with request.app.state.db.session() as s:
            return service_definition(s, code)
    return _handle(fmt, run, "service_definition", None)


@router.get("/requests.{fmt}", summary="查询诉求（公开视图；带 api_key 为范围内完整视图）")
def get_requests(request: Request, fmt: str):
    def run():
        p = principal_for_key(request, request.query_params.get("api_key"))
        with request.app.state.db.session() as s:
            return find_requests(s, p, request.query_params)
    return _handle(fmt, run, "service_requests", "request")


@router.post("/requests.{fmt}", summary="提交诉求（api_key 为 Jiedao 接口令牌）")
async def post_request(request: Request, fmt: str):
    try:
        fmt = _fmt(fmt)
        ctype = request.headers.get("content-type", "")
        if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            fields, attributes = _form_fields(form)
        elif not ctype or ctype.startswith("text/plain"):
            fields, attributes = {}, {}
        else:
            raise Open311Error(400, "请用 application/x-www-form-urlencoded 提交")
        for k, v in request.query_params.multi_items():  # api_key may be in the query string
            fields.setdefault(k, v.strip())
        idem = request.headers.get("idempotency-key")
        if idem is not None and not re.fullmatch(r"[\x21-\x7e]{1,80}", idem):
            raise Open311Error(400, "Idempotency-Key 必须是 1–80 个可见 ASCII 字符")
        from starlette.concurrency import run_in_threadpool

        if not fields.get("api_key"):
            raise Open311Error(403, "提交诉求需要 api_key")
        p = await run_in_threadpool(principal_for_key, request, fields["api_key"])
        if p is None or p.role not in SUBMIT_ROLES:
            raise Open311Error(403, "该 api_key 无权提交诉求")
        out = await run_in_threadpool(submit_request, request, p, fields, attributes, idem)
        return _answer(fmt, [out], "service_requests", "request", 201)
    except Open311Error as e:
        return _error(fmt, e.status, e.description)
    except JiedaoError as e:
        return _error(fmt, e.status_code, str(e))


@router.get("/requests/{request_id}.{fmt}", summary="单个诉求")
def get_request(request: Request, request_id: str, fmt: str):
    def run():
        p = principal_for_key(request, request.query_params.get("api_key"))
        with request.app.state.db.session() as s:
            case = s.scalar(select(Case).where(Case.code == request_id)
                            .options(selectinload(Case.assignments))) \
                if re.fullmatch(r"[0-9A-Z]{16}", request_id) else None
            if case is None:
                raise Open311Error(404, f"service_request_id {request_id} 不存在")
            full = _visible(p, case)
            return [request_out(case, _names(s, [case]), full)]
    return _handle(fmt, run, "service_requests", "request")


@router.get("/tokens/{token}.{fmt}", summary="由 token 查询诉求编号")
def get_token(request: Request, token: str, fmt: str):
    def run():
        case_id = case_id_for_token(token)
        if case_id is None:
            raise Open311Error(404, "token 无效")
        with request.app.state.db.session() as s:
            code = s.scalar(select(Case.code).where(Case.id == case_id))
        if code is None:
            raise Open311Error(404, "token 对应的诉求不存在")
        return [{"service_request_id": code, "token": token}]
    return _handle(fmt, run, "service_requests", "request")

