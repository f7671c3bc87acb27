"""Small ledgers, mappings and a registry in a temporary folder for the hub CORE tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml

from jiedao.hub.standardise import USCC_CHARS, uscc_check_char


def uscc(n: int, division: str = "420199") -> str:
    """A valid credit code numbered ``n`` (91 + division + 9-char body + check)."""
    body = "".join(USCC_CHARS[(n // 31 ** i) % 31] for i in range(9))
    code17 = "91" + division + body
    return code17 + uscc_check_char(code17)


def bad_check(code: str) -> str:
    """The same code with a wrong check character."""
    c = USCC_CHARS[(USCC_CHARS.index(code[17]) + 1) % 31]
    return code[:17] + c


REG_COLUMNS = ["主体身份代码", "统一社会信用代码", "企业名称", "法定代表人", "联系电话", "住所",
               "行业代码", "成立日期", "登记状态", "注册资本（万元）"]

MAPPING = {
    "key": "主体身份代码",
    "columns": {"统一社会信用代码": "credit_code", "企业名称": "name", "法定代表人": "legal_rep",
                "联系电话": "phone", "住所": "address", "行业代码": "industry_code",
                "成立日期": "established", "登记状态": "status",
                "注册资本（万元）": "extra.registered_capital"},
    "parsers": {"extra.registered_capital": {"type": "number"}},
    "required": ["name"],
}


def registry_rows(n: int) -> list[dict]:
    rows = []
    for i in range(1, n + 1):
        rows.append({
            "主体身份代码": f"P{i:06d}", "统一社会信用代码": uscc(i), "企业名称": f"江城第{i}号科技有限公司",
            "法定代表人": f"张{i}", "联系电话": f"1380000{i:04d}", "住所": f"江城市临江区琴台大道{i}号",
            "行业代码": "I6513", "成立日期": f"2015-0{1 + i % 9}-1{i % 10}", "登记状态": "存续",
            "注册资本（万元）": str(100 + i),
        })
    return rows


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None,
              encoding: str = "utf-8") -> Path:
    cols = columns or list(rows[0])
    with path.open("w", encoding=encoding, newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow([r.get(c, "") for c in cols])
    return path


def write_json(path: Path, rows: list[dict], lines: bool = False) -> Path:
    with path.open("w", encoding="utf-8") as f:
        if lines:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        else:
            json.dump(rows, f, ensure_ascii=False, indent=1)
    return path


def write_xlsx(path: Path, rows: list[dict], sheet: str = "Sheet1") -> Path:
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet(sheet)
    cols = list(rows[0])
    ws.append(cols)
    for r in rows:
        ws.append([r.get(c) for c in cols])
    wb.save(path)
    return path


def setup_registry(session, folder: Path, *, connector: str = "csv", location: str = "reg.csv",
                   mapping: dict | None = None, options: dict | None = None,
                   code: str = "reg") -> Path:
    """Departments, one mapping and a sources.yaml registering source ``code``; synced."""
    from jiedao.catalog.models import Department
    from jiedao.hub.sources import sync_sources

    for dcode, name in (("SCJG", "区市场监督管理局"), ("SW", "区税务局")):
        if session.get(Department, dcode) is None:
            session.add(Department(code=dcode, name=name, kind="district"))
    session.flush()
    (folder / "mappings").mkdir(parents=True, exist_ok=True)
    (folder / "mappings" / f"{code}.yaml").write_text(
        yaml.safe_dump(mapping or MAPPING, allow_unicode=True), encoding="utf-8")
    entry = {"code": code, "name": "市场主体登记", "department": "SCJG",
             "entity_type": "enterprise", "rhythm": "每日", "connector": connector,
             "location": location, "mapping": f"{code}.yaml", "priority": 90}
    if options:
        entry["options"] = options
    path = folder / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": [entry]}, allow_unicode=True), encoding="utf-8")
    sync_sources(session, path)
    return path
