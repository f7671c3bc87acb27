"""The demo ledgers: deterministic, realistic flaw rates, a consistent truth, and files that
load through the hub's real loader."""

from __future__ import annotations

import csv
import json
import random
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from openpyxl import load_workbook

from jiedao.demo import ledger_names as ln
from jiedao.demo.ledgers import SOURCE_FILES, STREET_DB_TABLE, read_truth, write_ledgers
from jiedao.demo.pipeline import generate


@pytest.fixture(scope="module")
def world():
    return generate("small")


@pytest.fixture(scope="module")
def ledgers(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("ledgers")
    return write_ledgers(world, out), out


def _xlsx_rows(path: Path) -> dict[str, list[tuple]]:
    wb = load_workbook(path, read_only=True)
    try:
        return {ws.title: [tuple(r) for r in ws.iter_rows(values_only=True)] for ws in wb.worksheets}
    finally:
        wb.close()


def _sqlite_rows(path: Path) -> list[tuple]:
    con = sqlite3.connect(path)
    try:
        return con.execute(f"SELECT * FROM {STREET_DB_TABLE} ORDER BY ly_bh").fetchall()
    finally:
        con.close()


def _content(out: Path) -> dict[str, object]:
    got: dict[str, object] = {}
    for name in sorted(set(SOURCE_FILES.values())) + ["truth_records.csv", "truth_entities.csv"]:
        p = out / name
        got[name] = (_xlsx_rows(p) if name.endswith(".xlsx") else
                     _sqlite_rows(p) if name.endswith(".sqlite") else p.read_bytes())
    return got


def test_deterministic(world, ledgers, tmp_path):
    summary, out = ledgers
    again = write_ledgers(world, tmp_path / "again")
    assert again.rows == summary.rows
    assert _content(out) == _content(tmp_path / "again")
    write_ledgers(world, tmp_path / "other", random.Random(7))
    assert (tmp_path / "other" / "truth_entities.csv").read_bytes() != \
        (out / "truth_entities.csv").read_bytes()


def test_small_scale_shape(ledgers):
    summary, out = ledgers
    assert 1500 <= summary.total <= 2800
    rows = summary.rows
    assert rows["scjg_registry"] == summary.entities
    assert rows["scjg_registry"] > rows["sw_taxpayers"] > rows["rsj_employers"] > rows["jd_tenants"]
    assert rows["jd_buildings"] == 3  # the small district's office towers
    assert rows["tj_sishang"] == 12
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["rows"] == rows and manifest["label"].startswith("示例数据")
    # formats: GBK registry, UTF-8 tax list, JSON Lines, XLSX sheets named as registered
    (out / SOURCE_FILES["scjg_registry"]).read_bytes().decode("gbk")
    with pytest.raises(UnicodeDecodeError):
        (out / SOURCE_FILES["scjg_registry"]).read_bytes().decode("utf-8")
    (out / SOURCE_FILES["sw_taxpayers"]).read_text(encoding="utf-8")
    first = json.loads((out / SOURCE_FILES["rsj_employers"]).read_text(encoding="utf-8").splitlines()[0])
    assert {"单位编号", "单位名称", "统一社会信用代码", "参保人数"} <= set(first)
    assert set(_xlsx_rows(out / SOURCE_FILES["jd_tenants"])) == {"入驻企业"}
    # the street offices' building register is their own database, not a file export
    assert len(_sqlite_rows(out / SOURCE_FILES["jd_buildings"])) == 3
    assert set(_xlsx_rows(out / SOURCE_FILES["tj_sishang"])) == {"四上企业名录"}
    assert set(_xlsx_rows(out / SOURCE_FILES["kjj_tech"])) == {"科技企业"}


def test_flaw_rates_in_range(ledgers):
    _, out = ledgers
    n: Counter = Counter()
    flaws: Counter = Counter()
    stale: Counter = Counter()
    for r in read_truth(out):
        n[r["source"]] += 1
        stale[r["source"]] += r["stale"]
        for f in r["flaws"]:
            flaws[(r["source"], f)] += 1

    def rate(src, f):
        return flaws[(src, f)] / n[src]

    assert rate("scjg_registry", "no_code") + rate("scjg_registry", "old_code") < 0.05
    assert rate("scjg_registry", "bad_code") < 0.01
    assert 0.07 <= rate("rsj_employers", "no_code") <= 0.22
    assert 0.005 <= rate("rsj_employers", "bad_code") <= 0.06
    assert 0.1 <= rate("rsj_employers", "abbrev") <= 0.3
    assert 0.2 <= rate("rsj_employers", "addr_variant") <= 0.55
    assert 0.55 <= rate("jd_tenants", "no_code") <= 0.9
    assert 0.15 <= rate("jd_tenants", "short") <= 0.45
    assert 0.005 <= rate("sw_taxpayers", "bad_code") <= 0.04
    assert 0.02 <= rate("sw_taxpayers", "old_code") <= 0.1
    assert 0.2 <= rate("sw_taxpayers", "phone_variant") <= 0.45
    assert rate("tj_sishang", "no_code") == 0 and rate("tj_sishang", "bad_code") == 0
    assert 0.08 <= stale["scjg_registry"] / n["scjg_registry"] <= 0.22  # deregistered rows stay
    assert stale["sw_taxpayers"] > 0 and stale["jd_tenants"] > 0


def test_truth_consistent(world, ledgers):
    from jiedao.hub.standardise import reg_no_valid, uscc_valid

    summary, out = ledgers
    with (out / "truth_entities.csv").open(encoding="utf-8") as f:
        ents = {r["entity_id"]: r for r in csv.DictReader(f)}
    assert len(ents) == summary.entities
    buildings = {b["code"]: b for b in world.rows("geo_building")}
    names = [e["name"] for e in ents.values()]
    assert len(set(names)) == len(names)  # registered names are unique
    for e in ents.values():
        assert e["building_code"] in buildings
        assert e["street_code"] == buildings[e["building_code"]]["street_code"]
        assert e["credit_code"] == "" or uscc_valid(e["credit_code"])
        assert e["reg_no"] == "" or reg_no_valid(e["reg_no"])
        assert e["credit_code"] or e["reg_no"]
        assert e["address"].startswith("江城市临江区")
        assert e["status"] in ("存续", "注销", "吊销")
    per_source = Counter()
    keys = set()
    for r in read_truth(out):
        per_source[r["source"]] += 1
        assert (r["source"], r["source_key"]) not in keys
        keys.add((r["source"], r["source_key"]))
        if r["source"] == "jd_buildings":
            assert buildings[r["entity_id"]]["kind"] == "office"
        else:
            assert r["entity_id"] in ents
    assert dict(per_source) == summary.rows
    # what the ledger holds agrees with the flaw noted in the truth
    truth = {(r["source"], r["source_key"]): r for r in read_truth(out)}
    with (out / SOURCE_FILES["sw_taxpayers"]).open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            t = truth[("sw_taxpayers", row["纳税人识别号"])]
            code = row["纳税人识别号"].upper()
            true = ents[t["entity_id"]]["credit_code"]
            if "bad_code" in t["flaws"]:
                assert not uscc_valid(code)
            elif "old_code" not in t["flaws"]:
                assert code == true
    for line in (out / SOURCE_FILES["rsj_employers"]).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        t = truth[("rsj_employers", row["单位编号"])]
        if "no_code" in t["flaws"]:
            assert row["统一社会信用代码"] in ("", None)


def test_check_digits_agree_with_the_hub():
    from jiedao.hub.standardise import reg_no_valid, uscc_valid

    rng = random.Random(3)
    for i in range(300):
        body = f"{rng.randrange(10**7, 10**8)}"
        code = ln.make_uscc("91", "420199", body)
        assert uscc_valid(code) and ln.uscc_ok(code)
        from jiedao.demo.ledgers import mistype

        assert not uscc_valid(mistype(code, rng))
        reg = ln.make_regno("420199", i * 7919 % 10**8)
        assert reg_no_valid(reg) and ln.regno_ok(reg)


def test_small_files_load_through_the_hub(ledgers, fresh_db):
    from jiedao.catalog.loader import sync_catalog
    from jiedao.demo.hub import LOAD_ORDER
    from jiedao.hub.loads import load_source
    from jiedao.hub.sources import sync_sources

    summary, out = ledgers
    with fresh_db.session() as s:
        sync_catalog(s)
        sync_sources(s)
    for code in LOAD_ORDER:
        with fresh_db.session() as s:
            run = load_source(s, code, data_dir=out)
            assert run.status == "ok"
            assert run.n_read == summary.rows[code]
            assert run.n_new == summary.rows[code]
            # rows are never dropped: problems blank a field and are listed in the rejects file
            assert run.n_rejected <= summary.rows[code] * 0.1


def test_building_register_loads_through_the_sql_connector(ledgers, fresh_db, tmp_path):
    """jd_buildings is registered with the sql connector: the loader opens the street
    offices' SQLite database through its SQLAlchemy URL and runs the registered query; a
    changed row in that database is picked up incrementally."""
    import shutil

    from sqlalchemy import select

    from jiedao.catalog.loader import sync_catalog
    from jiedao.hub.loads import load_source
    from jiedao.hub.models import Record, Source
    from jiedao.hub.sources import sync_sources

    summary, out = ledgers
    data = tmp_path / "data"
    shutil.copytree(out, data)
    with fresh_db.session() as s:
        sync_catalog(s)
        sync_sources(s)
        src = s.get(Source, "jd_buildings")
        assert src.connector == "sql" and src.location.startswith("sqlite:///{data_dir}/")
        assert "FROM ly_building" in src.options["query"]
    with fresh_db.session() as s:
        run = load_source(s, "jd_buildings", data_dir=data)
        assert run.status == "ok" and run.n_new == summary.rows["jd_buildings"] == 3
        assert run.file.startswith("sqlite:///") and "jd_street_offices.sqlite" in run.file
    with fresh_db.session() as s:
        recs = s.scalars(select(Record).where(Record.source_code == "jd_buildings")
                         .order_by(Record.source_key)).all()
        assert [r.source_key for r in recs] == [r[0] for r in _sqlite_rows(data / SOURCE_FILES["jd_buildings"])]
        assert all(r.name and r.raw["楼宇编号"] == r.source_key for r in recs)
    con = sqlite3.connect(data / SOURCE_FILES["jd_buildings"])
    con.execute(f"UPDATE {STREET_DB_TABLE} SET wy_dh = '027-66668888' WHERE ly_bh = ?",
                (recs[0].source_key,))
    con.commit()
    con.close()
    with fresh_db.session() as s:
        run = load_source(s, "jd_buildings", data_dir=data)
        assert (run.n_changed, run.n_unchanged, run.n_new) == (1, 2, 0)
        rec = s.scalars(select(Record).where(Record.source_key == recs[0].source_key)).one()
        assert rec.phone and "66668888" in rec.phone
