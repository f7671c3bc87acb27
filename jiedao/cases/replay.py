"""Replay the demo year (:mod:`jiedao.demo.appeals`) through the real case engine.

What runs for real
------------------
* **Training.** The year is generated once and spooled to a temporary file; the appeals of
  the train split (``held_out`` False, 80 %) train the category classifier through the
  analysis's own training function (:func:`jiedao.cases.analysis.classifier.train`, which
  samples at most :data:`REPLAY_TRAIN_CAP` rows per matter; the small test demo uses the
  first :data:`SMALL_TRAIN_ROWS`). The held-out 20 % are only ever analysed, never trained
  on; the replay reports macro-F1 on them, the right-grid rate on held-out appeals that name
  a place, and duplicate precision/recall (a held-out appeal joined to an earlier case of the
  same true event is a true positive).
* **Intake analysis.** Every appeal goes through the analysis pipeline
  (:class:`jiedao.cases.runtime.CasePipeline` with its
  :class:`~jiedao.cases.analysis.analyzer.Analyzer`), in chunks: forked workers
  (:class:`Prepare`, :func:`_prepare`) take a few chunks ahead what does not depend on
  earlier cases — categories from one batch prediction per chunk, places from the analyzer's
  locator, the card — then, in the main process and in time order, :class:`Ordered` runs the
  analyzer's in-memory duplicate finder and the repeat-caller rule —
  what ``Analyzer.analyse`` does, minus its per-case database round trips (events are
  written in bulk; the repeat-caller rule runs on the replay's own record of earlier cases
  and their close times). The card is copied onto the case by
  :func:`jiedao.cases.intake.apply_analysis`, exactly as live intake does.
* **Dispatch and workflow.** An auto-dispatchable card is dispatched as suggested; otherwise
  a simulated operator confirms category and place (and is right most of the time) and the
  :class:`~jiedao.cases.dispatch.Dispatcher` decides departments and deadlines. When the card
  asks for the place (“我家楼下”, an unresolved name), the operator asks the caller back and
  types the answer (``Appeal.asked_place``) as live operators do on the triage page
  (:func:`jiedao.cases.place.confirm_place`): the case, its card and the duplicate check get
  the place the same locator resolves from that answer, or keep none when it does not
  resolve. The held-out right-grid rate is the analysis's own, before any answer. Every state
  change — analyse, dispatch, sign, start, return (退单), re-dispatch, extension request and
  decision, supervision (督办), reply, close, follow-up, reopen (重办) — is an action of
  :class:`~jiedao.cases.workflow.Workflow`; nothing is written by hand.
* **Simulated handling.** Departments (each with its own seeded performance profile, so
  rankings differ) sign after realistic delays in office time, start, reply mostly before
  the deadline, sometimes ask for an extension, return cases that are not theirs (a wrong
  dispatch is usually returned) and, rarely, for other reasons. Satisfaction depends on
  what happened (overdue, returned) and on the department. SLA flags use
  :func:`jiedao.cases.sla.used_fraction` at reply time, and :func:`jiedao.cases.sla.sweep`
  at the end of the replay for cases still open.

So the demo's 按时办结率 and 满意率 come out of the engine, not out of the generator.

Speed: each case's whole life is computed in memory (the workflow applied in place to a
state the replay owns), then cases, callers, assignments, extensions, transitions,
follow-ups and overrides are bulk-inserted per chunk (executemany of plain tuples on SQLite,
COPY on PostgreSQL), all in the caller's transaction. On PostgreSQL the COPYs run in a writer
thread (:class:`Writer`: the server ingests one chunk while the main process orders the next),
the workers send assignments, transitions and follow-ups as ready lines of COPY text
(:class:`CopyLines`), and a large replay drops the tables' secondary indexes and foreign keys
for the load and recreates them after (:class:`DeferredIndexes`).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
import pickle
import random
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from jiedao.cases import sla as sla_mod
from jiedao.cases.intake import apply_analysis
from jiedao.cases.models import Case
from jiedao.cases.service import normalise_phone, phone_hash
from jiedao.cases.workflow import CaseState, Workflow
from jiedao.catalog.loader import STREET_OFFICE_GENERIC

SYSTEM = "system"
OPERATOR = "operator01"
LEADER = "leader01"
CHUNK = 4000
WRITE_QUEUE = 8  # tables' rows queued for the PostgreSQL writer thread (a chunk has 8 tables)
INDEX_BUILD_MEMORY = "256MB"  # maintenance_work_mem while the deferred indexes are rebuilt (server side)
OPERATOR_ACCURACY = 0.97  # an operator asked to confirm picks the right category this often
MAX_REOPENS = 2
RETURN_REASONS = (
    "诉求地址不在本单位辖区，请改派属地", "经核实不属于本单位职责范围，请重新派单",
    "诉求内容不清，无法联系到诉求人，请补充后重新派单", "该事项已由其他部门立案处理，请协调改派",
)
WRONG_REASONS = ("经核实不属于本单位职责范围，请重新派单", "该诉求应由其他部门办理，申请退回改派",
                 "事项分类有误，非本单位职责")
EXTENSION_REASONS = ("需协调多个部门现场会商，申请延期", "涉及维修施工，需等待材料到位",
                     "需要第三方检测鉴定，申请延长办理时限", "节假日期间无法联系到相关责任方")
REPLIES = ("已到现场核实并处理完毕，已电话告知诉求人", "已责成责任单位整改，现场已恢复正常",
           "经核实情况属实，已依法处理并将持续巡查", "已联系诉求人说明政策并协助办理",
           "已安排维修人员处理，问题已解决", "已约谈相关单位，限期整改到位")
COMMENTS = {"满意": (None, None, "处理很及时", "感谢工作人员"), "基本满意": ("基本解决了", "速度还可以再快点"),
            "不满意": ("问题根本没解决", "只打了个电话，没人来现场", "还是老样子")}


# ---------------------------------------------------------------- workflow in place
class _InPlace(Workflow):
    """The real workflow rules applied to a state the replay owns (no defensive copy).

    Any refused action (IllegalTransition) aborts the replay: it would be a bug in the
    simulation, and the whole build runs in one transaction.
    """

    def __init__(self, case: CaseState):
        self.before = case
        self.case = case


# ---------------------------------------------------------------- calendar, precomputed
class FastCalendar:
    """The same working-time answers as a :class:`~jiedao.catalog.calendar.WorkCalendar`, in O(1).

    Workdays and office hours come from the wrapped calendar; the cumulative office time at
    the start of every day of a span of years is precomputed, so ``working_seconds_between``,
    ``add_working_time`` and ``deadline`` need no walk over days. Outside the span it defers
    to the wrapped calendar. (Checked against the real calendar by the replay tests.)
    """

    def __init__(self, calendar, first: date, last: date):
        self.calendar = calendar
        self.office_hours = calendar.office_hours
        self.day_seconds = calendar.day_seconds
        self.first, self.last = first, last
        self._offsets = [(s.hour * 3600 + s.minute * 60 + s.second, e.hour * 3600 + e.minute * 60 + e.second)
                         for s, e in calendar.office_hours]
        n = (last - first).days + 1
        self._work = [calendar.is_workday(first + timedelta(days=i)) for i in range(n)]
        self._cum = [0.0] * (n + 1)  # office seconds before day i
        for i in range(n):
            self._cum[i + 1] = self._cum[i] + (self.day_seconds if self._work[i] else 0.0)
        self._epoch = datetime.combine(first, datetime.min.time())

    def _day(self, t: datetime) -> int | None:
        i = (t.date() - self.first).days
        return i if 0 <= i < len(self._work) else None

    def _cum_at(self, t: datetime, i: int) -> float:
        c = self._cum[i]
        if self._work[i]:
            sec = t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6
            for s, e in self._offsets:
                if sec > s:
                    c += min(sec, e) - s
        return c

    def is_workday(self, day) -> bool:
        return self.calendar.is_workday(day)

    def in_office_hours(self, dt: datetime) -> bool:
        i = self._day(dt)
        if i is None:
            return self.calendar.in_office_hours(dt)
        if not self._work[i]:
            return False
        sec = dt.hour * 3600 + dt.minute * 60 + dt.second + dt.microsecond / 1e6
        return any(s <= sec <= e for s, e in self._offsets)

    def next_work_start(self, dt: datetime) -> datetime:
        i = self._day(dt)
        if i is None:
            return self.calendar.next_work_start(dt)
        sec = dt.hour * 3600 + dt.minute * 60 + dt.second + dt.microsecond / 1e6
        if self._work[i]:
            for s, e in self._offsets:
                if e > sec:
                    return dt if sec >= s else self._at(i, s)
        for j in range(i + 1, len(self._work)):
            if self._work[j]:
                return self._at(j, self._offsets[0][0])
        return self.calendar.next_work_start(dt)

    def _at(self, i: int, sec: float) -> datetime:
        return self._epoch + timedelta(days=i, seconds=sec)

    def working_seconds_between(self, a: datetime, b: datetime) -> float:
        if b <= a:
            return 0.0
        i, j = self._day(a), self._day(b)
        if i is None or j is None:
            return self.calendar.working_seconds_between(a, b)
        return self._cum_at(b, j) - self._cum_at(a, i)

    def add_working_time(self, start: datetime, amount: timedelta) -> datetime:
        if amount <= timedelta(0):
            return start
        i = self._day(start)
        if i is None:
            return self.calendar.add_working_time(start, amount)
        target = self._cum_at(start, i) + amount.total_seconds()
        j = bisect.bisect_left(self._cum, target, lo=i + 1) - 1  # the day in which target is reached
        if j >= len(self._work):
            return self.calendar.add_working_time(start, amount)
        rem = target - self._cum[j]
        for s, e in self._offsets:
            if rem <= e - s:
                return self._at(j, s + rem)
            rem -= e - s
        return self.calendar.add_working_time(start, amount)  # pragma: no cover - float edge

    def deadline(self, start: datetime, sla) -> datetime:
        from jiedao.catalog.calendar import parse_sla

        s = parse_sla(sla)
        if s.unit == "h":
            return start + timedelta(hours=s.amount)
        if s.unit == "d":
            return start + timedelta(days=s.amount)
        if s.unit == "wh":
            return self.add_working_time(start, timedelta(hours=s.amount))
        return self.add_working_time(start, timedelta(seconds=self.day_seconds * s.amount))


# ---------------------------------------------------------------- department profiles
@dataclass(frozen=True)
class DeptProfile:
    """How one department handles its cases (seeded per department, so rankings differ)."""

    sign_hours: float  # mean office hours before signing
    pace: float  # typical share of the allowed time used before replying
    late: float  # chance of running past the deadline
    ask_extension: float  # chance of asking for an extension when running late
    returns: float  # 退单 rate for reasons other than a wrong dispatch
    unsatisfied: float  # multiplier on dissatisfaction

    @classmethod
    def seeded(cls, code: str, seed: int) -> DeptProfile:
        r = random.Random(zlib.crc32(f"{seed}:dept:{code}".encode()))
        return cls(sign_hours=r.uniform(0.3, 3.0), pace=r.uniform(0.12, 0.55), late=r.choice(
            (0.0, 0.002, 0.005, 0.01, 0.02, 0.035)), ask_extension=r.uniform(0.5, 0.95),
            returns=r.uniform(0.008, 0.035), unsatisfied=r.uniform(0.5, 1.8))


# ---------------------------------------------------------------- the life of one case
@dataclass
class Life:
    """Everything that happened to one case, ready to be written."""

    state: CaseState
    dispatched_at: list[datetime]  # per assignment
    overrides: list[dict] = field(default_factory=list)
    followups: list[tuple[datetime, str, str | None, int]] = field(default_factory=list)
    matter_code: str | None = None
    main_department: str | None = None
    closed_at: datetime | None = None
    updated_at: datetime | None = None
    returned: int = 0  # how many times the main department returned the case


class Simulator:
    """Computes a case's life with the workflow, from the analysis card and the truth."""

    def __init__(self, dispatcher, calendar, *, seed: int, until: datetime):
        from jiedao.cases.dispatch import Dispatcher

        self.seed, self.until = seed, until
        self.calendar = calendar if isinstance(calendar, FastCalendar) else FastCalendar(
            calendar, date(until.year - 2, 1, 1), until.date() + timedelta(days=150))
        # suggestions as the pipeline makes them; deadlines by the same rules on the fast calendar
        self._suggest = dispatcher.suggest
        self._suggestions: dict[tuple[str, str | None], Any] = {}
        self.dispatcher = Dispatcher(dispatcher.catalog, self.calendar)
        self._profiles: dict[str, DeptProfile] = {}

    def suggest(self, matter: str, street: str | None):
        """The dispatcher's suggestion (memoised: it depends only on matter and street)."""
        key = (matter, street)
        s = self._suggestions.get(key)
        if s is None:
            s = self._suggestions[key] = self._suggest(matter, street)
        return s

    def profile(self, code: str) -> DeptProfile:
        p = self._profiles.get(code)
        if p is None:
            p = self._profiles[code] = DeptProfile.seeded(code, self.seed)
        return p

    # ---- time helpers ------------------------------------------------------------------
    def _office(self, t: datetime, rng: random.Random) -> datetime:
        """``t`` if within office hours, else a little after the next office opening."""
        cal = self.calendar
        if cal.in_office_hours(t):
            return t
        return cal.next_work_start(t) + timedelta(minutes=rng.uniform(3, 60))

    def _natural(self, matter: str, urgency: str) -> bool:
        return not self.dispatcher.catalog.sla_for(matter, urgency).working

    def _handler(self, dept: str) -> str:
        if dept.startswith(STREET_OFFICE_GENERIC) and dept[2:].isdigit():
            return f"street.{dept[-3:]}"
        return f"handler.{dept.lower()}"

    # ---- the whole life ----------------------------------------------------------------
    def live(self, *, seq: int, received_at: datetime, urgency: str, card_matter: str | None,
             suggestion, auto: bool, truth_matter: str, truth_street: str | None,
             street_code: str | None) -> Life:
        """Analyse → dispatch → handle (rounds, returns, extensions) → close → follow up."""
        rng = random.Random(self.seed * 1_000_003 + seq)
        st = CaseState()
        flow = _InPlace(st)
        life = Life(st, [])
        until = self.until
        t = received_at
        flow.analyse(t, SYSTEM)
        life.updated_at = t
        sug_main = suggestion.main if suggestion is not None else None
        sug_co = tuple(suggestion.co) if suggestion is not None else ()
        if auto:
            matter, main, co, actor, street = card_matter, sug_main, sug_co, SYSTEM, street_code
        else:
            t = t + timedelta(minutes=rng.uniform(2, 25))
            matter = truth_matter if (card_matter is None or rng.random() < OPERATOR_ACCURACY) else card_matter
            street = truth_street or street_code
            s = self.suggest(matter, street)
            main, co, actor = s.main, tuple(s.co), OPERATOR
            if main is None:  # the operator picks the district's street office of the truth
                main = f"{STREET_OFFICE_GENERIC}{truth_street}"
            if (matter, main, co) != (card_matter, sug_main, sug_co):
                life.overrides.append({"at": t, "suggested_matter": card_matter, "chosen_matter": matter,
                                       "suggested_department": sug_main, "chosen_department": main,
                                       "detail": {"suggested_co": list(sug_co), "chosen_co": list(co)}})
        if t >= until:
            return life
        life.matter_code = matter
        self._dispatch(flow, life, t, actor, matter, urgency, main, co)
        truth_main = self.suggest(truth_matter, truth_street or street).main
        # handling rounds (a return sends the case back to the operator within the round)
        while True:
            end = self._handle(flow, life, rng, matter, urgency, truth_main, t)
            if end is None:
                return life
            kind, t = end
            if kind == "returned":
                life.returned += 1
                t = t + (timedelta(minutes=rng.uniform(5, 40)) if urgency == "紧急"
                         else self._office(t + timedelta(hours=rng.uniform(0.3, 3)), rng) - t)
                if t >= until:
                    return life
                matter = truth_matter if rng.random() < 0.98 else matter
                s = self.suggest(matter, truth_street or street)
                main = s.main or f"{STREET_OFFICE_GENERIC}{truth_street}"
                returned_by = {a.department for a in st.assignments if a.state == "returned"}
                if main in returned_by and truth_main and truth_main not in returned_by:
                    main = truth_main
                co = tuple(c for c in s.co if c != main)
                life.overrides.append({"at": t, "suggested_matter": card_matter, "chosen_matter": matter,
                                       "suggested_department": sug_main, "chosen_department": main,
                                       "detail": {"suggested_co": list(sug_co), "chosen_co": list(co),
                                                  "after_return": True}})
                life.matter_code = matter
                self._dispatch(flow, life, t, OPERATOR, matter, urgency, main, co)
                continue
            # every active assignment replied: the operator reviews and closes
            t_close = t + (timedelta(minutes=rng.uniform(10, 90)) if urgency == "紧急"
                           else self._office(t + timedelta(hours=rng.expovariate(1 / 3)), rng) - t)
            if t_close >= until:
                return life
            flow.close(t_close, OPERATOR)
            life.closed_at = life.updated_at = t_close
            t_fu = t_close + timedelta(days=rng.uniform(0.5, 3))
            t_fu = t_fu.replace(hour=9 + int(rng.random() * 11), minute=int(rng.random() * 60))
            if t_fu <= t_close:
                t_fu = t_close + timedelta(hours=2)
            if t_fu >= until:
                return life
            sat = self._satisfaction(rng, st, life)
            comment = rng.choice(COMMENTS[sat])
            rnd = st.round
            if sat == "不满意" and st.reopen_count < MAX_REOPENS:
                deadline = self.dispatcher.deadline(matter, urgency, t_fu)
                flow.follow_up(t_fu, OPERATOR, sat, deadline=deadline, comment=comment)
                life.dispatched_at.append(t_fu)
                life.closed_at = None
            else:
                flow.follow_up(t_fu, OPERATOR, sat, comment=comment)
            life.followups.append((t_fu, sat, comment, rnd))
            life.updated_at = t = t_fu
            if st.state != "dispatched":
                return life

    def _dispatch(self, flow, life: Life, t, actor, matter, urgency, main, co) -> None:
        deadline = self.dispatcher.deadline(matter, urgency, t)
        n = len(flow.case.assignments)
        flow.dispatch(t, actor, (main, deadline), [(c, deadline) for c in co])
        life.dispatched_at += [t] * (len(flow.case.assignments) - n)
        life.main_department = main
        life.updated_at = t

    def _satisfaction(self, rng: random.Random, st: CaseState, life: Life) -> str:
        main = st.main()
        prof = self.profile(main.department if main else "")
        late = any(a.replied_at and a.replied_at > a.deadline for a in st.assignments if a.round == st.round)
        p_bad = 0.016 * prof.unsatisfied + (0.10 if late else 0) + (0.03 if life.returned else 0)
        if st.reopen_count:
            p_bad *= 0.4
        p_basic = 0.055 * prof.unsatisfied + (0.08 if late else 0)
        r = rng.random()
        return "不满意" if r < p_bad else ("基本满意" if r < p_bad + p_basic else "满意")

    def _plan(self, rng: random.Random, idx: int, a, t0: datetime, now: datetime, natural: bool,
              wrong: bool, first_round: bool) -> list[tuple[datetime, int, str, dict]]:
        """The coming events of one assignment from its current state (dispatched at ``t0``,
        nothing happens before ``now``): sign / start / extension / reply, or a return."""
        prof = self.profile(a.department)
        ev: list[tuple[datetime, int, str, dict]] = []
        deadline = a.deadline
        span = deadline - t0
        t_sign = now
        if a.state == "pending":
            if natural:
                t_sign = now + timedelta(minutes=rng.expovariate(1 / 12) + 1)
            else:
                t_sign = self._office(now + timedelta(hours=rng.expovariate(1 / prof.sign_hours)), rng)
            if t_sign > now + span * 0.3:  # short deadlines are signed quickly, whatever the hour
                t_sign = now + span * rng.uniform(0.02, 0.3)
            if a.role == "main" and first_round and (
                    (wrong and rng.random() < 0.9) or rng.random() < prof.returns):
                reason = rng.choice(WRONG_REASONS if wrong else RETURN_REASONS)
                if rng.random() < 0.5:
                    ev.append((t_sign, idx, "sign", {}))
                    t_sign += timedelta(minutes=rng.uniform(10, 120))
                ev.append((t_sign, idx, "return", {"reason": reason}))
                return ev
            ev.append((t_sign, idx, "sign", {}))
        t_start = t_sign
        if a.state in ("pending", "signed"):
            t_start = t_sign + min(timedelta(minutes=rng.uniform(1, 45)), span * 0.05)
            ev.append((t_start, idx, "start", {}))
        frac = min(0.97, max(0.03, prof.pace * math.exp(rng.gauss(0, 0.6))))
        t_reply = max(t0 + span * frac, t_start)
        if not natural:
            t_reply = self._office(t_reply, rng)
        if t_reply >= deadline:
            t_reply = deadline - timedelta(minutes=rng.uniform(1, 30))
        if rng.random() < prof.late:  # running late
            t_reply = deadline + timedelta(hours=rng.uniform(0.5, 60))
            if not natural:
                t_reply = self._office(t_reply, rng)
            t_ask = t0 + span * rng.uniform(0.5, 0.85)
            if rng.random() < prof.ask_extension and t_ask > t_start:
                new_deadline = self.calendar.deadline(deadline, "3wd" if not natural else "1wd")
                ev.append((t_ask, idx, "request_extension", {
                    "new_deadline": max(new_deadline, t_reply + timedelta(hours=1)),
                    "reason": rng.choice(EXTENSION_REASONS)}))
                ev.append((t_ask + timedelta(hours=rng.uniform(0.2, 4)), idx, "decide_extension",
                           {"approve": rng.random() < 0.85}))
            elif t_reply > deadline + timedelta(hours=1) and rng.random() < 0.5:
                ev.append((deadline + timedelta(hours=1), -1, "supervise", {}))
        if t_reply <= t_start:
            t_reply = t_start + min(timedelta(minutes=rng.uniform(10, 120)),
                                    max(deadline - t_start, timedelta(minutes=20)) * 0.8)
        ev.append((t_reply, idx, "reply", {"text": rng.choice(REPLIES)}))
        return ev

    def _handle(self, flow, life: Life, rng, matter, urgency, truth_main, now: datetime
                ) -> tuple[str, datetime] | None:
        """Run the active assignments of the current round until all replied or main returned."""
        st = flow.case
        natural = self._natural(matter, urgency)
        events: list[tuple[datetime, int, str, dict]] = []
        first_round = st.reopen_count == 0 and life.returned < 2  # a case is returned at most twice
        for idx, a in enumerate(st.assignments):
            if a.round == st.round and a.state in ("pending", "signed", "in_progress"):
                wrong = a.role == "main" and truth_main is not None and a.department != truth_main
                events += self._plan(rng, idx, a, life.dispatched_at[idx], max(now, life.dispatched_at[idx]),
                                     natural, wrong, first_round)
        events.sort(key=lambda e: (e[0], e[1]))
        last = now
        for at, idx, action, kw in events:
            if at >= self.until:
                return None
            if idx >= 0 and st.assignments[idx].state in ("cancelled", "returned"):
                continue
            if action == "supervise":
                if st.state in ("closed", "followed_up") or st.supervised:
                    continue
                flow.supervise(at, LEADER, True, "超期未办结，区领导督办")
                life.updated_at = at
                continue
            actor = OPERATOR if action == "decide_extension" else self._handler(st.assignments[idx].department)
            if action == "sign":
                flow.sign(at, actor, idx)
            elif action == "start":
                flow.start(at, actor, idx)
            elif action == "request_extension":
                a = st.assignments[idx]
                if a.state not in ("pending", "signed", "in_progress"):
                    continue
                flow.request_extension(at, actor, idx, kw["new_deadline"], kw["reason"])
            elif action == "decide_extension":
                if not any(e.status == "pending" for e in st.assignments[idx].extensions):
                    continue
                flow.decide_extension(at, actor, idx, kw["approve"],
                                      None if kw["approve"] else "理由不充分，请按原时限办结")
            elif action == "reply":
                flow.reply(at, actor, idx, kw["text"])
            elif action == "return":
                flow.return_(at, actor, idx, kw["reason"])
                life.updated_at = at
                if st.assignments[idx].role == "main":
                    return ("returned", at)
            life.updated_at = at
            last = at
        if st.state == "replied":
            return ("replied", last)
        return None


