"""The synthetic demo district: determinism, tiling, addresses, codes, users, reuse."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict

import pytest
import shapely
import sqlalchemy as sa

from jiedao.auth.models import ROLES, User
from jiedao.demo.build import DEMO_LABEL, ensure_demo, fingerprint
from jiedao.demo.pipeline import DEFAULT_SEED, generate, stage_rng
from jiedao.geo.models import (
    Address,
    Building,
    Community,
    District,
    Grid,
    Landmark,
    LandmarkAlias,
    Road,
    Street,
)

AREA_TOL = 1e-9  # square degrees (~10 m²)
SLIVER_TOL = 1e-8  # hairline slivers (centimetres wide) left by rounding to 1e-6 degree (~100 m²)


def _rows(db, model):
    with db.session() as s:
        return list(s.scalars(sa.select(model).order_by(*model.__table__.primary_key.columns)))


def _shape(text):
    return shapely.from_geojson(text)


@pytest.fixture(scope="module")
def small_world():
    return generate("small", DEFAULT_SEED)


# ------------------------------------------------------------------ determinism
def test_same_seed_same_district_different_seed_different(small_world):
    again = generate("small", DEFAULT_SEED)
    other = generate("small", DEFAULT_SEED + 1)
    for table in ("geo_address", "geo_grid", "geo_building", "geo_landmark", "geo_road"):
        assert small_world.tables[table] == again.tables[table], table
    fulls = [a["full"] for a in small_world.tables["geo_address"]]
    assert fulls != [a["full"] for a in other.tables["geo_address"]]
    geoms = [g["geometry"] for g in small_world.tables["geo_grid"]]
    assert geoms != [g["geometry"] for g in other.tables["geo_grid"]]


def test_output_does_not_depend_on_python_hash_seed(small_world):
    code = (
        "import hashlib, json; from jiedao.demo.pipeline import generate; "
        "w = generate('small'); "
        "print(hashlib.sha256(json.dumps(w.tables, sort_keys=True, ensure_ascii=False)"
        ".encode()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    here = hashlib.sha256(json.dumps(small_world.tables, sort_keys=True, ensure_ascii=False)
                          .encode()).hexdigest()
    assert out == here


def test_stage_rngs_are_independent():
    a, b = stage_rng(1, "roads"), stage_rng(1, "buildings")
    assert [a.random() for _ in range(3)] != [b.random() for _ in range(3)]
    assert stage_rng(1, "roads").random() == stage_rng(1, "roads").random()


def test_database_holds_exactly_the_generated_district(demo_db, small_world):
    fulls = sorted(a.full for a in _rows(demo_db, Address))
    assert fulls == sorted(a["full"] for a in small_world.tables["geo_address"])
    grids = {g.code: g.geometry for g in _rows(demo_db, Grid)}
    assert grids == {g["code"]: g["geometry"] for g in small_world.tables["geo_grid"]}


# ------------------------------------------------------------------ geometry
def _check_tiling(parent, children):
    """Children cover the parent and do not overlap; rounding coordinates to 1e-6 degree
    (about 0.1 m) leaves hairline slivers, hence a relative tolerance of 1e-4."""
    union = shapely.union_all(children)
    assert union.area == pytest.approx(parent.area, rel=1e-4, abs=SLIVER_TOL)
    assert shapely.symmetric_difference(union, parent).area < max(parent.area * 2e-4, SLIVER_TOL)
    assert sum(c.area for c in children) == pytest.approx(parent.area, rel=1e-4, abs=SLIVER_TOL)
    for i, a in enumerate(children):
        assert a.is_valid and a.area > 0 and a.geom_type == "Polygon"
        for b in children[i + 1 :]:
            assert shapely.intersection(a, b).area < AREA_TOL


def test_every_level_tiles_its_parent(demo_db):
    (district,) = _rows(demo_db, District)
    streets = _rows(demo_db, Street)
    comms = _rows(demo_db, Community)
    grids = _rows(demo_db, Grid)
    _check_tiling(_shape(district.geometry), [_shape(s.geometry) for s in streets])
    for s in streets:
        _check_tiling(_shape(s.geometry),
                      [_shape(c.geometry) for c in comms if c.street_code == s.code])
    for c in comms:
        _check_tiling(_shape(c.geometry),
                      [_shape(g.geometry) for g in grids if g.community_code == c.code])


def test_areas_have_centroids_inside(demo_db):
    for model in (District, Street, Community, Grid):
        for row in _rows(demo_db, model):
            assert shapely.contains_xy(_shape(row.geometry), row.centroid_lon, row.centroid_lat)


def test_buildings_and_addresses_lie_inside_their_grid(demo_db):
    grids = {g.code: _shape(g.geometry) for g in _rows(demo_db, Grid)}
    for b in _rows(demo_db, Building):
        assert shapely.contains_xy(grids[b.grid_code], b.lon, b.lat), b.code
        assert grids[b.grid_code].contains(_shape(b.geometry)), b.code
    for a in _rows(demo_db, Address):
        assert shapely.contains_xy(grids[a.grid_code], a.lon, a.lat), a.code
    for lm in _rows(demo_db, Landmark):
        assert shapely.contains_xy(grids[lm.grid_code], lm.lon, lm.lat), lm.name


# ------------------------------------------------------------------ codes & addresses
def test_codes_follow_the_contract(demo_db):
    (d,) = _rows(demo_db, District)
    assert (d.code, d.name, d.city) == ("420199", "临江区", "江城市")
    streets = _rows(demo_db, Street)
    assert len(streets) == 2
    for s in streets:
        assert len(s.code) == 9 and s.code.startswith(d.code) and s.name.endswith("街道")
    comms = _rows(demo_db, Community)
    assert len(comms) == 4
    for c in comms:
        assert len(c.code) == 12 and c.code.startswith(c.street_code) and c.name.endswith("社区")
    grids = _rows(demo_db, Grid)
    assert len(grids) == 12
    cname = {c.code: c.name for c in comms}
    for g in grids:
        assert len(g.code) == 15 and g.code.startswith(g.community_code)
        assert g.street_code == g.community_code[:9]
        assert g.name == f"{cname[g.community_code]}第{int(g.code[-3:])}网格"
    buildings = _rows(demo_db, Building)
    assert 50 <= len(buildings) <= 70
    for b in buildings:
        assert len(b.code) == 18 and b.code.startswith(b.grid_code)
        assert b.community_code == b.grid_code[:12] and b.street_code == b.grid_code[:9]
    addresses = _rows(demo_db, Address)
    per_building = Counter(a.building_code for a in addresses)
    assert set(per_building) == {b.code for b in buildings}
    assert set(per_building.values()) == {1}
    for a in addresses:
        assert a.code == a.building_code + "-01"


def test_full_address_is_the_canonical_formatting_of_its_parts(demo_db):
    addresses = _rows(demo_db, Address)
    roads = {r.name for r in _rows(demo_db, Road)}
    buildings = {b.code: b for b in _rows(demo_db, Building)}
    for a in addresses:
        expected = (f"江城市临江区{a.road}{a.number}号{a.compound or ''}"
                    f"{a.building_no + '栋' if a.building_no else ''}")
        assert a.full == expected
        assert a.road in roads
        assert a.road.endswith(("路", "街", "大道", "巷"))
        b = buildings[a.building_code]
        assert b.compound == a.compound
        assert (a.lon, a.lat) == (b.lon, b.lat)
        if b.kind == "office":
            assert a.compound is None and a.building_no is None
    assert len({a.full for a in addresses}) == len(addresses)
    compounds = defaultdict(list)
    for a in addresses:
        if a.compound:
            compounds[a.compound].append(a)
    assert compounds, "the small district has compounds"
    for name, members in compounds.items():
        assert name.endswith(("小区", "花园", "苑", "家园", "新村", "公寓"))
        assert len({(m.road, m.number) for m in members}) == 1  # one door for the compound
        assert sorted(int(m.building_no) for m in members) == list(range(1, len(members) + 1))


def test_door_numbers_increase_along_each_road(small_world):
    """On each side of a road (odd / even), door numbers grow along the road's direction."""
    roads = {r["name"]: shapely.from_geojson(r["geometry"]) for r in small_world.tables["geo_road"]}
    doors = defaultdict(list)
    for a in small_world.tables["geo_address"]:
        doors[(a["road"], a["number"])].append((a["lon"], a["lat"]))
    sides = defaultdict(list)
    for (road, number), pts in doors.items():
        lon = sum(p[0] for p in pts) / len(pts)
        lat = sum(p[1] for p in pts) / len(pts)
        t = shapely.line_locate_point(roads[road], shapely.points(lon, lat))
        n = int(number.split("-")[0])
        sides[(road, n % 2)].append((t, n, number))
    pairs = ordered = 0
    for items in sides.values():
        items.sort()
        main = [n for _, n, raw in items if "-" not in raw]
        assert len(main) == len(set(main))  # a door number is used once per road
        for (_, a, _), (_, b, _) in itertools.pairwise(items):
            pairs += 1
            ordered += a <= b
    assert pairs and ordered / pairs >= 0.9


