"""Duplicate events: the place relations and their windows, the caller rule, and the live
(database candidates) and replay (in-memory index) paths giving the same events."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from jiedao.cases.analysis.analyzer import Analyzer
from jiedao.cases.analysis.card import Location
from jiedao.cases.analysis.duplicates import Compounds, DuplicateFinder, Venues
from jiedao.cases.intake import submit
from jiedao.geo.models import Address, Landmark

T0 = datetime(2036, 4, 6, 9, 0)
GRID = "G-1"
HOME = Location(text="幸福里3栋", address_code="A100-01", grid_code=GRID, lon=114.3000, lat=30.6000,
                matched_by="address")
HOME_OTHER_FLAT = Location(text="幸福里3栋2单元", address_code="A100-02", grid_code=GRID, lon=114.3000,
                           lat=30.6000, matched_by="address")
SCHOOL = Location(text="实验小学", address_code="S200-01", grid_code=GRID, lon=114.3020, lat=30.6010,
                  matched_by="landmark")
NEAR_SCHOOL = Location(text="建设路18号", address_code="A300-01", grid_code=GRID, lon=114.3021, lat=30.6011,
                       matched_by="address")
NEXT_DOOR = Location(text="建设路20号", address_code="A310-01", grid_code=GRID, lon=114.3015, lat=30.6000,
                     matched_by="address")  # about 145 m from HOME
COMPOUND = Location(text="幸福里", grid_code=GRID, lon=114.3005, lat=30.6003, matched_by="compound")
ELSEWHERE = Location(text="和平路1号", address_code="A900-01", grid_code="G-9", lon=114.40, lat=30.70,
                     matched_by="address")
NOWHERE = Location()
VENUES = Venues(["S200-01"], [(114.3020, 30.6010)])
# 幸福里: HOME and HOME_OTHER_FLAT are buildings in it, COMPOUND its point
COMPOUNDS = Compounds({"A100-01": "幸福里", "A100-02": "幸福里"}, [("幸福里", 114.3005, 30.6003)])


class Replay:
    """The in-memory finder as the replay drives it: one case after another, event ids from 1."""

    def __init__(self):
        self.finder = DuplicateFinder(in_memory=True, venues=VENUES, compounds=COMPOUNDS)
        self.next_id = 0

    def __call__(self, loc, hours, *, matter="CG0103", caller=None, text="垃圾没人清运"):
        self.next_id += 1
        event, dups, why = self.finder.assign_event(None, case_id=self.next_id, matter=matter, loc=loc, text=text,
                                                    at=T0 + timedelta(hours=hours), caller_key=caller)
        return event


def test_same_home_joins_for_a_week_a_coincidence_later_does_not():
    r = Replay()
    first = r(HOME, 0)
    assert r(HOME_OTHER_FLAT, 24 * 5) == first  # same building, five days later: the problem lasts
    assert r(HOME, 24 * 5 + 1) == first
    assert r(HOME, 24 * 13) != first  # more than 7 days after the latest call: another problem


def test_a_venue_is_the_same_event_only_within_hours():
    r = Replay()
    first = r(SCHOOL, 0)
    assert r(SCHOOL, 3) == first  # several calls about the school within hours: one event
    # the same matter at the school half a day later: many people go there, someone else's problem
    assert r(SCHOOL, 3 + 12) != first


def test_a_door_near_a_venue_is_another_place():
    r = Replay()
    first = r(SCHOOL, 0)
    assert r(NEAR_SCHOOL, 1) != first  # 15 m away but the school was named: not the same place


def test_nearby_doors_join_only_close_in_time():
    r = Replay()
    first = r(HOME, 0)
    assert r(NEXT_DOOR, 2) == first
    assert r(ELSEWHERE, 3) != first
    r = Replay()
    first = r(HOME, 0)
    assert r(NEXT_DOOR, 24 * 3) != first  # three days later next door: a coincidence, new event


def test_the_same_compound_without_a_building_within_three_days():
    r = Replay()
    first = r(COMPOUND, 0)
    assert r(COMPOUND, 48) == first
    assert r(COMPOUND, 48 + 80) != first


def test_a_building_and_its_compound_named_without_one_within_a_day():
    r = Replay()
    first = r(COMPOUND, 0)
    assert r(HOME, 20) == first  # 幸福里3栋 20 h after 幸福里小区: the same compound (near is only 8 h)
    r = Replay()
    first = r(HOME, 0)
    assert r(COMPOUND, 20) == first  # either way round
    r = Replay()
    first = r(COMPOUND, 0)
    assert r(HOME, 30) != first  # a day and more later: another problem
    r = Replay()
    first = r(COMPOUND, 0)
    assert r(NEXT_DOOR, 20) != first  # a door outside the compound


def test_compounds_from_the_resolver_match_the_places_the_locator_gives(dup_db, places):
    """The points Compounds knows are the ones the locator puts on “X小区” and on a door all of
    whose buildings are in X, and an address maps to its compound."""
    from jiedao.cases.analysis.location import Locator

    with dup_db.session() as s:
        loc = Locator(s)
        home = s.scalars(select(Address).where(Address.compound.is_not(None), Address.building_no.is_not(None))
                         .order_by(Address.code).offset(5).limit(1)).one()
    comps = Compounds.from_resolver(loc.resolver)
    own = comps.of(home.code, None, None)
    assert own is not None
    whole = loc.locate(f"{home.compound}小区里面垃圾没人收").location
    assert whole.address_code is None and whole.grid_code
    assert comps.of(None, whole.lon, whole.lat) == own
    assert comps.of(None, whole.lon + 0.01, whole.lat) is None


def test_the_closest_place_wins_over_a_more_similar_text():
    r = Replay()
    home = r(HOME, 0, text="楼下垃圾三天没人收")
    door = r(NEXT_DOOR, 10, text="门口垃圾桶满了没人清运，苍蝇乱飞")  # 10 h later: its own event
    assert door != home
    assert r(HOME, 11, text="门口垃圾桶满了没人清运，苍蝇乱飞") == home


def test_a_caller_chasing_their_case_joins_it_unless_they_name_another_place():
    r = Replay()
    first = r(HOME, 0, caller="p1")
    assert r(NOWHERE, 24 * 6, caller="p1") == first  # 催办 without naming the place again
    assert r(HOME, 24 * 8, matter="JT0201", caller="p1") != first  # another matter
    r = Replay()
    first = r(HOME, 0, caller="p2")
    assert r(ELSEWHERE, 24 * 2, caller="p2") != first  # the same caller about another place


def test_venues_from_landmarks_leave_out_compounds():
    class M:
        def __init__(self, kind, addr, lon, lat):
            self.kind, self.address_code, self.lon, self.lat = kind, addr, lon, lat

    v = Venues.from_landmarks([M("school", "S1-01", 114.1, 30.1), M("compound", "C1-01", 114.2, 30.2),
                               M("metro", None, 114.3, 30.3)])
    assert ("S1-01", None, None) in v and ("C1-01", 114.2, 30.2) not in v
    assert (None, 114.3, 30.3) in v and (None, 114.3000001, 30.3) in v and (None, 114.31, 30.3) not in v


# ---------------------------------------------------------------- live intake and replay agree
GARBAGE = ("{place}门口垃圾堆了好几天也没有环卫来清运，垃圾满得溢出来",
           "反映一下{place}的生活垃圾一直没人清运，垃圾桶都满了",
           "{place}旁边的垃圾桶三天没人来收了，苍蝇乱飞")


@pytest.fixture(scope="module")
def dup_db(demo_db):
    """A private copy of the demo database: these cases must not show up in other tests' lists."""
    from dbkit import clone_database

    return clone_database(demo_db, "duplicates")


