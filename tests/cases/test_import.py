"""Batch import of hotline exports (CSV/XLSX) through the real pipeline on the small demo
district: header synonyms and mappings, every bad row reported with its row number and
reason, all-or-nothing by default, --partial with a rejects file, no duplicates on re-import,
and the ``jiedao import cases`` command."""

from __future__ import annotations

import csv
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from jiedao.cases.importer import Mapping, import_cases, rejects_path_for, validate_file
from jiedao.errors import ValidationError

HEADER = ["工单编号", "来电时间", "来电号码", "姓名", "诉求内容", "地址", "紧急程度"]


@pytest.fixture(scope="module")
def demo_db(demo_db):
    """This module's copy of the demo database, also the process default while it runs (the
    importer's CLI and the process pipeline use the default database)."""
    from channels_db import channels_db

    from jiedao.db import set_database

    clone = channels_db(demo_db)
    set_database(clone)
    yield clone
    set_database(demo_db)


@pytest.fixture(scope="module")
def pipeline(demo_db):
    from jiedao.cases.runtime import get_pipeline

    return get_pipeline()  # the process pipeline over the default (demo) database


@pytest.fixture(scope="module")
def addresses(demo_db):
    from jiedao.geo.models import Address

    with demo_db.session() as s:
        return [a.full for a in s.scalars(select(Address).where(Address.compound.is_not(None))
                                          .order_by(Address.code).limit(5))]


def when(days_ago: float) -> str:
    from jiedao import clock

    return (clock.now().replace(microsecond=0) - timedelta(days=days_ago)).strftime(
        "%Y-%m-%d %H:%M:%S")


def write_csv(path, rows, header=HEADER, encoding="utf-8-sig"):
    with open(path, "w", newline="", encoding=encoding) as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def good_rows(prefix: str, addresses, n: int = 3):
    texts = ["门口烧烤摊占道经营，油烟很大", "楼道里堆满杂物存在消防隐患", "小区路灯坏了好几天"]
    return [[f"{prefix}-{i}", when(3 + i), f"1381234{5000 + i}", "王五",
             f"{addresses[i % len(addresses)]}{texts[i % 3]}", addresses[i % len(addresses)],
             "一般"] for i in range(n)]


def count_cases(db, prefix=None) -> int:
    from jiedao.cases.models import Case

    with db.session() as s:
        stmt = select(func.count()).select_from(Case)
        if prefix:
            stmt = stmt.where(Case.idempotency_key.like(f"import:{prefix}-%"))
        return s.scalar(stmt)


def test_import_creates_cases_through_the_pipeline_and_reimport_creates_none(
        tmp_path, demo_db, pipeline, addresses):
    from jiedao.cases.models import Case

    rows = good_rows("HX1", addresses)
    path = write_csv(tmp_path / "hotline.csv", rows)
    before = count_cases(demo_db)
    report = import_cases(demo_db, pipeline, path)
    assert (report.rows, report.created, report.existing, report.rejected) == (3, 3, 0, [])
    assert count_cases(demo_db) == before + 3
    with demo_db.session() as s:
        cases = s.scalars(select(Case).where(Case.id.in_(report.case_ids)).order_by(Case.id)).all()
        assert [c.idempotency_key for c in cases] == ["import:HX1-0", "import:HX1-1", "import:HX1-2"]
        assert all(c.channel == "import" and c.state in ("analysed", "dispatched") for c in cases)
        assert cases[0].received_at == datetime.strptime(rows[0][1], "%Y-%m-%d %H:%M:%S")
        assert cases[0].caller.name == "王五" and cases[0].location_text == addresses[0]
        assert cases[0].transitions[0].actor == "import"
    again = import_cases(demo_db, pipeline, path)
    assert (again.created, again.existing) == (0, 3)
    assert sorted(again.case_ids) == sorted(report.case_ids)
    assert count_cases(demo_db) == before + 3


def test_every_bad_row_is_reported_and_nothing_is_written(tmp_path, demo_db, pipeline, addresses):
    rows = good_rows("HX2", addresses, 2)
    rows += [
        ["HX2-a", when(1), "13812340000", "", "", "", "一般"],  # row 4: empty text
        ["HX2-b", "上周三下午", "13812340000", "", "路灯不亮", "", "一般"],  # 5: date
        ["HX2-c", when(1), "12345", "", "路灯不亮", "", "一般"],  # 6: phone
        ["HX2-d", when(1), "", "", "长" * 100_000, "", "一般"],  # 7: 100 KB text
        ["HX2-e", when(1), "", "", "路灯不亮", "", "特急"],  # 8: urgency
        ["HX2-0", when(1), "", "", "路灯不亮", "", "一般"],  # 9: repeated external id
        ["HX2-f", when(-30), "", "", "路灯不亮", "", "一般"],  # 10: in the future
    ]
    path = write_csv(tmp_path / "bad.csv", rows)
    before = count_cases(demo_db)
    with pytest.raises(ValidationError) as e:
        import_cases(demo_db, pipeline, path)
    got = {(p.row, p.field) for p in e.value.problems}
    assert got == {(4, "text"), (5, "received_at"), (6, "phone"), (7, "text"), (8, "urgency"),
                   (9, "external_id"), (10, "received_at")}, got
    assert all(p.source == "bad.csv" for p in e.value.problems)
    assert "第4行" in str(e.value) and "诉求内容不能为空" in str(e.value)
    assert count_cases(demo_db) == before


