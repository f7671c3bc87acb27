"""`jiedao catalog check | load | deadline`."""

from __future__ import annotations

import shutil

import pytest
import typer
from sqlalchemy import func, select
from typer.testing import CliRunner

import jiedao.db
from jiedao.catalog.cli import register
from jiedao.catalog.models import Department, Matter
from jiedao.config import PACKAGE_DIR
from jiedao.db import set_database

DATA = PACKAGE_DIR / "catalog" / "data"


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    a = typer.Typer()

    @a.callback()
    def _root() -> None:
        """test root"""

    register(a)
    return a


def test_check_ok(app):
    r = CliRunner().invoke(app, ["catalog", "check", "--dir", str(DATA)])
    assert r.exit_code == 0, r.output
    assert "事项" in r.output and "城乡建设与管理" in r.output and "CGJ" in r.output


def test_check_lists_every_problem_and_exits_2(app, tmp_path):
    d = tmp_path / "c"
    shutil.copytree(DATA, d)
    m = d / "matters.yaml"
    m.write_text(m.read_text(encoding="utf-8").replace("main: CGJ", "main: XXX", 2), encoding="utf-8")
    (d / "calendar.yaml").write_text("office_hours: ['14:00-12:00']\n", encoding="utf-8")
    r = CliRunner().invoke(app, ["catalog", "check", "--dir", str(d)])
    assert r.exit_code == 2
    out = r.output
    assert out.count("主办部门 XXX") == 2
    assert "calendar.yaml" in out and "office_hours[1]" in out


def test_deadline(app):
    r = CliRunner().invoke(app, ["catalog", "deadline", "--start", "2026-09-30 16:00", "--sla", "5wd"])
    assert r.exit_code == 0, r.output
    assert "2026-10-13 16:00" in r.output


def test_load_into_database(app, fresh_db):
    previous = jiedao.db._default
    set_database(fresh_db)
    try:
        r = CliRunner().invoke(app, ["catalog", "load", "--dir", str(DATA)])
    finally:
        set_database(previous)
    assert r.exit_code == 0, r.output
    with fresh_db.session() as s:
        assert s.scalar(select(func.count()).select_from(Matter)) >= 90
        assert s.get(Department, "CGJ").name == "区城市管理执法局"


def test_load_bad_catalogue_changes_nothing(app, fresh_db, tmp_path):
    d = tmp_path / "c"
    shutil.copytree(DATA, d)
    m = d / "matters.yaml"
    m.write_text(m.read_text(encoding="utf-8").replace("一般: 3wd", "一般: 3", 1), encoding="utf-8")
    previous = jiedao.db._default
    set_database(fresh_db)
    try:
        r = CliRunner().invoke(app, ["catalog", "load", "--dir", str(d)])
    finally:
        set_database(previous)
    assert r.exit_code == 2
    assert "未做任何修改" in r.output
    with fresh_db.session() as s:
        assert s.scalar(select(func.count()).select_from(Matter)) == 0
