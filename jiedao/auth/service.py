"""Users, password login, browser sessions and API tokens.

Every write here records an audit row in the caller's transaction (see :mod:`jiedao.auth.audit`).
Raw session ids and API tokens are returned once and never stored: only their SHA-256 is kept.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, delete, event, func, select, update
from sqlalchemy.orm import Session

from jiedao import clock
from jiedao.auth import audit, passwords
from jiedao.auth.models import ROLES, SCOPE_LEVELS, ApiToken, AuditLog, User, WebSession
from jiedao.auth.scope import Principal
from jiedao.errors import NotFound, Problem, ValidationError

# Which scope levels each role may be bound to.
ROLE_SCOPES: dict[str, tuple[str, ...]] = {
    "operator": ("district",),
    "steward": ("district",),
    "admin": ("district",),
    "handler": ("department",),
    "street_staff": ("street", "community"),
    "leader": ("district", "street"),
}
USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{1,63}$")
PHONE_RE = re.compile(r"^\+?[0-9][0-9 -]{3,18}[0-9]$")
LOCKOUT_FAILURES = 5
LOCKOUT_WINDOW = timedelta(minutes=15)
LOCKOUT_DURATION = timedelta(minutes=15)
TOKEN_PREFIX = "jd_"
TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)
LOGIN_FAILED_MESSAGE = "用户名或密码错误"
LOGIN_LOCKED_MESSAGE = "登录失败次数过多，该账号已暂时锁定，请 15 分钟后再试"


def sha256_hex(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- validation


class ScopeCodes:
    """Existing district/department/street/community codes, loaded once per validation run."""

    def __init__(self, session: Session):
        from jiedao.catalog.models import Department
        from jiedao.geo.models import Community, District, Street

        self.district = set(session.scalars(select(District.code)))
        self.department = set(session.scalars(select(Department.code)))
        self.street = set(session.scalars(select(Street.code)))
        self.community = set(session.scalars(select(Community.code)))

    def problem(self, level: str, code: str) -> str | None:
        """Why ``code`` is not a valid code of ``level``, or None."""
        if level == "district":
            if not re.fullmatch(r"\d{6}", code):
                return f"区县编码应为 6 位数字：{code}"
            # Before any boundary is imported the district table is empty; accept the code then.
            if self.district and code not in self.district:
                return f"未知的区县编码：{code}"
            return None
        known = getattr(self, level, None)
        if known is None:
            return f"未知的范围层级：{level}"
        if code not in known:
            label = {"department": "部门", "street": "街道", "community": "社区"}[level]
            return f"未知的{label}编码：{code}"
        return None


def user_problems(
    fields: dict,
    codes: ScopeCodes,
    *,
    source: str | None = None,
    row: int | None = None,
    require_password: bool = True,
) -> list[Problem]:
    """Every reason the user described by ``fields`` cannot be created (uniqueness aside).

    ``fields`` keys: username, display_name, role, scope_level, scope_code, password,
    password_hash, phone (missing keys are treated as empty).
    """

    def p(msg: str, field: str) -> Problem:
        return Problem(msg, source=source, row=row, field=field)

    out: list[Problem] = []

    def val(key: str) -> str:
        v = fields.get(key)
        return "" if v is None else str(v).strip()

    username = val("username")
    if not username:
        out.append(p("缺少用户名", "username"))
    elif not USERNAME_RE.match(username):
        out.append(p("用户名只能包含字母、数字和 . _ @ -，长度 2–64，且以字母或数字开头", "username"))
    display_name = val("display_name")
    if not display_name:
        out.append(p("缺少姓名（display_name）", "display_name"))
    elif len(display_name) > 64:
        out.append(p("姓名过长（最多 64 个字符）", "display_name"))
    role, level, code = val("role"), val("scope_level"), val("scope_code")
    if not role:
        out.append(p("缺少角色", "role"))
    elif role not in ROLES:
        out.append(p(f"未知角色：{role}（可选：{', '.join(ROLES)}）", "role"))
    if not level:
        out.append(p("缺少范围层级", "scope_level"))
    elif level not in SCOPE_LEVELS:
        out.append(p(f"未知的范围层级：{level}（可选：{', '.join(SCOPE_LEVELS)}）", "scope_level"))
    elif role in ROLE_SCOPES and level not in ROLE_SCOPES[role]:
        allowed = "、".join(ROLE_SCOPES[role])
        out.append(p(f"角色 {role}（{ROLES[role]}）的范围层级只能是 {allowed}，不能是 {level}", "scope_level"))
    if not code:
        out.append(p("缺少范围编码", "scope_code"))
    elif level in SCOPE_LEVELS and (msg := codes.problem(level, code)):
        out.append(p(msg, "scope_code"))
    password, password_hash = fields.get("password"), val("password_hash")
    has_password = password is not None and str(password) != ""
    if has_password and password_hash:
        out.append(p("password 与 password_hash 只能填写一个", "password"))
    elif has_password:
        if msg := passwords.password_problem(str(password)):
            out.append(p(msg, "password"))
    elif password_hash:
        if not passwords.is_valid_hash(password_hash):
            out.append(p("password_hash 不是有效的 argon2 哈希", "password_hash"))
    elif require_password:
        out.append(p("缺少密码（password 或 password_hash）", "password"))
    phone = val("phone")
    if phone and not PHONE_RE.match(phone):
        out.append(p(f"电话号码格式不正确：{phone}", "phone"))
    return out


# --------------------------------------------------------------------------- users


def get_user(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def create_user(
    session: Session,
    *,
    username: str,
    password: str | None = None,
    display_name: str,
    role: str,
    scope_level: str,
    scope_code: str,
    phone: str | None = None,
    password_hash: str | None = None,
    by: Principal | None = None,
    ip: str | None = None,
    codes: ScopeCodes | None = None,
) -> User:
    """Create a user after validating role, scope and password; raise ValidationError.

    Give ``password`` (checked against the policy and hashed) or a ready argon2
    ``password_hash`` (for imports and the demo, which hashes its shared password once).
    """
    fields = dict(
        username=username, display_name=display_name, role=role, scope_level=scope_level,
        scope_code=scope_code, password=password, password_hash=password_hash, phone=phone,
    )
    problems = user_problems(fields, codes or ScopeCodes(session))
    username = (username or "").strip()
    if not problems and get_user(session, username) is not None:
        problems.append(Problem(f"用户名已存在：{username}", field="username"))
    if problems:
        raise ValidationError(problems)
    user = User(
        username=username,
        display_name=display_name.strip(),
        password_hash=password_hash.strip() if password_hash else passwords.hash_password(password),
        role=role.strip(),
        scope_level=scope_level.strip(),
        scope_code=scope_code.strip(),
        phone=(phone or "").strip() or None,
        active=True,
        created_at=clock.now(),
    )
    session.add(user)
    session.flush()
    audit.record(
        session, principal=by, action="create", object_type="user", object_id=user.username,
        detail={"role": user.role, "scope_level": user.scope_level, "scope_code": user.scope_code},
        ip=ip,
    )
    return user


def update_user(
    session: Session,
    user: User,
    *,
    display_name: str,
    role: str,
    scope_level: str,
    scope_code: str,
    phone: str | None = None,
    password: str | None = None,
    password_hash: str | None = None,
    by: Principal | None = None,
    ip: str | None = None,
    codes: ScopeCodes | None = None,
) -> User:
    """Change a user's name, role, scope, phone and (when given) password; audited."""
    fields = dict(
        username=user.username, display_name=display_name, role=role, scope_level=scope_level,
        scope_code=scope_code, password=password, password_hash=password_hash, phone=phone,
    )
    problems = user_problems(fields, codes or ScopeCodes(session), require_password=False)
    if problems:
        raise ValidationError(problems)
    before = {"role": user.role, "scope_level": user.scope_level, "scope_code": user.scope_code}
    user.display_name = display_name.strip()
    user.role, user.scope_level, user.scope_code = role.strip(), scope_level.strip(), scope_code.strip()
    user.phone = (phone or "").strip() or None
    changed_password = bool(password or password_hash)
    if password:
        user.password_hash = passwords.hash_password(password)
    elif password_hash:
        user.password_hash = password_hash.strip()
    if changed_password or before["scope_code"] != user.scope_code or before["role"] != user.role:
        # A changed password or scope ends every open browser session of the user.
        session.execute(delete(WebSession).where(WebSession.user_id == user.id))
    audit.record(
        session, principal=by, action="update", object_type="user", object_id=user.username,
        detail={"before": before, "role": user.role, "scope_level": user.scope_level,
                "scope_code": user.scope_code, "password_changed": changed_password},
        ip=ip,
    )
    return user


