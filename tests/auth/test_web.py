"""Login, logout, CSRF, bearer tokens and role checks over HTTP."""

from __future__ import annotations

import re

import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient
from sqlalchemy import select

from jiedao.auth.deps import csrf_protect, require_roles, require_user
from jiedao.auth.models import AuditLog
from jiedao.auth.routes import safe_next

from .conftest import PASSWORD

HTML = {"accept": "text/html,application/xhtml+xml"}


def build_app(db) -> FastAPI:
    """The real web app when it can be built, plus a few probe routes for the tests."""
    try:
        from jiedao.web.app import create_app

        app = create_app(db)
    except ImportError:  # web shell not there: the auth router alone
        from jiedao.auth.routes import router

        app = FastAPI()
        app.state.db = db
        app.include_router(router)

    @app.post("/t/write", dependencies=[Depends(csrf_protect)])
    def write(principal=Depends(require_user)):
        return {"ok": True, "user": principal.username}

    @app.get("/t/admin")
    def admin_only(principal=Depends(require_roles("admin", "steward"))):
        return {"ok": True}

    @app.get("/t/state")
    def state(request: Request, principal=Depends(require_user)):
        return {"csrf": request.state.csrf_token, "via": request.state.auth_via}

    return app


@pytest.fixture
def client(geo_db):
    with TestClient(build_app(geo_db), follow_redirects=False) as c:
        yield c


def login(client, username="street.001", password=PASSWORD, next_="/"):
    return client.post("/login", data={"username": username, "password": password, "next": next_},
                       headers=HTML)


def csrf_of(client) -> str:
    return client.get("/t/state").json()["csrf"]


def test_safe_next_blocks_open_redirects():
    for bad in ("https://evil.example/", "//evil.example", "/\\evil.example", "javascript:alert(1)",
                "evil", "", None, "/\nSet-Cookie: x", "http:/evil"):
        assert safe_next(bad) == "/", bad
    for good in ("/", "/geo/streets?x=1", "/cases/12#top"):
        assert safe_next(good) == good


def test_login_page_and_failed_login(client):
    r = client.get("/login?next=/geo/grids", headers=HTML)
    assert r.status_code == 200 and "用户登录" in r.text
    assert 'name="next" value="/geo/grids"' in r.text
    r = client.get("/login?next=https://evil.example/", headers=HTML)
    assert 'name="next" value="/"' in r.text
    for user, pw in (("street.001", "wrong-password"), ("nobody", PASSWORD)):
        r = login(client, user, pw)
        assert r.status_code == 401 and "用户名或密码错误" in r.text
        assert "jiedao_session" not in r.headers.get("set-cookie", "")


def test_login_sets_cookie_and_redirects_to_local_next(client, geo_db):
    r = login(client, next_="/geo/grids?page=2")
    assert r.status_code == 303 and r.headers["location"] == "/geo/grids?page=2"
    cookie = r.headers["set-cookie"].lower()
    assert "jiedao_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    assert "secure" not in cookie
    me = client.get("/api/me").json()
    assert me["username"] == "street.001" and me["scope_level"] == "street"
    assert me["role_label"] == "街道/社区工作人员" and me["via_token"] is False
    r = login(client, next_="//evil.example/x")
    assert r.headers["location"] == "/"
    with geo_db.session() as s:
        rows = list(s.scalars(select(AuditLog).where(AuditLog.action == "login")))
    assert len(rows) == 2 and rows[0].ip


def test_secure_cookie_flag_is_configurable(client, monkeypatch):
    monkeypatch.setenv("JIEDAO_COOKIE_SECURE", "1")
    assert "secure" in login(client).headers["set-cookie"].lower()


def test_anonymous_html_is_redirected_and_api_gets_401(client):
    r = client.get("/t/state?x=1", headers=HTML)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Ft%2Fstate%3Fx%3D1"
    r = client.get("/api/me")
    assert r.status_code == 401 and "未登录" in r.json()["detail"]
    client.cookies.set("jiedao_session", "forged")
    assert client.get("/api/me").status_code == 401


def test_csrf_refused_without_token_and_accepted_with_it(client):
    login(client)
    token = csrf_of(client)
    assert token
    r = client.post("/t/write")
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
    assert client.post("/t/write", headers={"X-CSRF-Token": "wrong"}).status_code == 403
    assert client.post("/t/write", data={"csrf_token": "wrong"}).status_code == 403
    r = client.post("/t/write", headers={"X-CSRF-Token": token})
    assert r.status_code == 200 and r.json()["user"] == "street.001"
    assert client.post("/t/write", data={"csrf_token": token}).status_code == 200


def test_logout_needs_csrf_and_ends_session(client, geo_db):
    login(client)
    token = csrf_of(client)
    assert client.post("/logout").status_code == 403
    assert client.get("/api/me").status_code == 200
    r = client.post("/logout", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    client.cookies.clear()
    assert client.get("/api/me").status_code == 401
    with geo_db.session() as s:
        assert s.scalar(select(AuditLog).where(AuditLog.action == "logout")).actor == "street.001"


def test_api_token_as_bearer_until_revoked(client, geo_db):
    login(client, "handler.cgj")
    token = csrf_of(client)
    assert client.post("/api/tokens", json={"name": "集成"}).status_code == 403  # no CSRF
    r = client.post("/api/tokens", json={"name": "集成"}, headers={"X-CSRF-Token": token})
    assert r.status_code == 201
    raw, tid = r.json()["token"], r.json()["id"]
    assert raw.startswith("jd_")
    listed = client.get("/api/tokens").json()
    assert [t["id"] for t in listed] == [tid] and "token" not in listed[0]
    assert raw not in client.get("/api/tokens").text
    client.cookies.clear()
    bearer = {"Authorization": f"Bearer {raw}"}
    me = client.get("/api/me", headers=bearer).json()
    assert me["username"] == "handler.cgj" and me["via_token"] is True
    # bearer requests carry no ambient credentials: no CSRF token needed
    assert client.post("/t/write", headers=bearer).status_code == 200
    assert client.get("/t/admin", headers=bearer).status_code == 403
    assert client.delete(f"/api/tokens/{tid}", headers=bearer).status_code == 200
    assert client.get("/api/me", headers=bearer).status_code == 401
    assert client.get("/api/me", headers={"Authorization": "Bearer jd_nonsense"}).status_code == 401
    with geo_db.session() as s:
        acts = [(r.action, r.actor) for r in s.scalars(
            select(AuditLog).where(AuditLog.object_type == "api_token").order_by(AuditLog.id))]
    assert acts[0] == ("token_create", "handler.cgj")
    assert acts[1][0] == "token_revoke" and re.fullmatch(r"api:jd_\S{7}", acts[1][1])


def test_tokens_of_others_cannot_be_revoked(client):
    login(client, "handler.cgj")
    tid = client.post("/api/tokens", data={"name": "甲", "csrf_token": csrf_of(client)}).json()["id"]
    login(client, "street.001")
    r = client.delete(f"/api/tokens/{tid}", headers={"X-CSRF-Token": csrf_of(client)})
    assert r.status_code == 404


def test_roles(client):
    login(client, "street.001")
    r = client.get("/t/admin")
    assert r.status_code == 403 and "无权访问" in r.json()["detail"]
    login(client, "admin")
    assert client.get("/t/admin").status_code == 200


def test_lockout_over_http(client):
    for _ in range(5):
        r = login(client, "leader.001", "wrong-password")
    assert r.status_code == 429 and "锁定" in r.text
    r = login(client, "leader.001", PASSWORD)
    assert r.status_code == 429 and "jiedao_session" not in r.headers.get("set-cookie", "")
