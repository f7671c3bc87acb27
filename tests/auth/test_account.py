"""我的账户: API tokens from a page, changing one's own password, and `jiedao users passwd`."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from jiedao.auth import service
from jiedao.auth.models import ApiToken, AuditLog, User, WebSession

from .conftest import PASSWORD
from .test_web import HTML, build_app

NEW_PASSWORD = "another-secret-2027"


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _login(client: TestClient, username: str, password: str = PASSWORD) -> None:
    r = client.post("/login", data={"username": username, "password": password, "next": "/account"},
                    headers=HTML, follow_redirects=False)
    assert r.status_code == 303, r.text


def test_tokens_are_created_shown_once_used_and_revoked_from_the_page(geo_db):
    client = TestClient(build_app(geo_db))
    _login(client, "handler.cgj")
    page = client.get("/account", headers=HTML)
    assert page.status_code == 200 and "API 令牌" in page.text and "还没有令牌" in page.text

    r = client.post("/account/tokens", data={"name": "热线对接", "csrf_token": _csrf(page.text)}, headers=HTML)
    assert r.status_code == 200
    raw = re.search(r'id="new-token-value" value="(jd_[^"]+)"', r.text).group(1)
    # the token works as a bearer credential and is never shown again
    me = TestClient(client.app).get("/api/me", headers={"authorization": f"Bearer {raw}"})
    assert me.status_code == 200 and me.json()["username"] == "handler.cgj"
    again = client.get("/account", headers=HTML)
    assert raw not in again.text and "热线对接" in again.text

    with geo_db.session() as s:
        tok = s.scalars(select(ApiToken).where(ApiToken.name == "热线对接")).one()
    r = client.post(f"/account/tokens/{tok.id}/revoke", data={"csrf_token": _csrf(again.text)}, headers=HTML)
    assert r.status_code == 200 and "已吊销" in r.text
    assert TestClient(client.app).get("/api/me", headers={"authorization": f"Bearer {raw}"}).status_code == 401


def test_token_forms_refuse_missing_csrf_empty_name_and_someone_elses_token(geo_db):
    with geo_db.session() as s:
        other = s.scalars(select(User).where(User.username == "leader.001")).one()
        _raw, tok = service.create_api_token(s, other, "别人的令牌")
        other_id = tok.id
    client = TestClient(build_app(geo_db))
    _login(client, "handler.cgj")
    page = client.get("/account", headers=HTML)
    assert client.post("/account/tokens", data={"name": "x"}, headers=HTML).status_code == 403
    r = client.post("/account/tokens", data={"name": "  ", "csrf_token": _csrf(page.text)}, headers=HTML)
    assert r.status_code == 400 and "令牌名称不能为空" in r.text
    r = client.post(f"/account/tokens/{other_id}/revoke", data={"csrf_token": _csrf(page.text)}, headers=HTML)
    assert r.status_code == 404
    with geo_db.session() as s:
        assert s.get(ApiToken, other_id).revoked_at is None
        assert s.scalars(select(ApiToken).where(ApiToken.user_id != other.id)).all() == []


def test_changing_ones_password_checks_the_current_one_and_ends_sessions(geo_db):
    client = TestClient(build_app(geo_db))
    _login(client, "handler.cgj")
    page = client.get("/account", headers=HTML)
    token = _csrf(page.text)
    r = client.post("/account/password", headers=HTML, data={
        "csrf_token": token, "current_password": "wrong-password", "new_password": NEW_PASSWORD,
        "confirm_password": NEW_PASSWORD})
    assert r.status_code == 400 and "当前密码不正确" in r.text
    r = client.post("/account/password", headers=HTML, data={
        "csrf_token": token, "current_password": PASSWORD, "new_password": "short",
        "confirm_password": "short"})
    assert r.status_code == 400 and "密码太短" in r.text
    r = client.post("/account/password", headers=HTML, follow_redirects=False, data={
        "csrf_token": token, "current_password": PASSWORD, "new_password": NEW_PASSWORD,
        "confirm_password": NEW_PASSWORD})
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    with geo_db.session() as s:
        user = s.scalars(select(User).where(User.username == "handler.cgj")).one()
        assert s.scalars(select(WebSession).where(WebSession.user_id == user.id)).all() == []
        assert service.authenticate(s, "handler.cgj", NEW_PASSWORD) is not None
        assert s.scalars(select(AuditLog).where(AuditLog.action == "password")).all()
    fresh = TestClient(client.app)
    _login(fresh, "handler.cgj", NEW_PASSWORD)


def test_users_passwd_command(geo_db):
    import jiedao.db
    from jiedao.auth.cli import users_app
    from jiedao.errors import NotFound, ValidationError

    prev = jiedao.db._default
    jiedao.db.set_database(geo_db)
    try:
        run = CliRunner().invoke
        r = run(users_app, ["passwd", "handler.cgj", "--password", NEW_PASSWORD])
        assert r.exit_code == 0, r.output
        assert "已为 handler.cgj 设置新密码" in r.output
        r = run(users_app, ["passwd", "handler.cgj", "--password", "x"])
        assert isinstance(r.exception, ValidationError) and "密码太短" in str(r.exception)
        r = run(users_app, ["passwd", "nobody", "--password", NEW_PASSWORD])
        assert isinstance(r.exception, NotFound)
    finally:
        jiedao.db.set_database(prev)
    with geo_db.session() as s:
        assert service.authenticate(s, "handler.cgj", NEW_PASSWORD) is not None
        assert service.authenticate(s, "handler.cgj", PASSWORD) is None