def set_password(
    session: Session,
    user: User,
    new_password: str,
    *,
    current_password: str | None = None,
    by: Principal | None = None,
    ip: str | None = None,
) -> User:
    """Give ``user`` a new password (checked against the password rules); audited.

    When ``current_password`` is given (a user changing their own password) it must match.
    Every open browser session of the user ends.
    """
    if current_password is not None and not passwords.verify_password(user.password_hash, current_password):
        raise ValidationError([Problem("当前密码不正确", field="current_password")])
    if msg := passwords.password_problem(new_password or ""):
        raise ValidationError([Problem(msg, field="password")])
    user.password_hash = passwords.hash_password(new_password)
    session.execute(delete(WebSession).where(WebSession.user_id == user.id))
    audit.record(session, principal=by, action="password", object_type="user", object_id=user.username,
                 detail={"self": current_password is not None}, ip=ip)
    return user


def principal_for(user: User, token: ApiToken | None = None) -> Principal:
    """The Principal of ``user`` (marked as token-authenticated when ``token`` is given)."""
    return Principal(
        user_id=user.id,
        username=user.username,
        display_name=user.display_name,
        role=user.role,
        scope_level=user.scope_level,
        scope_code=user.scope_code,
        token_prefix=token.prefix if token is not None else None,
    )


