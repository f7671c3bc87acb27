"""The FastAPI application: routers of every capability, static files, error pages,
security headers, Swagger UI served from vendored files, and a health check.

Browsers get Chinese HTML error pages; API clients (``/api/…`` or no ``text/html`` in
``Accept``) get JSON ``{"detail": …, "problems": [...]}``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException

from jiedao.db import Database, get_database, get_meta
from jiedao.errors import JiedaoError, ValidationError
from jiedao.web.nav import nav_for
from jiedao.web.templating import render, templates

STATIC_DIR = Path(__file__).resolve().parent / "static"
TITLE = "Jiedao 数字街道"
DEMO_LABEL = "示例数据"

# Scripts only from this origin (no inline script anywhere); ECharts and Swagger UI set
# inline styles, so styles allow 'unsafe-inline'. Images may be data: URLs (Swagger icons).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "geolocation=(), camera=(), microphone=()",
}

STATUS_TEXT = {
    400: "请求有误",
    401: "请先登录",
    403: "无权访问",
    404: "页面不存在",
    405: "不支持的请求方式",
    409: "操作冲突",
    422: "参数有误",
    500: "系统错误",
}


class SecurityHeaders:
    """ASGI middleware adding security headers (and a CSP unless the route set its own)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", CSP.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def wants_json(request: Request) -> bool:
    """API calls get JSON errors; browsers (HTML pages) get a Chinese error page."""
    path = request.url.path
    if path.startswith(("/api/", "/open311/")) or path.endswith((".json", ".geojson")):
        return True
    if request.headers.get("hx-request"):
        return False
    return "text/html" not in request.headers.get("accept", "")


def demo_info(app: FastAPI) -> dict:
    """Whether the served DB is a demo (``jiedao_meta`` demo=true); cached for 30 seconds."""
    cached = getattr(app.state, "_demo_info", None)
    if cached and time.monotonic() - cached[0] < 30:
        return cached[1]
    info = {"demo": False, "label": None}
    try:
        with app.state.db.session() as s:
            if (get_meta(s, "demo") or "").lower() in ("true", "1", "yes"):
                info = {"demo": True, "label": get_meta(s, "demo_label") or DEMO_LABEL}
    except Exception:  # schema not created yet: not a demo
        pass
    app.state._demo_info = (time.monotonic(), info)
    return info


def role_label(role: str | None) -> str:
    """Chinese label of a role code."""
    from jiedao.auth.models import ROLES

    return ROLES.get(role or "", role or "")


def today_label() -> str:
    """Today's date in Chinese, e.g. "2026年11月23日 星期一" (local time)."""
    from jiedao.clock import now

    d = now()
    return f"{d.year}年{d.month}月{d.day}日 星期{'一二三四五六日'[d.weekday()]}"


def scope_label(request: Request, principal) -> str:
    """Human name of the principal's scope, e.g. "临江区 · 琴台街道" (cached per app)."""
    if principal is None:
        return ""
    level, code = principal.scope_level, principal.scope_code
    cache = request.app.state.__dict__.setdefault("_scope_names", {})
    key = (level, code)
    if key not in cache:
        from jiedao.catalog.models import Department
        from jiedao.geo.models import Community, District, Street

        model = {"district": District, "street": Street, "community": Community,
                 "department": Department}.get(level)
        name = None
        try:
            with request.app.state.db.session() as s:
                row = s.get(model, code) if model else None
                if isinstance(row, Community):
                    name = f"{row.street.name} · {row.name}"
                elif row is not None:
                    name = row.name
        except Exception:
            name = None
        cache[key] = name or code
    return cache[key]


