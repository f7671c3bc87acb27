"""FastAPI dependencies: who is calling, must they log in, may they, and CSRF.

A caller is identified by the ``jiedao_session`` cookie (browser) or an
``Authorization: Bearer jd_…`` header (integrators). The principal and the session's CSRF
token are stashed on ``request.state`` (``principal``, ``csrf_token``, ``auth_via``) for the
layout template and later dependencies. The database is ``request.app.state.db``.
"""

from __future__ import annotations

import hmac
import os
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request

from jiedao.auth import service
from jiedao.auth.models import ROLES
from jiedao.auth.scope import Principal

SESSION_COOKIE = "jiedao_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
CSRF_MESSAGE = "安全校验失败（CSRF 令牌缺失或不正确），请刷新页面后重试"
_UNSET = object()


def cookie_secure() -> bool:
    """Whether the session cookie carries the Secure flag (JIEDAO_COOKIE_SECURE=1 behind HTTPS)."""
    from jiedao.config import get_settings

    v = os.environ.get("JIEDAO_COOKIE_SECURE", str(get_settings().extra.get("cookie_secure", "")))
    return v.strip().lower() in ("1", "true", "yes", "on")


def set_session_cookie(response, raw_session_id: str, max_age: int | None = None) -> None:
    """Put the session id in an HttpOnly, SameSite=Lax cookie (Secure when configured)."""
    from jiedao.config import get_settings

    response.set_cookie(
        SESSION_COOKIE,
        raw_session_id,
        max_age=max_age if max_age is not None else get_settings().session_hours * 3600,
        httponly=True,
        samesite="lax",
        secure=cookie_secure(),
        path="/",
    )


def clear_session_cookie(response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax",
                           secure=cookie_secure())


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


bearer_token = _bearer  # the raw bearer token of a request, or None


def set_principal(request: Request, principal: Principal | None, via: str | None,
                  csrf: str | None = None) -> None:
    """Record who calls on ``request.state`` (as :func:`get_principal` does), for a route that
    authenticated the caller itself (e.g. inside its own transaction)."""
    request.state.principal = principal
    request.state.csrf_token = csrf
    request.state.auth_via = via if principal is not None else None
    request.state._principal_loaded = True


def get_principal(request: Request) -> Principal | None:
    """The calling Principal (session cookie or bearer token), or None; cached per request.

    Sets ``request.state.principal``, ``request.state.csrf_token`` (None for token callers)
    and ``request.state.auth_via`` ("session", "token" or None).
    """
    cached = getattr(request.state, "_principal_loaded", _UNSET)
    if cached is not _UNSET:
        return request.state.principal
    principal, csrf, via = None, None, None
    db = request.app.state.db
    bearer = _bearer(request)
    if bearer is not None:
        # An explicit (even invalid) Authorization header wins over any cookie. One SELECT on
        # an autocommit connection: no BEGIN/COMMIT round trips on every API call.
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            principal = service.principal_for_bearer(conn, bearer)
            if principal is not None:
                via = "token"
    else:
        raw = request.cookies.get(SESSION_COOKIE)
        if raw:
            with db.session() as s:
                ws = service.get_session(s, raw)
                if ws is not None:
                    principal, csrf, via = service.principal_for(ws.user), ws.csrf_token, "session"
    set_principal(request, principal, via, csrf)
    return principal


def wants_html(request: Request) -> bool:
    """True for browser page requests (Accept mentions text/html and it is not an htmx call)."""
    return "text/html" in request.headers.get("accept", "") and "hx-request" not in request.headers


def login_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/login?next=" + quote(target, safe="")


def require_user(request: Request, principal: Principal | None = Depends(get_principal)) -> Principal:
    """The logged-in Principal; browsers are redirected (303) to /login?next=…, APIs get 401."""
    if principal is not None:
        return principal
    if wants_html(request):
        raise HTTPException(status_code=303, detail="请先登录", headers={"Location": login_url(request)})
    raise HTTPException(status_code=401, detail="未登录或登录已过期", headers={"WWW-Authenticate": "Bearer"})


def require_roles(*roles: str):
    """A dependency that lets only principals with one of ``roles`` through (others: 403)."""
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise ValueError(f"unknown roles: {unknown}")
    labels = "、".join(ROLES[r] for r in roles)

    def dependency(principal: Principal = Depends(require_user)) -> Principal:
        if principal.role not in roles:
            raise HTTPException(status_code=403, detail=f"无权访问：需要以下角色之一：{labels}")
        return principal

    return dependency


async def csrf_protect(request: Request) -> None:
    """Refuse unsafe requests (POST/PUT/PATCH/DELETE) of a cookie session without the
    session's CSRF token in the form field ``csrf_token`` or the ``X-CSRF-Token`` header.

    Bearer-token requests are exempt: they carry no ambient credentials. Requests with no
    valid session are left to ``require_user`` (they can do nothing in anyone's name).
    """
    if request.method.upper() in SAFE_METHODS:
        return
    if _bearer(request) is not None:
        return  # the Authorization header decides who calls (never the cookie): no CSRF risk
    from starlette.concurrency import run_in_threadpool

    await run_in_threadpool(get_principal, request)
    if request.state.auth_via != "session":
        return
    expected = request.state.csrf_token or ""
    supplied = request.headers.get(CSRF_HEADER)
    if not supplied:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get(CSRF_FIELD)
            supplied = value if isinstance(value, str) else None
    if not supplied or not expected or not hmac.compare_digest(supplied.encode(), expected.encode()):
        raise HTTPException(status_code=403, detail=CSRF_MESSAGE)
