"""Quality figures on a hand-made hub: two sources, known gaps, invalid values, duplicates,
cross-source matches and a golden conflict; the report files."""

from __future__ import annotations

import csv
from datetime import date

import pytest
from openpyxl import load_workbook

from jiedao.hub.quality import advice, compute_quality, write_report


@pytest.fixture
def handmade(fresh_db):
    """Source A (registry mapping, 4 records) and source B (social-insurance mapping, 5)."""
    from jiedao.catalog.loader import sync_catalog
    from jiedao.hub.models import Entity, Golden, Link, Record, Source

    with fresh_db.session() as s:
        sync_catalog(s)
        s.add_all([
            Source(code="src_a", name="甲台账", department_code="SCJG", entity_type="enterprise",
                   connector="csv", location="a.csv", mapping="scjg_registry.yaml", priority=90),
            Source(code="src_b", name="乙台账", department_code="RSJ", entity_type="enterprise",
                   connector="json", location="b.jsonl", mapping="rsj_employers.yaml", priority=50),
        ])
        s.flush()

        def rec(i, src, name, code=None, phone=None, addr=None, bld=None, est=None, problems=None,
                vanished=False):
            extra = {"problems": problems} if problems else {}
            s.add(Record(id=i, source_code=src, source_key=f"k{i}", content_hash="x", name=name,
                         name_norm=name, name_core=name, credit_code=code, phone=phone,
                         address_raw=addr, building_code=bld, established=est, extra=extra,
                         vanished=vanished))

        # A: 4 live records (+1 vanished, ignored); one invalid credit code (blanked), one
        #    address that did not resolve; a1 and a2 are the same firm (in-source duplicate)
        rec(1, "src_a", "甲一", "C1", "1", "地址1", "B1", date(2020, 1, 1))
        rec(2, "src_a", "甲一", "C1", "2", "地址2", "B1", date(2020, 1, 1))
        rec(3, "src_a", "甲三", None, None, "地址3", None, date(2020, 1, 1),
            problems=[["统一社会信用代码", "统一社会信用代码校验位错误"]])
        rec(4, "src_a", "甲四", "C4", None, None, None, None)
        rec(5, "src_a", "已消失", "C5", vanished=True)
        # B: 5 records, credit codes on 2; one bad date
        rec(11, "src_b", "甲一", "C1", "1", "地址1", "B1")
        rec(12, "src_b", "乙二", None, "3", "地址x", "B2")
        rec(13, "src_b", "甲三", "C3", None, None, None,
            problems=[["参保日期", "无法识别的日期：2020-13-40"]])
        rec(14, "src_b", "乙四", None, None, None, None)
        rec(15, "src_b", "乙五", None, None, None, None)
        s.flush()
        for e in (1, 3, 4, 12, 14, 15):
            s.add(Entity(id=e, entity_type="enterprise"))
        s.flush()
        for rid, e in ((1, 1), (2, 1), (11, 1), (3, 3), (13, 3), (4, 4), (12, 12), (14, 14), (15, 15)):
            s.add(Link(record_id=rid, entity_id=e, method="steward"))
        # a conflict on entity 1 between A and B, and one on entity 3 won by B alone
        s.add(Golden(entity_id=1, field="phone", value="1", source_code="src_a", record_id=1,
                     conflict=True, alternatives=[{"value": "2", "source_code": "src_a", "record_id": 2},
                                                  {"value": "9", "source_code": "src_b", "record_id": 11}]))
        s.add(Golden(entity_id=3, field="name", value="甲三", source_code="src_b", record_id=13,
                     conflict=True, alternatives=[{"value": "甲三x", "source_code": "src_b"}]))
        s.add(Golden(entity_id=4, field="name", value="甲四", source_code="src_a", record_id=4))
    return fresh_db


def test_quality_numbers(handmade):
    with handmade.session() as s:
        rows = {q.code: q for q in compute_quality(s)}
    a, b = rows["src_a"], rows["src_b"]
    assert a.records == 4 and b.records == 5
    assert a.department_name == "区市场监督管理局"
    # completeness
    assert a.completeness["name"] == 1.0
    assert a.completeness["credit_code"] == 0.75
    assert a.completeness["phone"] == 0.5
    assert a.completeness["address"] == 0.75
    assert b.completeness["credit_code"] == 0.4
    # validity: A filled 4 codes, one was invalid; 2 of 3 addresses resolved; B one bad date
    assert a.invalid["credit_code"] == 1 and a.validity["credit_code"] == 0.75
    assert a.validity["address"] == round(2 / 3, 4)
    assert b.invalid["established"] == 1 and b.validity["established"] == 0.0
    assert b.validity["credit_code"] == 1.0
    # duplicates inside the source: a1 and a2 belong to the same entity
    assert a.duplicates == 1 and b.duplicates == 0
    # match rate: A records of entities 1 (a1, a2) and 3 also have B records
    assert a.linked == 4 and a.matched == 3 and a.match_rate == 0.75
    assert b.linked == 5 and b.matched == 2 and b.match_rate == 0.4
    # conflicts: entity 1 involves A and B, entity 3 only B
    assert a.conflicts == 1 and b.conflicts == 2
    assert 0 < a.score <= 1 and 0 < b.score <= 1
    tips = advice(b)
    assert any("统一社会信用代码缺失" in t for t in tips)
    assert any("日期" in t for t in tips)


def test_quality_before_linkage_uses_codes_and_names(handmade):
    from sqlalchemy import delete

    from jiedao.hub.models import Golden, Link

    with handmade.session() as s:
        s.execute(delete(Golden))
        s.execute(delete(Link))
    with handmade.session() as s:
        rows = {q.code: q for q in compute_quality(s)}
    assert rows["src_a"].duplicates == 1  # same code C1 / same name 甲一
    assert rows["src_a"].linked == 0 and rows["src_a"].match_rate is None
    assert rows["src_a"].conflicts == 0


def test_quality_reports(handmade, tmp_path):
    with handmade.session() as s:
        rows = compute_quality(s)
    x = write_report(rows, tmp_path / "report.xlsx")
    wb = load_workbook(x)
    assert wb.sheetnames == ["汇总", "问题"]
    summary = list(wb["汇总"].iter_rows(values_only=True))
    assert summary[0][0] == "数据源代码" and {r[0] for r in summary[1:]} == {"src_a", "src_b"}
    assert any(r[0] == "src_b" for r in wb["问题"].iter_rows(min_row=2, values_only=True))
    c = write_report(rows, tmp_path / "report.csv")
    with c.open(encoding="utf-8-sig") as f:
        got = list(csv.reader(f))
    assert got[0][-1] == "整改建议" and len(got) == 3


def test_quality_cli(handmade, tmp_path):
    import typer
    from typer.testing import CliRunner

    from jiedao.db import get_database, set_database
    from jiedao.hub.cli import register

    app = typer.Typer()
    register(app)

    prev = get_database()
    set_database(handmade)
    try:
        r = CliRunner().invoke(app, ["hub", "quality", "--out", str(tmp_path / "q.xlsx")])
    finally:
        set_database(prev)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "q.xlsx").exists() and "报告已写入" in r.output