@pytest.fixture(scope="module")
def places(dup_db):
    with dup_db.session() as s:
        home = s.scalars(select(Address).where(Address.compound.is_not(None), Address.building_no.is_not(None))
                         .order_by(Address.code).offset(5).limit(1)).one()
        venue = s.scalars(select(Landmark).where(Landmark.kind == "school", Landmark.address_code.is_not(None))
                          .order_by(Landmark.id)).first()
        return {"home": f"{home.compound}{home.building_no}栋", "venue": venue.name}


# (place, hours after the start, text, caller): the expected events are in the comments
SCENARIO = [
    ("home", 0, 0, "a"),     # event 1
    ("home", 30, 1, "b"),    # same building 30 h later: event 1
    ("home", 150, 2, "c"),   # 5 days after the latest call: event 1
    ("venue", 1, 0, "d"),    # event 2
    ("venue", 3, 1, "e"),    # the school 2 h later: event 2
    ("venue", 20, 2, "f"),   # the school 17 h later: a new event 3
    ("home", 400, 0, "g"),   # 10 days after the latest: a new event 4
]
EXPECTED = [0, 0, 0, 1, 1, 2, 3]


def _run(session, analyse, places, start: datetime, prefix: str) -> list[int]:
    events = []
    for place, hours, tpl, caller in SCENARIO:
        case = analyse(session, GARBAGE[tpl].format(place=places[place]), start + timedelta(hours=hours),
                       f"1390{prefix}{ord(caller):05d}")
        events.append(case.event_id)
    order = list(dict.fromkeys(events))
    return [order.index(e) for e in events]