def test_offices_and_landmarks(demo_db):
    offices = [b for b in _rows(demo_db, Building) if b.kind == "office"]
    assert len(offices) == 3
    for b in offices:
        assert 15 <= b.floors <= 60
        assert b.name.endswith(("大厦", "中心", "写字楼"))
    landmarks = _rows(demo_db, Landmark)
    kinds = Counter(lm.kind for lm in landmarks)
    for kind in ("compound", "school", "market", "metro", "office"):
        assert kinds[kind] >= 1, kind
    aliases = defaultdict(list)
    for a in _rows(demo_db, LandmarkAlias):
        aliases[a.landmark_id].append(a.alias)
    for lm in landmarks:
        assert 1 <= len(aliases[lm.id]) <= 3, lm.name
        assert lm.name not in aliases[lm.id]
        if lm.kind == "metro":
            assert lm.name.startswith("地铁") and "号线" in lm.name and lm.name.endswith("站")
        if lm.kind == "compound":
            assert lm.address_code is not None
    all_aliases = [a for v in aliases.values() for a in v]
    assert len(set(all_aliases)) == len(all_aliases)


def test_new_rows_get_fresh_ids_after_the_build(demo_db):
    """Explicit ids in the bulk insert must not collide with later inserts (PostgreSQL)."""
    (grid,) = _rows(demo_db, Grid)[:1]
    s = demo_db.Session()
    try:
        lm = Landmark(name="测试地标", kind="park", lon=grid.centroid_lon, lat=grid.centroid_lat,
                      grid_code=grid.code, community_code=grid.community_code,
                      street_code=grid.street_code)
        s.add(lm)
        s.flush()
        s.add(LandmarkAlias(landmark_id=lm.id, alias="测试"))
        s.add(Road(name="测试路"))
        s.flush()
        assert lm.id > 0
    finally:
        s.rollback()
        s.close()