# ---------------------------------------------------------------- writing
TABLE_COLUMNS = {
    "cases_caller": ("id", "phone_hash", "phone", "name", "enterprise", "first_seen", "case_count"),
    "cases_event": ("id", "matter_code", "grid_code", "address_code", "title", "first_at", "last_at",
                    "case_count"),
    "cases_case": ("id", "code", "channel", "kind", "title", "text", "caller_id", "location_text", "lon",
                   "lat", "address_code", "grid_code", "community_code", "street_code", "matter_code",
                   "category_confidence", "urgency", "event_id", "main_department_code", "state", "version",
                   "supervised", "reopen_count", "satisfaction", "repeat_caller", "analysis",
                   "idempotency_key", "created_by", "received_at", "closed_at", "updated_at"),
    "cases_assignment": ("id", "case_id", "seq", "department_code", "role", "state", "round", "dispatched_at",
                         "deadline", "sign_deadline", "signed_at", "replied_at", "reply", "warned", "overdue"),
    "cases_extension": ("id", "assignment_id", "requested_at", "requested_by", "new_deadline", "reason",
                        "status", "decided_by"),
    "cases_transition": ("id", "case_id", "seq", "at", "actor", "action", "from_state", "to_state", "reason",
                         "assignment_seq"),
    "cases_followup": ("id", "case_id", "at", "actor", "satisfaction", "comment", "round"),
    "cases_dispatch_override": ("id", "case_id", "at", "actor", "suggested_matter", "chosen_matter",
                                "suggested_department", "chosen_department", "text", "used_in_training",
                                "detail"),
}