# --------------------------------------------------------------------------- login


def _check_password(session: Session, username: str, password: str) -> tuple[User | None, str]:
    user = get_user(session, username) if username else None
    if user is None:
        passwords.verify_password(passwords.dummy_hash(), password or "")
        return None, "unknown_user"
    if not passwords.verify_password(user.password_hash, password or ""):
        return None, "bad_password"
    if not user.active:
        return None, "inactive"
    return user, "ok"


def authenticate(
    session: Session, username: str, password: str, *, now: datetime | None = None
) -> User | None:
    """The active user with this username and password, or None.

    An unknown username costs one hash verification like a wrong password. On success the
    hash is upgraded if its parameters are outdated and ``last_login_at`` is set.
    """
    user, _reason = _check_password(session, (username or "").strip(), password)
    if user is None:
        return None
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash_password(password)
    user.last_login_at = now or clock.now()
    return user


def lockout_until(session: Session, username: str, *, now: datetime | None = None) -> datetime | None:
    """When ``username`` may try again, if it is locked now; else None.

    Locked for LOCKOUT_DURATION after the LOCKOUT_FAILURES-th failed login within
    LOCKOUT_WINDOW (failures before the last successful login do not count). The counter
    lives in the audit log, so it holds across processes and restarts.
    """
    now = now or clock.now()
    since = now - LOCKOUT_WINDOW - LOCKOUT_DURATION
    last_ok = session.scalar(
        select(func.max(AuditLog.id)).where(
            AuditLog.action == "login", AuditLog.object_type == "user", AuditLog.object_id == username
        )
    )
    q = select(AuditLog.at).where(
        AuditLog.action == "login_failed",
        AuditLog.object_type == "user",
        AuditLog.object_id == username,
        AuditLog.at >= since,
    )
    if last_ok is not None:
        q = q.where(AuditLog.id > last_ok)
    times = sorted(session.scalars(q))
    until = None
    n = LOCKOUT_FAILURES
    for i in range(n - 1, len(times)):
        if times[i] - times[i - n + 1] <= LOCKOUT_WINDOW:
            until = times[i] + LOCKOUT_DURATION
    return until if until is not None and until > now else None


@dataclass
class LoginResult:
    """Outcome of :func:`login`. ``ok`` with a session, or an error message for the user."""

    ok: bool
    user: User | None = None
    raw_session_id: str | None = None
    web_session: WebSession | None = None
    error: str | None = None
    locked_until: datetime | None = None


def login(
    session: Session,
    username: str,
    password: str,
    *,
    ip: str | None = None,
    now: datetime | None = None,
) -> LoginResult:
    """Password login with lockout; audits success, failure and refusal while locked.

    Never raises for bad credentials, so the caller commits the audit row of a failure.
    """
    now = now or clock.now()
    username = (username or "").strip()[:64]
    until = lockout_until(session, username, now=now)
    if until is not None:
        audit.record(session, actor="anonymous", action="login_locked", object_type="user",
                     object_id=username, ip=ip, at=now)
        return LoginResult(False, error=LOGIN_LOCKED_MESSAGE, locked_until=until)
    user, reason = _check_password(session, username, password)
    if user is None:
        audit.record(session, actor="anonymous", action="login_failed", object_type="user",
                     object_id=username, detail={"reason": reason}, ip=ip, at=now)
        until = lockout_until(session, username, now=now)
        return LoginResult(
            False, error=LOGIN_LOCKED_MESSAGE if until else LOGIN_FAILED_MESSAGE, locked_until=until
        )
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash_password(password)
    user.last_login_at = now
    raw, ws = create_session(session, user, ip, now=now)
    audit.record(session, principal=principal_for(user), action="login", object_type="user",
                 object_id=username, ip=ip, at=now)
    return LoginResult(True, user=user, raw_session_id=raw, web_session=ws)


