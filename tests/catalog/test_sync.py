"""sync_catalog mirrors the files into the database: street offices, upserts, deletions,
all or nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from jiedao.catalog.loader import load_catalog, sync_catalog
from jiedao.catalog.models import Department, Matter, MatterCoHandler
from jiedao.config import PACKAGE_DIR
from jiedao.errors import ValidationError
from jiedao.geo.models import District, Street

DATA = PACKAGE_DIR / "catalog" / "data"


def _copy(tmp_path: Path) -> Path:
    d = tmp_path / "catalog"
    shutil.copytree(DATA, d)
    return d


def _counts(db) -> tuple[int, int, int]:
    with db.session() as s:
        return (s.scalar(select(func.count()).select_from(Department)),
                s.scalar(select(func.count()).select_from(Matter)),
                s.scalar(select(func.count()).select_from(MatterCoHandler)))


def _add_streets(db) -> None:
    with db.session() as s:
        s.add(District(code="420199", name="临江区", city="江城市"))
        s.add(Street(code="420199001", district_code="420199", name="琴台街道"))
        s.add(Street(code="420199002", district_code="420199", name="月湖街道"))


def _remove_matter(path: Path, code: str) -> None:
    """Drop one matter block from matters.yaml."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    start = next(i for i, ln in enumerate(lines) if ln.strip() == f"- code: {code}")
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].lstrip().startswith(("- code:", "# ==="))), len(lines))
    path.write_text("".join(lines[:start] + lines[end:]), encoding="utf-8")


def test_sync_creates_departments_street_offices_and_matters(fresh_db):
    _add_streets(fresh_db)
    cat = load_catalog(DATA)
    with fresh_db.session() as s:
        summary = sync_catalog(s, DATA)
    assert summary["street_offices"] == 2
    assert summary["matters"] == summary["matters_added"] == len(cat.matters)
    n_dept, n_matter, n_co = _counts(fresh_db)
    assert n_dept == len(cat.departments) + 2
    assert n_matter == len(cat.matters)
    assert n_co == sum(len(m.co) for m in cat.matters)
    with fresh_db.session() as s:
        office = s.get(Department, "JD420199001")
        assert (office.name, office.kind, office.street_code) == ("琴台街道办事处", "street", "420199001")
        assert s.get(Department, "JD420199002").name == "月湖街道办事处"
        m = s.get(Matter, "CG0201")
        assert m.main_department_code == "CGJ" and m.handling_level == "street"
        assert m.sla == {"紧急": "2h", "较急": "1wd", "一般": "15wd"}
        assert [c.department_code for c in m.co_handlers] == ["JD", "ZRZY"]
        assert len(m.examples) >= 2 and len(m.keywords) >= 5
    # A second sync changes nothing.
    with fresh_db.session() as s:
        again = sync_catalog(s, DATA)
    assert again["matters_added"] == again["matters_updated"] == again["matters_removed"] == 0
    assert again["departments_added"] == again["departments_updated"] == 0


def test_resync_updates_and_deletes(fresh_db, tmp_path):
    _add_streets(fresh_db)
    with fresh_db.session() as s:
        sync_catalog(s, DATA)
    d = _copy(tmp_path)
    _remove_matter(d / "matters.yaml", "CG0201")  # had co-handlers ZRZY, JD
    text = (d / "matters.yaml").read_text(encoding="utf-8")
    text = text.replace("name: 占道经营\n    main: CGJ\n    co: [JD]",
                        "name: 占道经营\n    main: CGJ\n    co: [JD, JTDD]")
    (d / "matters.yaml").write_text(text, encoding="utf-8")
    csv_text = (d / "departments.csv").read_text(encoding="utf-8")
    (d / "departments.csv").write_text(
        csv_text.replace("GD,供电公司,", "GD,国网供电公司,"), encoding="utf-8")
    with fresh_db.session() as s:
        # a street renamed in geo renames its office
        s.get(Street, "420199002").name = "新月湖街道"
        summary = sync_catalog(s, d)
    assert summary["matters_removed"] == 1 and summary["matters_updated"] == 1
    assert summary["departments_updated"] == 2
    with fresh_db.session() as s:
        assert s.get(Matter, "CG0201") is None
        assert not s.scalars(select(MatterCoHandler).where(MatterCoHandler.matter_code == "CG0201")).all()
        m = s.get(Matter, "CG0101")
        assert [c.department_code for c in m.co_handlers] == ["JD", "JTDD"]
        assert s.get(Department, "GD").name == "国网供电公司"
        assert s.get(Department, "JD420199002").name == "新月湖街道办事处"