class Writer:
    """Bulk insert of rows ready to be written (values already as SQLite stores them on SQLite,
    JSON already serialised): executemany on SQLite, COPY on PostgreSQL.

    On PostgreSQL with ``background``, the COPYs run in a thread of their own on the same
    connection, behind a short queue: the server ingests one chunk while the main thread
    orders the next (the calling thread must not use the connection until :meth:`close`).
    A COPY waits for the server at its end; synchronously that wait was most of the write
    time. The queue holds at most :data:`WRITE_QUEUE` tables' rows (about one chunk).
    """

    def __init__(self, conn: sa.Connection, *, background: bool = False):
        self.conn = conn
        self.pg = conn.dialect.name == "postgresql"
        self.counts: Counter = Counter()
        self.seconds = 0.0  # wall seconds writing (in the writer thread when in the background)
        self.cpu = 0.0  # CPU seconds of the writing thread (the server's are apart)
        self.blocked = 0.0  # wall seconds the caller waited for room in the queue
        self._thread = self._queue = self._error = None
        self._abort = False
        if self.pg and background:
            import queue
            import threading

            self._queue = queue.Queue(WRITE_QUEUE)
            self._thread = threading.Thread(target=self._drain, name="replay-writer", daemon=True)
            self._thread.start()

    def insert(self, table: str, rows: list) -> None:
        if not rows:
            return
        self.counts[table] += len(rows)
        if self._queue is None:
            self._write(table, rows)
            return
        self._check()
        t0 = time.perf_counter()
        self._queue.put((table, rows))
        self.blocked += time.perf_counter() - t0

    def close(self) -> None:
        """Wait until every queued row is written (and raise what the writer thread raised)."""
        if self._thread is not None:
            t0 = time.perf_counter()
            self._queue.put(None)
            self._thread.join()
            self.blocked += time.perf_counter() - t0
            self._thread = self._queue = None
        self._check()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None and self._thread is not None:  # stop writing; the caller rolls back
            self._abort = True
            self._queue.put(None)
            self._thread.join()
            self._thread = self._queue = None

    def _check(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None and not self._abort:  # after a failure, only empty the queue
                try:
                    self._write(*item)
                except BaseException as e:  # noqa: BLE001 - handed to the caller
                    self._error = e

    def _write(self, table: str, rows: list) -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        cols = TABLE_COLUMNS[table]
        if self.pg:
            raw = self.conn.connection.driver_connection
            with raw.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as cp:
                if isinstance(rows, CopyLines):
                    cp.write("".join(map("{}\t{}".format, range(rows.base, rows.base + len(rows)), rows)))
                else:
                    for r in rows:
                        cp.write_row(r)
        else:
            sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
            self.conn.connection.driver_connection.executemany(sql, rows)  # lists as well as tuples
        self.seconds += time.perf_counter() - t0
        self.cpu += time.thread_time() - c0


class DeferredIndexes:
    """On PostgreSQL, the secondary indexes and the foreign keys of the replay's tables are
    dropped before a large bulk load and recreated after it — same names, same definitions
    (``pg_get_indexdef`` / ``pg_get_constraintdef``), in the caller's transaction, so the
    result is the same normal, durable schema (a failure rolls everything back). Building an
    index once by sorting is much cheaper for the server than maintaining it row by row, and
    adding a foreign key checks all rows in one join instead of one trigger query per row.
    Primary keys and unique indexes stay. The tables are locked (ACCESS EXCLUSIVE) until the
    transaction ends: for the demo build, which owns the database while it runs.
    """

    def __init__(self, conn: sa.Connection, tables, enabled: bool):
        self.conn, self.tables = conn, list(tables)
        self.enabled = enabled and conn.dialect.name == "postgresql"
        self.indexes: list[str] = []
        self.foreign_keys: list[str] = []
        self.seconds = {"drop": 0.0, "indexes": 0.0, "foreign_keys": 0.0}

    def drop(self) -> None:
        if not self.enabled:
            return
        t0 = time.perf_counter()
        q = lambda sql: self.conn.execute(sa.text(sql), {"t": self.tables}).all()  # noqa: E731
        fks = q("SELECT quote_ident(cl.relname), quote_ident(c.conname), pg_get_constraintdef(c.oid) "
                "FROM pg_constraint c JOIN pg_class cl ON cl.oid = c.conrelid "
                "WHERE c.contype = 'f' AND cl.relname = ANY(:t) "
                "AND cl.relnamespace = to_regnamespace(current_schema()) ORDER BY 1, 2")
        idx = q("SELECT quote_ident(i.relname), pg_get_indexdef(x.indexrelid) "
                "FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
                "WHERE t.relname = ANY(:t) AND t.relnamespace = to_regnamespace(current_schema()) "
                "AND NOT x.indisprimary AND NOT x.indisunique "
                "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid) ORDER BY 1")
        for table, name, definition in fks:
            self.conn.execute(sa.text(f"ALTER TABLE {table} DROP CONSTRAINT {name}"))
            self.foreign_keys.append(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")
        for name, definition in idx:
            self.conn.execute(sa.text(f"DROP INDEX {name}"))
            self.indexes.append(definition)
        self.seconds["drop"] = time.perf_counter() - t0

    def restore(self) -> None:
        """Recreate what :meth:`drop` dropped (indexes first; then the keys, each checked once)."""
        if not (self.indexes or self.foreign_keys):
            return
        t0 = time.perf_counter()
        self.conn.execute(sa.text(f"SET LOCAL maintenance_work_mem = '{INDEX_BUILD_MEMORY}'"))
        for definition in self.indexes:
            self.conn.execute(sa.text(definition))
        t1 = time.perf_counter()
        for statement in self.foreign_keys:
            self.conn.execute(sa.text(statement))
        self.seconds["indexes"] = t1 - t0
        self.seconds["foreign_keys"] = time.perf_counter() - t1
        self.indexes, self.foreign_keys = [], []


def _next_id(conn: sa.Connection, table: str) -> int:
    """The first free id of ``table``."""
    return int(conn.execute(sa.text(f"SELECT COALESCE(MAX(id), 0) FROM {table}")).scalar_one()) + 1


def _fix_sequences(conn: sa.Connection) -> None:
    if conn.dialect.name != "postgresql":
        return
    for t in TABLE_COLUMNS:
        conn.execute(sa.text(
            f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), "
            f"COALESCE((SELECT MAX(id) FROM {t}), 0) + 1, false)"))


def case_code(seed: int, seq: int, at: datetime) -> str:
    """A deterministic public tracking code in the service's format (date + 8 characters)."""
    alphabet = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
    h = int.from_bytes(hashlib.blake2b(f"{seed}:{seq}".encode(), digest_size=8).digest(), "big")
    out = []
    for _ in range(8):
        h, r = divmod(h, 32)
        out.append(alphabet[r])
    return at.strftime("%Y%m%d") + "".join(out)


# ---------------------------------------------------------------- metrics
@dataclass
class Evaluation:
    """Held-out metrics of the analysis against the generator's truth."""

    labels: list[str] = field(default_factory=list)
    predicted: list[str] = field(default_factory=list)
    place_total: int = 0
    place_right: int = 0
    # duplicates: each held-out appeal whose event has an earlier member (should join), and
    # each held-out appeal that the analysis joined to an earlier case
    dup_truth: int = 0
    dup_predicted: int = 0
    dup_correct: int = 0

    def macro_f1(self) -> float:
        classes = sorted(set(self.labels))
        if not classes:
            return 0.0
        tp, fp, fn = Counter(), Counter(), Counter()
        for y, p in zip(self.labels, self.predicted, strict=True):
            if y == p:
                tp[y] += 1
            else:
                fn[y] += 1
                fp[p] += 1
        f1s = []
        for c in classes:
            denom = 2 * tp[c] + fp[c] + fn[c]
            f1s.append(2 * tp[c] / denom if denom else 0.0)
        return sum(f1s) / len(f1s)

    def as_dict(self) -> dict[str, Any]:
        n = len(self.labels)
        acc = sum(y == p for y, p in zip(self.labels, self.predicted, strict=True)) / n if n else 0.0
        return {
            "held_out": n, "accuracy": round(acc, 4), "macro_f1": round(self.macro_f1(), 4),
            "place_named": self.place_total,
            "right_grid_rate": round(self.place_right / self.place_total, 4) if self.place_total else None,
            "duplicate_precision": round(self.dup_correct / self.dup_predicted, 4) if self.dup_predicted else None,
            "duplicate_recall": round(self.dup_correct / self.dup_truth, 4) if self.dup_truth else None,
        }


# ---------------------------------------------------------------- the replay
@dataclass
class ReplayResult:
    appeals: int
    counts: dict[str, int]
    evaluation: dict[str, Any]
    rates: dict[str, Any]
    timings: dict[str, float]
    training: dict[str, Any]
    workers: dict[str, float] = field(default_factory=dict)  # the workers' CPU seconds per step


def _spool(gen, path: str, on_progress: Callable[[int], None] | None,
           until: datetime | None = None, on_chunk: Callable[[int], None] | None = None,
           ) -> tuple[int, list[tuple[str, str]], list[int]]:
    """Generate the year once into a pickle spool (appeals received before ``until``), in
    chunks of :data:`CHUNK`; ``on_chunk(offset)`` is called after each chunk is written.
    Returns (count, train rows, the chunks' offsets in the spool)."""
    n = 0
    train: list[tuple[str, str]] = []
    offsets: list[int] = []
    with open(path, "wb") as fh:
        for chunk in gen.chunks(CHUNK):
            stop = until is not None and chunk[-1].received_at >= until
            if stop:
                chunk = [a for a in chunk if a.received_at < until]
                if not chunk:
                    break
            offsets.append(fh.tell())
            pickle.dump(chunk, fh, protocol=pickle.HIGHEST_PROTOCOL)
            fh.flush()
            if on_chunk:
                on_chunk(offsets[-1])
            train += [(a.text, a.matter_code) for a in chunk if not a.held_out]
            n += len(chunk)
            if on_progress:
                on_progress(len(chunk))
            if stop:
                break
    return n, train, offsets


REPLAY_TRAIN_CAP = 120  # train rows per matter (a fixed-seed sample of the train split): trains in about a minute
SMALL_TRAIN_ROWS = 900  # the small (test) demo trains on this many train-split rows, to stay fast


def _geo(session: Session) -> tuple:
    """(address resolver, grid index, locator) of the district, as the analyzer builds them."""
    from jiedao.cases.analysis.analyzer import AnalysisConfig
    from jiedao.cases.analysis.location import Locator
    from jiedao.geo.locate import AddressResolver, GridIndex

    cfg = AnalysisConfig()
    resolver, grid_index = AddressResolver(session), GridIndex.from_session(session)
    return resolver, grid_index, Locator(session, resolver, grid_index, accept=cfg.location_accept,
                                         far_apart_m=cfg.far_apart_m)


def build_pipeline(session: Session, train_rows: list[tuple[str, str]], catalog, calendar, *, geo=None):
    """The real analysis pipeline, its classifier trained on ``train_rows`` (the train split).

    Built on ``session`` (not on a new one) so that it sees the district written in the same
    uncommitted transaction by ``build_demo``. Duplicates are tracked in memory (the analysis's
    own replay mode): the events are written by the replay in bulk. ``geo``: :func:`_geo`'s
    result when already built.
    """
    from jiedao.cases.analysis.analyzer import Analyzer
    from jiedao.cases.analysis.classifier import train
    from jiedao.cases.dispatch import Dispatcher
    from jiedao.cases.runtime import CasePipeline

    clf = train(train_rows, catalog, per_class_cap=REPLAY_TRAIN_CAP,
                meta={"source": "demo replay: train split (80 %)"})
    clf.classify("预热分词器")
    dispatcher = Dispatcher(catalog, calendar)
    resolver, grid_index, locator = geo or _geo(session)
    analyzer = Analyzer(catalog, clf, resolver, grid_index, dispatcher, session=session, locator=locator,
                        in_memory_duplicates=True)
    return CasePipeline(analyzer, dispatcher, catalog, calendar, None)


# ---------------------------------------------------------------- per-chunk work (worker processes)
_WORKER: dict[str, Any] = {}
# columns of a cases_case row that only the main process can fill (they depend on earlier cases)
_CALLER_COL, _EVENT_COL, _REPEAT_COL, _CARD_COL = 6, 17, 24, 25
_STATEFUL_CARD = ("event_id", "duplicates", "repeat_caller", "notes")  # card fields decided in time order


def _iso(v: datetime | None) -> str | None:
    """A timestamp as SQLAlchemy stores it on SQLite (booleans need nothing: sqlite3 stores 1/0)."""
    return None if v is None else v.isoformat(" ", "microseconds")


def _same(v):
    return v


# COPY's text format (PostgreSQL): tab-separated, \N for NULL, backslash escapes
def _ct(v: str | None) -> str:
    """A text value as COPY reads it (the tests are cheaper than an unconditional escape)."""
    if v is None:
        return "\\N"
    if "\\" in v or "\t" in v or "\n" in v or "\r" in v:
        return v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return v


def _cts(v: datetime | None) -> str:
    """A timestamp as COPY reads it."""
    return "\\N" if v is None else v.isoformat(" ")


def _cn(v: int | None) -> str:
    return "\\N" if v is None else str(v)


class CopyLines(list):
    """Rows of one table as lines of COPY text without their leading id column (the worker
    cannot know the id base; the main process sets :attr:`base` and the writer prefixes
    ``base``, ``base + 1``, … as it writes)."""

    base = 0


_FIELDS: dict[type, tuple[str, ...]] = {}
_PURE_CARD = None  # Analysis fields the worker serialises (all but _STATEFUL_CARD)


def _json_default(o):
    """Dataclasses as dicts of their fields (what ``Analysis.to_card`` makes of the card's values;
    the JSON encoder does tuples, lists and dicts itself)."""
    names = _FIELDS.get(type(o))
    if names is None:
        if not is_dataclass(o):
            raise TypeError(f"{type(o).__name__} is not JSON serialisable")
        names = _FIELDS[type(o)] = tuple(f.name for f in fields(o))
    return {k: getattr(o, k) for k in names}


def card_head(an) -> str:
    """``Analysis.to_card()`` as JSON without the fields decided in time order, and without
    its closing brace (see :func:`card_json`)."""
    global _PURE_CARD
    if _PURE_CARD is None:
        _PURE_CARD = tuple(f.name for f in fields(an) if f.name not in _STATEFUL_CARD)
    d = {k: getattr(an, k) for k in _PURE_CARD}
    d["auto_dispatchable"] = an.auto_dispatchable
    return json.dumps(d, ensure_ascii=False, default=_json_default)[:-1]


class _NoCard:
    """An analysis for :func:`~jiedao.cases.intake.apply_analysis` whose card is serialised
    apart (by :func:`card_head` and :func:`card_json`)."""

    __slots__ = ("_an",)

    def __init__(self, an):
        self._an = an

    def __getattr__(self, name):
        return getattr(self._an, name)

    def to_card(self) -> None:
        return None


def _load(path: str, offset: int):
    with open(path, "rb") as fh:
        fh.seek(offset)
        return pickle.load(fh)


def _locate_chunk(offset: int) -> int:
    """Places of one spooled chunk, appended to the place spool; returns their offset there.
    (Runs while the main process is still generating or training: places need no classifier.)"""
    w = _WORKER
    chunk = _load(w["spool"], offset)
    locate = w["locator"].locate
    wheres = [locate(a.text, location_text=a.location_text) for a in chunk]
    with open(w["place_spool"], "ab") as fh:
        at = fh.tell()
        pickle.dump(wheres, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return at


@dataclass
class Prepared:
    """One chunk after the work that does not depend on earlier cases: for each case what the
    main process needs to finish it (see :func:`_prepare`), every row except the few
    columns only the main process knows, and the held-out category and place figures.

    Child-row ids (and an extension's assignment id) are numbered from 0 within the chunk;
    the main process adds the table's next id."""

    cases: list[tuple]
    assignments: list[list]
    extensions: list[list]
    transitions: list[list]
    followups: list[list]
    overrides: list[list]
    labels: list[str]
    predicted: list[str]
    place_total: int
    place_right: int
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds of this chunk's steps


def _prepare(offset: int, place_offset: int | None = None) -> Prepared:
    """Analyse (category, place, urgency, suggestion: everything but duplicates and repeat
    callers) and simulate the life of every case of one spooled chunk, and build its rows.

    Per case the main process gets (case id, received at, received at as written, phone,
    phone hash, caller name, enterprise, matter, location, text, first close time, case row,
    card JSON without its time-ordered fields, the card's notes so far, held out?, true event).
    """
    w = _WORKER
    clock = time.process_time
    c0 = clock()
    analyzer, sim, seed, base = w["analyzer"], w["sim"], w["seed"], w["case_base"]
    chunk = _load(w["spool"], offset)
    c1 = clock()
    cats = analyzer.classify_many([a.text for a in chunk])
    c2 = clock()
    if place_offset is None:
        locate = analyzer.locator.locate
        wheres = [locate(a.text, location_text=a.location_text) for a in chunk]
    else:
        wheres = _load(w["place_spool"], place_offset)
    c3 = clock()
    t_card = t_sim = 0.0
    ts = _iso if w["sqlite"] else _same
    ids = dict.fromkeys(TABLE_COLUMNS, 0)
    copy = not w["sqlite"]  # PostgreSQL: COPY text lines for the big child tables
    p = Prepared([], CopyLines() if copy else [], [], CopyLines() if copy else [], CopyLines() if copy else [],
                 [], [], [], 0, 0)
    for a, cat, where in zip(chunk, cats, wheres, strict=True):
        ca = clock()
        an = analyzer._card(cat, a.text, where)  # the card as analyse() makes it, minus duplicates
        auto = an.auto_dispatchable
        if an.asks_for_place and a.asked_place:
            # the operator asks the caller where exactly and types the answer (核实地点,
            # jiedao.cases.place): the case, its card and the duplicate check get that place
            an = analyzer.confirm_place(cat, a.text, a.asked_place) or an
        case = _CaseRow(
            id=base + a.seq, lon=None, lat=None, address_code=None, grid_code=None,
            community_code=None, street_code=None, matter_code=None, category_confidence=None,
            event_id=None, analysis=None, version=0, code=case_code(seed, a.seq, a.received_at),
            channel=a.channel, kind=a.kind, title=a.text[:60], text=a.text, caller_id=None,
            location_text=a.location_text, urgency="一般", state="received", created_by=SYSTEM,
            received_at=a.received_at, updated_at=a.received_at, repeat_caller=False,
            supervised=False, reopen_count=0)
        apply_analysis(case, _NoCard(an), keep_urgency=False)
        head = card_head(an)
        cb = clock()
        life = sim.live(seq=a.seq, received_at=a.received_at, urgency=case.urgency,
                        card_matter=an.matter_code, suggestion=an.suggestion,
                        auto=auto, truth_matter=a.matter_code,
                        truth_street=a.street_code, street_code=case.street_code)
        cc = clock()
        t_card += cb - ca
        t_sim += cc - cb
        _child_rows(case, life, ids, sim.calendar, ts, p.assignments, p.extensions, p.transitions,
                    p.followups, p.overrides, copy)
        phone = normalise_phone(a.phone)
        p.cases.append((
            case.id, a.received_at, ts(a.received_at), phone, phone_hash(phone), a.caller_name, a.enterprise,
            an.matter_code, an.location, a.text, _first_close(life), _case_row(case, life, ts), head, an.notes,
            a.held_out, a.event))
        if a.held_out:
            p.labels.append(a.matter_code)
            p.predicted.append(an.matter_code or "-")
            if a.names_place:
                p.place_total += 1
                p.place_right += where.location.grid_code == a.grid_code  # the analysis's, not the operator's
    c4 = clock()
    p.cpu = {"read": c1 - c0, "classify": c2 - c1, "locate": c3 - c2, "card": t_card, "simulate": t_sim,
             "rows": c4 - c3 - t_card - t_sim}
    return p


class Ordered:
    """The part of the analysis that depends on earlier cases, run in time order in the main
    process: duplicate events (the analyzer's in-memory duplicate finder) and the
    repeat-caller rule (on the replay's own record of earlier cases and their first close)."""

    def __init__(self, analyzer):
        self.analyzer = analyzer
        self.history: dict[int, list] = {}  # caller id → [(at, matter, address, case id)]
        self.first_closed: dict[int, datetime | None] = {}
        self._days = timedelta(days=analyzer.duplicates.config.repeat_days)

    def repeat_caller(self, caller_id: int | None, matter: str | None, address: str | None,
                      at: datetime) -> tuple[bool, str | None]:
        """The analysis's repeat-caller rule (an earlier case counts as open until first closed)."""
        if caller_id is None:
            return False, None
        cfg = self.analyzer.duplicates.config
        since = at - self._days
        rows = [r for r in self.history.get(caller_id, ()) if since <= r[0] <= at]
        for _t, m, addr, cid in reversed(rows):
            closed = self.first_closed.get(cid)
            if closed is not None and closed <= at:
                continue
            if matter and m == matter:
                return True, f"该来电人已有同类未办结工单 {cid}"
            if address and addr == address:
                return True, f"该来电人已有同一地点未办结工单 {cid}"
        if len(rows) >= cfg.repeat_min_cases:
            return True, f"该来电人 {cfg.repeat_days} 天内已来电 {len(rows)} 次"
        return False, None

    def decide(self, case_id: int, caller_id: int | None, matter: str | None, loc, text: str,
               at: datetime) -> tuple[int | None, tuple[int, ...], bool, tuple[str, ...]]:
        """(in-memory event id, duplicates, repeat caller?, notes) of the next case in time order."""
        repeat, rwhy = self.repeat_caller(caller_id, matter, loc.address_code, at)
        event_id, dups, why = self.analyzer.duplicates.assign_event(
            None, case_id=case_id, matter=matter, loc=loc, text=text, at=at, caller_key=caller_id)
        h = self.history.get(caller_id)
        if h is None:
            h = self.history[caller_id] = []
        h.append((at, matter, loc.address_code, case_id))
        if len(h) > 8 and h[0][0] < at - self._days:
            h[:] = [r for r in h if r[0] >= at - self._days]
        return event_id, dups, repeat, tuple(n for n in (why, rwhy) if n)


def card_json(head: str, event_id: int | None, duplicates, repeat: bool, notes) -> str:
    """The stored card (``Analysis.to_card()`` as JSON) from the worker's part and the ordered part."""
    return head + ", " + json.dumps({"event_id": event_id, "duplicates": list(duplicates),
                                     "repeat_caller": repeat, "notes": list(notes)}, ensure_ascii=False)[1:]


class Prepare:
    """Runs :func:`_prepare` over the spooled chunks in forked worker processes (or in this
    process when ``workers`` is 0), a few chunks ahead of the main process, in order."""

    def __init__(self, context: dict[str, Any], workers: int):
        self.context, self.workers = context, workers
        self.executor = None

    def __enter__(self):
        _WORKER.update(self.context)
        if self.workers:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("fork"))
        return self

    def __exit__(self, *exc):
        if self.executor is not None:
            self.executor.shutdown(cancel_futures=True)
        _WORKER.clear()

    def run(self, tasks: list[tuple[int, int | None]]) -> Iterator[Prepared]:
        """Prepared chunks in order, from (spool offset, place spool offset or None)."""
        if self.executor is None:
            for off, place in tasks:
                yield _prepare(off, place)
            return
        from collections import deque

        pending: deque = deque()
        depth = self.workers + 1
        for off, place in tasks:
            if len(pending) >= depth:
                yield pending.popleft().result()
            pending.append(self.executor.submit(_prepare, off, place))
        while pending:
            yield pending.popleft().result()


class LocateAhead:
    """Places of spooled chunks, computed in one forked process while the main process is still
    generating and training (places need no classifier), into a place spool."""

    def __init__(self, locator, spool: str, place_spool: str, enabled: bool):
        self.context = {"locator": locator, "spool": spool, "place_spool": place_spool}
        self.executor = None
        self.futures: list = []
        if enabled:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.executor = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))

    def submit(self, offset: int) -> None:
        if self.executor is not None:
            _WORKER.update(self.context)  # the process is forked at the first submit
            self.futures.append(self.executor.submit(_locate_chunk, offset))

    def stop(self, n: int) -> list[int | None]:
        """Stop (chunks not started are left to the preparing workers); per chunk, its place
        spool offset or None."""
        if self.executor is None:
            return [None] * n
        for f in self.futures:
            f.cancel()
        self.executor.shutdown(wait=True)
        self.executor = None
        for k in self.context:
            _WORKER.pop(k, None)
        out = [None if f.cancelled() else f.result() for f in self.futures]
        return out + [None] * (n - len(out))