def _error_page(request: Request, status: int, message: str, problems: list[dict],
                headers: dict | None = None) -> Response:
    if wants_json(request):
        return JSONResponse({"detail": message, "problems": problems}, status_code=status,
                            headers=headers)
    resp = render(request, "errors.html", {
        "status": status,
        "title": STATUS_TEXT.get(status, "出错了"),
        "message": message,
        "problems": problems,
    }, status_code=status)
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(JiedaoError)
    async def jiedao_error(request: Request, exc: JiedaoError):
        problems = [p.as_dict() for p in getattr(exc, "problems", [])]
        message = str(exc) or STATUS_TEXT.get(exc.status_code, "出错了")
        if isinstance(exc, ValidationError) and len(problems) == 1:
            message = problems[0]["message"]
        return _error_page(request, exc.status_code, message, problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        headers = dict(exc.headers or {})
        if 300 <= exc.status_code < 400:
            return Response(status_code=exc.status_code, headers=headers)
        detail = exc.detail if isinstance(exc.detail, str) else STATUS_TEXT.get(exc.status_code)
        if exc.status_code == 404 and detail == "Not Found":
            detail = "您访问的页面不存在。"
        elif exc.status_code == 405 and detail == "Method Not Allowed":
            detail = STATUS_TEXT[405]
        if wants_json(request):
            return JSONResponse({"detail": exc.detail, "problems": []},
                                status_code=exc.status_code, headers=headers)
        return _error_page(request, exc.status_code, detail or "出错了", [], headers)

    @app.exception_handler(RequestValidationError)
    async def request_invalid(request: Request, exc: RequestValidationError):
        errors = jsonable_encoder(exc.errors())
        problems = []
        for e in errors:
            loc = [str(x) for x in e.get("loc", ()) if x not in ("query", "path", "body", "form")]
            problems.append({"message": e.get("msg", "无效"), "source": request.url.path,
                             "row": None, "field": ".".join(loc) or None})
        if wants_json(request):
            return JSONResponse({"detail": errors, "problems": problems}, status_code=422)
        fields = "、".join(p["field"] for p in problems if p["field"])
        return _error_page(request, 422, f"参数有误：{fields}" if fields else "参数有误", problems)


def _install_docs(app: FastAPI) -> None:
    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=f"{TITLE} · 接口文档",
            swagger_js_url="/static/vendor/swagger-ui-bundle.js",
            swagger_css_url="/static/vendor/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )
        body = page.body.decode()
        # Allow exactly the one inline initialiser Swagger UI needs, by its hash.
        hashes = []
        for script in re.findall(r"<script>(.*?)</script>", body, flags=re.S):
            digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
            hashes.append(f"'sha256-{digest}'")
        csp = CSP.replace("script-src 'self'", "script-src 'self' " + " ".join(hashes))
        return HTMLResponse(body, headers={"content-security-policy": csp})


def _install_health(app: FastAPI) -> None:
    @app.get("/healthz", tags=["系统"], summary="健康检查")
    def healthz() -> JSONResponse:
        """Database reachable, schema revision, and the demo label when the DB is a demo."""
        db: Database = app.state.db
        out = {"status": "ok", "database": "ok", "backend": db.backend,
               "schema_revision": None, "demo": False, "demo_label": None}
        try:
            with db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                try:
                    out["schema_revision"] = conn.execute(
                        text("SELECT version_num FROM alembic_version")).scalar()
                except Exception:
                    out["schema_revision"] = None
        except Exception as e:
            out.update(status="error", database=f"unreachable: {type(e).__name__}")
            return JSONResponse(out, status_code=503)
        app.state._demo_info = None
        info = demo_info(app)
        out["demo"], out["demo_label"] = info["demo"], info["label"]
        return JSONResponse(out)


def create_app(db: Database | None = None) -> FastAPI:
    """Build the web application around ``db`` (default: the process database)."""
    from jiedao.auth.routes import router as auth_router
    from jiedao.cases.api import router as cases_api_router
    from jiedao.cases.open311 import router as open311_router
    from jiedao.cases.public import router as cases_public_router
    from jiedao.cases.routes_ui import router as cases_ui_router
    from jiedao.catalog.routes import router as catalog_router
    from jiedao.cockpit.routes import router as cockpit_router
    from jiedao.cockpit.routes_briefing import router as briefing_router
    from jiedao.cockpit.routes_warnings import router as warnings_router
    from jiedao.geo.routes import router as geo_router
    from jiedao.hub.routes import router as hub_router

    app = FastAPI(
        title=TITLE,
        description="数字街道平台接口：辖区（街道、社区、网格、楼栋、标准地址）、职责清单与部门。"
        "浏览器登录后可直接调用（会话 Cookie）。",
        version="0.1.0",
        docs_url=None,
        redoc_url=None,
    )
    app.state.db = db or get_database()
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    templates.env.globals["nav_for"] = nav_for
    templates.env.globals["demo_info"] = demo_info
    templates.env.globals["role_label"] = role_label
    templates.env.globals["scope_label"] = scope_label
    templates.env.globals["today_label"] = today_label
    _install_error_handlers(app)
    _install_docs(app)
    _install_health(app)
    # Machine channels first: routing walks the routes in order, and intake is the hot path.
    app.include_router(cases_api_router)
    app.include_router(open311_router)
    app.include_router(auth_router)
    app.include_router(cockpit_router)  # before geo: "/" lands leaders on the cockpit
    app.include_router(geo_router)
    app.include_router(catalog_router)
    app.include_router(cases_ui_router)
    app.include_router(cases_public_router)
    app.include_router(hub_router)
    app.include_router(warnings_router)
    app.include_router(briefing_router)
    return app