# ------------------------------------------------------------------ users & catalogue
def test_every_role_has_demo_users(demo_db):
    from jiedao.auth.service import authenticate

    users = {u.username: u for u in _rows(demo_db, User)}
    assert {u.role for u in users.values()} == set(ROLES)
    for name in ("admin", "operator01", "steward01", "leader01"):
        assert users[name].scope_level == "district" and users[name].scope_code == "420199"
    assert (users["handler.cgj"].role, users["handler.cgj"].scope_level,
            users["handler.cgj"].scope_code) == ("handler", "department", "CGJ")
    assert (users["street.001"].role, users["street.001"].scope_code) == ("street_staff", "420199001")
    assert (users["leader.002"].role, users["leader.002"].scope_level) == ("leader", "street")
    for c in _rows(demo_db, Community):
        u = users[f"sq.{c.code}"]
        assert (u.role, u.scope_level, u.scope_code) == ("street_staff", "community", c.code)
    with demo_db.session() as s:
        assert authenticate(s, "street.001", "jiedao2026") is not None
        assert authenticate(s, "street.001", "wrong-password") is None


def test_catalogue_and_street_offices_loaded(demo_db):
    from jiedao.catalog.models import Department, Matter

    depts = {d.code: d for d in _rows(demo_db, Department)}
    assert depts["JD420199001"].kind == "street"
    assert depts["JD420199001"].street_code == "420199001"
    assert len(_rows(demo_db, Matter)) >= 80


def test_meta_labels_the_demo(demo_db):
    from jiedao.db import get_meta

    with demo_db.session() as s:
        assert get_meta(s, "demo") == "true"
        assert get_meta(s, "demo_label") == DEMO_LABEL == "示例数据（合成，非真实）"
        assert get_meta(s, "demo_seed") == str(DEFAULT_SEED)
        assert get_meta(s, "demo_scale") == "small"
        # (not compared with fingerprint() here: other sessions may edit the generator's
        # sources while the suite runs; reuse by fingerprint is tested below)
        assert len(get_meta(s, "demo_fingerprint")) == 64
        assert 50 <= json.loads(get_meta(s, "demo_counts"))["geo_building"] <= 70


