"""Loads: incremental by content hash, vanished rows, every bad input reported with row and
reason, failed loads leave the previous state intact, connectors end to end, CLI."""

from __future__ import annotations

import csv
import sqlite3
import sys
from pathlib import Path

import pytest
import typer
import yaml
from sqlalchemy import func, select
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from hub_testkit import (  # noqa: E402
    MAPPING,
    REG_COLUMNS,
    bad_check,
    registry_rows,
    setup_registry,
    uscc,
    write_csv,
    write_json,
    write_xlsx,
)

from jiedao.errors import ValidationError  # noqa: E402
from jiedao.hub.loads import load_source, records_frame  # noqa: E402
from jiedao.hub.models import ImportRun, Record  # noqa: E402


def _state(db) -> dict:
    with db.session() as s:
        return {r.source_key: (r.content_hash, r.vanished, r.credit_code, r.name)
                for r in s.scalars(select(Record))}


def _runs(db) -> list[ImportRun]:
    with db.session() as s:
        return list(s.scalars(select(ImportRun).order_by(ImportRun.id)))


def _rejects(run) -> list[dict]:
    with open(run.rejects_path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def _load(db, path=None, data_dir=None, code="reg"):
    with db.session() as s:
        return load_source(s, code, path, data_dir)


@pytest.fixture
def reg(fresh_db, tmp_path):
    """A registered CSV source ``reg`` with 20 good rows, loaded once."""
    with fresh_db.session() as s:
        setup_registry(s, tmp_path)
    rows = registry_rows(20)
    write_csv(tmp_path / "reg.csv", rows, REG_COLUMNS)
    run = _load(fresh_db, data_dir=tmp_path)
    assert (run.status, run.n_read, run.n_new, run.n_rejected, run.rejects_path) == ("ok", 20, 20, 0, None)
    return fresh_db, tmp_path, rows


def test_incremental_load(reg):
    db, tmp, rows = reg
    before = _state(db)
    rows = [dict(r) for r in rows]
    rows[4]["联系电话"] = "13999999999"  # one changed
    removed = rows.pop(9)  # one vanished
    write_csv(tmp / "reg.csv", rows, REG_COLUMNS)
    run = _load(db, data_dir=tmp)
    assert (run.n_read, run.n_new, run.n_changed, run.n_unchanged, run.n_vanished) == (19, 0, 1, 18, 1)
    after = _state(db)
    assert after[removed["主体身份代码"]][1] is True  # marked, not deleted
    assert len(after) == 20
    changed = [k for k in after if after[k][0] != before[k][0]]
    assert changed == [rows[4]["主体身份代码"]]
    with db.session() as s:
        rec = s.scalar(select(Record).where(Record.source_key == rows[4]["主体身份代码"]))
        assert rec.phone == "13999999999" and rec.last_run_id == run.id and rec.first_run_id < run.id
        gone = s.scalar(select(Record).where(Record.source_key == removed["主体身份代码"]))
        assert gone.vanished_run_id == run.id
        frame = records_frame(s, "enterprise")
        assert len(frame) == 19 and gone.id not in set(frame.record_id)
        assert list(frame.columns) == ["record_id", "source_code", "name_norm", "name_core",
                                       "credit_code", "reg_no", "legal_rep", "phone",
                                       "address_norm", "building_code", "street_code",
                                       "industry_code", "established"]
        assert len(records_frame(s, "building")) == 0
    # the same file again: nothing changes; the vanished row comes back
    run = _load(db, data_dir=tmp)
    assert (run.n_changed, run.n_unchanged, run.n_vanished) == (0, 19, 0)
    rows.append(removed)
    write_csv(tmp / "reg.csv", rows, REG_COLUMNS)
    run = _load(db, data_dir=tmp)
    assert (run.n_new, run.n_changed, run.n_unchanged) == (0, 1, 19)
    assert _state(db)[removed["主体身份代码"]][1] is False


def test_bad_rows_are_reported_with_row_and_reason(reg):
    db, tmp, rows = reg
    rows = [dict(r) for r in rows]
    rows[2]["统一社会信用代码"] = bad_check(rows[2]["统一社会信用代码"])  # file row 4
    rows[3]["成立日期"] = "2020年13月1日"  # row 5
    rows[4]["主体身份代码"] = ""  # row 6: missing key
    rows[5]["主体身份代码"] = rows[6]["主体身份代码"] = "P999999"  # rows 7, 8: duplicate key
    rows[7]["企业名称"] = ""  # row 9: required name empty
    rows[8]["行业代码"] = "Z99"  # row 10
    write_csv(tmp / "reg.csv", rows, REG_COLUMNS)
    with (tmp / "reg.csv").open("a", encoding="utf-8") as f:
        f.write("P777777,too,few\n")  # row 22: wrong width
    run = _load(db, data_dir=tmp)
    assert run.status == "ok" and run.n_read == 21
    rej = _rejects(run)
    by_row = {int(r["row"]): r for r in rej}
    assert "校验位错误" in by_row[4]["reason"] and by_row[4]["field"] == "统一社会信用代码"
    assert by_row[4]["action"] == "字段置空后载入" and by_row[4]["key"] == rows[2]["主体身份代码"]
    assert "日期" in by_row[5]["reason"] and by_row[5]["field"] == "成立日期"
    assert "主键" in by_row[6]["reason"] and by_row[6]["action"] == "整行未载入"
    assert "重复" in by_row[8]["reason"] and "第7行" in by_row[8]["reason"]
    assert "必填" in by_row[9]["reason"]
    assert "行业代码" in by_row[10]["reason"]
    assert "列数" in by_row[22]["reason"]
    assert run.n_rejected == len(by_row) == 7
    state = _state(db)
    key4 = rows[2]["主体身份代码"]
    assert state[key4][2] is None and state[key4][3] == rows[2]["企业名称"]  # loaded, code blanked
    assert rows[3]["主体身份代码"] in state  # bad date: loaded
    assert state[rows[7]["主体身份代码"]][1] is False  # known key, bad row: previous record kept
    assert state["P000005"][1] is True  # its row lost the key: vanished, and the row is named
    # nothing silently disappears: every row read is loaded, unchanged, or in the rejects file
    with db.session() as s:
        loaded = s.scalar(select(func.count()).select_from(Record).where(
            Record.last_run_id == run.id))
    skipped = {r for r, v in by_row.items() if v["action"] == "整行未载入"}
    assert loaded + run.n_unchanged + len(skipped) == run.n_read
    # the next load of the same file repeats the field problems of unchanged rows
    run2 = _load(db, data_dir=tmp)
    assert {int(r["row"]) for r in _rejects(run2)} == set(by_row)
    assert run2.n_unchanged == 17 and run2.n_changed == 0  # 21 read, 4 rows skipped


@pytest.mark.parametrize("damage", ["missing_column", "malformed", "unreadable", "bad_mapping",
                                    "empty"])
def test_failed_load_leaves_previous_state_intact(reg, damage):
    db, tmp, rows = reg
    before = _state(db)
    changed = [dict(r, 联系电话="13700000000") for r in rows]
    if damage == "missing_column":
        write_csv(tmp / "reg.csv", changed, [c for c in REG_COLUMNS if c != "住所"])
    elif damage == "malformed":
        write_csv(tmp / "reg.csv", changed, REG_COLUMNS)
        with (tmp / "reg.csv").open("a", encoding="utf-8") as f:
            f.write('P000099,"unterminated,quote\n')
    elif damage == "unreadable":
        (tmp / "reg.csv").write_bytes(b"\x00\x01\xff\xfe" * 1000)
    elif damage == "bad_mapping":
        write_csv(tmp / "reg.csv", changed, REG_COLUMNS)
        m = dict(MAPPING, columns={**MAPPING["columns"], "住所": "addr"})
        (tmp / "mappings" / "reg.yaml").write_text(yaml.safe_dump(m, allow_unicode=True),
                                                  encoding="utf-8")
    elif damage == "empty":
        (tmp / "reg.csv").write_text(",".join(REG_COLUMNS) + "\n", encoding="utf-8")
    with pytest.raises(ValidationError) as ei:
        _load(db, data_dir=tmp)
    problems = ei.value.problems
    if damage == "missing_column":
        p = problems[0]
        assert p.field == "住所" and "reg.yaml" in p.message and "住所" in p.message
        assert p.source.endswith("reg.csv")
    if damage == "malformed":
        assert problems[0].row == 22
    assert _state(db) == before  # nothing of the failed load stays
    runs = _runs(db)
    assert [r.status for r in runs] == ["ok", "failed"]
    assert runs[-1].error and runs[-1].finished_at is not None
    assert runs[-1].rejects_path and _rejects(runs[-1])[0]["action"] == "整批未载入"


def test_missing_column_in_json_source_fails(fresh_db, tmp_path):
    with fresh_db.session() as s:
        setup_registry(s, tmp_path, connector="json", location="reg.jsonl")
    rows = registry_rows(5)
    for r in rows:
        del r["住所"]
    write_json(tmp_path / "reg.jsonl", rows, lines=True)
    with pytest.raises(ValidationError, match="住所") as ei:
        _load(fresh_db, data_dir=tmp_path)
    assert "reg.yaml" in str(ei.value)
    assert _state(fresh_db) == {}


def test_xlsx_json_and_sql_sources_load(fresh_db, tmp_path):
    rows = registry_rows(6)
    rows[1]["成立日期"] = 42005  # Excel serial → 2015-01-01
    write_xlsx(tmp_path / "reg.xlsx", rows, sheet="登记")
    with fresh_db.session() as s:
        setup_registry(s, tmp_path, connector="xlsx", location="reg.xlsx",
                       options={"sheet": "登记"})
    run = _load(fresh_db, data_dir=tmp_path)
    assert (run.n_new, run.n_rejected) == (6, 0)
    with fresh_db.session() as s:
        rec = s.scalar(select(Record).where(Record.source_key == "P000002"))
        assert str(rec.established) == "2015-01-01" and rec.credit_code == uscc(2)
        assert rec.raw["成立日期"] == 42005
    # the same source from JSON (explicit --file): raw values differ → all changed
    write_json(tmp_path / "reg.json", [{k: str(v) for k, v in r.items()} for r in rows])
    with fresh_db.session() as s:
        setup_registry(s, tmp_path, connector="json", location="reg.json", code="regj")
        run = load_source(s, "regj", data_dir=tmp_path)
        assert (run.n_new, run.n_rejected) == (6, 0)
    con = sqlite3.connect(tmp_path / "src.sqlite")
    con.execute("CREATE TABLE t (" + ", ".join(f'"{c}" TEXT' for c in REG_COLUMNS) + ")")
    con.executemany(f"INSERT INTO t VALUES ({', '.join('?' * len(REG_COLUMNS))})",
                    [[str(r[c]) for c in REG_COLUMNS] for r in rows])
    con.commit()
    con.close()
    with fresh_db.session() as s:
        setup_registry(s, tmp_path, connector="sql", location="sqlite:///{data_dir}/src.sqlite",
                       options={"query": "SELECT * FROM t"}, code="regs")
        run = load_source(s, "regs", data_dir=tmp_path)
        assert (run.n_new, run.n_read) == (6, 6)
    with fresh_db.session() as s:
        assert len(records_frame(s)) == 18


def test_cli(fresh_db, tmp_path):
    from jiedao.db import get_database, set_database
    from jiedao.hub.cli import register

    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:
        pass

    write_csv(tmp_path / "reg.csv", registry_rows(8), REG_COLUMNS)
    with fresh_db.session() as s:
        sources = setup_registry(s, tmp_path)
    previous = get_database()
    set_database(fresh_db)
    try:
        runner = CliRunner()
        res = runner.invoke(app, ["hub", "sources", "--sync", "--file", str(sources)])
        assert res.exit_code == 0, res.output
        assert "未变 1" in res.output and "reg" in res.output
        res = runner.invoke(app, ["hub", "load", "reg", "--file", str(tmp_path / "reg.csv")])
        assert res.exit_code == 0, res.output
        assert "新增 8" in res.output
        res = runner.invoke(app, ["hub", "load-all", "--data-dir", str(tmp_path)])
        assert res.exit_code == 0, res.output
        assert "未变 8" in res.output
        res = runner.invoke(app, ["hub", "runs"])
        assert res.exit_code == 0 and res.output.count("成功") == 2
        res = runner.invoke(app, ["hub", "load", "reg", "--file", str(tmp_path / "nope.csv")])
        assert res.exit_code != 0 and isinstance(res.exception, ValidationError)
    finally:
        set_database(previous)


def test_worker_process_gives_the_same_records(fresh_db, tmp_path):
    rows = registry_rows(30)
    rows[3]["统一社会信用代码"] = bad_check(rows[3]["统一社会信用代码"])
    rows[20]["成立日期"] = "不详"
    write_csv(tmp_path / "reg.csv", rows, REG_COLUMNS)
    with fresh_db.session() as s:
        setup_registry(s, tmp_path)
        setup_registry(s, tmp_path, code="reg2")
    with fresh_db.session() as s:
        inline = load_source(s, "reg", data_dir=tmp_path, workers=0)
        forked = load_source(s, "reg2", data_dir=tmp_path, workers=1, worker_min_rows=1,
                             chunk_size=7)
        assert (forked.n_new, forked.n_rejected) == (inline.n_new, inline.n_rejected) == (30, 2)
        assert [r["row"] for r in _rejects(forked)] == ["5", "22"]
        recs = {}
        for r in s.scalars(select(Record)):
            recs.setdefault(r.source_code, {})[r.source_key] = (
                r.name_core, r.credit_code, r.phone, r.established, r.extra, r.row_no)
        assert recs["reg"] == recs["reg2"]
