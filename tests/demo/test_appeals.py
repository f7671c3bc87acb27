"""The demo year of appeals: deterministic, with rhythm and seasons, a stable held-out split,
bursts and repeat callers, varied phrasing, and a truth that matches the demo district."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date

import pytest
from sqlalchemy import select

from jiedao.catalog.loader import load_catalog
from jiedao.demo.appeals import AppealGenerator, Places, generate_appeals, is_held_out
from jiedao.demo.pipeline import generate


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def world():
    return generate("small")


@pytest.fixture(scope="module")
def places(world):
    return Places.from_world(world)


@pytest.fixture(scope="module")
def year(places, catalog):
    return list(generate_appeals(places, catalog, scale="small"))


def _row(a):
    return (a.seq, a.received_at, a.channel, a.kind, a.phone, a.caller_name, a.enterprise, a.text,
            a.location_text, tuple(a.truth().values()))


def test_deterministic_for_a_seed(places, catalog, year):
    again = list(generate_appeals(places, catalog, scale="small"))
    assert [_row(a) for a in again] == [_row(a) for a in year]
    other = list(generate_appeals(places, catalog, scale="small", seed=7))
    assert [a.text for a in other[:50]] != [a.text for a in year[:50]]


def test_year_shape(year):
    assert 1300 <= len(year) <= 1700
    assert [a.seq for a in year] == list(range(len(year)))
    assert all(a.received_at <= b.received_at for a, b in zip(year, year[1:], strict=False))
    assert {a.received_at.year for a in year} == {2025}
    channels = Counter(a.channel for a in year)
    assert channels["hotline"] > 0.75 * len(year)
    assert channels["web"] and channels["app"] and channels["enterprise"]
    for a in year:
        assert (a.kind == "enterprise") == (a.channel == "enterprise")
        if a.kind == "enterprise":
            assert a.enterprise and a.enterprise.endswith("有限公司")


def test_weekly_hourly_and_seasonal_rhythm(places, catalog):
    apps = list(AppealGenerator(places, catalog, scale="small", total=6000))
    per_day = Counter(a.received_at.date() for a in apps)
    days = [date.fromordinal(d) for d in range(date(2025, 1, 1).toordinal(), date(2026, 1, 1).toordinal())]
    weekday = [per_day[d] for d in days if d.weekday() < 5]
    weekend = [per_day[d] for d in days if d.weekday() >= 5]
    assert sum(weekday) / len(weekday) > 1.15 * sum(weekend) / len(weekend)
    hours = Counter(a.received_at.hour for a in apps)
    assert hours[10] > 4 * hours[3]
    # 春节 (2025-01-29 … 02-04) is quieter than an ordinary week of the same season
    spring = sum(per_day[date(2025, 1, 29 + i)] if i < 3 else per_day[date(2025, 2, i - 2)] for i in range(7))
    march = sum(per_day[date(2025, 3, 10 + i)] for i in range(7))
    assert spring < 0.8 * march
    summer_matters = {m.code for m in catalog.matters if any(k in m.name + "".join(m.keywords)
                                                            for k in ("积水", "渍水", "噪音"))}

    def share(months):
        sel = [a for a in apps if a.received_at.month in months]
        return sum(a.matter_code in summer_matters for a in sel) / len(sel)

    assert share({6, 7, 8}) > 1.5 * share({12, 1, 2})
    gas = {m.code for m in catalog.matters if "燃气" in m.name or "停气" in m.name}
    winter = [a for a in apps if a.received_at.month in (12, 1, 2)]
    summer = [a for a in apps if a.received_at.month in (6, 7, 8)]
    assert sum(a.matter_code in gas for a in winter) / len(winter) > \
        sum(a.matter_code in gas for a in summer) / len(summer)


def test_held_out_split_is_stable(year, places, catalog):
    share = sum(a.held_out for a in year) / len(year)
    assert 0.16 < share < 0.24
    assert all(a.held_out == is_held_out(20260101, a.seq) for a in year)
    # the flag depends on seed and position only, not on what was generated
    bigger = AppealGenerator(places, catalog, scale="small", total=3000)
    assert [a.held_out for a, _ in zip(bigger, range(200), strict=False)] == [is_held_out(20260101, i) for i in range(200)]


def test_bursts_repeat_callers_and_phrasing(year):
    events = defaultdict(list)
    for a in year:
        if a.event is not None:
            events[a.event].append(a)
    assert len(events) >= 20
    assert max(len(v) for v in events.values()) >= 4
    for members in events.values():
        assert len({m.matter_code for m in members}) == 1
        assert len({m.grid_code for m in members}) == 1
        assert (members[-1].received_at - members[0].received_at).days <= 30
    multi = [v for v in events.values() if len(v) >= 3]
    assert any(len({m.caller_key for m in v}) >= 3 for v in multi)  # many callers, one event
    calls = Counter(a.caller_key for a in year)
    assert max(calls.values()) >= 20  # frequent callers with dozens of calls
    assert sum(1 for c in calls.values() if c > 1) > 50
    assert any(a.follow_up for a in year)
    # phrasing: varied, not one template per matter
    assert len({a.text for a in year}) > 0.97 * len(year)
    by_matter = defaultdict(set)
    for a in year:
        by_matter[a.matter_code].add(a.text[:6])
    top = max(by_matter.values(), key=len)
    assert len(top) >= 10
    kinds = Counter(a.place_kind for a in year)
    for k in ("address_full", "address_road", "compound_building", "compound", "landmark", "metro",
              "intersection", "vague", "none"):
        assert kinds[k] > 0, k


def test_truth_resolves_to_the_demo_district(demo_db, catalog):
    """Every named place is a real address or landmark of the small demo, in the truth's grid."""
    from jiedao.geo.models import Address, Grid, Landmark

    with demo_db.session() as s:
        places = Places.from_session(s)
        addresses = {a.code: a for a in s.scalars(select(Address))}
        landmarks = {m.id: m for m in s.scalars(select(Landmark))}
        names = {m.id: [m.name, *(x.alias for x in m.aliases)] for m in landmarks.values()}
        grids = set(s.scalars(select(Grid.code)))
    apps = list(generate_appeals(places, catalog, scale="small"))
    assert apps, "the small demo yields appeals"
    named = 0
    for a in apps:
        assert a.matter_code in catalog.by_code
        assert a.urgency in ("紧急", "较急", "一般")
        assert a.grid_code in grids
        assert a.community_code == a.grid_code[:12] and a.street_code == a.grid_code[:9]
        if a.address_code is not None:
            assert addresses[a.address_code].grid_code == a.grid_code
        if a.landmark_id is not None:
            assert landmarks[a.landmark_id].grid_code == a.grid_code
        if a.names_place:
            named += 1
            assert a.address_code is not None or a.landmark_id is not None or a.place_kind == "address_road"
            if a.address_code:
                ad = addresses[a.address_code]
                assert ad.road in a.text or (ad.compound or "")[:2] in a.text
            if a.landmark_id and not a.address_code:
                assert any(n in a.text for n in names[a.landmark_id]) or a.place_kind == "address_road"
        if a.location_text:
            assert a.location_text in a.text
    assert named > 0.5 * len(apps)
