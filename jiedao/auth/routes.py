"""Login/logout pages and the small auth API (/api/me, /api/tokens)."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse

from jiedao.auth import audit, service
from jiedao.auth.deps import (
    SESSION_COOKIE,
    clear_session_cookie,
    client_ip,
    csrf_protect,
    get_principal,
    require_user,
    set_session_cookie,
)
from jiedao.auth.models import ApiToken, User
from jiedao.auth.scope import Principal
from jiedao.errors import NotFound, ValidationError

router = APIRouter(tags=["auth"])


def safe_next(value: str | None, default: str = "/") -> str:
    """``value`` if it is a local path on this site, else ``default`` (no open redirects)."""
    if not value or not isinstance(value, str) or len(value) > 2000:
        return default
    if any(ord(c) < 32 or c == "\\" for c in value):
        return default
    if not value.startswith("/") or value.startswith("//"):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


def _render_login(request: Request, *, next_url: str, error: str | None = None,
                  username: str = "", status_code: int = 200):
    from jiedao.web.templating import render

    return render(request, "auth/login.html",
                  {"next": next_url, "error": error, "username": username}, status_code=status_code)


@router.get("/login", include_in_schema=False)
def login_page(request: Request, next: str | None = None):
    """The login page (用户登录)."""
    get_principal(request)
    return _render_login(request, next_url=safe_next(next))


@router.post("/login", include_in_schema=False)
def login_submit(
    request: Request,
    username: str = Form(""),
    password: str = Form(""),
    next: str = Form("/"),
):
    """Check the password; on success set the session cookie and go to ``next``."""
    target = safe_next(next)
    ip = client_ip(request)
    with request.app.state.db.session() as s:
        result = service.login(s, username, password, ip=ip)
        raw = result.raw_session_id
        old = request.cookies.get(SESSION_COOKIE)
        if result.ok and old:
            service.revoke_session(s, old)
    if not result.ok:
        status = 429 if result.locked_until else 401
        return _render_login(request, next_url=target, error=result.error,
                             username=username[:64], status_code=status)
    resp = RedirectResponse(target, status_code=303)
    set_session_cookie(resp, raw)
    return resp


@router.post("/logout", include_in_schema=False, dependencies=[Depends(csrf_protect)])
def logout(request: Request):
    """End the browser session and go back to the login page."""
    principal = get_principal(request)
    raw = request.cookies.get(SESSION_COOKIE)
    if raw and request.state.auth_via == "session":
        with request.app.state.db.session() as s:
            if service.revoke_session(s, raw):
                audit.record(s, principal=principal, action="logout", object_type="user",
                             object_id=principal.username, ip=client_ip(request))
    resp = RedirectResponse("/login", status_code=303)
    clear_session_cookie(resp)
    return resp


@router.get("/api/me")
def me(principal: Principal = Depends(require_user)) -> dict:
    """The calling user: role, scope and how they authenticated."""
    return principal.as_dict()


def _token_json(tok) -> dict:
    def iso(v):
        return v.isoformat() if v else None

    return {
        "id": tok.id,
        "name": tok.name,
        "prefix": tok.prefix,
        "created_at": iso(tok.created_at),
        "last_used_at": iso(tok.last_used_at),
        "revoked_at": iso(tok.revoked_at),
        "active": tok.revoked_at is None,
    }


async def _token_name(request: Request) -> str:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            raise HTTPException(status_code=400, detail="请求体不是有效的 JSON") from None
        return str(body.get("name") or "") if isinstance(body, dict) else ""
    if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        v = form.get("name")
        return v if isinstance(v, str) else ""
    return request.query_params.get("name", "")


@router.post("/api/tokens", status_code=201, dependencies=[Depends(csrf_protect)])
async def create_token(request: Request, principal: Principal = Depends(require_user)):
    """Create an API token for yourself. The raw token is in the answer once, never again.

    Body: JSON ``{"name": "…"}`` or a form field ``name``.
    """
    name = await _token_name(request)
    from starlette.concurrency import run_in_threadpool

    def work():
        with request.app.state.db.session() as s:
            user = s.get(User, principal.user_id)
            raw, tok = service.create_api_token(s, user, name, by=principal, ip=client_ip(request))
            return raw, _token_json(tok)

    try:
        raw, data = await run_in_threadpool(work)
    except ValidationError as e:
        raise HTTPException(status_code=400, detail=str(e)) from None
    data["token"] = raw
    return JSONResponse(data, status_code=201)


@router.get("/api/tokens")
def list_tokens(request: Request, principal: Principal = Depends(require_user)) -> list[dict]:
    """Your API tokens (without their secret values)."""
    with request.app.state.db.session() as s:
        return [_token_json(t) for t in service.list_api_tokens(s, principal.user_id)]


@router.delete("/api/tokens/{token_id}", dependencies=[Depends(csrf_protect)])
def revoke_token(token_id: int, request: Request, principal: Principal = Depends(require_user)) -> dict:
    """Revoke one of your API tokens (admins: any token)."""
    try:
        with request.app.state.db.session() as s:
            tok = service.revoke_api_token(s, token_id, by=principal, ip=client_ip(request))
            return _token_json(tok)
    except NotFound as e:
        raise HTTPException(status_code=404, detail=str(e)) from None


# --------------------------------------------------------------------------- account page


def _render_account(request: Request, principal: Principal, *, new_token: str | None = None,
                    message: str | None = None, error: str | None = None, status_code: int = 200):
    from jiedao.web.templating import render

    with request.app.state.db.session() as s:
        tokens = [_token_json(t) for t in service.list_api_tokens(s, principal.user_id)]
    return render(request, "auth/account.html", {
        "me": principal, "tokens": tokens, "new_token": new_token, "message": message,
        "error": error}, status_code=status_code)


@router.get("/account", include_in_schema=False)
def account_page(request: Request, principal: Principal = Depends(require_user)):
    """我的账户: who I am, my API tokens (create, revoke) and my password."""
    return _render_account(request, principal)


@router.post("/account/tokens", include_in_schema=False, dependencies=[Depends(csrf_protect)])
def account_create_token(request: Request, name: str = Form(""),
                         principal: Principal = Depends(require_user)):
    """Create an API token from the account page; its value is shown on this answer only."""
    try:
        with request.app.state.db.session() as s:
            user = s.get(User, principal.user_id)
            raw, _tok = service.create_api_token(s, user, name, by=principal, ip=client_ip(request))
    except ValidationError as e:
        return _render_account(request, principal, error=str(e), status_code=400)
    return _render_account(request, principal, new_token=raw, message="令牌已创建：请立即复制保存，它不会再次显示")


@router.post("/account/tokens/{token_id}/revoke", include_in_schema=False,
             dependencies=[Depends(csrf_protect)])
def account_revoke_token(token_id: int, request: Request, principal: Principal = Depends(require_user)):
    """Revoke one of my tokens from the account page."""
    try:
        with request.app.state.db.session() as s:
            # Own tokens only here, admins included: revoking others' tokens is an API action.
            tok = s.get(ApiToken, token_id)
            if tok is None or tok.user_id != principal.user_id:
                raise NotFound(f"令牌不存在：{token_id}")
            service.revoke_api_token(s, token_id, by=principal, ip=client_ip(request))
    except NotFound as e:
        return _render_account(request, principal, error=str(e), status_code=404)
    return _render_account(request, principal, message="令牌已吊销")


@router.post("/account/password", include_in_schema=False, dependencies=[Depends(csrf_protect)])
def account_password(request: Request, current_password: str = Form(""), new_password: str = Form(""),
                     confirm_password: str = Form(""), principal: Principal = Depends(require_user)):
    """Change my own password; every session ends, so the browser goes back to the login page."""
    if new_password != confirm_password:
        return _render_account(request, principal, error="两次输入的新密码不一致", status_code=400)
    try:
        with request.app.state.db.session() as s:
            user = s.get(User, principal.user_id)
            service.set_password(s, user, new_password, current_password=current_password,
                                 by=principal, ip=client_ip(request))
    except ValidationError as e:
        return _render_account(request, principal, error=str(e), status_code=400)
    response = RedirectResponse("/login?next=/account", status_code=303)
    clear_session_cookie(response)
    return response
