"""Users, their scope, login sessions, API tokens and the audit log."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from jiedao.db import Base

ROLES = {
    "operator": "受理员",
    "handler": "部门处置人",
    "street_staff": "街道/社区工作人员",
    "steward": "数据管理员",
    "leader": "领导",
    "admin": "系统管理员",
}
SCOPE_LEVELS = ("district", "department", "street", "community")


class User(Base):
    """A person who logs in. ``scope_level``/``scope_code`` bound every row they can see."""

    __tablename__ = "auth_user"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20), index=True)
    scope_level: Mapped[str] = mapped_column(String(12))
    # district code, department code, street code or community code, matching scope_level
    scope_code: Mapped[str] = mapped_column(String(20), index=True)
    phone: Mapped[str | None] = mapped_column(String(20), default=None)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)


class WebSession(Base):
    """A browser login. The cookie holds the raw id; only its SHA-256 is stored."""

    __tablename__ = "auth_session"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("auth_user.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    ip: Mapped[str | None] = mapped_column(String(45), default=None)
    user: Mapped[User] = relationship()


class ApiToken(Base):
    """A bearer token for integrators. Shown once at creation; only its hash is kept."""

    __tablename__ = "auth_api_token"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("auth_user.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(12))  # first characters, to recognise it in lists
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    user: Mapped[User] = relationship()


class AuditLog(Base):
    """Every write and every sensitive read (unmasked personal data), with who and when."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("auth_user.id"), default=None, index=True)
    actor: Mapped[str] = mapped_column(String(64))  # username, "system" or "api:<token prefix>"
    action: Mapped[str] = mapped_column(String(40), index=True)  # create / update / read_sensitive…
    object_type: Mapped[str] = mapped_column(String(40))
    object_id: Mapped[str | None] = mapped_column(String(64), default=None)
    detail: Mapped[dict | None] = mapped_column(JSON, default=None)
    ip: Mapped[str | None] = mapped_column(String(45), default=None)
