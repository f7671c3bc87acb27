"""Tables of the cockpit: early warnings (预警) found by :mod:`jiedao.cockpit.warnings`.

Scope columns (street/community codes) sit on the warning so that
``jiedao.auth.scope.restrict`` filters it with one equality test, like cases.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from jiedao.db import Base

WARNING_KINDS = {"spike": "类别激增", "recurring": "同址反复", "repeat_caller": "重复来电",
                 "new_term": "新词上升"}
WARNING_STATUSES = {"open": "待处理", "tasked": "已转任务", "dismissed": "已忽略", "expired": "已过期"}


class CockpitWarning(Base):
    """One hot spot or early warning. ``key`` identifies what was found (kind, subject and
    period) so that a re-scan updates the same row instead of adding a second one."""

    __tablename__ = "cockpit_warning"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    title: Mapped[str] = mapped_column(String(200))
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    matter_code: Mapped[str | None] = mapped_column(String(20), default=None)
    grid_code: Mapped[str | None] = mapped_column(String(15), default=None)
    street_code: Mapped[str | None] = mapped_column(String(9), default=None, index=True)
    community_code: Mapped[str | None] = mapped_column(String(12), default=None, index=True)
    window_start: Mapped[datetime] = mapped_column(DateTime)
    window_end: Mapped[datetime] = mapped_column(DateTime, index=True)
    score: Mapped[float] = mapped_column(Float, default=0.0)
    status: Mapped[str] = mapped_column(String(12), default="open", index=True)
    case_ids: Mapped[list] = mapped_column(JSON, default=list)
    task_case_id: Mapped[int | None] = mapped_column(
        ForeignKey("cases_case.id", ondelete="SET NULL"), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