def test_names_can_swap_between_departments(fresh_db, tmp_path):
    with fresh_db.session() as s:
        sync_catalog(s, DATA)
    d = _copy(tmp_path)
    csv_text = (d / "departments.csv").read_text(encoding="utf-8")
    csv_text = csv_text.replace("GD,供电公司,", "GD,@@,").replace("RQ,燃气公司,", "RQ,供电公司,")
    csv_text = csv_text.replace("GD,@@,", "GD,燃气公司,")
    (d / "departments.csv").write_text(csv_text, encoding="utf-8")
    with fresh_db.session() as s:
        sync_catalog(s, d)
    with fresh_db.session() as s:
        assert s.get(Department, "GD").name == "燃气公司"
        assert s.get(Department, "RQ").name == "供电公司"


def test_removed_street_removes_its_office(fresh_db):
    _add_streets(fresh_db)
    with fresh_db.session() as s:
        sync_catalog(s, DATA)
    with fresh_db.session() as s:
        s.execute(Department.__table__.update().where(Department.code == "JD420199002")
                  .values(street_code=None))
        s.delete(s.get(Street, "420199002"))
    with fresh_db.session() as s:
        summary = sync_catalog(s, DATA)
    assert summary["departments_removed"] == 1 and summary["street_offices"] == 1
    with fresh_db.session() as s:
        assert s.get(Department, "JD420199002") is None


DEFECTS = [
    ("matters.yaml", "main: CGJ\n    co: [JD]", "main: NOPE\n    co: [JD]"),
    ("matters.yaml", "sla: {一般: 3wd}", "sla: {一般: soon}"),
    ("matters.yaml", "code: CG0102", "code: CG0101"),
    ("departments.csv", "GD,供电公司,utility", "GD,供电公司,power"),
    ("departments.csv", "SWJT,水务集团", "SWJ,水务集团"),
]


@pytest.mark.parametrize("fname, old, new", DEFECTS)
def test_bad_files_write_nothing(fresh_db, tmp_path, fname, old, new):
    _add_streets(fresh_db)
    d = _copy(tmp_path)
    p = d / fname
    p.write_text(p.read_text(encoding="utf-8").replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ValidationError), fresh_db.session() as s:
        sync_catalog(s, d)
    assert _counts(fresh_db) == (0, 0, 0)


def test_bad_files_leave_the_previous_catalogue_intact(fresh_db, tmp_path):
    with fresh_db.session() as s:
        sync_catalog(s, DATA)
    before = _counts(fresh_db)
    d = _copy(tmp_path)
    _remove_matter(d / "matters.yaml", "CG0101")
    p = d / "matters.yaml"
    p.write_text(p.read_text(encoding="utf-8").replace("main: RSJ", "main: RSX", 1), encoding="utf-8")
    with pytest.raises(ValidationError), fresh_db.session() as s:
        sync_catalog(s, d)
    assert _counts(fresh_db) == before
    with fresh_db.session() as s:
        assert s.get(Matter, "CG0101") is not None


def test_street_office_name_clash_is_rejected(fresh_db):
    with fresh_db.session() as s:
        s.add(District(code="420199", name="临江区", city="江城市"))
        s.add(Street(code="420199001", district_code="420199", name="街道"))  # -> 街道办事处 == JD row
    with pytest.raises(ValidationError) as e, fresh_db.session() as s:
        sync_catalog(s, DATA)
    assert "重名" in str(e.value)
    assert _counts(fresh_db) == (0, 0, 0)


def test_sync_reads_catalog_dir_from_settings(fresh_db, tmp_path, monkeypatch):
    from jiedao.config import get_settings

    d = _copy(tmp_path)
    _remove_matter(d / "matters.yaml", "JC0502")
    monkeypatch.setenv("JIEDAO_CATALOG_DIR", str(d))
    get_settings.cache_clear()
    try:
        with fresh_db.session() as s:
            summary = sync_catalog(s)
    finally:
        monkeypatch.delenv("JIEDAO_CATALOG_DIR")
        get_settings.cache_clear()
    assert summary["matters"] == len(load_catalog(DATA).matters) - 1


def test_matter_still_referenced_elsewhere_is_not_deleted(fresh_db, tmp_path):
    """A matter removed from the file but used by rows of another capability (here a case
    event) makes the sync fail with a clear message instead of breaking the foreign key."""
    from datetime import datetime

    from sqlalchemy import insert, inspect

    from jiedao.db import Base, all_models

    all_models()
    table = Base.metadata.tables.get("cases_event")
    with fresh_db.session() as s:
        if table is None or "cases_event" not in inspect(s.connection()).get_table_names():
            pytest.skip("no table referencing catalog_matter in this schema")
    with fresh_db.session() as s:
        sync_catalog(s, DATA)
        s.flush()
        s.execute(insert(table).values(matter_code="CG0101", title="占道经营", first_at=datetime(2026, 1, 5),
                                       last_at=datetime(2026, 1, 5), case_count=1))
    d = _copy(tmp_path)
    _remove_matter(d / "matters.yaml", "CG0101")
    with pytest.raises(ValidationError) as e, fresh_db.session() as s:
        sync_catalog(s, d)
    assert "CG0101" in str(e.value) and "cases_event" in str(e.value)
    with fresh_db.session() as s:
        assert s.get(Matter, "CG0101") is not None
