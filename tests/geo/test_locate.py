"""Point → grid (GridIndex) and text → address/grid (AddressResolver)."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import Point, shape

from jiedao.geo.address import parse_address
from jiedao.geo.locate import AddressResolver, GridIndex
from jiedao.geo.models import Address, Building, Landmark, LandmarkAlias

from .geo_fixtures import STEP, X0, Y0, feature, grid_fc, load_all

# A lattice of squares plus two irregular shapes to exercise cells on polygon edges.
IRREGULAR = [
    feature("900000000000001", "三角", {"type": "Polygon", "coordinates": [[
        [114.25, 30.50], [114.27, 30.50], [114.25, 30.52], [114.25, 30.50]]]}),
    feature("900000000000002", "三角二", {"type": "Polygon", "coordinates": [[
        [114.27, 30.50], [114.27, 30.52], [114.25, 30.52], [114.27, 30.50]]]}),
    feature("900000000000003", "L形", {"type": "Polygon", "coordinates": [[
        [114.28, 30.50], [114.30, 30.50], [114.30, 30.505], [114.285, 30.505], [114.285, 30.52],
        [114.28, 30.52], [114.28, 30.50]]]}),
]
FEATURES = grid_fc()["features"] + IRREGULAR


@pytest.fixture(scope="module")
def index():
    return GridIndex.from_features(FEATURES)


def brute(lon, lat):
    hits = sorted(f["properties"]["code"] for f in FEATURES
                  if shape(f["geometry"]).intersects(Point(lon, lat)))
    return hits[0] if hits else None


def test_grid_at_centres_edges_and_outside(index):
    assert len(index) == 11
    assert index.grid_at(X0 + 0.005, Y0 + 0.005) == "420199001001001"
    assert index.grid_at(X0 + 0.015, Y0 + 0.015) == "420199001001004"
    assert index.grid_at(X0 + 0.035, Y0 + 0.005) == "420199002001002"
    # on the shared edge of grids 001 and 002: boundary counts, the lowest code wins
    assert index.grid_at(X0 + STEP, Y0 + 0.005) == "420199001001001"
    assert index.grid_at(114.26, 30.505) == "900000000000001"
    assert index.grid_at(114.266, 30.515) == "900000000000002"
    assert index.grid_at(114.29, 30.51) is None  # the notch of the L
    assert index.grid_at(114.0, 30.0) is None
    assert index.grid_at(math.nan, 30.5) is None


_INDEX = GridIndex.from_features(FEATURES)


@settings(max_examples=300, deadline=None)
@given(st.floats(114.195, 114.305), st.floats(30.495, 30.525))
def test_grid_at_agrees_with_brute_force(lon, lat):
    assert _INDEX.grid_at(lon, lat) == brute(lon, lat)


def test_grid_at_many_matches_grid_at(index):
    lons = [X0 + 0.001 * i for i in range(0, 110, 3)]
    lats = [Y0 + 0.0007 * i for i in range(len(lons))]
    assert index.grid_at_many(lons, lats) == [index.grid_at(x, y) for x, y in zip(lons, lats, strict=True)]


def test_nearest_grid_for_points_just_outside(index):
    # ~96 m south of grid 001 (0.00087° of latitude)
    assert index.grid_at(X0 + 0.005, Y0 - 0.00087) is None
    assert index.nearest_grid(X0 + 0.005, Y0 - 0.00087) == "420199001001001"
    code, dist = index.nearest(X0 + 0.005, Y0 - 0.00087)
    assert code == "420199001001001" and 90 < dist < 100
    assert index.nearest_grid(X0 + 0.005, Y0 - 0.00087, max_distance_m=50) is None
    assert index.nearest_grid(113.0, 29.0) is None
    assert index.nearest_grid(X0 + 0.005, Y0 + 0.005) == "420199001001001"


def test_empty_index():
    idx = GridIndex([], [])
    assert idx.grid_at(114.2, 30.5) is None and idx.nearest_grid(114.2, 30.5) is None


# ---------------------------------------------------------------- resolver on a tiny district


@pytest.fixture
def tiny(fresh_db):
    """Fixture district: two compounds, an office tower, landmarks with aliases."""
    with fresh_db.session() as s:
        load_all(s)
        g1, g2, g5 = "420199001001001", "420199001001002", "420199002001001"
        pending = []

        def building(code, name, grid, compound=None, no=None, lon=X0 + 0.005, lat=Y0 + 0.005,
                     road="琴台大道", number="88"):
            s.add(Building(code=code, name=name, kind="residential" if compound else "office",
                           compound=compound, lon=lon, lat=lat, grid_code=grid,
                           community_code=grid[:12], street_code=grid[:9]))
            full = f"江城市临江区{road}{number}号{compound or ''}{no + '栋' if no else ''}"
            pending.append(Address(code=f"{code}-01", full=full, road=road, number=number,
                          compound=compound, building_no=no, building_code=code, grid_code=grid,
                          community_code=grid[:12], street_code=grid[:9], lon=lon, lat=lat))

        for k in range(1, 4):
            building(f"{g1}{k:03d}", f"锦绣长江小区{k}栋", g1, "锦绣长江小区", str(k))
        building(f"{g2}001", "锦绣长江小区4栋", g2, "锦绣长江小区", "4", lon=X0 + 0.015)
        for k in range(1, 3):
            building(f"{g5}{k:03d}", f"翠湖花园{k}栋", g5, "翠湖花园", str(k), lon=X0 + 0.025,
                     road="月湖路", number="12")
        building(f"{g5}009", "江城国际金融中心", g5, lon=X0 + 0.026, road="月湖路", number="20")
        s.flush()  # buildings before their addresses
        s.add_all(pending)
        s.flush()
        mall = Landmark(name="群光广场", kind="mall", lon=X0 + 0.026, lat=Y0 + 0.005,
                        address_code=f"{g5}009-01", grid_code=g5, community_code=g5[:12],
                        street_code=g5[:9])
        mall.aliases = [LandmarkAlias(alias="群光"), LandmarkAlias(alias="群光商场")]
        park_a = Landmark(name="琴台公园", kind="park", lon=X0 + 0.005, lat=Y0 + 0.005,
                          grid_code=g1, community_code=g1[:12], street_code=g1[:9])
        park_a.aliases = [LandmarkAlias(alias="江边公园")]
        park_b = Landmark(name="月湖公园", kind="park", lon=X0 + 0.025, lat=Y0 + 0.005,
                          grid_code=g5, community_code=g5[:12], street_code=g5[:9])
        park_b.aliases = [LandmarkAlias(alias="江边公园")]
        s.add_all([mall, park_a, park_b])
    with fresh_db.session() as s:
        return AddressResolver(s)


def test_exact_standard_address(tiny):
    r = tiny.resolve("江城市临江区琴台大道88号锦绣长江小区2栋")
    assert (r.address_code, r.grid_code, r.matched_by, r.confidence) == (
        "420199001001001002-01", "420199001001001", "address", 1.0)
    assert r.building_code == "420199001001001002" and r.street_code == "420199001"


def test_varied_renderings(tiny):
    for text in ("琴台大道８８号 锦绣长江 ２幢", "临江区琴台大道八十八号锦绣长江小区二号楼3单元301室",
                 "锦绣长江小区二栋", "锦绣长江花园2座"):
        r = tiny.resolve(text)
        assert r.address_code == "420199001001001002-01", text
        assert r.confidence >= 0.8


def test_building_in_another_grid(tiny):
    r = tiny.resolve("锦绣长江小区4栋")
    assert r.grid_code == "420199001001002" and r.matched_by == "compound"


def test_compound_without_building(tiny):
    r = tiny.resolve("锦绣长江小区门口垃圾没人清")
    assert r.matched_by == "compound" and r.address_code is None
    assert r.grid_code == "420199001001001"  # where most of its buildings are
    assert {c.grid_code for c in r.candidates} == {"420199001001001", "420199001001002"}
    assert 0.5 <= r.confidence < 0.8


def test_office_tower_door_is_the_building(tiny):
    r = tiny.resolve("月湖路20号")
    assert r.building_code == "420199002001001009" and r.confidence >= 0.9


def test_landmark_and_alias(tiny):
    r = tiny.resolve("群光广场门口有人摆摊")
    assert (r.matched_by, r.matched_name, r.grid_code) == ("landmark", "群光广场", "420199002001001")
    assert r.address_code == "420199002001001009-01"
    alias = tiny.resolve("群光商场")
    assert alias.grid_code == "420199002001001" and alias.confidence < r.confidence


def test_ambiguous_alias_gives_candidates_not_a_guess(tiny):
    r = tiny.resolve("江边公园")
    assert r.grid_code is None and r.confidence <= 0.3
    assert {c.name for c in r.candidates} == {"琴台公园", "月湖公园"}


def test_fuzzy_near_miss(tiny):
    r = tiny.resolve("锦秀长江小区3栋")  # 秀 for 绣
    assert r.address_code == "420199001001001003-01"
    assert 0.5 <= r.confidence < 0.9
    assert r.candidates and r.candidates[0].name == "锦绣长江小区"


def test_unknown_road_number_uses_nearest_door(tiny):
    r = tiny.resolve("月湖路14号")
    assert r.matched_by == "road" and r.grid_code == "420199002001001"
    assert r.address_code is None and r.confidence <= 0.6


def test_nothing_known(tiny):
    r = tiny.resolve("火星大道1号")
    assert r.grid_code is None and r.confidence == 0.0 and r.matched_by is None
    assert tiny.resolve("").confidence == 0.0


def test_other_district_is_not_claimed(tiny):
    r = tiny.resolve("武昌区琴台大道88号锦绣长江小区2栋")
    assert r.grid_code is None and r.confidence < 0.5
    assert r.candidates[0].address_code == "420199001001001002-01"


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=40))
def test_resolver_never_raises(tiny, text):
    r = tiny.resolve(text)
    assert 0.0 <= r.confidence <= 1.0
    assert r.grid_code is None or r.grid_code.startswith("420199")


# ---------------------------------------------------------------- on the demo district


def test_demo_addresses_and_points(demo_db):
    from sqlalchemy import select

    with demo_db.session() as s:
        index = GridIndex.from_session(s)
        resolver = AddressResolver(s)
        addrs = s.execute(select(Address.full, Address.code, Address.grid_code, Address.lon,
                                 Address.lat)).all()
        marks = s.execute(select(Landmark.name, Landmark.grid_code, Landmark.lon,
                                 Landmark.lat)).all()
    assert addrs and marks
    for full, code, grid, lon, lat in addrs:
        assert index.grid_at(lon, lat) == grid
        r = resolver.resolve(full.removeprefix("江城市临江区"))
        assert (r.address_code, r.grid_code) == (code, grid), full
    for name, grid, lon, lat in marks:
        assert index.grid_at(lon, lat) == grid
        assert resolver.resolve(f"{name}附近").grid_code == grid, name


def test_fuzzy_hit_on_a_compound_landmark_alias_only(tiny, fresh_db):
    """A near name that is only the alias of a compound's own landmark must not crash."""
    g5 = "420199002001001"
    with fresh_db.session() as s:
        mark = Landmark(name="翠湖花园", kind="compound", lon=X0 + 0.025, lat=Y0 + 0.005,
                        grid_code=g5, community_code=g5[:12], street_code=g5[:9])
        mark.aliases = [LandmarkAlias(alias="湖畔新居")]
        s.add(mark)
    with fresh_db.session() as s:
        resolver = AddressResolver(s)
    # near the alias only, far from every compound name: the fuzzy step finds no target
    assert resolver._fuzzy(["湖畔新区"], parse_address("湖畔新区")) is None
    r = resolver.resolve("湖畔新区")
    assert 0.0 <= r.confidence <= 1.0
