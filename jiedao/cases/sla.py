"""SLA watch: mark assignments that used most of their time (warning) or ran past it (overdue).

Time used is measured in working time when the deadline was set in working time, so a case
dispatched on Friday afternoon does not turn amber over the weekend. Deadlines only move when
an extension is approved (see :mod:`jiedao.cases.workflow`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from jiedao.cases.models import Assignment
from jiedao.catalog.calendar import WorkCalendar

OPEN_STATES = ("pending", "signed", "in_progress")
DEFAULT_WARN_FRACTION = 0.75


def used_fraction(calendar: WorkCalendar, start: datetime, deadline: datetime, now: datetime) -> float:
    """Share of the allowed time already used (0 at start, 1 at the deadline, >1 after)."""
    if now >= deadline:
        return 1.0 + (now - deadline).total_seconds() / max((deadline - start).total_seconds(), 1)
    total = calendar.working_seconds_between(start, deadline)
    if total <= 0:  # a round-the-clock SLA that lies wholly outside office hours
        total, used = (deadline - start).total_seconds(), (now - start).total_seconds()
    else:
        used = calendar.working_seconds_between(start, now)
    return max(used, 0) / max(total, 1)


def sweep(session: Session, calendar: WorkCalendar, now: datetime,
          warn_fraction: float = DEFAULT_WARN_FRACTION) -> dict:
    """Flag open assignments as warned/overdue as of ``now``. Returns counts of new flags."""
    overdue = session.execute(
        update(Assignment)
        .where(Assignment.state.in_(OPEN_STATES), Assignment.overdue.is_(False),
               Assignment.deadline <= now)
        .values(overdue=True, warned=True)
    ).rowcount
    warned = 0
    rows = session.execute(
        select(Assignment.id, Assignment.dispatched_at, Assignment.deadline)
        .where(Assignment.state.in_(OPEN_STATES), Assignment.warned.is_(False),
               Assignment.deadline > now)
    ).all()
    ids = [r.id for r in rows if used_fraction(calendar, r.dispatched_at, r.deadline, now) >= warn_fraction]
    for i in range(0, len(ids), 500):
        warned += session.execute(
            update(Assignment).where(Assignment.id.in_(ids[i:i + 500])).values(warned=True)
        ).rowcount
    return {"warned": warned, "overdue": overdue}