# ---------------------------------------------------------------- the year
def replay_year(session: Session, *, seed: int | None = None, scale: str = "full", year: int | None = None,
                total: int | None = None, until: datetime | None = None, workers: int | None = None,
                progress: Callable[[str, int, int], None] | None = None,
                defer_indexes: bool | None = None) -> ReplayResult:
    """Generate the demo year for the district in ``session`` and run it through the engine.

    ``progress(phase, done, total)`` is called as work advances (phases: 生成, 训练, 回放).
    ``until``: the replay's "now" (default: the end of the year); appeals received from then
    on are not replayed (so ``until=datetime(2025, 2, 1)`` replays January at full scale).
    ``workers``: forked processes that analyse and simulate chunks ahead of the main process
    (default: one per CPU, at most two, when there is more than one CPU and the year is large,
    else none; with workers, one more process locates places while the main process
    generates and trains). The result does not depend on it. ``defer_indexes``: on PostgreSQL,
    drop the case tables' secondary indexes and foreign keys for the load and recreate them
    after (:class:`DeferredIndexes`; default: for a large replay — more than 20,000 appeals and
    more than the cases already stored). Writes in the session's transaction; the caller commits.
    """
    from jiedao.catalog.calendar import get_calendar
    from jiedao.catalog.loader import load_catalog
    from jiedao.demo import appeals as gen_mod
    from jiedao.demo.pipeline import DEFAULT_SEED

    seed = DEFAULT_SEED if seed is None else seed
    year = year or gen_mod.DEMO_YEAR
    until = until or datetime(year + 1, 1, 1)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    catalog, calendar = load_catalog(), get_calendar()
    places = gen_mod.Places.from_session(session)
    gen = gen_mod.generate_appeals(places, catalog, seed=seed, scale=scale, year=year, total=total)
    expected = gen.total
    if workers is None:
        cpus = os.cpu_count() or 1
        workers = min(2, cpus) if cpus > 1 and expected > 20_000 else 0
    report = progress or (lambda *_: None)
    geo = _geo(session)
    spools = []
    for suffix in ("appeals", "places"):
        fd, path = tempfile.mkstemp(prefix=f"jiedao-{suffix}-", suffix=".pickle")
        os.close(fd)
        spools.append(path)
    spool, place_spool = spools
    ahead = LocateAhead(geo[2], spool, place_spool, enabled=workers > 0)
    try:
        done = 0

        def gen_progress(k: int) -> None:
            nonlocal done
            done += k
            report("生成", done, expected)

        n, train_rows, offsets = _spool(gen, spool, gen_progress, until, on_chunk=ahead.submit)
        del gen, places
        timings["generate"] = round(time.perf_counter() - t0, 3)
        t1 = time.perf_counter()
        report("训练", 0, 1)
        if scale == "small":
            train_rows = train_rows[:SMALL_TRAIN_ROWS]
        pipeline = build_pipeline(session, train_rows, catalog, calendar, geo=geo)
        training = dict(pipeline.analyzer.classifier.meta or {})
        training["train_split_rows"] = len(train_rows)
        del train_rows
        timings["train"] = round(time.perf_counter() - t1, 3)
        places_at = ahead.stop(len(offsets))
        work = {"located_ahead_chunks": sum(p is not None for p in places_at)}
        report("训练", 1, 1)
        t2 = time.perf_counter()
        conn = session.connection()
        ids = {t: _next_id(conn, t) for t in TABLE_COLUMNS}
        if defer_indexes is None:
            defer_indexes = n > 20_000 and n > ids["cases_case"]
        context = {"analyzer": pipeline.analyzer, "seed": seed, "case_base": ids["cases_case"],
                   "sim": Simulator(pipeline.dispatcher, calendar, seed=seed, until=until),
                   "spool": spool, "place_spool": place_spool, "sqlite": conn.dialect.name == "sqlite"}
        with Prepare(context, workers) as prep, Writer(conn, background=True) as writer:
            tasks = list(zip(offsets, places_at, strict=True))
            counts, evaluation = _replay(session, Ordered(pipeline.analyzer), prep.run(tasks), ids, n, writer,
                                         until=until, calendar=context["sim"].calendar, report=report,
                                         timings=timings, work=work, defer_indexes=defer_indexes)
        timings["replay"] = round(time.perf_counter() - t2, 3)
    finally:
        ahead.stop(0)
        for path in spools:
            os.unlink(path)
    timings["total"] = round(time.perf_counter() - t0, 3)
    rates = rates_from_db(session)
    return ReplayResult(n, counts, evaluation.as_dict(), rates, timings, training, work)