def test_live_intake_and_replay_give_the_same_events(dup_db, places):
    from jiedao.cases.analysis.classifier import train
    from jiedao.cases.runtime import build_pipeline
    from jiedao.catalog.loader import load_catalog

    p = build_pipeline(dup_db, classifier=train([], load_catalog(), meta={"sources": ["catalogue"]}))
    mem = Analyzer(p.catalog, p.analyzer.classifier, p.analyzer.locator.resolver, p.analyzer.locator.grid_index,
                   p.dispatcher, locator=p.analyzer.locator, in_memory_duplicates=True)
    assert len(mem.duplicates.venues) and len(p.analyzer.duplicates.venues)
    with dup_db.session() as s:
        def live(session, text, at, phone):
            return p.submit(session, text=text, channel="hotline", actor="operator01", at=at, phone=phone)[0]

        def replayed(session, text, at, phone):
            return submit(session, mem, p.dispatcher, text=text, channel="hotline", actor="operator01", at=at,
                          phone=phone)[0]

        got_live = _run(s, live, places, datetime(2036, 6, 1, 8, 0), "11")
        got_mem = _run(s, replayed, places, datetime(2037, 6, 1, 8, 0), "22")
    assert got_live == EXPECTED
    assert got_mem == EXPECTED


def test_live_caller_rule_joins_a_closed_case_of_the_same_caller_like_the_replay(dup_db, places):
    """催办 after the first case was closed: still the caller's problem, so the same event — in
    live intake as in the replay's in-memory rule (which does not know case states)."""
    from sqlalchemy import update

    from jiedao.cases.analysis.classifier import train
    from jiedao.cases.models import Case
    from jiedao.cases.runtime import build_pipeline
    from jiedao.catalog.loader import load_catalog

    p = build_pipeline(dup_db, classifier=train([], load_catalog(), meta={"sources": ["catalogue"]}))
    start = datetime(2039, 5, 4, 9, 0)
    with dup_db.session() as s:
        first = p.submit(s, text=GARBAGE[0].format(place=places["home"]), channel="hotline", actor="operator01",
                         at=start, phone="13900077001")[0]
        s.flush()
        # the rule reads only the state: the first case is closed by the time the caller calls again
        s.execute(update(Case).where(Case.id == first.id).values(state="closed"))
        again = p.submit(s, text="上次反映的垃圾又没人清运了，垃圾桶又满了", channel="hotline",
                         actor="operator01", at=start + timedelta(days=6), phone="13900077001")[0]
        other = p.submit(s, text="上次反映的垃圾又没人清运了，垃圾桶又满了", channel="hotline",
                         actor="operator01", at=start + timedelta(days=6, hours=1), phone="13900077002")[0]
        late = p.submit(s, text="上次反映的垃圾又没人清运了，垃圾桶又满了", channel="hotline",
                        actor="operator01", at=start + timedelta(days=40), phone="13900077001")[0]
        assert again.matter_code == first.matter_code
        assert again.event_id == first.event_id  # the same caller, six days later: same event
        assert other.event_id != first.event_id  # someone else, no place named: nothing to compare
        assert late.event_id != first.event_id  # past caller_days: another problem
    mem = DuplicateFinder(in_memory=True)
    loc = Location(text="x", address_code="A1-01", grid_code="G-1", lon=114.3, lat=30.6)
    e1, _, _ = mem.assign_event(None, case_id=1, matter="CG0103", loc=loc, text="a", at=start, caller_key="c")
    e2, _, _ = mem.assign_event(None, case_id=2, matter="CG0103", loc=NOWHERE, text="b",
                                at=start + timedelta(days=6), caller_key="c")
    assert e1 == e2
