"""Passwords, users, login, sessions, API tokens, lockout and the audit trail."""

from __future__ import annotations

from datetime import timedelta

import pytest
from argon2 import PasswordHasher
from sqlalchemy import func, select

from jiedao import clock
from jiedao.auth import audit, passwords, service
from jiedao.auth.models import ApiToken, AuditLog, User, WebSession
from jiedao.errors import NotFound, ValidationError

from .conftest import C11, PASSWORD, S1, password_hash


def audit_rows(db, **where):
    with db.session() as s:
        q = select(AuditLog).order_by(AuditLog.id)
        for k, v in where.items():
            q = q.where(getattr(AuditLog, k) == v)
        return list(s.scalars(q))


# ------------------------------------------------------------------ passwords


def test_hash_verify_and_policy():
    h = password_hash()
    assert h.startswith("$argon2id$")
    assert passwords.verify_password(h, PASSWORD)
    assert not passwords.verify_password(h, PASSWORD + "x")
    assert not passwords.verify_password("not-a-hash", PASSWORD)
    assert not passwords.needs_rehash(h)
    assert passwords.needs_rehash("garbage")
    assert passwords.is_valid_hash(h) and not passwords.is_valid_hash("$2b$12$abc")
    assert "至少需要 8 个字符" in passwords.password_problem("short7!")
    assert passwords.password_problem("") == "密码不能为空"
    assert passwords.password_problem("        ") == "密码不能全是空白字符"
    assert passwords.password_problem("long enough") is None


def test_login_rehashes_outdated_hash(geo_db):
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    assert passwords.needs_rehash(weak)
    with geo_db.session() as s:
        service.create_user(s, username="old", password_hash=weak, display_name="旧用户",
                            role="operator", scope_level="district", scope_code="420199")
    with geo_db.session() as s:
        u = service.authenticate(s, "old", PASSWORD)
        assert u is not None and u.last_login_at is not None
    with geo_db.session() as s:
        new = service.get_user(s, "old").password_hash
    assert new != weak and not passwords.needs_rehash(new)
    assert passwords.verify_password(new, PASSWORD)


# ------------------------------------------------------------------ users


def test_create_user_validation(geo_db):
    ok = dict(username="op02", password="jiedao2026!", display_name="受理员二", role="operator",
              scope_level="district", scope_code="420199")
    cases = [
        ({"role": "boss"}, "role"),
        ({"scope_level": "street", "scope_code": S1}, "scope_level"),  # operator must be district
        ({"role": "handler", "scope_level": "department", "scope_code": "NOPE"}, "scope_code"),
        ({"role": "street_staff", "scope_level": "department", "scope_code": "CGJ"}, "scope_level"),
        ({"role": "street_staff", "scope_level": "street", "scope_code": "420199009"}, "scope_code"),
        ({"role": "street_staff", "scope_level": "community", "scope_code": "420199001999"},
         "scope_code"),
        ({"role": "leader", "scope_level": "community", "scope_code": C11}, "scope_level"),
        ({"scope_code": "999999"}, "scope_code"),
        ({"password": "short"}, "password"),
        ({"username": "admin"}, "username"),  # exists
        ({"username": "bad name"}, "username"),
        ({"display_name": ""}, "display_name"),
        ({"phone": "call me"}, "phone"),
    ]
    for change, field in cases:
        with pytest.raises(ValidationError) as e, geo_db.session() as s:
            service.create_user(s, **{**ok, **change})
        assert field in [p.field for p in e.value.problems], (change, e.value.problems)
    with geo_db.session() as s:
        assert s.scalar(select(func.count()).select_from(User).where(User.username == "op02")) == 0
    # every valid role/scope combination is accepted
    with geo_db.session() as s:
        service.create_user(s, **{**ok, "phone": "13812345678"})
        for role, level, code in (("handler", "department", "JD" + S1),
                                  ("street_staff", "community", C11),
                                  ("leader", "district", "420199"),
                                  ("steward", "district", "420199")):
            service.create_user(s, username=f"u.{role}", password_hash=password_hash(),
                                display_name=role, role=role, scope_level=level, scope_code=code)
    created = audit_rows(geo_db, action="create", object_type="user", object_id="op02")
    assert len(created) == 1 and created[0].actor == "system"
    assert created[0].detail["scope_code"] == "420199"


# ------------------------------------------------------------------ authenticate / login


def test_authenticate_happy_wrong_unknown_inactive(geo_db):
    with geo_db.session() as s:
        u = service.authenticate(s, "street.001", PASSWORD)
        assert u is not None and u.username == "street.001" and u.last_login_at is not None
        assert service.authenticate(s, "street.001", "wrong-password") is None
        assert service.authenticate(s, "nobody", PASSWORD) is None
        assert service.authenticate(s, "", "") is None
        service.get_user(s, "street.002").active = False
    with geo_db.session() as s:
        assert service.authenticate(s, "street.002", PASSWORD) is None


