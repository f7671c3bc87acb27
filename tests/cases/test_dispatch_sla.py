"""Dispatch by the responsibility list, and the SLA sweep."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from jiedao.cases import service
from jiedao.cases.dispatch import Dispatcher
from jiedao.cases.models import Assignment
from jiedao.cases.sla import sweep, used_fraction
from jiedao.catalog.calendar import WorkCalendar
from jiedao.catalog.loader import Catalog, DepartmentSpec, parse_matters
from jiedao.catalog.models import Department

MATTERS = """
defaults:
  sla: {紧急: 2h, 较急: 1wd, 一般: 5wd}
matters:
  - {code: CG01, level1: 城市管理, level2: 市容环卫, name: 占道经营, main: CGJ, co: [JD], level: street,
     keywords: [占道], examples: [门口摆摊, 人行道上卖菜]}
  - {code: ZJ01, level1: 住房, level2: 物业, name: 物业服务, main: ZJJ, co: [JD, CGJ], level: district,
     keywords: [物业], examples: [物业不作为, 电梯老坏]}
  - {code: JD01, level1: 基层治理, level2: 邻里, name: 邻里纠纷, main: JD, level: street,
     sla: {一般: 3wd}, keywords: [邻居], examples: [邻居吵架, 楼上漏水不管]}
"""
DEPTS = [DepartmentSpec("CGJ", "区城市管理执法局", "district"),
         DepartmentSpec("ZJJ", "区住房和城市更新局", "district"),
         DepartmentSpec("JD", "街道办事处", "street")]


@pytest.fixture(scope="module")
def dispatcher():
    matters, problems = parse_matters(MATTERS, {d.code for d in DEPTS})
    assert problems == []
    return Dispatcher(Catalog(DEPTS, matters), WorkCalendar())


def test_street_level_goes_to_the_office_of_the_place(dispatcher):
    s = dispatcher.suggest("CG01", "420199003", "琴台街道")
    assert s.main == "JD420199003" and s.co == ("CGJ",) and s.level == "street"
    assert any("琴台街道办事处" in r for r in s.reasons)


def test_district_level_keeps_main_and_resolves_generic_co(dispatcher):
    s = dispatcher.suggest("ZJ01", "420199001")
    assert s.main == "ZJJ" and s.co == ("JD420199001", "CGJ")


def test_unknown_place_asks_the_operator(dispatcher):
    s = dispatcher.suggest("JD01", None)
    assert s.main is None and not s.complete
    assert any("未能定位" in r for r in s.reasons)
    # a district matter without a place drops only the street co-handler
    assert dispatcher.suggest("ZJ01", None).co == ("CGJ",)


def test_deadline_uses_matter_sla_and_working_days(dispatcher):
    friday_4pm = datetime(2026, 3, 6, 16, 0)
    d = dispatcher.deadline("JD01", "一般", friday_4pm)
    assert d.weekday() < 5 and d > friday_4pm + timedelta(days=3), "3 working days skip the weekend"
    assert dispatcher.deadline("CG01", "紧急", friday_4pm) == friday_4pm + timedelta(hours=2)


def test_used_fraction_counts_working_time_only():
    cal = WorkCalendar()
    start = datetime(2026, 3, 6, 9, 0)  # Friday
    deadline = cal.deadline(start, "2wd")
    saturday = datetime(2026, 3, 7, 12, 0)
    f = used_fraction(cal, start, deadline, saturday)
    assert 0.45 < f < 0.55, "the weekend does not eat into the SLA"
    assert used_fraction(cal, start, deadline, deadline + timedelta(hours=1)) > 1


def test_sweep_flags_warnings_and_overdue_once(fresh_db):
    cal = WorkCalendar()
    with fresh_db.session() as s:
        s.add(Department(code="CGJ", name="区城市管理执法局", kind="district"))
    t0 = datetime(2026, 3, 2, 9, 0)  # Monday
    ids = []
    for sla in ("1wd", "5wd", "1wd"):
        with fresh_db.session() as s:
            case, _ = service.create_case(s, text="路灯不亮", channel="hotline", actor="op", at=t0)
            service.act(s, case.id, "analyse", actor="op", at=t0)
            service.act(s, case.id, "dispatch", actor="op", at=t0, main=("CGJ", cal.deadline(t0, sla)))
            ids.append(case.id)
    with fresh_db.session() as s:  # the third one is answered in time
        service.act(s, ids[2], "sign", actor="h", index=0, at=t0)
        service.act(s, ids[2], "reply", actor="h", index=0, text="已修复", at=t0)
    tuesday_noon = datetime(2026, 3, 3, 12, 0)
    with fresh_db.session() as s:
        first = sweep(s, cal, tuesday_noon)
    with fresh_db.session() as s:
        again = sweep(s, cal, tuesday_noon)
        flags = {a.case_id: (a.warned, a.overdue) for a in s.scalars(select(Assignment))}
    assert first == {"warned": 0, "overdue": 1} and again == {"warned": 0, "overdue": 0}
    assert flags == {ids[0]: (True, True), ids[1]: (False, False), ids[2]: (False, False)}
    friday_late = datetime(2026, 3, 6, 11, 0)  # over 4 of 5 working days used
    with fresh_db.session() as s:
        assert sweep(s, cal, friday_late) == {"warned": 1, "overdue": 0}


def test_the_scheduler_sweeps_at_once_and_again_in_the_background(fresh_db):
    """What ``jiedao serve`` runs: the first sweep at start, then one per interval; a failing
    run is retried, not fatal."""
    import threading

    from jiedao.cases.sla import SweepScheduler

    cal = WorkCalendar()
    with fresh_db.session() as s:
        s.add(Department(code="CGJ", name="区城市管理执法局", kind="district"))
    t0 = datetime(2026, 3, 2, 9, 0)  # Monday
    with fresh_db.session() as s:
        case, _ = service.create_case(s, text="路灯不亮", channel="hotline", actor="op", at=t0)
        service.act(s, case.id, "analyse", actor="op", at=t0)
        service.act(s, case.id, "dispatch", actor="op", at=t0, main=("CGJ", cal.deadline(t0, "1wd")))
    clock = {"now": datetime(2026, 3, 2, 10, 0)}  # not yet: nothing to flag
    swept = threading.Event()

    def now():
        if clock["now"] is None:
            raise RuntimeError("database away")
        return clock["now"]

    sched = SweepScheduler(fresh_db, 0.05, calendar=cal, now=now)
    sched.start()
    try:
        for _ in range(200):
            if sched.runs >= 1:
                break
            swept.wait(0.05)
        assert sched.runs >= 1 and sched.last == {"warned": 0, "overdue": 0}
        clock["now"] = None  # a run that fails is logged and the next one goes on
        for _ in range(200):
            if sched.failures:
                break
            swept.wait(0.05)
        clock["now"] = datetime(2026, 3, 4, 9, 0)  # past the one-working-day deadline
        for _ in range(400):
            with fresh_db.session() as s:
                if s.scalars(select(Assignment.overdue)).one():
                    break
            swept.wait(0.05)
    finally:
        sched.stop()
    assert sched.failures >= 1
    with fresh_db.session() as s:
        a = s.scalars(select(Assignment)).one()
        assert (a.warned, a.overdue) == (True, True)
