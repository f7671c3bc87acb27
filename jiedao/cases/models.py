"""Tables of the case loop: cases, callers, assignments, extensions, the transition log,
events (duplicate clusters), follow-ups and dispatch overrides.

Scope columns (street/community/grid codes, main department) are denormalised onto the case so
that ``jiedao.auth.scope.restrict`` filters it with one equality test.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from jiedao.db import Base

CHANNELS = {
    "hotline": "12345热线",
    "web": "网站",
    "app": "移动端",
    "open311": "Open311接口",
    "api": "REST接口",
    "import": "批量导入",
    "patrol": "网格巡查",
    "sensor": "感知告警",
    "enterprise": "企业服务",
    "proactive": "主动治理",
}
KINDS = {"appeal": "市民诉求", "enterprise": "企业诉求", "patrol": "巡查上报", "alert": "告警"}
URGENCIES = ("紧急", "较急", "一般")


class Caller(Base):
    """A person or enterprise who calls. Recognised across cases by a keyed hash of the phone."""

    __tablename__ = "cases_caller"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    phone_hash: Mapped[str] = mapped_column(String(64), unique=True)
    phone: Mapped[str] = mapped_column(String(20))  # shown masked; unmasked reads are audited
    name: Mapped[str | None] = mapped_column(String(64), default=None)
    enterprise: Mapped[str | None] = mapped_column(String(200), default=None)
    first_seen: Mapped[datetime] = mapped_column(DateTime)
    case_count: Mapped[int] = mapped_column(Integer, default=0)


class Event(Base):
    """A cluster of cases about the same problem at the same place (one event, many callers)."""

    __tablename__ = "cases_event"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    matter_code: Mapped[str | None] = mapped_column(ForeignKey("catalog_matter.code"), default=None)
    grid_code: Mapped[str | None] = mapped_column(ForeignKey("geo_grid.code"), default=None, index=True)
    address_code: Mapped[str | None] = mapped_column(String(24), default=None)
    title: Mapped[str] = mapped_column(String(200))
    first_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    last_at: Mapped[datetime] = mapped_column(DateTime)
    case_count: Mapped[int] = mapped_column(Integer, default=1)


class Case(Base):
    """One appeal, request, patrol report or alert, from intake to follow-up."""

    __tablename__ = "cases_case"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(24), unique=True)  # public tracking code
    channel: Mapped[str] = mapped_column(String(16), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="appeal")
    title: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    caller_id: Mapped[int | None] = mapped_column(ForeignKey("cases_caller.id"), default=None, index=True)
    location_text: Mapped[str | None] = mapped_column(String(300), default=None)
    lon: Mapped[float | None] = mapped_column(Float, default=None)
    lat: Mapped[float | None] = mapped_column(Float, default=None)
    address_code: Mapped[str | None] = mapped_column(ForeignKey("geo_address.code"), default=None)
    grid_code: Mapped[str | None] = mapped_column(ForeignKey("geo_grid.code"), default=None, index=True)
    community_code: Mapped[str | None] = mapped_column(String(12), default=None, index=True)
    street_code: Mapped[str | None] = mapped_column(String(9), default=None, index=True)
    matter_code: Mapped[str | None] = mapped_column(ForeignKey("catalog_matter.code"), default=None, index=True)
    category_confidence: Mapped[float | None] = mapped_column(Float, default=None)
    urgency: Mapped[str] = mapped_column(String(4), default="一般")
    event_id: Mapped[int | None] = mapped_column(ForeignKey("cases_event.id"), default=None, index=True)
    main_department_code: Mapped[str | None] = mapped_column(
        ForeignKey("catalog_department.code"), default=None, index=True
    )
    state: Mapped[str] = mapped_column(String(16), index=True, default="received")
    version: Mapped[int] = mapped_column(Integer, default=0)
    supervised: Mapped[bool] = mapped_column(Boolean, default=False)
    reopen_count: Mapped[int] = mapped_column(Integer, default=0)
    satisfaction: Mapped[str | None] = mapped_column(String(8), default=None)
    repeat_caller: Mapped[bool] = mapped_column(Boolean, default=False)
    analysis: Mapped[dict | None] = mapped_column(JSON, default=None)  # the analysis card
    idempotency_key: Mapped[str | None] = mapped_column(String(100), default=None, unique=True)
    created_by: Mapped[str] = mapped_column(String(64), default="system")
    received_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    updated_at: Mapped[datetime] = mapped_column(DateTime)

    caller: Mapped[Caller | None] = relationship()
    assignments: Mapped[list[Assignment]] = relationship(
        back_populates="case", order_by="Assignment.seq", cascade="all, delete-orphan"
    )
    transitions: Mapped[list[TransitionLog]] = relationship(
        order_by="TransitionLog.seq", cascade="all, delete-orphan"
    )

    # The service sets version itself (old + 1) on every action, so the UPDATE always runs
    # and carries WHERE version = old even when only child rows changed.
    __mapper_args__ = {"version_id_col": version, "version_id_generator": False}
    __table_args__ = (
        Index("ix_cases_case_street_received", "street_code", "received_at"),
        # Lets the cockpit mirror compare (id, version, code) of every case from the index
        # alone instead of scanning the wide case rows.
        Index("ix_cases_case_id_version_code", "id", "version", "code"),
        # The duplicate finder's candidates: the same matter in the same grid within a window.
        Index("ix_cases_case_grid_matter_received", "grid_code", "matter_code", "received_at"),
    )


class Assignment(Base):
    """A department's share of a case (主办 or 协办), with its own deadline and state."""

    __tablename__ = "cases_assignment"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases_case.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)  # position within the case, stable
    department_code: Mapped[str] = mapped_column(ForeignKey("catalog_department.code"), index=True)
    role: Mapped[str] = mapped_column(String(4))  # main / co
    state: Mapped[str] = mapped_column(String(12), index=True)
    round: Mapped[int] = mapped_column(Integer, default=1)
    dispatched_at: Mapped[datetime] = mapped_column(DateTime)
    deadline: Mapped[datetime] = mapped_column(DateTime, index=True)
    sign_deadline: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    signed_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    replied_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    reply: Mapped[str | None] = mapped_column(Text, default=None)
    warned: Mapped[bool] = mapped_column(Boolean, default=False)  # SLA warning raised
    overdue: Mapped[bool] = mapped_column(Boolean, default=False)
    extensions: Mapped[list[ExtensionRequest]] = relationship(
        order_by="ExtensionRequest.id", cascade="all, delete-orphan"
    )
    case: Mapped[Case] = relationship(back_populates="assignments")

    __table_args__ = (UniqueConstraint("case_id", "seq"),)


