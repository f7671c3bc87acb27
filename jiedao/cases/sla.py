"""SLA watch: mark assignments that used most of their time (warning) or ran past it (overdue).

Time used is measured in working time when the deadline was set in working time, so a case
dispatched on Friday afternoon does not turn amber over the weekend. Deadlines only move when
an extension is approved (see :mod:`jiedao.cases.workflow`).

:class:`SweepScheduler` runs the sweep every few minutes in a background thread: ``jiedao
serve`` starts one per server (in the parent process, so several uvicorn workers do not sweep
several times), and ``jiedao cases sweep --every N`` runs it in the foreground for a district
that serves the pages elsewhere. The sweep is idempotent, so an extra run changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
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


log = logging.getLogger(__name__)


class SweepScheduler:
    """Runs :func:`sweep` at once and then every ``seconds`` in a daemon thread."""

    def __init__(self, database, seconds: float, *, calendar: WorkCalendar | None = None,
                 warn_fraction: float = DEFAULT_WARN_FRACTION, now: Callable[[], datetime] | None = None):
        if seconds <= 0:
            raise ValueError("the sweep interval must be positive")
        self.database, self.seconds, self.warn_fraction = database, seconds, warn_fraction
        self._calendar = calendar
        self._now = now
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0
        self.last: dict | None = None  # counts of the latest run
        self.failures = 0

    def run_once(self) -> dict:
        """One sweep as of now, in its own transaction."""
        from jiedao import clock
        from jiedao.catalog.calendar import get_calendar

        calendar = self._calendar or get_calendar()
        now = (self._now or clock.now)()
        with self.database.session() as s:
            counts = sweep(s, calendar, now, warn_fraction=self.warn_fraction)
        self.runs += 1
        self.last = counts
        if counts["warned"] or counts["overdue"]:
            log.info("时限巡检 %s：新增预警 %d 条，新增超时 %d 条", f"{now:%Y-%m-%d %H:%M}",
                     counts["warned"], counts["overdue"])
        return counts

    def _loop(self) -> None:
        while True:
            try:
                self.run_once()
            except Exception:  # a locked or unreachable database: try again next time
                self.failures += 1
                log.exception("时限巡检失败，%s 秒后重试", self.seconds)
            if self._stop.wait(self.seconds):
                return

    def start(self) -> SweepScheduler:
        """Start the background thread (a daemon: it ends with the process)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="jiedao-sla-sweep", daemon=True)
            self._thread.start()
        return self

    def run_forever(self) -> None:
        """Sweep in the foreground until interrupted (``jiedao cases sweep --every``)."""
        with contextlib.suppress(KeyboardInterrupt):
            self._loop()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
