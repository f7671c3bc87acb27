"""The shipped catalogue is valid and rich enough; each kind of bad input is named precisely."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pytest

from jiedao.catalog.loader import (
    URGENCIES,
    Catalog,
    load_catalog,
    parse_departments,
    parse_matters,
)
from jiedao.config import PACKAGE_DIR
from jiedao.errors import NotFound, ValidationError

DATA = PACKAGE_DIR / "catalog" / "data"
REFERENCE = Path("/work/shared/reference/departments.csv")


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return load_catalog(DATA)


def test_shipped_catalogue_is_valid_and_broad(cat):
    assert len(cat.matters) >= 90
    used = {m.main for m in cat.matters} | {c for m in cat.matters for c in m.co}
    assert used == {d.code for d in cat.departments}
    mains = {m.main for m in cat.matters}
    assert mains == {d.code for d in cat.departments}, "every department leads some matter"
    for m in cat.matters:
        assert len(m.examples) >= 2, m.code
        assert len(set(m.examples)) == len(m.examples), m.code
        assert len(m.keywords) >= 5, m.code
        assert set(m.sla) == set(URGENCIES), m.code
        assert m.level in ("district", "street")
    examples = [e for m in cat.matters for e in m.examples]
    assert len(examples) == len(set(examples)), "examples are not copied between matters"
    assert len(cat.level1_names()) >= 20
    street_matters = [m for m in cat.matters if m.level == "street"]
    assert len(street_matters) >= 20
    assert {"邻里纠纷", "楼道堆物", "占道经营", "拖欠工资", "燃气泄漏", "停水", "停电"} <= {
        m.name for m in cat.matters}


def test_departments_match_the_reference(cat):
    shipped = list(csv.DictReader((DATA / "departments.csv").open(encoding="utf-8")))
    assert list(shipped[0].keys()) == ["code", "name", "kind", "typical_matters"]
    if REFERENCE.exists():
        ref = list(csv.DictReader(REFERENCE.open(encoding="utf-8")))
        assert [(r["code"], r["name"]) for r in ref] == [(r["code"], r["name"]) for r in shipped]
    assert cat.department("JD").kind == "street"
    assert cat.department("GD").kind == "utility"


def test_lookups(cat):
    m = cat.matter("CG0101")
    assert m.main == "CGJ" and m.level == "street"
    assert str(cat.sla_for("CG0101", "一般")) == "3wd"
    assert str(cat.sla_for("CG0101", "紧急")) == "2h"  # from defaults
    assert str(cat.sla_for("GY0201", "紧急")) == "1h"
    with pytest.raises(ValidationError):
        cat.sla_for("CG0101", "特急")
    with pytest.raises(NotFound):
        cat.matter("XX9999")
    led = cat.matters_for_department("RQ", include_co=False)
    assert led and all(x.main == "RQ" for x in led)
    assert len(cat.matters_for_department("JD")) > len(cat.matters_for_department("JD", include_co=False))
    tree = cat.tree()
    assert "市容环卫" in tree["城乡建设与管理"]
    counts = cat.counts()
    assert sum(counts["level1"].values()) == len(cat.matters)


# ---- defects ------------------------------------------------------------------------------
def _copy(tmp_path: Path) -> Path:
    d = tmp_path / "catalog"
    shutil.copytree(DATA, d)
    return d


def _edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, count), encoding="utf-8")


def _line_of(path: Path, needle: str, after: str | None = None) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    start = 0
    if after:
        start = next(i for i, ln in enumerate(lines) if after in ln)
    return next(i for i, ln in enumerate(lines) if i >= start and needle in ln) + 1


MATTER_DEFECTS = [
    # (description, old, new, expected field, message fragment, code)
    ("unknown main", "    main: CGJ\n    co: [JD]\n    level: street\n    sla: {一般: 3wd}\n    keywords: [占道经营",
     "    main: CGX\n    co: [JD]\n    level: street\n    sla: {一般: 3wd}\n    keywords: [占道经营",
     "main", "CGX", "CG0101"),
    ("unknown co", "co: [ZRZY, JD]", "co: [ZRZY, NOPE]", "co", "NOPE", "CG0201"),
    ("duplicate code", "code: CG0102", "code: CG0101", "code", "重复", "CG0101"),
    ("bad sla spec", "sla: {一般: 3wd}", "sla: {一般: 3 工作日}", "sla.一般", "格式不对", "CG0101"),
    ("unknown urgency", "sla: {一般: 3wd}", "sla: {特急: 3wd}", "sla.特急", "未知紧急程度", "CG0101"),
    ("bad level", "name: 占道经营\n    main: CGJ\n    co: [JD]\n    level: street",
     "name: 占道经营\n    main: CGJ\n    co: [JD]\n    level: city", "level", "district", "CG0101"),
    ("one example", "      - 地铁站C出口一排卖水果的三轮车，早高峰人都挤不过去\n"
                    "      - 学校门口放学时候全是卖炸串的小推车，孩子们围着，车都过不去\n", "",
     "examples", "至少需要 2 项", "CG0101"),
    ("no keywords", "keywords: [占道经营, 摆摊, 流动摊贩, 烧烤摊, 夜市, 占用人行道, 小商贩, 推车卖]",
     "keywords: []", "keywords", "至少需要 1 项", "CG0101"),
    ("unknown field", "name: 占道经营\n", "name: 占道经营\n    keyword: [x]\n", "keyword", "未知字段", "CG0101"),
    ("JD with district level", "main: JD\n    co: [GAFJ]\n    level: street",
     "main: JD\n    co: [GAFJ]\n    level: district", "level", "street", "JC0101"),
]


@pytest.mark.parametrize("desc, old, new, field, fragment, code", MATTER_DEFECTS,
                         ids=[d[0] for d in MATTER_DEFECTS])
def test_matter_defects_are_named(tmp_path, desc, old, new, field, fragment, code):
    d = _copy(tmp_path)
    _edit(d / "matters.yaml", old, new)
    with pytest.raises(ValidationError) as e:
        load_catalog(d)
    probs = e.value.problems
    hit = [p for p in probs if p.field == field and fragment in p.message]
    assert hit, [str(p) for p in probs]
    p = hit[0]
    assert p.source == "matters.yaml"
    assert code in p.message and "条事项" in p.message
    assert isinstance(p.row, int) and p.row > 0
    assert "matters.yaml" in str(e.value) and f"第{p.row}行" in str(e.value)


def test_row_number_points_at_the_field(tmp_path):
    d = _copy(tmp_path)
    _edit(d / "matters.yaml", "co: [ZRZY, JD]", "co: [ZRZY, NOPE]")
    with pytest.raises(ValidationError) as e:
        load_catalog(d)
    [p] = e.value.problems
    assert p.row == _line_of(d / "matters.yaml", "co: [ZRZY, NOPE]")


def test_missing_sla_everywhere(tmp_path):
    d = _copy(tmp_path)
    _edit(d / "matters.yaml", "    一般: 5wd\n", "")  # remove the default 一般
    with pytest.raises(ValidationError) as e:
        load_catalog(d)
    missing = [p for p in e.value.problems if "缺少时限" in p.message]
    # every matter that relied on the default is reported, not just the first one
    assert len(missing) > 50
    assert all(p.field == "sla" and "一般" in p.message for p in missing)


def test_bad_default_sla(tmp_path):
    d = _copy(tmp_path)
    _edit(d / "matters.yaml", "    较急: 1wd\n", "    较急: one day\n")
    with pytest.raises(ValidationError) as e:
        load_catalog(d)
    p = next(p for p in e.value.problems if p.field == "defaults.sla.较急")
    assert p.row == _line_of(d / "matters.yaml", "较急: one day")


def test_all_problems_are_collected(tmp_path):
    d = _copy(tmp_path)
    m = d / "matters.yaml"
    _edit(m, "co: [ZRZY, JD]", "co: [ZRZY, NOPE]")
    _edit(m, "code: CG0102", "code: CG0101")
    _edit(m, "sla: {一般: 3wd}", "sla: {一般: 3}")
    with pytest.raises(ValidationError) as e:
        load_catalog(d)
    assert len(e.value.problems) >= 3


def test_yaml_syntax_error_and_duplicate_keys(tmp_path):
    _, probs = parse_matters("matters:\n  - code: A\n    name: [oops\n", None)
    assert probs and probs[0].row is not None and "YAML" in probs[0].message
    _, probs = parse_matters(
        "matters:\n  - code: A1\n    code: A2\n    level1: a\n    level2: b\n    name: c\n"
        "    main: X\n    level: district\n    sla: {紧急: 2h, 较急: 1wd, 一般: 5wd}\n"
        "    keywords: [k]\n    examples: [e1, e2]\n", {"X"})
    assert [(p.row, p.field) for p in probs] == [(3, "code")]


CSV_DEFECTS = [
    ("duplicate code", "SWJT,水务集团", "SWJ,水务集团", "code", "重复"),
    ("duplicate name", "SWJT,水务集团", "SWJT,区水务和湖泊局", "name", "重复"),
    ("bad kind", "GD,供电公司,utility", "GD,供电公司,company", "kind", "district"),
    ("empty code", "TX,通信运营商", ",通信运营商", "code", "为空"),
    ("reserved street office code", "TX,通信运营商", "JD420199001,通信运营商", "code", "保留"),
]


@pytest.mark.parametrize("desc, old, new, field, fragment", CSV_DEFECTS, ids=[d[0] for d in CSV_DEFECTS])
def test_department_defects_are_named(tmp_path, desc, old, new, field, fragment):
    d = _copy(tmp_path)
    _edit(d / "departments.csv", old, new)
    with pytest.raises(ValidationError) as e:
        load_catalog(d)
    probs = e.value.problems
    hit = [p for p in probs if p.field == field and fragment in p.message]
    assert hit, [str(p) for p in probs]
    assert hit[0].source == "departments.csv"
    assert hit[0].row == _line_of(d / "departments.csv", new)
    # a broken department list is not echoed as "unknown department" in every matter
    assert all(p.source == "departments.csv" for p in probs)


def test_department_header_and_shape():
    _, probs = parse_departments("code,name\nA,甲\n")
    assert probs[0].row == 1 and "kind" in probs[0].message
    _, probs = parse_departments("code,name,kind,typical_matters\nA,甲,district\n")
    assert probs[0].row == 2 and "列数" in probs[0].message
    deps, probs = parse_departments("\ufeffcode,name,kind,typical_matters\nA,甲,district,x、y\n")
    assert not probs and deps[0].typical_list == ["x", "y"]


def test_removed_department_still_used_by_matters(tmp_path):
    d = _copy(tmp_path)
    text = (d / "departments.csv").read_text(encoding="utf-8")
    (d / "departments.csv").write_text(
        "\n".join(ln for ln in text.splitlines() if not ln.startswith("TYJR,")) + "\n", encoding="utf-8")
    with pytest.raises(ValidationError) as e:
        load_catalog(d)
    assert {p.field for p in e.value.problems} == {"main"}
    assert all("TYJR" in p.message for p in e.value.problems)
    assert len(e.value.problems) == 2


def test_missing_file(tmp_path):
    d = _copy(tmp_path)
    (d / "matters.yaml").unlink()
    with pytest.raises(ValidationError) as e:
        load_catalog(d)
    assert re.search("matters.yaml", str(e.value))
