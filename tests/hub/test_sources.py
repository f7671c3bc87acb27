"""Source registry and mapping validation, and every connector (CSV encodings, XLSX, JSON
array / JSON Lines, SQL) reading rows with the right row numbers."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from hub_testkit import MAPPING, registry_rows, write_csv, write_json, write_xlsx  # noqa: E402

from jiedao.errors import ValidationError  # noqa: E402
from jiedao.hub.connectors import ROW_ERROR, detect_encoding, open_reader  # noqa: E402
from jiedao.hub.sources import DEFAULT_SOURCES, Mapping, read_sources  # noqa: E402

# -------------------------------------------------------------------- registry


def test_shipped_registry_is_valid():
    specs = read_sources()
    codes = [s.code for s in specs]
    assert len(codes) == len(set(codes)) >= 6
    assert {s.entity_type for s in specs} >= {"enterprise", "building"}
    import csv

    from jiedao.config import get_settings

    with (get_settings().catalog_dir / "departments.csv").open(encoding="utf-8") as f:
        depts = {r["code"] for r in csv.DictReader(f)}
    read_sources(DEFAULT_SOURCES, depts)  # every owner is in the catalogue


def _registry(tmp_path, entries, mapping=MAPPING):
    (tmp_path / "mappings").mkdir(exist_ok=True)
    (tmp_path / "mappings" / "m.yaml").write_text(yaml.safe_dump(mapping, allow_unicode=True),
                                                 encoding="utf-8")
    p = tmp_path / "sources.yaml"
    p.write_text(yaml.safe_dump({"sources": entries}, allow_unicode=True), encoding="utf-8")
    return p


def _entry(**kw):
    e = {"code": "reg", "name": "市场主体登记", "department": "SCJG", "entity_type": "enterprise",
         "rhythm": "每日", "connector": "csv", "location": "reg.csv", "mapping": "m.yaml"}
    e.update(kw)
    return e


def test_registry_errors_name_entry_and_field(tmp_path):
    p = _registry(tmp_path, [
        _entry(),
        _entry(name="重复"),  # duplicate code
        _entry(code="b", department="NOPE"),  # unknown department
        _entry(code="c", mapping="missing.yaml"),  # missing mapping file
        _entry(code="d", connector="ftp"),  # bad connector
        _entry(code="e", connector="sql", location="sqlite:///x.db"),  # sql without query
        _entry(code="f", entity_type="person"),
    ])
    with pytest.raises(ValidationError) as ei:
        read_sources(p, {"SCJG"})
    probs = {(pr.row, pr.field): pr.message for pr in ei.value.problems}
    assert all(pr.source == str(p) for pr in ei.value.problems)
    assert "重复" in probs[(2, "code")]
    assert "NOPE" in probs[(3, "department")]
    assert "missing.yaml" in probs[(4, "mapping")]
    assert "ftp" in probs[(5, "connector")]
    assert "query" in probs[(6, "options")]
    assert "person" in probs[(7, "entity_type")]


def test_sync_sources_upserts_and_changes_nothing_on_error(fresh_db, tmp_path):
    from sqlalchemy import select

    from jiedao.catalog.models import Department
    from jiedao.hub.models import Source
    from jiedao.hub.sources import sync_sources

    with fresh_db.session() as s:
        s.add(Department(code="SCJG", name="区市场监督管理局", kind="district"))
    good = _registry(tmp_path, [_entry(), _entry(code="tax", name="纳税人", priority=70)])
    with fresh_db.session() as s:
        assert sync_sources(s, good)["created"] == 2
    with fresh_db.session() as s:
        out = sync_sources(s, _registry(tmp_path, [_entry(rhythm="每周")]))
        assert out == {"created": 0, "updated": 1, "unchanged": 0, "not_in_file": ["tax"]}
    bad = _registry(tmp_path, [_entry(rhythm="每月"), _entry(code="x", department="NOPE")])
    with pytest.raises(ValidationError), fresh_db.session() as s:
        sync_sources(s, bad)
    with fresh_db.session() as s:
        rows = {r.code: r for r in s.scalars(select(Source))}
        assert rows["reg"].rhythm == "每周" and "x" not in rows  # the bad file changed nothing
        assert rows["reg"].mapping.endswith("m.yaml")


def test_mapping_errors_name_file_and_field(tmp_path):
    bad = {"key": [], "columns": {"企业名称": "name", "地址": "adress", "名称2": "name"},
           "parsers": {"established": {"formats": "%Y"}}, "required": ["phone"], "oops": 1}
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(bad, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ValidationError) as ei:
        Mapping.load(p)
    fields = {pr.field for pr in ei.value.problems}
    assert {"key", "地址", "名称2", "established", "required", "oops"} <= fields
    assert all(pr.source == str(p) for pr in ei.value.problems)
    p.write_text("key: [a\ncolumns: {", encoding="utf-8")
    with pytest.raises(ValidationError, match="YAML"):
        Mapping.load(p)


# -------------------------------------------------------------------- connectors


ROWS = registry_rows(5)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk"])
def test_csv_encodings(tmp_path, encoding):
    p = write_csv(tmp_path / "r.csv", ROWS, encoding=encoding)
    assert detect_encoding(p) in ({"gbk": "gb18030"}.get(encoding, encoding),)
    with open_reader("csv", str(p)) as r:
        assert r.columns == list(ROWS[0])
        got = list(r.rows())
    assert [n for n, _ in got] == [2, 3, 4, 5, 6]  # header is row 1
    assert got[0][1]["企业名称"] == "江城第1号科技有限公司"


def test_csv_bad_rows_and_damaged_files(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("a,b\n1,2\n\n3,4,5\n6,7,\n8\n", encoding="utf-8")
    with open_reader("csv", str(p)) as r:
        got = list(r.rows())
    assert got[0] == (2, {"a": "1", "b": "2"})
    assert got[1][0] == 4 and ROW_ERROR in got[1][1]  # blank row 3 skipped
    assert got[2] == (5, {"a": "6", "b": "7"})  # a trailing empty cell is tolerated
    assert got[3][0] == 6 and ROW_ERROR in got[3][1]
    p.write_bytes("名称,地址\n甲,乙\n".encode() + b"\xff\xfe\xfa\xfb\n")
    with pytest.raises(ValidationError, match="编码"), open_reader("csv", str(p)) as r:
        list(r.rows())
    p.write_text('a,b\n1,"unterminated\n', encoding="utf-8")
    with pytest.raises(ValidationError) as ei, open_reader("csv", str(p)) as r:
        list(r.rows())
    assert ei.value.problems[0].row == 2
    p.write_text("a,a\n1,2\n", encoding="utf-8")
    with pytest.raises(ValidationError, match="重复"):
        open_reader("csv", str(p))
    p.write_text("", encoding="utf-8")
    with pytest.raises(ValidationError, match="为空"):
        open_reader("csv", str(p))
    with pytest.raises(ValidationError, match="不存在"):
        open_reader("csv", str(tmp_path / "nope.csv"))


def test_xlsx(tmp_path):
    p = write_xlsx(tmp_path / "r.xlsx", ROWS, sheet="名录")
    with open_reader("xlsx", str(p), {"sheet": "名录"}) as r:
        assert r.columns == list(ROWS[0])
        got = list(r.rows())
    assert [n for n, _ in got] == [2, 3, 4, 5, 6]
    assert got[4][1]["主体身份代码"] == "P000005"
    with pytest.raises(ValidationError, match="工作表"):
        open_reader("xlsx", str(p), {"sheet": "没有"})
    (tmp_path / "fake.xlsx").write_text("not a workbook", encoding="utf-8")
    with pytest.raises(ValidationError, match="XLSX"):
        open_reader("xlsx", str(tmp_path / "fake.xlsx"))


def test_xlsx_typed_cells(tmp_path):
    from datetime import datetime

    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(["编号", "日期", "金额"])
    ws.append([1, datetime(2020, 1, 2), 3.5])
    ws.append([None, None, None])
    ws.append([2, "2021-02-03", None])
    wb.save(tmp_path / "t.xlsx")
    with open_reader("xlsx", str(tmp_path / "t.xlsx")) as r:
        got = list(r.rows())
    assert got[0] == (2, {"编号": 1, "日期": datetime(2020, 1, 2), "金额": 3.5})
    assert got[1][0] == 4


@pytest.mark.parametrize("lines", [False, True])
def test_json(tmp_path, lines):
    rows = [*ROWS[:3], {"主体身份代码": "N1", "企业名称": "嵌套", "联系": {"电话": "13800000000"}}]
    p = write_json(tmp_path / "r.json", rows, lines=lines)
    with open_reader("json", str(p)) as r:
        assert r.columns is None
        got = list(r.rows())
    assert [n for n, _ in got] == [1, 2, 3, 4]
    assert got[3][1]["联系.电话"] == "13800000000"  # nested objects flattened
    assert got[1][1] == ROWS[1]


def test_json_array_streams_across_chunks(tmp_path):
    rows = [{"k": i, "text": "字" * 3000} for i in range(60)]  # > several 64 KiB chunks
    p = write_json(tmp_path / "big.json", rows)
    with open_reader("json", str(p)) as r:
        got = list(r.rows())
    assert [d["k"] for _, d in got] == list(range(60))


def test_json_damaged(tmp_path):
    p = tmp_path / "r.json"
    p.write_text('[{"a": 1}, {"a": 2}, {"a": ]', encoding="utf-8")
    with pytest.raises(ValidationError) as ei, open_reader("json", str(p)) as r:
        list(r.rows())
    assert ei.value.problems[0].row == 3
    p.write_text('{"a": 1}\n{"a": 2\n', encoding="utf-8")
    with pytest.raises(ValidationError) as ei, open_reader("json", str(p)) as r:
        list(r.rows())
    assert ei.value.problems[0].row == 2
    p.write_text('[{"a": 1}, 5]', encoding="utf-8")
    with open_reader("json", str(p)) as r:
        got = list(r.rows())
    assert ROW_ERROR in got[1][1]
    p.write_text('[{"a": 1}', encoding="utf-8")
    with pytest.raises(ValidationError, match="结束"), open_reader("json", str(p)) as r:
        list(r.rows())


def test_sql(tmp_path):
    db = tmp_path / "src.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE employer (no TEXT, name TEXT, insured INTEGER)")
    con.executemany("INSERT INTO employer VALUES (?, ?, ?)",
                    [(f"E{i}", f"单位{i}", i) for i in range(1, 2501)])
    con.commit()
    con.close()
    url = "sqlite:///{data_dir}/src.sqlite"
    with open_reader("sql", url, {"query": "SELECT no, name, insured FROM employer ORDER BY no",
                                  "chunk": 500}, data_dir=tmp_path) as r:
        assert r.columns == ["no", "name", "insured"]
        chunks = list(r.chunks(1000))
    assert [len(c) for c in chunks] == [1000, 1000, 500]
    assert chunks[0][0] == (1, {"no": "E1", "name": "单位1", "insured": 1})
    with pytest.raises(ValidationError, match="无法执行查询"):
        open_reader("sql", url, {"query": "SELECT * FROM nope"}, data_dir=tmp_path)
