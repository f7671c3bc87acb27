"""Boundary import from GeoJSON: the happy path, export, and every kind of bad input
(rejected with the feature number and field, writing nothing)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from jiedao.errors import ValidationError
from jiedao.geo.boundaries import import_boundaries, to_feature_collection
from jiedao.geo.models import Community, District, Grid, Street

from .geo_fixtures import (
    community_fc,
    district_fc,
    fc,
    feature,
    grid_fc,
    load_all,
    square,
    street_fc,
    write,
)


def count(db, model) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(model))


@pytest.fixture
def parents_db(fresh_db):
    """A fresh database holding the fixture's district, streets and communities."""
    with fresh_db.session() as s:
        import_boundaries(s, district_fc(), "district")
        import_boundaries(s, street_fc(), "street")
        import_boundaries(s, community_fc(), "community")
    return fresh_db


def test_import_all_levels_from_files(fresh_db, tmp_path):
    for level, data in (("district", district_fc()), ("street", street_fc()),
                        ("community", community_fc()), ("grid", grid_fc())):
        path = write(tmp_path, f"{level}.geojson", data)
        with fresh_db.session() as s:
            summary = import_boundaries(s, path, level)
        assert summary["inserted"] == len(data["features"]) and summary["updated"] == 0
    with fresh_db.session() as s:
        assert s.get(District, "420199").city == "江城市"
        assert s.get(Street, "420199002").district_code == "420199"
        assert s.get(Community, "420199002001").street_code == "420199002"
        g = s.get(Grid, "420199002001003")
        assert (g.community_code, g.street_code, g.name) == ("420199002001", "420199002", "第3网格")
        # centroid of square (2, 1) of 0.01°
        assert g.centroid_lon == pytest.approx(114.225) and g.centroid_lat == pytest.approx(30.515)
        assert json.loads(g.geometry)["type"] == "Polygon"


def test_reimport_updates_in_place(parents_db):
    with parents_db.session() as s:
        import_boundaries(s, grid_fc(), "grid")
    data = grid_fc()
    data["features"][0]["properties"]["name"] = "改名网格"
    with parents_db.session() as s:
        summary = import_boundaries(s, json.dumps(data, ensure_ascii=False), "grid")
    assert (summary["inserted"], summary["updated"]) == (0, 8)
    assert count(parents_db, Grid) == 8
    with parents_db.session() as s:
        assert s.get(Grid, "420199001001001").name == "改名网格"


def test_export_feature_collection(parents_db):
    with parents_db.session() as s:
        import_boundaries(s, grid_fc(), "grid")
        out = to_feature_collection(s, "grid", parent_code="420199002001")
        streets = to_feature_collection(s, "street")
    assert [f["properties"]["code"] for f in out["features"]] == [
        f"420199002001{n:03d}" for n in range(1, 5)]
    props = out["features"][0]["properties"]
    assert props["parent_code"] == "420199002001" and props["street_code"] == "420199002"
    assert props["centroid"] == pytest.approx([114.225, 30.505])
    assert out["features"][0]["geometry"]["type"] == "Polygon"
    assert {f["properties"]["name"] for f in streets["features"]} == {"琴台街道", "月湖街道"}
    json.dumps(out)  # serialisable as is


def test_multipolygon_accepted(parents_db):
    multi = {"type": "MultiPolygon", "coordinates": [square(0, 0, 0.004)["coordinates"],
                                                     square(1, 1, 0.004)["coordinates"]]}
    with parents_db.session() as s:
        import_boundaries(s, fc(feature("420199001001009", "飞地网格", multi)), "grid")
        assert s.get(Grid, "420199001001009").geometry.startswith('{"type":"MultiPolygon"')


def rejected(db, data, level="grid", tmp_path=None) -> list:
    """Import ``data`` and return the problems; check nothing at that level was written."""
    before = count(db, Grid), count(db, Community), count(db, Street)
    with pytest.raises(ValidationError) as e, db.session() as s:
        source = data if tmp_path is None else write(tmp_path, "bad.geojson", data)
        import_boundaries(s, source, level)
    assert (count(db, Grid), count(db, Community), count(db, Street)) == before
    return e.value.problems


