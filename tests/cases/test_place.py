"""核实地点: an operator asks the caller back and types the place; the case gets it, the card is
redone, and a case alone in its event joins an earlier case's event at that place."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from jiedao.cases.models import Case, Event
from jiedao.cases.place import confirm_place
from jiedao.errors import Conflict, ValidationError

T0 = datetime(2038, 3, 2, 9, 0)
NAMED = "{place}楼下的垃圾桶满了好几天没人清运，垃圾堆到路边，臭味很大"
VAGUE = "我家楼下的垃圾好几天没人清运了，垃圾桶满得溢出来，苍蝇乱飞"


@pytest.fixture(scope="module")
def place_db(demo_db):
    """A private copy of the demo database (these cases must not show up in other tests)."""
    from dbkit import clone_database

    return clone_database(demo_db, "place")


@pytest.fixture(scope="module")
def pipeline(place_db):
    from jiedao.cases.analysis.classifier import train
    from jiedao.cases.runtime import build_pipeline
    from jiedao.catalog.loader import load_catalog

    return build_pipeline(place_db, classifier=train([], load_catalog(), meta={"sources": ["catalogue"]}))


@pytest.fixture(scope="module")
def home(place_db):
    from jiedao.geo.models import Address

    with place_db.session() as s:
        a = s.scalars(select(Address).where(Address.compound.is_not(None), Address.building_no.is_not(None))
                      .order_by(Address.code).offset(11).limit(1)).one()
        return {"full": a.full, "short": f"{a.compound}{a.building_no}栋", "grid": a.grid_code,
                "street": a.street_code, "code": a.code}


def _take(pipeline, s, text, at, phone):
    return pipeline.submit(s, text=text, channel="hotline", actor="operator01", at=at, phone=phone)[0]


def test_confirmed_place_goes_on_the_case_and_joins_the_earlier_event(place_db, pipeline, home):
    with place_db.session() as s:
        first = _take(pipeline, s, NAMED.format(place=home["short"]), T0, "13911110001")
        vague = _take(pipeline, s, VAGUE, T0 + timedelta(hours=3), "13911110002")
        assert first.grid_code == home["grid"] and first.event_id is not None
        assert vague.grid_code is None and vague.matter_code == first.matter_code
        assert "location" in vague.analysis["needs_confirmation"]
        assert vague.event_id != first.event_id  # nothing to match without a place
        lone_event, version = vague.event_id, vague.version

        confirm_place(s, pipeline.analyzer, vague, home["full"], expected_version=version)
        s.flush()
        assert (vague.grid_code, vague.street_code, vague.address_code) == (home["grid"], home["street"],
                                                                           home["code"])
        assert vague.location_text == home["full"] and vague.version == version + 1
        assert vague.event_id == first.event_id
        card = vague.analysis
        assert "location" not in card["needs_confirmation"]
        assert card["location"]["grid_code"] == home["grid"] and card["event_id"] == first.event_id
        assert list(card["duplicates"]) == [first.id]
        assert any(n.startswith("地点经回访来电人核实") for n in card["notes"])
        assert any("地点经核实后比对" in n for n in card["notes"])
        assert s.get(Event, first.event_id).case_count == 2
        assert s.get(Event, lone_event) is None  # the lone event it left is gone
        # the suggestion is for the confirmed place's street now
        assert card["suggestion"]["main"] and card["auto_dispatchable"] in (True, False)


def test_a_lone_case_keeps_its_event_and_the_event_takes_the_place(place_db, pipeline, home):
    with place_db.session() as s:
        vague = _take(pipeline, s, VAGUE, T0 + timedelta(days=40), "13911110003")
        ev = vague.event_id
        confirm_place(s, pipeline.analyzer, vague, home["full"])
        s.flush()
        assert vague.event_id == ev
        e = s.get(Event, ev)
        assert (e.grid_code, e.address_code, e.case_count) == (home["grid"], home["code"], 1)


def _snapshot(s, case_id):
    c = s.get(Case, case_id)
    s.refresh(c)
    return (c.version, c.grid_code, c.event_id, c.location_text, dict(c.analysis))


def test_bad_answers_are_refused_and_change_nothing(place_db, pipeline, home):
    from jiedao.cases.workflow import IllegalTransition

    with place_db.session() as s:
        vague = _take(pipeline, s, VAGUE, T0 + timedelta(days=80), "13911110004")
        s.flush()
        before = _snapshot(s, vague.id)
        for answer in ("", "   ", "火星基地七号舱", "x" * 301):
            with pytest.raises(ValidationError) as e:
                confirm_place(s, pipeline.analyzer, vague, answer)
            assert e.value.problems[0].field == "place"
        with pytest.raises(Conflict):
            confirm_place(s, pipeline.analyzer, vague, home["full"], expected_version=before[0] + 5)
        assert _snapshot(s, vague.id) == before
        named = _take(pipeline, s, NAMED.format(place=home["short"]), T0 + timedelta(days=81), "13911110005")
        if named.state != "dispatched":
            pipeline.dispatch(s, named, actor="operator01", matter_code=named.matter_code or "CG0103")
        assert named.state == "dispatched"
        with pytest.raises(IllegalTransition):  # after dispatch the place is the departments' to correct
            confirm_place(s, pipeline.analyzer, named, home["full"])


# ---------------------------------------------------------------- the triage screen


def test_triage_form_confirms_the_place(place_db, home):
    from fastapi.testclient import TestClient

    from jiedao.cases.runtime import build_pipeline
    from jiedao.web.app import create_app

    app = create_app(place_db)
    app.state.case_pipeline = build_pipeline(place_db)
    op = TestClient(app)
    html = {"accept": "text/html"}
    r = op.post("/login", data={"username": "operator01", "password": "jiedao2026", "next": "/"},
                headers=html, follow_redirects=False)
    assert r.status_code == 303

    def token(url):
        return re.search(r'name="csrf-token" content="([^"]+)"', op.get(url, headers=html).text).group(1)

    r = op.post("/cases/workbench/intake", headers=html, follow_redirects=False, data={
        "csrf_token": token("/cases/workbench"), "text": VAGUE, "channel": "hotline", "urgency": "",
        "phone": "13911110006", "name": "李女士"})
    assert r.status_code == 303
    cid = int(re.match(r"^/cases/(\d+)/triage$", r.headers["location"]).group(1))
    page = op.get(f"/cases/{cid}/triage", headers=html)
    assert 'id="locate-form"' in page.text and "请回问来电人具体位置" in page.text
    with place_db.session() as s:
        version = s.get(Case, cid).version
    bad = op.post(f"/cases/{cid}/locate", headers=html, data={
        "csrf_token": token(f"/cases/{cid}/triage"), "expected_version": version, "place": "火星基地七号舱"})
    assert bad.status_code == 422 and "地点未更新" in bad.text and "火星基地" in bad.text
    ok = op.post(f"/cases/{cid}/locate", headers=html, follow_redirects=False, data={
        "csrf_token": token(f"/cases/{cid}/triage"), "expected_version": version, "place": home["full"]})
    assert ok.status_code == 303 and ok.headers["location"] == f"/cases/{cid}/triage?ok=locate"
    page = op.get(ok.headers["location"], headers=html)
    assert "地点已核实" in page.text and home["full"] in page.text
    with place_db.session() as s:
        c = s.get(Case, cid)
        assert c.grid_code == home["grid"] and c.version == version + 1
        from jiedao.auth.models import AuditLog

        logged = s.scalars(select(AuditLog).where(AuditLog.action == "case_locate",
                                                    AuditLog.object_id == c.code)).all()
        assert len(logged) == 1