# --------------------------------------------------------------------------- sessions


def create_session(
    session: Session, user: User, ip: str | None = None, *, now: datetime | None = None
) -> tuple[str, WebSession]:
    """Open a browser session: returns the raw id (for the cookie) and the stored row."""
    from jiedao.config import get_settings

    now = now or clock.now()
    # housekeeping: forget this user's expired sessions
    session.execute(
        delete(WebSession).where(WebSession.user_id == user.id, WebSession.expires_at <= now)
    )
    raw = secrets.token_urlsafe(32)
    ws = WebSession(
        id_hash=sha256_hex(raw),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        expires_at=now + timedelta(hours=get_settings().session_hours),
        ip=ip[:45] if ip else None,
    )
    ws.user = user
    session.add(ws)
    session.flush()
    return raw, ws


def get_session(session: Session, raw_id: str | None, *, now: datetime | None = None) -> WebSession | None:
    """The live session for a raw cookie value; None when unknown, expired or the user inactive."""
    if not raw_id or len(raw_id) > 200:
        return None
    ws = session.get(WebSession, sha256_hex(raw_id))
    if ws is None or ws.expires_at <= (now or clock.now()):
        return None
    if not ws.user.active:
        return None
    return ws


def revoke_session(session: Session, raw_id: str | None) -> bool:
    """End a browser session (logout). True when one was found."""
    if not raw_id:
        return False
    res = session.execute(delete(WebSession).where(WebSession.id_hash == sha256_hex(raw_id)))
    return bool(res.rowcount)


# --------------------------------------------------------------------------- API tokens


def create_api_token(
    session: Session, user: User, name: str, *, by: Principal | None = None, ip: str | None = None
) -> tuple[str, ApiToken]:
    """Create a bearer token for ``user``. Returns the raw token (show it once) and the row."""
    name = (name or "").strip()
    if not name:
        raise ValidationError(Problem("令牌名称不能为空", field="name"))
    if len(name) > 100:
        raise ValidationError(Problem("令牌名称过长（最多 100 个字符）", field="name"))
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    tok = ApiToken(
        user_id=user.id, name=name, prefix=raw[:10], token_hash=sha256_hex(raw), created_at=clock.now()
    )
    tok.user = user
    session.add(tok)
    session.flush()
    audit.record(
        session, principal=by or principal_for(user), action="token_create", object_type="api_token",
        object_id=tok.id, detail={"name": name, "prefix": tok.prefix, "user": user.username}, ip=ip,
    )
    return raw, tok


def find_api_token(session: Session, raw: str | None, *, now: datetime | None = None) -> ApiToken | None:
    """The live token row for a raw bearer token (revoked or of an inactive user → None).

    Touches ``last_used_at`` at most once a minute.
    """
    if not raw or not raw.startswith(TOKEN_PREFIX) or len(raw) > 200:
        return None
    tok = session.scalar(select(ApiToken).where(ApiToken.token_hash == sha256_hex(raw)))
    if tok is None or tok.revoked_at is not None or not tok.user.active:
        return None
    now = now or clock.now()
    if tok.last_used_at is None or now - tok.last_used_at >= TOKEN_TOUCH_INTERVAL:
        tok.last_used_at = now
    return tok


_BEARER = (
    select(ApiToken.id, ApiToken.prefix, ApiToken.revoked_at, ApiToken.last_used_at,
           User.id.label("user_id"), User.username, User.display_name, User.role,
           User.scope_level, User.scope_code, User.active)
    .join(User, User.id == ApiToken.user_id)
    .where(ApiToken.token_hash == bindparam("token_hash"))
)
_TOUCH = update(ApiToken).where(ApiToken.id == bindparam("token_id")).values(
    last_used_at=bindparam("now"))


# Live bearer tokens seen recently: (engine, token hash) → (Principal, monotonic expiry).
# An integration calls many times a second with one token; looking it up once per
# BEARER_CACHE_SECONDS instead of on every request saves a SELECT (and on intake, a round
# trip) per call. The price: a token revoked, or a user deactivated or changed, in ANOTHER
# process (a second web worker, the CLI) is still accepted by this process for at most
# BEARER_CACHE_SECONDS. A change flushed through an ORM session in THIS process empties the
# cache at once (see :func:`_forget_bearers_on_user_change`). Only live tokens are cached.
BEARER_CACHE_SECONDS = 5.0
BEARER_CACHE_MAX = 10_000
_bearers: dict[tuple, tuple[Principal, float]] = {}
_monotonic = time.monotonic  # a test may replace it