def _replay(session: Session, ordered: Ordered, prepared: Iterator[Prepared], ids: dict[str, int],
            n_total: int, writer: Writer, *, until: datetime, calendar, report, timings,
            work: dict[str, float], defer_indexes: bool = False) -> tuple[dict[str, int], Evaluation]:
    """The main process: cases in time order through the ordered part of the analysis, the
    remaining columns filled in, every chunk's rows written by ``writer`` (on PostgreSQL in a
    thread of its own: nothing else uses the connection until the loop ends)."""
    conn = session.connection()
    deferred = DeferredIndexes(conn, TABLE_COLUMNS, defer_indexes)
    deferred.drop()
    conv = _same if writer.pg else _iso
    event_base = ids["cases_event"] - 1  # the analysis numbers its in-memory events from 1
    events: dict[int, list] = {}  # db event id → [matter, grid, address, title, first, last, count]
    written_events: dict[int, tuple] = {}  # event id → (last, count) as inserted
    callers: dict[str, tuple[int, int]] = {}  # phone → (caller id, cases so far)
    first_closed = ordered.first_closed
    decide = ordered.decide
    ev = Evaluation()
    event_first: dict[int, int] = {}  # truth event → first case id
    case_truth_event: dict[int, int] = {}
    done = 0
    t_wait = t_ordered = 0.0
    worker_cpu: dict[str, float] = {}
    tw0, cw0 = time.perf_counter(), time.process_time()
    stream = iter(prepared)
    while True:
        tw = time.perf_counter()
        p = next(stream, None)
        t_wait += time.perf_counter() - tw
        if p is None:
            break
        ta = time.perf_counter()
        new_callers = []
        new_events: list[int] = []
        for (cid, at, at_db, phone, ph, name, ent, matter, loc, text, first_close, row, head, notes, held,
             truth_event) in p.cases:
            got = callers.get(phone)
            if got is None:
                caller_id = ids["cases_caller"]
                ids["cases_caller"] += 1
                new_callers.append((caller_id, ph, phone, name, ent, at_db, 0))
                callers[phone] = (caller_id, 1)
                earlier = False
            else:
                caller_id = got[0]
                callers[phone] = (caller_id, got[1] + 1)
                earlier = True
            first_closed[cid] = first_close
            event_id, dups, repeat, more = decide(cid, caller_id, matter, loc, text, at)
            eid = None if event_id is None else event_base + event_id
            row[_CALLER_COL] = caller_id
            row[_EVENT_COL] = eid
            row[_REPEAT_COL] = earlier or repeat
            row[_CARD_COL] = card_json(head, eid, dups, repeat, notes + more)
            if eid is not None:
                e = events.get(eid)
                if e is None:
                    events[eid] = [matter, loc.grid_code, loc.address_code, text[:200], at, at, 1]
                    new_events.append(eid)
                else:
                    if at > e[5]:
                        e[5] = at
                    e[6] += 1
            # held-out duplicate evaluation against the truth
            if held:
                joined = bool(dups)
                should = truth_event is not None and truth_event in event_first
                ev.dup_truth += should
                ev.dup_predicted += joined
                ev.dup_correct += joined and should and any(case_truth_event.get(d) == truth_event for d in dups)
            if truth_event is not None:
                event_first.setdefault(truth_event, cid)
                case_truth_event[cid] = truth_event
        ev.labels += p.labels
        ev.predicted += p.predicted
        ev.place_total += p.place_total
        ev.place_right += p.place_right
        for k, v in p.cpu.items():
            worker_cpu[k] = worker_cpu.get(k, 0.0) + v
        asg_base = ids["cases_assignment"]
        for r in p.extensions:
            r[1] += asg_base
        for table, rows in (("cases_assignment", p.assignments), ("cases_extension", p.extensions),
                            ("cases_transition", p.transitions), ("cases_followup", p.followups),
                            ("cases_dispatch_override", p.overrides)):
            base = ids[table]
            if isinstance(rows, CopyLines):
                rows.base = base
            else:
                for r in rows:
                    r[0] += base
            ids[table] = base + len(rows)
        t_ordered += time.perf_counter() - ta
        writer.insert("cases_caller", new_callers)
        ev_rows = []
        for eid in new_events:
            e = events[eid]
            ev_rows.append((eid, e[0], e[1], e[2], e[3], conv(e[4]), conv(e[5]), e[6]))
            written_events[eid] = (e[5], e[6])
        writer.insert("cases_event", ev_rows)
        for table, rows in (("cases_case", [c[11] for c in p.cases]), ("cases_assignment", p.assignments),
                            ("cases_extension", p.extensions), ("cases_transition", p.transitions),
                            ("cases_followup", p.followups), ("cases_dispatch_override", p.overrides)):
            writer.insert(table, rows)
        done += len(p.cases)
        report("回放", done, n_total)
    writer.close()
    t_loop, c_loop = time.perf_counter() - tw0, time.process_time() - cw0
    # events that grew after they were written, callers' case counts, SLA flags at the end
    tw, cw = time.perf_counter(), time.process_time()
    grown = [{"l": e[5], "c": e[6], "i": eid} for eid, e in events.items() if written_events[eid] != (e[5], e[6])]
    if grown:
        conn.execute(sa.text("UPDATE cases_event SET last_at = :l, case_count = :c WHERE id = :i"), grown)
    conn.execute(sa.text("UPDATE cases_caller SET case_count = :c WHERE id = :i"),
                 [{"c": cnt, "i": cid} for cid, cnt in callers.values() if cnt > 1])
    deferred.restore()
    _fix_sequences(conn)
    sla_mod.sweep(session, calendar, until)
    writer.seconds += time.perf_counter() - tw
    writer.cpu += time.process_time() - cw
    writer.counts["cases_event"] = len(events)
    timings["replay.loop"] = round(t_loop, 3)
    timings["replay.wait_for_workers"] = round(t_wait, 3)
    timings["replay.ordered_analysis"] = round(t_ordered, 3)
    timings["replay.write"] = round(writer.seconds, 3)
    timings["replay.loop_cpu"] = round(c_loop, 3)  # CPU seconds of the main process (not wall)
    timings["replay.write_cpu"] = round(writer.cpu, 3)
    timings["replay.write_blocked"] = round(writer.blocked, 3)  # the loop waiting for the writer
    if deferred.enabled:
        timings.update({f"replay.deferred_{k}": round(v, 3) for k, v in deferred.seconds.items()})
    work.update({f"cpu.{k}": round(v, 3) for k, v in worker_cpu.items()})
    return dict(writer.counts), ev