def test_partial_import_writes_a_rejects_file_next_to_the_input(tmp_path, demo_db, pipeline,
                                                                 addresses):
    rows = good_rows("HX3", addresses, 2) + [
        ["HX3-x", when(1), "138", "", "路灯不亮", "", "一般"],
        ["HX3-y", when(1), "", "", "  ", "", "一般"],
    ]
    path = write_csv(tmp_path / "export.csv", rows)
    before = count_cases(demo_db)
    report = import_cases(demo_db, pipeline, path, partial=True)
    assert (report.created, len(report.rejected)) == (2, 2)
    assert report.rejects_path == rejects_path_for(path) == tmp_path / "export.rejects.csv"
    with open(report.rejects_path, encoding="utf-8-sig") as f:
        rejected = list(csv.DictReader(f))
    assert [(r["row"], r["field"]) for r in rejected] == [("4", "phone"), ("5", "text")]
    assert "电话号码格式不正确" in rejected[0]["reason"] and rejected[0]["工单编号"] == "HX3-x"
    assert count_cases(demo_db) == before + 2
    again = import_cases(demo_db, pipeline, path, partial=True)
    assert (again.created, again.existing, len(again.rejected)) == (0, 2, 2)
    assert count_cases(demo_db) == before + 2


def test_xlsx_with_a_yaml_mapping_and_date_cells(tmp_path, demo_db, pipeline, addresses):
    from openpyxl import Workbook

    from jiedao.cases.models import Case

    wb = Workbook()
    ws = wb.active
    ws.append(["单号", "受理日期", "手机", "问题", "位置", "备注"])
    from jiedao import clock

    t0 = clock.now().replace(microsecond=0, second=0) - timedelta(days=10)
    ws.append(["X-1", t0, 13912345678, f"{addresses[1]}附近工地夜间施工噪音扰民", addresses[1], "—"])
    ws.append(["X-2", t0 + timedelta(hours=1), None, "小区门口共享单车乱停乱放", None, ""])
    ws.append([None, None, None, None, None, None])  # blank rows are skipped
    path = tmp_path / "export.xlsx"
    wb.save(path)
    mapping_file = tmp_path / "mapping.yaml"
    mapping_file.write_text("columns:\n  external_id: 单号\n  received_at: 受理日期\n  phone: 手机\n"
                            "  text: 问题\n  location: 位置\ndefaults:\n  channel: hotline\n",
                            encoding="utf-8")
    mapping = Mapping.from_yaml(mapping_file)
    report = import_cases(demo_db, pipeline, path, mapping)
    assert report.created == 2
    with demo_db.session() as s:
        c = s.scalar(select(Case).where(Case.idempotency_key == "import:X-1"))
        assert c.received_at == t0 and c.channel == "hotline" and c.caller.phone == "13912345678"
    # flags on top of a mapping; a mapped column that does not exist is named
    with pytest.raises(ValidationError) as e:
        validate_file(path, Mapping.from_pairs(["text=诉求"], mapping))
    [p] = e.value.problems
    assert (p.row, p.field) == (1, "text") and "诉求" in p.message
    with pytest.raises(ValidationError) as e:
        Mapping.from_pairs(["colour=颜色"])
    assert e.value.problems[0].field == "colour"


def test_files_without_a_text_column_or_rows_are_refused(tmp_path, demo_db, pipeline):
    with pytest.raises(ValidationError) as e:
        import_cases(demo_db, pipeline, write_csv(tmp_path / "a.csv", [["1"]], header=["编号"]))
    assert e.value.problems[0].field == "text"
    with pytest.raises(ValidationError) as e:
        import_cases(demo_db, pipeline, write_csv(tmp_path / "b.csv", [], header=["诉求内容"]))
    assert "没有数据行" in str(e.value)
    with pytest.raises(ValidationError):
        import_cases(demo_db, pipeline, tmp_path / "missing.csv")
    (tmp_path / "c.pdf").write_bytes(b"%PDF")
    with pytest.raises(ValidationError):
        import_cases(demo_db, pipeline, tmp_path / "c.pdf")


def test_gbk_csv_and_the_command_line(tmp_path, demo_db, pipeline, addresses):
    from typer.testing import CliRunner

    from jiedao import cli

    cli._mount()
    rows = good_rows("HX5", addresses, 2)
    path = write_csv(tmp_path / "gbk.csv", rows, encoding="gb18030")
    runner = CliRunner()
    r = runner.invoke(cli.app, ["import", "cases", str(path), "--channel", "hotline"])
    assert r.exit_code == 0, r.output
    assert "新建 2 件" in r.output and count_cases(demo_db, "HX5") == 2
    r = runner.invoke(cli.app, ["import", "cases", str(path)])
    assert r.exit_code == 0 and "已存在跳过 2 件" in r.output
    bad = write_csv(tmp_path / "bad.csv", rows + [["HX5-z", "昨天", "", "", "路灯", "", "一般"]])
    r = runner.invoke(cli.app, ["import", "cases", str(bad)])
    assert r.exit_code == 2 and "第4行" in r.output and "received_at" in r.output
    r = runner.invoke(cli.app, ["import", "cases", str(bad), "--partial"])
    assert r.exit_code == 0 and "bad.rejects.csv" in r.output
    assert count_cases(demo_db, "HX5") == 2