# ------------------------------------------------------------------ reuse
def test_fingerprint_depends_on_seed_and_scale():
    fp = fingerprint("small", 1)
    assert fp == fingerprint("small", 1)
    assert fp != fingerprint("small", 2)
    assert fp != fingerprint("full", 1)


def test_ensure_demo_reuses_a_current_build_and_force_rebuilds(fresh_db):
    first = ensure_demo(fresh_db, small=True, progress=False)
    assert first["reused"] is False
    with fresh_db.session() as s:
        n = s.scalar(sa.select(sa.func.count()).select_from(LandmarkAlias))
        s.execute(sa.delete(LandmarkAlias))  # a visible change that only a rebuild undoes
    second = ensure_demo(fresh_db, small=True, progress=False)
    assert second["reused"] is True
    with fresh_db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(LandmarkAlias)) == 0
    third = ensure_demo(fresh_db, small=True, force=True, progress=False)
    assert third["reused"] is False
    with fresh_db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(LandmarkAlias)) == n
    other = ensure_demo(fresh_db, small=True, seed=7, progress=False)
    assert other["reused"] is False and other["seed"] == 7


def test_cli_builds_and_exports(fresh_db, tmp_path):
    from typer.testing import CliRunner

    from jiedao.cli import app
    from jiedao.db import get_database, set_database
    from jiedao.demo import cli as demo_cli

    if not any(getattr(g, "name", None) == "demo" for g in app.registered_groups):
        demo_cli.register(app)
    previous = get_database()
    set_database(fresh_db)
    try:
        runner = CliRunner()
        res = runner.invoke(app, ["demo", "--small", "--quiet"])
        assert res.exit_code == 0, res.output
        assert "jiedao2026" in res.output and "jiedao serve" in res.output
        # the cockpit's mirror was synced by the build: the first page does not pay for it
        from jiedao.cockpit.metrics import Metrics
        from jiedao.cockpit.mirror import default_path

        assert default_path(fresh_db.url).exists()
        with fresh_db.session() as s:
            n_cases = s.scalar(sa.text("SELECT count(*) FROM cases_case"))
        metrics = Metrics.for_database(fresh_db)
        assert metrics.mirror.synced_at is not None
        year = metrics.latest_period("year")
        assert n_cases > 0 and metrics.summary(year)["received"].numerator == n_cases
        out = tmp_path / "grids.geojson"
        res = runner.invoke(app, ["demo", "export-geojson", "--level", "grid", str(out)])
        assert res.exit_code == 0, res.output
        fc = json.loads(out.read_text(encoding="utf-8"))
        assert len(fc["features"]) == 12
        assert fc["features"][0]["properties"]["code"].startswith("420199")
    finally:
        set_database(previous)


# ------------------------------------------------------------------ full scale
@pytest.mark.slow
def test_full_scale_district_in_memory():
    w = generate("full")
    t = w.tables
    assert len(t["geo_street"]) == 13
    assert len(t["geo_community"]) == 191
    assert 1400 <= len(t["geo_grid"]) <= 1600
    assert 24000 <= len(t["geo_building"]) <= 26000
    assert sum(1 for b in t["geo_building"] if b["kind"] == "office") == 135
    assert 250 <= len(t["geo_road"]) <= 350
    assert len({r["name"] for r in t["geo_road"]}) == len(t["geo_road"])
    assert len({a["full"] for a in t["geo_address"]}) == len(t["geo_address"])
    assert len({b["code"] for b in t["geo_building"]}) == len(t["geo_building"])
    sizes = Counter(a["compound"] for a in t["geo_address"] if a["compound"])
    assert min(sizes.values()) >= 5 and max(sizes.values()) <= 40
    # every building inside its grid, every grid set tiling its community
    by_grid = defaultdict(list)
    for b in t["geo_building"]:
        by_grid[b["grid_code"]].append((b["lon"], b["lat"]))
    for code, pts in by_grid.items():
        xs, ys = zip(*pts, strict=True)
        assert shapely.contains_xy(w.geoms[code], xs, ys).all(), code
    grids_of = defaultdict(list)
    for g in t["geo_grid"]:
        grids_of[g["community_code"]].append(w.geoms[g["code"]])
    for c in t["geo_community"]:
        union = shapely.union_all(grids_of[c["code"]])
        assert union.area == pytest.approx(w.geoms[c["code"]].area, rel=1e-4, abs=SLIVER_TOL)