class _CaseRow:
    """The attributes of a case that the analyzer reads and ``apply_analysis`` writes (a plain
    object: ORM instrumentation is not needed for rows written in bulk)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def _first_close(life: Life) -> datetime | None:
    for t in life.state.transitions:
        if t.action == "close":
            return t.at
    return None


def _case_row(case: Case, life: Life, ts: Callable = _same) -> list:
    """The case's row; ``ts`` converts timestamps for the database (:func:`_iso` on SQLite)."""
    st = life.state
    return [
        case.id, case.code, case.channel, case.kind, case.title, case.text, case.caller_id, case.location_text,
        case.lon, case.lat, case.address_code, case.grid_code, case.community_code, case.street_code,
        life.matter_code or case.matter_code, case.category_confidence, case.urgency, case.event_id,
        life.main_department, st.state, st.version, st.supervised, st.reopen_count, st.satisfaction,
        bool(case.repeat_caller), case.analysis, None, SYSTEM, ts(case.received_at),
        ts(life.closed_at if st.state in ("closed", "followed_up") else None),
        ts(life.updated_at or case.received_at),
    ]


def _child_rows(case: Case, life: Life, ids: dict[str, int], calendar, ts: Callable, asg_rows, ext_rows,
                tr_rows, fu_rows, ov_rows, copy: bool = False) -> None:
    """The case's assignments, extensions, transitions, follow-ups and overrides as rows (ids
    from the counters in ``ids``; ``ts`` converts timestamps). With ``copy`` (PostgreSQL), the
    assignments, transitions and follow-ups are lines of COPY text without their id (see
    :class:`CopyLines`): cheaper to build, to send from the worker and to write than tuples."""
    st = life.state
    for seq, a in enumerate(st.assignments):
        aid = ids["cases_assignment"]
        ids["cases_assignment"] += 1
        start = life.dispatched_at[seq]
        if a.replied_at is not None:
            overdue = a.replied_at > a.deadline
            warned = overdue or sla_mod.used_fraction(calendar, start, a.deadline, a.replied_at) >= \
                sla_mod.DEFAULT_WARN_FRACTION
        else:
            overdue = warned = False  # open ones are flagged by sla.sweep at the end
        if copy:
            asg_rows.append(f"{case.id}\t{seq}\t{_ct(a.department)}\t{_ct(a.role)}\t{_ct(a.state)}\t{a.round}\t"
                            f"{_cts(start)}\t{_cts(a.deadline)}\t\\N\t{_cts(a.signed_at)}\t{_cts(a.replied_at)}\t"
                            f"{_ct(a.reply)}\t{'t' if warned else 'f'}\t{'t' if overdue else 'f'}\n")
        else:
            asg_rows.append([aid, case.id, seq, a.department, a.role, a.state, a.round, ts(start), ts(a.deadline),
                             None, ts(a.signed_at), ts(a.replied_at), a.reply, warned, overdue])
        for e in a.extensions:
            ext_rows.append([ids["cases_extension"], aid, ts(e.requested_at), e.requested_by, ts(e.new_deadline),
                             e.reason, e.status, e.decided_by])
            ids["cases_extension"] += 1
    cid = case.id
    n = ids["cases_transition"]
    if copy:
        for seq, t in enumerate(st.transitions):
            tr_rows.append(f"{cid}\t{seq}\t{_cts(t.at)}\t{_ct(t.actor)}\t{_ct(t.action)}\t{_ct(t.from_state)}\t"
                           f"{_ct(t.to_state)}\t{_ct(t.reason)}\t{_cn(t.assignment)}\n")
    else:
        for seq, t in enumerate(st.transitions):
            tr_rows.append([n + seq, cid, seq, ts(t.at), t.actor, t.action, t.from_state, t.to_state, t.reason,
                            t.assignment])
    ids["cases_transition"] = n + len(st.transitions)
    for at, sat, comment, rnd in life.followups:
        if copy:
            fu_rows.append(f"{cid}\t{_cts(at)}\t{OPERATOR}\t{_ct(sat)}\t{_ct(comment)}\t{rnd}\n")
        else:
            fu_rows.append([ids["cases_followup"], cid, ts(at), OPERATOR, sat, comment, rnd])
        ids["cases_followup"] += 1
    for o in life.overrides:
        ov_rows.append([ids["cases_dispatch_override"], cid, ts(o["at"]), OPERATOR if o["at"] else SYSTEM,
                        o["suggested_matter"], o["chosen_matter"], o["suggested_department"],
                        o["chosen_department"], case.text, False, json.dumps(o["detail"], ensure_ascii=False)])
        ids["cases_dispatch_override"] += 1