def forget_bearers() -> None:
    """Empty the bearer cache (a token, user or role changed)."""
    _bearers.clear()


def cached_bearer(engine, raw: str | None) -> Principal | None:
    """The Principal of ``raw`` if this process found the token live in the last
    ``BEARER_CACHE_SECONDS`` (on ``engine``'s database); None means: look it up."""
    if not raw or not _bearers:
        return None
    hit = _bearers.get((engine, sha256_hex(raw)))
    if hit is None:
        return None
    if hit[1] <= _monotonic():
        _bearers.pop((engine, sha256_hex(raw)), None)
        return None
    return hit[0]


def principal_for_bearer(conn: Connection, raw: str | None, *,
                         now: datetime | None = None, cache: bool = True) -> Principal | None:
    """The Principal of a raw bearer token, or None (unknown, revoked, inactive user).

    The request-path twin of :func:`find_api_token`: ONE Core SELECT of the token and its
    user on ``conn``, plus the ``last_used_at`` touch at most once a minute (on an autocommit
    connection, as the web app uses, there are no BEGIN/COMMIT round trips; otherwise the
    caller commits). Tokens are 256-bit random strings, so their
    stored SHA-256 is as safe as a slow hash and costs microseconds.

    With ``cache`` a token found live within the last ``BEARER_CACHE_SECONDS`` is not looked
    up again (:func:`cached_bearer`; ``last_used_at`` is then touched on the next look-up).
    """
    if not raw or not raw.startswith(TOKEN_PREFIX) or len(raw) > 200:
        return None
    if cache:
        hit = cached_bearer(conn.engine, raw)
        if hit is not None:
            return hit
    token_hash = sha256_hex(raw)
    row = conn.execute(_BEARER, {"token_hash": token_hash}).first()
    if row is None or row.revoked_at is not None or not row.active:
        return None
    now = now or clock.now()
    if row.last_used_at is None or now - row.last_used_at >= TOKEN_TOUCH_INTERVAL:
        conn.execute(_TOUCH, {"token_id": row.id, "now": now})  # committed by the caller
    p = Principal(user_id=row.user_id, username=row.username, display_name=row.display_name,
                  role=row.role, scope_level=row.scope_level, scope_code=row.scope_code,
                  token_prefix=row.prefix)
    if cache:
        if len(_bearers) >= BEARER_CACHE_MAX:
            _bearers.clear()
        _bearers[(conn.engine, token_hash)] = (p, _monotonic() + BEARER_CACHE_SECONDS)
    return p


@event.listens_for(Session, "after_flush")
def _forget_bearers_on_user_change(session: Session, _flush_context) -> None:
    """A user or an API token changed through the ORM in this process (revocation,
    deactivation, a new role or scope) empties the bearer cache when flushed, and again when
    committed (a request in between may have cached the row as it was before the commit)."""
    if any(isinstance(o, (User, ApiToken)) for o in (*session.dirty, *session.deleted)):
        session.info["jiedao_forget_bearers"] = True
        forget_bearers()


@event.listens_for(Session, "after_commit")
def _forget_bearers_after_commit(session: Session) -> None:
    if session.info.pop("jiedao_forget_bearers", False):
        forget_bearers()


def verify_api_token(session: Session, raw: str | None, *, now: datetime | None = None) -> User | None:
    """The user a raw bearer token belongs to, or None when unknown or revoked."""
    tok = find_api_token(session, raw, now=now)
    return tok.user if tok is not None else None


def list_api_tokens(session: Session, user_id: int) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id)))


def revoke_api_token(
    session: Session, token_id: int, *, by: Principal | None = None, ip: str | None = None
) -> ApiToken:
    """Revoke a token. A non-admin principal may only revoke their own (others look missing)."""
    tok = session.get(ApiToken, token_id)
    if tok is None or (by is not None and by.role != "admin" and tok.user_id != by.user_id):
        raise NotFound(f"令牌不存在：{token_id}")
    if tok.revoked_at is None:
        tok.revoked_at = clock.now()
        audit.record(
            session, principal=by, action="token_revoke", object_type="api_token", object_id=tok.id,
            detail={"name": tok.name, "prefix": tok.prefix}, ip=ip,
        )
    return tok