def test_json_syntax_error(parents_db, tmp_path):
    (p,) = rejected(parents_db, '{"type": "FeatureCollection", "features": [', tmp_path=tmp_path)
    assert p.source == "bad.geojson" and "JSON" in p.message


def test_missing_file(parents_db, tmp_path):
    (p,) = rejected(parents_db, tmp_path / "nope.geojson")
    assert "无法读取" in p.message


def test_not_a_feature_collection(parents_db, tmp_path):
    (p,) = rejected(parents_db, {"type": "Feature", "properties": {}}, tmp_path=tmp_path)
    assert p.field == "type" and "FeatureCollection" in p.message
    (p,) = rejected(parents_db, fc())
    assert p.field == "features"


def test_unknown_level(parents_db):
    (p,) = rejected(parents_db, grid_fc(), level="building")
    assert p.field == "level"


def test_every_problem_is_reported_with_feature_number(parents_db):
    good = grid_fc()["features"]
    data = fc(
        good[0],
        feature(None, "无代码", square(0, 0)),  # 2: missing code
        feature("420199001001001", "重复", square(0, 0)),  # 3: duplicate of 1
        feature("4201990010010", "太短", square(0, 0)),  # 4: wrong length
        feature("420199001001005", "", square(0, 0)),  # 5: missing name
        feature("420199001001006", "上级不符", square(0, 0), community_code="420199002001"),  # 6
        feature("420199001009001", "上级不存在", square(0, 0)),  # 7: unknown community
        feature("420199001001008", "自相交", {"type": "Polygon", "coordinates": [[
            [114.20, 30.50], [114.21, 30.51], [114.21, 30.50], [114.20, 30.51], [114.20, 30.50]]]}),
        feature("420199001001009", "投影坐标", {"type": "Polygon", "coordinates": [[
            [500000, 3400000], [501000, 3400000], [501000, 3401000], [500000, 3400000]]]}),
        feature("420199001001010", "点", {"type": "Point", "coordinates": [114.2, 30.5]}),
        feature("420199001001011", "空", {"type": "Polygon", "coordinates": []}),
        feature("420199001001012", "无面积", {"type": "Polygon", "coordinates": [[
            [114.2, 30.5], [114.21, 30.5], [114.2, 30.5], [114.2, 30.5]]]}),
        {"type": "Feature", "properties": {"code": "420199001001013", "name": "无几何"}},
        "not a feature",
    )
    problems = rejected(parents_db, data)
    by_row = {}
    for p in problems:
        by_row.setdefault(p.row, []).append(p)
    assert 1 not in by_row
    assert by_row[2][0].field == "code"
    assert "重复" in by_row[3][0].message and "第1个" in by_row[3][0].message
    assert "15 位" in by_row[4][0].message
    assert by_row[5][0].field == "name"
    assert by_row[6][0].field == "community_code" and "不一致" in by_row[6][0].message
    assert "不存在" in by_row[7][0].message
    assert by_row[8][0].field == "geometry" and "Self-intersection" in by_row[8][0].message
    assert "经纬度" in by_row[9][0].message
    assert "Polygon" in by_row[10][0].message
    assert by_row[11][0].field == "geometry"
    assert by_row[12][0].field == "geometry"
    assert "geometry" in by_row[13][0].message
    assert by_row[14][0].field == "type"
    assert all(p.source == "GeoJSON" for p in problems)


def test_one_bad_feature_rejects_the_whole_file(parents_db):
    data = grid_fc()
    data["features"][5]["geometry"]["coordinates"][0][2] = [114.2, "30.5"]
    (p,) = rejected(parents_db, data)
    assert p.row == 6 and p.field == "geometry"
    assert count(parents_db, Grid) == 0


def test_street_needs_known_district(fresh_db):
    (p,) = rejected(fresh_db, fc(feature("420199001", "琴台街道", square(0, 0))), level="street")
    assert "420199" in p.message and "不存在" in p.message


def test_export_rejects_unknown_level(fresh_db):
    with fresh_db.session() as s, pytest.raises(ValidationError):
        to_feature_collection(s, "planet")


def test_load_all_fixture(fresh_db):
    with fresh_db.session() as s:
        load_all(s)
    assert (count(fresh_db, Street), count(fresh_db, Community), count(fresh_db, Grid)) == (2, 2, 8)