def test_login_audits_success_and_failure_with_same_message(geo_db):
    with geo_db.session() as s:
        bad_pw = service.login(s, "admin", "wrong-password", ip="10.0.0.1")
        unknown = service.login(s, "ghost", "wrong-password", ip="10.0.0.1")
        good = service.login(s, "admin", PASSWORD, ip="10.0.0.2")
    assert not bad_pw.ok and not unknown.ok
    assert bad_pw.error == unknown.error == "用户名或密码错误"
    assert good.ok and good.raw_session_id and good.web_session.csrf_token
    failed = audit_rows(geo_db, action="login_failed")
    assert [(r.object_id, r.detail["reason"], r.user_id) for r in failed] == [
        ("admin", "bad_password", None), ("ghost", "unknown_user", None)]
    ok = audit_rows(geo_db, action="login")
    assert len(ok) == 1 and ok[0].actor == "admin" and ok[0].ip == "10.0.0.2"
    assert ok[0].user_id == good.user.id


def test_lockout_after_five_failures_within_15_minutes(geo_db):
    t0 = clock.now().replace(microsecond=0)
    with geo_db.session() as s:
        for i in range(4):
            r = service.login(s, "street.001", "wrong-password", now=t0 + timedelta(minutes=i))
            assert r.error == "用户名或密码错误"
        r = service.login(s, "street.001", "wrong-password", now=t0 + timedelta(minutes=4))
        assert not r.ok and r.locked_until == t0 + timedelta(minutes=19)
        assert "锁定" in r.error
    # while locked even the right password is refused (and not checked)
    with geo_db.session() as s:
        r = service.login(s, "street.001", PASSWORD, now=t0 + timedelta(minutes=18))
        assert not r.ok and r.locked_until is not None
    assert len(audit_rows(geo_db, action="login_locked")) == 1
    # the lock lives in the database: a new session (or process) sees it
    with geo_db.session() as s:
        assert service.lockout_until(s, "street.001", now=t0 + timedelta(minutes=10))
        assert service.lockout_until(s, "street.002", now=t0 + timedelta(minutes=10)) is None
    with geo_db.session() as s:
        r = service.login(s, "street.001", PASSWORD, now=t0 + timedelta(minutes=19, seconds=1))
        assert r.ok
    # a success resets the counter
    with geo_db.session() as s:
        r = service.login(s, "street.001", "wrong-password", now=t0 + timedelta(minutes=20))
        assert r.error == "用户名或密码错误"


def test_failures_spread_over_more_than_15_minutes_do_not_lock(geo_db):
    t0 = clock.now()
    with geo_db.session() as s:
        for i in range(6):
            r = service.login(s, "ghost", "wrong-password", now=t0 + timedelta(minutes=4 * i))
            assert r.error == "用户名或密码错误" and r.locked_until is None


# ------------------------------------------------------------------ sessions


def test_session_lifecycle_and_expiry(geo_db):
    from jiedao.config import get_settings

    t0 = clock.now()
    with geo_db.session() as s:
        user = service.get_user(s, "street.001")
        raw, ws = service.create_session(s, user, "127.0.0.1", now=t0)
    assert ws.id_hash == service.sha256_hex(raw) and raw not in ws.id_hash
    hours = get_settings().session_hours
    with geo_db.session() as s:
        assert service.get_session(s, raw, now=t0 + timedelta(hours=hours) - timedelta(seconds=1))
        assert service.get_session(s, raw, now=t0 + timedelta(hours=hours)) is None
        assert service.get_session(s, "forged", now=t0) is None
        assert service.get_session(s, None) is None
    with geo_db.session() as s:
        assert service.revoke_session(s, raw)
        assert service.get_session(s, raw, now=t0) is None
        assert not service.revoke_session(s, raw)
    # expired sessions of a user are cleaned up at the next login
    with geo_db.session() as s:
        user = service.get_user(s, "street.001")
        service.create_session(s, user, now=t0 - timedelta(hours=hours + 1))
        service.create_session(s, user, now=t0)
        assert s.scalar(select(func.count()).select_from(WebSession)) == 1


def test_inactive_user_session_is_dead(geo_db):
    with geo_db.session() as s:
        raw, _ = service.create_session(s, service.get_user(s, "street.002"))
    with geo_db.session() as s:
        service.get_user(s, "street.002").active = False
    with geo_db.session() as s:
        assert service.get_session(s, raw) is None


# ------------------------------------------------------------------ API tokens


