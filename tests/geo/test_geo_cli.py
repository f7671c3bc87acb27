"""The `jiedao geo` commands, run through Typer on a fresh database."""

from __future__ import annotations

import json

import pytest
import typer
from sqlalchemy import func, select
from typer.testing import CliRunner

from jiedao.db import get_database, set_database
from jiedao.errors import ValidationError
from jiedao.geo.cli import register
from jiedao.geo.models import Grid

from .geo_fixtures import community_fc, district_fc, grid_fc, street_fc, write


@pytest.fixture
def cli(fresh_db):
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # keep "geo" as a sub-command even with one group
        pass

    previous = get_database()
    set_database(fresh_db)
    runner = CliRunner()
    yield lambda *args: runner.invoke(app, ["geo", *args])
    set_database(previous)


def test_import_then_locate_and_export(cli, fresh_db, tmp_path):
    for level, data in (("district", district_fc()), ("street", street_fc()),
                        ("community", community_fc()), ("grid", grid_fc())):
        res = cli("import", str(write(tmp_path, f"{level}.geojson", data)), "--level", level)
        assert res.exit_code == 0, res.output
        assert "新增" in res.output
    res = cli("locate", "--lon", "114.205", "--lat", "30.505")
    assert res.exit_code == 0 and "420199001001001" in res.output
    res = cli("locate", "--lon", "114.205", "--lat", "30.4991", "--near", "200")
    assert res.exit_code == 0 and "最近网格 420199001001001" in res.output
    res = cli("locate", "--lon", "100", "--lat", "20")
    assert res.exit_code == 1 and "不在任何网格内" in res.output
    out = tmp_path / "grids.geojson"
    res = cli("export", "--level", "grid", "--parent", "420199002001", "-o", str(out))
    assert res.exit_code == 0
    assert len(json.loads(out.read_text(encoding="utf-8"))["features"]) == 4


def test_import_rejects_bad_file(cli, fresh_db, tmp_path):
    res = cli("import", str(write(tmp_path, "g.geojson", "{oops")), "--level", "grid")
    assert isinstance(res.exception, ValidationError)
    assert "g.geojson" in str(res.exception) and "JSON" in str(res.exception)
    with fresh_db.session() as s:
        assert s.scalar(select(func.count()).select_from(Grid)) == 0


def test_parse_prints_parts(cli):
    res = cli("parse", "琴台大道８８号 锦绣长江小区五幢二单元三零一")
    assert res.exit_code == 0
    for text in ("琴台大道", "88", "锦绣长江小区", "楼栋（building_no）：5", "301",
                 "标准地址：琴台大道88号锦绣长江小区5栋"):
        assert text in res.output
    res = cli("parse", "琴台大道88号", "--json")
    assert json.loads(res.output)["number"] == "88"


def test_resolve_on_empty_database(cli):
    res = cli("resolve", "琴台大道88号")
    assert res.exit_code == 0 and "未能确定位置" in res.output