# ---------------------------------------------------------------- rates from the database
def rates_from_db(session: Session) -> dict[str, Any]:
    """按时办结率 and 满意率 as stored (a sanity figure; the cockpit computes its own)."""
    conn = session.connection()
    q = lambda sql: conn.execute(sa.text(sql)).scalar_one()  # noqa: E731
    cases = q("SELECT COUNT(*) FROM cases_case")
    closed = q("SELECT COUNT(*) FROM cases_case WHERE state IN ('closed', 'followed_up')")
    # a closed case is on time when none of its main assignments replied after the deadline
    late = q("SELECT COUNT(DISTINCT c.id) FROM cases_case c JOIN cases_assignment a ON a.case_id = c.id "
             "WHERE c.state IN ('closed', 'followed_up') AND a.overdue = TRUE")
    fu = dict(conn.execute(sa.text("SELECT satisfaction, COUNT(*) FROM cases_followup GROUP BY satisfaction")).all())
    total_fu = sum(fu.values())
    good = fu.get("满意", 0) + fu.get("基本满意", 0)
    returns = q("SELECT COUNT(*) FROM cases_transition WHERE action = 'return'")
    return {
        "cases": cases, "closed": closed,
        "on_time_rate": round(1 - late / closed, 4) if closed else None,
        "satisfaction_rate": round(good / total_fu, 4) if total_fu else None,
        "satisfied": fu.get("满意", 0), "basically_satisfied": fu.get("基本满意", 0),
        "unsatisfied": fu.get("不满意", 0), "returns": returns,
        "return_rate": round(returns / cases, 4) if cases else None,
    }


def summary_lines(r: ReplayResult) -> list[str]:
    """Chinese lines for the CLI and the benchmark."""
    e, rt = r.evaluation, r.rates
    pct = lambda v: "—" if v is None else f"{v * 100:.1f}%"  # noqa: E731
    return [
        f"回放诉求 {r.appeals:,} 件，用时 {r.timings.get('total', 0):.1f} 秒",
        f"按时办结率 {pct(rt['on_time_rate'])}，满意率 {pct(rt['satisfaction_rate'])}"
        f"（满意 {rt['satisfied']:,} / 基本满意 {rt['basically_satisfied']:,} / 不满意 {rt['unsatisfied']:,}），"
        f"退单 {rt['returns']:,} 次",
        f"留出集 {e['held_out']:,} 件：分类宏F1 {e['macro_f1']:.3f}，准确率 {e['accuracy']:.3f}，"
        f"点名地点的正确网格率 {pct(e['right_grid_rate'])}，重复件精确率 {pct(e['duplicate_precision'])}、"
        f"召回率 {pct(e['duplicate_recall'])}",
    ]
