"""Urgency cues, duplicate events, repeat callers and end-to-end intake on the demo district."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from jiedao.cases.analysis.analyzer import Analyzer
from jiedao.cases.analysis.card import Analysis
from jiedao.cases.analysis.urgency import assess
from jiedao.cases.intake import submit
from jiedao.cases.models import URGENCIES, Case, Event
from jiedao.catalog.loader import street_office_code
from jiedao.geo.models import Address


@pytest.mark.parametrize(("text", "level", "cue"), [
    ("三楼楼道里燃气泄漏，味道很大，大家都跑出来了", "紧急", "燃气泄漏"),
    ("对面楼顶着火了，一直在冒烟", "紧急", "着火"),
    ("电线掉在地上，刚才有只狗触电了", "紧急", "触电"),
    ("小区围墙塌了一大段", "紧急", "塌了"),
    ("我爸被困在电梯里半小时了", "紧急", "被困"),
    ("有个老人晕倒在公交站旁边", "紧急", "晕倒"),
    ("地下室水管爆裂了，水哗哗往外冒", "紧急", "水管爆裂"),
    ("整栋楼停水两天了，什么通知都没有", "较急", "停水"),
    ("电梯坏了一个星期，老人上不了楼", "较急", "电梯坏"),
    ("楼下的路灯不亮了", "一般", None),
    ("不是着火，是隔壁在烧烤，烟有点大", "一般", None),
])
def test_urgency_cues(text, level, cue):
    u = assess(text)
    assert u.level == level
    if cue:
        assert any(cue in r for r in u.reasons)
    else:
        assert u.reasons == ()


def _address(demo_db, n=0, *, compound=True):
    with demo_db.session() as s:
        stmt = select(Address).order_by(Address.code)
        stmt = stmt.where(Address.compound.is_not(None), Address.building_no.is_not(None)) if compound \
            else stmt.where(Address.compound.is_(None))
        a = s.scalars(stmt).all()[n]
        s.expunge(a)
    return a


GARBAGE = ("{place}楼下的垃圾桶三天没人来收了，垃圾满得溢出来，苍蝇乱飞",
           "{place}门口垃圾堆了好几天也没有环卫来清运，天热臭得不行",
           "反映一下{place}的生活垃圾一直没人清运，垃圾桶都满了")


def test_duplicates_join_one_event_within_the_window_only(demo_db, pipeline):
    a = _address(demo_db, 0)
    far = next(_address(demo_db, i) for i in range(1, 60) if _address(demo_db, i).grid_code != a.grid_code)
    t0 = datetime(2031, 3, 3, 9, 0)
    place = f"{a.road}{a.number}号{a.compound}{a.building_no}栋"
    with demo_db.session() as s:
        def go(text, at, phone):
            case, _ = pipeline.submit(s, text=text, channel="hotline", actor="operator01", at=at, phone=phone)
            return case

        c1 = go(GARBAGE[0].format(place=place), t0, "13900000001")
        c2 = go(GARBAGE[1].format(place=f"{a.compound}{a.building_no}栋"), t0 + timedelta(hours=20), "13900000002")
        c3 = go(GARBAGE[2].format(place=place), t0 + timedelta(hours=40), "13900000003")
        assert c1.matter_code == c2.matter_code == c3.matter_code == "CG0103"
        assert c1.event_id and c1.event_id == c2.event_id == c3.event_id
        ev = s.get(Event, c1.event_id)
        s.refresh(ev)
        assert ev.case_count == 3 and ev.last_at == t0 + timedelta(hours=40)
        assert set(c3.analysis["duplicates"]) == {c1.id, c2.id}
        assert any("同一事件" in n for n in c3.analysis["notes"])
        # outside the same-address window (7 days, counted from the latest case of the event): a new event
        c4 = go(GARBAGE[0].format(place=place), t0 + timedelta(hours=40 + 170), "13900000004")
        assert c4.event_id != c1.event_id
        # the same problem at another place: a new event
        other = f"{far.road}{far.number}号{far.compound or ''}{far.building_no + '栋' if far.building_no else ''}"
        c5 = go(GARBAGE[0].format(place=other), t0 + timedelta(hours=41), "13900000005")
        assert c5.grid_code == far.grid_code and c5.event_id not in (c1.event_id, c4.event_id)
        # another problem at the same place: a new event
        c6 = go(f"{place}的电梯又坏了，天天停运", t0 + timedelta(hours=42), "13900000006")
        assert c6.matter_code != "CG0103" and c6.event_id != c1.event_id


def test_in_memory_index_finds_the_same_events(demo_db, pipeline):
    p = pipeline
    mem = Analyzer(p.catalog, p.analyzer.classifier, p.analyzer.locator.resolver, p.analyzer.locator.grid_index,
                   p.dispatcher, locator=p.analyzer.locator, in_memory_duplicates=True)
    a = _address(demo_db, 1)
    place = f"{a.compound}{a.building_no}栋"
    t0 = datetime(2032, 5, 4, 10, 0)
    with demo_db.session() as s:
        cases = []
        for i, tpl in enumerate(GARBAGE + (GARBAGE[0],)):
            at = t0 + timedelta(hours=30 * i if i < 3 else 400)
            case, _ = submit(s, mem, p.dispatcher, text=tpl.format(place=place), channel="hotline",
                             actor="operator01", at=at)
            cases.append(case)
        events = [c.event_id for c in cases]
        assert events[0] == events[1] == events[2] != events[3]
        assert len(mem.duplicates.recent) >= 1


def test_repeat_caller_with_an_open_case_on_the_same_matter(demo_db, pipeline):
    a = _address(demo_db, 2)
    t0 = datetime(2033, 1, 5, 9, 0)
    with demo_db.session() as s:
        first, _ = pipeline.submit(s, text=f"{a.compound}{a.building_no}栋的电梯又坏了，已经停运三天",
                                   channel="hotline", actor="operator01", at=t0, phone="13700000077")
        again, _ = pipeline.submit(s, text=f"我上周反映的{a.compound}电梯到现在还没修好",
                                   channel="hotline", actor="operator01", at=t0 + timedelta(days=6),
                                   phone="13700000077")
        assert again.repeat_caller and again.analysis["repeat_caller"]
        assert any("未办结" in n for n in again.analysis["notes"])
        stranger, _ = pipeline.submit(s, text="宽带断网两天了", channel="hotline", actor="operator01",
                                      at=t0 + timedelta(days=6), phone="13700000078")
        assert not stranger.analysis["repeat_caller"]


def test_clear_appeal_is_dispatched_to_the_office_of_the_place_with_deadlines(demo_db, pipeline):
    a = _address(demo_db, 3)
    at = datetime(2030, 6, 3, 10, 0)  # a Monday
    with demo_db.session() as s:
        case, created = submit(
            s, pipeline.analyzer, pipeline.dispatcher, channel="hotline", actor="operator01", at=at,
            text=f"{a.road}{a.number}号{a.compound}{a.building_no}栋楼下的垃圾站三天没人清运了，臭气熏天")
        assert created and case.state == "dispatched", case.analysis
        assert case.matter_code == "CG0103" and case.grid_code == a.grid_code and case.address_code == a.code
        assert case.street_code == a.street_code and case.community_code == a.community_code
        assert case.main_department_code == street_office_code(a.street_code)
        depts = {x.department_code: x for x in case.assignments}
        assert set(depts) == {street_office_code(a.street_code), "CGJ"}
        expected = pipeline.dispatcher.deadline("CG0103", case.urgency, at)
        assert all(x.deadline == expected and x.deadline > at for x in case.assignments)
        card = case.analysis
        assert card["auto_dispatchable"] and not card["needs_confirmation"]
        assert card["suggestion"]["main"] == case.main_department_code and card["suggestion"]["reasons"]
        json.dumps(card, ensure_ascii=False, default=str)

        d = _address(demo_db, 0, compound=False)
        lamp, _ = submit(s, pipeline.analyzer, pipeline.dispatcher, channel="hotline", actor="operator01",
                         at=at, text=f"{d.road}{d.number}号门口的路灯晚上一直不亮，黑漆漆的")
        assert lamp.state == "dispatched" and lamp.matter_code == "CG0603"
        assert lamp.main_department_code == "CGJ" and lamp.grid_code == d.grid_code


def test_vague_appeals_wait_for_the_operator(demo_db, pipeline):
    at = datetime(2030, 6, 3, 11, 0)
    with demo_db.session() as s:
        vague, _ = submit(s, pipeline.analyzer, pipeline.dispatcher, channel="hotline", actor="operator01",
                          at=at, text="你们到底管不管，这个事情我已经反映好多次了")
        assert vague.state == "analysed" and not vague.assignments
        assert "category" in vague.analysis["needs_confirmation"]
        placeless, _ = submit(s, pipeline.analyzer, pipeline.dispatcher, channel="hotline",
                              actor="operator01", at=at, text="楼下垃圾桶满了三天没人收，臭死了")
        assert placeless.state == "analysed"
        assert {"location", "department"} <= set(placeless.analysis["needs_confirmation"])
        unknown, _ = submit(s, pipeline.analyzer, pipeline.dispatcher, channel="hotline",
                            actor="operator01", at=at, text="幸福大道999号阳光丽景小区门口的垃圾没人收")
        assert unknown.state == "analysed" and unknown.grid_code is None
        assert "location" in unknown.analysis["needs_confirmation"]
        assert s.scalar(select(Case.state).where(Case.id == unknown.id)) == "analysed"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_analysis_of_any_text_is_a_valid_card(pipeline, text):
    a = pipeline.analyzer.preview(text)
    assert isinstance(a, Analysis)
    assert a.urgency in URGENCIES and 0.0 <= a.confidence <= 1.0
    assert set(a.needs_confirmation) <= {"category", "location", "department"}
    assert a.matter_code is None or a.matter_code in pipeline.catalog.by_code
    if a.auto_dispatchable:
        assert a.suggestion.main and a.location.grid_code or not pipeline.analyzer._needs_place(a.matter_code)
    json.dumps(a.to_card(), ensure_ascii=False)