def test_api_token_create_verify_revoke(geo_db):
    with geo_db.session() as s:
        user = service.get_user(s, "handler.cgj")
        raw, tok = service.create_api_token(s, user, "对接系统")
        tid = tok.id
    assert raw.startswith("jd_") and len(raw) > 40
    with geo_db.session() as s:
        row = s.get(ApiToken, tid)
        assert row.token_hash == service.sha256_hex(raw) and row.prefix == raw[:10]
        assert raw not in (row.token_hash, row.prefix)
    t0 = clock.now()
    with geo_db.session() as s:
        assert service.verify_api_token(s, raw, now=t0).username == "handler.cgj"
        assert service.verify_api_token(s, raw[:-1] + ("A" if raw[-1] != "A" else "B")) is None
        assert service.verify_api_token(s, "not-a-token") is None
    with geo_db.session() as s:
        assert s.get(ApiToken, tid).last_used_at == t0
        service.verify_api_token(s, raw, now=t0 + timedelta(seconds=30))
        assert s.get(ApiToken, tid).last_used_at == t0  # at most once a minute
        service.verify_api_token(s, raw, now=t0 + timedelta(seconds=61))
        assert s.get(ApiToken, tid).last_used_at == t0 + timedelta(seconds=61)
    other = None
    with geo_db.session() as s:
        other = service.principal_for(service.get_user(s, "street.001"))
        owner = service.principal_for(service.get_user(s, "handler.cgj"))
    with pytest.raises(NotFound), geo_db.session() as s:
        service.revoke_api_token(s, tid, by=other)  # not theirs
    with geo_db.session() as s:
        service.revoke_api_token(s, tid, by=owner)
    with geo_db.session() as s:
        assert service.verify_api_token(s, raw) is None
    with pytest.raises(ValidationError), geo_db.session() as s:
        service.create_api_token(s, service.get_user(s, "admin"), "  ")
    actions = [(r.action, r.actor) for r in audit_rows(geo_db, object_type="api_token")]
    assert actions == [("token_create", "handler.cgj"), ("token_revoke", "handler.cgj")]


# ------------------------------------------------------------------ audit


def test_audit_row_exists_iff_write_committed(geo_db):
    with pytest.raises(RuntimeError), geo_db.session() as s:
        service.create_user(s, username="rolled", password_hash=password_hash(),
                            display_name="回滚", role="admin", scope_level="district",
                            scope_code="420199")
        raise RuntimeError("boom")
    assert audit_rows(geo_db, object_id="rolled") == []
    with geo_db.session() as s:
        p = service.principal_for(service.get_user(s, "admin"))
        audit.record(s, principal=p, action="read_sensitive", object_type="user",
                     object_id="street.001", detail={"field": "phone"}, ip="::1")
    row = audit_rows(geo_db, action="read_sensitive")[0]
    assert (row.actor, row.user_id, row.ip) == ("admin", p.user_id, "::1")
    from dataclasses import replace

    with geo_db.session() as s:
        audit.record(s, principal=replace(p, token_prefix="jd_abc1234"), action="read_sensitive",
                     object_type="user")
    assert audit_rows(geo_db, action="read_sensitive")[1].actor == "api:jd_abc1234"


def test_masking():
    assert audit.mask_phone("13812345678") == "138****5678"
    assert audit.mask_phone("") == "" and audit.mask_phone(None) == ""
    assert audit.mask_phone("027-8888") == "027*8888"
    assert audit.mask_name("张三丰") == "张**"
    assert audit.mask_name("张三") == "张*"
    assert audit.mask_name("欧阳娜娜") == "欧***"
    assert audit.mask_name("张") == "*"
    assert audit.mask_id_number("420102199001011234") == "420102********1234"


def test_bearer_cache_forgets_in_process_changes_at_once_and_others_after_its_ttl(geo_db, monkeypatch):
    """A live token is looked up once per BEARER_CACHE_SECONDS. Revoking it, deactivating its
    user or changing the role through the ORM in this process takes effect at once; a change
    the cache cannot see (another process: here a Core UPDATE) takes effect when it expires."""
    from sqlalchemy import update

    now = [1000.0]
    monkeypatch.setattr(service, "_monotonic", lambda: now[0])
    service.forget_bearers()
    with geo_db.session() as s:
        raw, tok = service.create_api_token(s, service.get_user(s, "admin"), "cache")
        tid = tok.id

    def principal():
        with geo_db.engine.connect() as conn:
            p = service.principal_for_bearer(conn, raw)
            conn.commit()
            return p

    assert principal().role == "admin"
    assert service.cached_bearer(geo_db.engine, raw).username == "admin"
    # another process revokes it: this one still accepts it until the entry expires
    with geo_db.engine.begin() as conn:
        conn.execute(update(ApiToken).where(ApiToken.id == tid).values(revoked_at=clock.now()))
    assert principal() is not None
    now[0] += service.BEARER_CACHE_SECONDS
    assert service.cached_bearer(geo_db.engine, raw) is None and principal() is None
    with geo_db.engine.begin() as conn:
        conn.execute(update(ApiToken).where(ApiToken.id == tid).values(revoked_at=None))
    # changes through the ORM in this process: at once
    assert principal().role == "admin"
    with geo_db.session() as s:
        service.get_user(s, "admin").role = "leader"
    assert service.cached_bearer(geo_db.engine, raw) is None and principal().role == "leader"
    with geo_db.session() as s:
        service.get_user(s, "admin").active = False
    assert principal() is None
    with geo_db.session() as s:
        service.get_user(s, "admin").active = True
    assert principal() is not None
    with geo_db.session() as s:
        service.revoke_api_token(s, tid)
    assert service.cached_bearer(geo_db.engine, raw) is None and principal() is None
    # unknown and revoked tokens are never cached
    assert service.cached_bearer(geo_db.engine, raw) is None