class ExtensionRequest(Base):
    __tablename__ = "cases_extension"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(
        ForeignKey("cases_assignment.id", ondelete="CASCADE"), index=True
    )
    requested_at: Mapped[datetime] = mapped_column(DateTime)
    requested_by: Mapped[str] = mapped_column(String(64))
    new_deadline: Mapped[datetime] = mapped_column(DateTime)
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10), default="pending")
    decided_by: Mapped[str | None] = mapped_column(String(64), default=None)


class TransitionLog(Base):
    """Every state change of a case: who, when, from, to, why."""

    __tablename__ = "cases_transition"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases_case.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(DateTime, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(24))
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    assignment_seq: Mapped[int | None] = mapped_column(Integer, default=None)

    __table_args__ = (UniqueConstraint("case_id", "seq"),)


class FollowUp(Base):
    """回访 record: satisfaction and comment after the case was closed."""

    __tablename__ = "cases_followup"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases_case.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    actor: Mapped[str] = mapped_column(String(64))
    satisfaction: Mapped[str] = mapped_column(String(8))
    comment: Mapped[str | None] = mapped_column(Text, default=None)
    round: Mapped[int] = mapped_column(Integer, default=1)


class DispatchOverride(Base):
    """The operator chose another category or department than suggested: training signal."""

    __tablename__ = "cases_dispatch_override"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases_case.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    actor: Mapped[str] = mapped_column(String(64))
    suggested_matter: Mapped[str | None] = mapped_column(String(20), default=None)
    chosen_matter: Mapped[str | None] = mapped_column(String(20), default=None)
    suggested_department: Mapped[str | None] = mapped_column(String(20), default=None)
    chosen_department: Mapped[str | None] = mapped_column(String(20), default=None)
    text: Mapped[str] = mapped_column(Text)
    used_in_training: Mapped[bool] = mapped_column(Boolean, default=False)
    detail: Mapped[dict | None] = mapped_column(JSON, default=None)
