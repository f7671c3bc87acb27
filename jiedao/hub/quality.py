"""Data quality per source ledger, so a steward knows which department's ledger needs fixing.

For every registered source, over its current (not vanished) records:

- **completeness** — share of records with a value, per standard field;
- **validity** — of the values the department filled in, the share that passed the checks
  (credit code check character, 15-digit registration number, dates, phones) and, for
  addresses, the share resolved to a building; invalid values are those the loader blanked
  and noted in ``extra.problems``;
- **duplicates** — records of the same source that belong to the same entity (after linkage;
  before linkage: the same credit code or the same normalised name);
- **match rate** — share of linked records whose entity also has records in another source;
- **conflicts** — golden-record conflicts in which the source's value takes part.

:func:`compute_quality` returns one :class:`SourceQuality` per source; :func:`write_report`
writes them as XLSX (two sheets) or CSV; ``jiedao hub quality --out report.xlsx``.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import Text, and_, case, cast, distinct, func, select
from sqlalchemy.orm import Session

from jiedao.hub.models import Golden, Link, Record, Source

# standard field → (record column, label)
FIELDS: dict[str, tuple[str, str]] = {
    "name": ("name", "名称"),
    "credit_code": ("credit_code", "统一社会信用代码"),
    "reg_no": ("reg_no", "注册号"),
    "legal_rep": ("legal_rep", "法定代表人"),
    "phone": ("phone", "联系电话"),
    "address": ("address_raw", "地址"),
    "industry_code": ("industry_code", "行业代码"),
    "established": ("established", "成立日期"),
    "status": ("status", "状态"),
}
VALIDITY_LABELS = {"credit_code": "信用代码校验", "reg_no": "注册号校验", "established": "日期",
                   "phone": "电话", "address": "地址落到楼栋"}


@dataclass
class SourceQuality:
    """Quality figures of one source (rates in 0..1, None when there is nothing to rate)."""

    code: str
    name: str
    department_code: str
    department_name: str
    entity_type: str
    records: int
    mapped: list[str] = field(default_factory=list)  # standard fields the mapping fills
    completeness: dict[str, float | None] = field(default_factory=dict)
    validity: dict[str, float | None] = field(default_factory=dict)
    invalid: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    duplicate_rate: float | None = None
    linked: int = 0
    matched: int = 0
    match_rate: float | None = None
    conflicts: int = 0
    conflict_rate: float | None = None
    last_run_id: int | None = None
    last_run_at: str | None = None

    @property
    def score(self) -> float | None:
        """One number for ranking ledgers: mean of mapped completeness and validity, minus
        duplicate and conflict rates (0..1, higher is better)."""
        parts = [v for k, v in self.completeness.items() if k in self.mapped and v is not None]
        parts += [v for v in self.validity.values() if v is not None]
        if not parts:
            return None
        s = sum(parts) / len(parts) - (self.duplicate_rate or 0) - (self.conflict_rate or 0)
        return round(max(0.0, min(1.0, s)), 4)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["score"] = self.score
        return d


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def _mapped_fields(src: Source) -> tuple[list[str], dict[str, str]]:
    """(standard fields the mapping fills, source column → standard field)."""
    try:
        from jiedao.hub.sources import load_mapping

        m = load_mapping(src)
        col_to_field = {c: f for c, f in m.columns.items() if not f.startswith("extra.")}
    except Exception:  # a broken mapping file: rate every field
        return list(FIELDS), {}
    return sorted(set(col_to_field.values()) & set(FIELDS), key=list(FIELDS).index), col_to_field


def compute_quality(session: Session, source_code: str | None = None) -> list[SourceQuality]:
    """Quality of every registered source (or just ``source_code``), ordered by code."""
    from jiedao.catalog.models import Department
    from jiedao.hub.models import ImportRun

    srcs = session.scalars(select(Source).order_by(Source.code)).all()
    if source_code:
        srcs = [s for s in srcs if s.code == source_code]
    if not srcs:
        return []
    codes = [s.code for s in srcs]
    depts = dict(session.execute(select(Department.code, Department.name)).all())
    live = and_(Record.vanished.is_(False), Record.source_code.in_(codes))

    # completeness: one pass
    cols = [func.count()]
    for col, _ in FIELDS.values():
        c = getattr(Record, col)
        filled = c.isnot(None) if col == "established" else and_(c.isnot(None), c != "")
        cols.append(func.sum(case((filled, 1), else_=0)))
    cols.append(func.sum(case((and_(Record.address_raw.isnot(None), Record.address_raw != "",
                                    Record.building_code.isnot(None)), 1), else_=0)))
    stats = {row[0]: row[1:] for row in session.execute(
        select(Record.source_code, *cols).where(live).group_by(Record.source_code))}

    # invalid values: records whose loader noted problems (few)
    invalid: dict[str, dict[str, int]] = {c: {} for c in codes}
    colmaps = {s.code: _mapped_fields(s) for s in srcs}
    for code, extra in session.execute(
            select(Record.source_code, Record.extra).where(
                live, cast(Record.extra, Text).like('%"problems"%'))):
        colmap = colmaps[code][1]
        seen = set()
        for prob in (extra or {}).get("problems") or []:
            fld = colmap.get(prob[0], prob[0]) if prob else None
            if fld in FIELDS and fld not in seen:
                seen.add(fld)
                invalid[code][fld] = invalid[code].get(fld, 0) + 1

    # duplicates, linked, matched
    linked = dict(session.execute(
        select(Record.source_code, func.count()).join(Link, Link.record_id == Record.id)
        .where(live).group_by(Record.source_code)).all())
    dup_groups = (select(Record.source_code.label("sc"), func.count().label("n"))
                  .join(Link, Link.record_id == Record.id).where(live)
                  .group_by(Record.source_code, Link.entity_id).having(func.count() > 1).subquery())
    dups = {sc: int(n - g) for sc, n, g in session.execute(
        select(dup_groups.c.sc, func.sum(dup_groups.c.n), func.count()).group_by(dup_groups.c.sc))}
    for code in codes:
        if linked.get(code):
            continue
        # not linked yet: same credit code or same normalised name inside the source
        total = 0
        for col in (Record.credit_code, Record.name_norm):
            g = (select(func.count().label("n")).where(live, Record.source_code == code, col.isnot(None))
                 .group_by(col).having(func.count() > 1).subquery())
            n, k = session.execute(select(func.coalesce(func.sum(g.c.n), 0), func.count()).select_from(g)).one()
            total = max(total, int(n) - int(k))
        dups[code] = total
    multi = (select(Link.entity_id).join(Record, Record.id == Link.record_id)
             .where(Record.vanished.is_(False)).group_by(Link.entity_id)
             .having(func.count(distinct(Record.source_code)) > 1))
    matched = dict(session.execute(
        select(Record.source_code, func.count()).join(Link, Link.record_id == Record.id)
        .where(live, Link.entity_id.in_(multi)).group_by(Record.source_code)).all())

    # conflicts: golden conflicts where the source's value takes part
    conflicts: dict[str, int] = {}
    for src_code, alts in session.execute(
            select(Golden.source_code, Golden.alternatives).where(Golden.conflict.is_(True))):
        involved = {src_code} | {a.get("source_code") for a in (alts or []) if isinstance(a, dict)}
        for c in involved:
            if c:
                conflicts[c] = conflicts.get(c, 0) + 1

    runs = {sc: (rid, at) for sc, rid, at in session.execute(
        select(ImportRun.source_code, func.max(ImportRun.id), func.max(ImportRun.finished_at))
        .where(ImportRun.status == "ok").group_by(ImportRun.source_code))}

    out = []
    for s in srcs:
        row = stats.get(s.code)
        n = int(row[0]) if row else 0
        mapped, _ = colmaps[s.code]
        q = SourceQuality(code=s.code, name=s.name, department_code=s.department_code,
                          department_name=depts.get(s.department_code, s.department_code),
                          entity_type=s.entity_type, records=n, mapped=mapped)
        for i, f in enumerate(FIELDS, start=1):
            q.completeness[f] = _rate(int(row[i] or 0), n) if row else None
        filled = {f: int(row[i] or 0) for i, f in enumerate(FIELDS, start=1)} if row else {}
        for f in ("credit_code", "reg_no", "established", "phone"):
            bad = invalid[s.code].get(f, 0)
            q.invalid[f] = bad
            q.validity[f] = _rate(filled.get(f, 0), filled.get(f, 0) + bad) if f in mapped else None
        if "address" in mapped and row:
            addr = filled.get("address", 0)
            q.invalid["address"] = addr - int(row[len(FIELDS) + 1] or 0)
            q.validity["address"] = _rate(int(row[len(FIELDS) + 1] or 0), addr)
        q.duplicates = dups.get(s.code, 0)
        q.duplicate_rate = _rate(q.duplicates, n)
        q.linked = int(linked.get(s.code, 0))
        q.matched = int(matched.get(s.code, 0))
        q.match_rate = _rate(q.matched, q.linked)
        q.conflicts = conflicts.get(s.code, 0)
        q.conflict_rate = _rate(q.conflicts, n)
        if s.code in runs:
            q.last_run_id = runs[s.code][0]
            q.last_run_at = runs[s.code][1].strftime("%Y-%m-%d %H:%M") if runs[s.code][1] else None
        out.append(q)
    return out


def _pct(v: float | None) -> str:
    return "" if v is None else f"{v * 100:.1f}%"


def report_rows(rows: list[SourceQuality]) -> tuple[list[str], list[list]]:
    """Header and rows of the summary table (one row per source), as in the report."""
    head = ["数据源代码", "台账名称", "所属部门", "记录数", "综合得分"]
    head += [f"完整率·{FIELDS[f][1]}" for f in FIELDS]
    head += [f"有效率·{VALIDITY_LABELS[f]}" for f in VALIDITY_LABELS]
    head += ["源内重复", "重复率", "已关联", "与其他源匹配", "匹配率", "冲突字段数", "冲突率", "最近导入"]
    out = []
    for q in rows:
        r = [q.code, q.name, q.department_name, q.records, _pct(q.score)]
        r += [_pct(q.completeness.get(f)) if f in q.mapped else "未映射" for f in FIELDS]
        r += [_pct(q.validity.get(f)) if q.validity.get(f) is not None else "—" for f in VALIDITY_LABELS]
        r += [q.duplicates, _pct(q.duplicate_rate), q.linked, q.matched, _pct(q.match_rate),
              q.conflicts, _pct(q.conflict_rate), q.last_run_at or ""]
        out.append(r)
    return head, out


def advice(q: SourceQuality) -> list[str]:
    """Short Chinese hints of what the department should fix, worst first."""
    tips: list[tuple[float, str]] = []
    for f in q.mapped:
        v = q.completeness.get(f)
        if v is not None and v < 0.9 and f in ("credit_code", "phone", "address", "legal_rep"):
            tips.append((1 - v, f"{FIELDS[f][1]}缺失 {_pct(1 - v)}"))
    for f, v in q.validity.items():
        if v is not None and v < 0.98:
            tips.append((1 - v, f"{VALIDITY_LABELS[f]}不合格 {q.invalid.get(f, 0)} 条"))
    if q.duplicate_rate and q.duplicate_rate > 0.002:
        tips.append((q.duplicate_rate, f"源内重复 {q.duplicates} 条"))
    if q.conflict_rate and q.conflict_rate > 0.05:
        tips.append((q.conflict_rate, f"与其他部门数据冲突 {q.conflicts} 处"))
    return [t for _, t in sorted(tips, reverse=True)]


def write_report(rows: list[SourceQuality], path: str | Path) -> Path:
    """Write the quality report: ``.xlsx`` (sheets 汇总 and 问题) or ``.csv`` (summary)."""
    path = Path(path)
    head, body = report_rows(rows)
    if path.suffix.lower() == ".csv":
        with path.open("w", encoding="utf-8-sig", newline="") as f:
            w = csv.writer(f)
            w.writerow(head + ["整改建议"])
            for q, r in zip(rows, body, strict=True):
                w.writerow(r + ["；".join(advice(q))])
        return path
    from openpyxl import Workbook
    from openpyxl.styles import Font, PatternFill

    wb = Workbook()
    ws = wb.active
    ws.title = "汇总"
    ws.append(head + ["整改建议"])
    for c in ws[1]:
        c.font = Font(bold=True)
    for q, r in zip(rows, body, strict=True):
        ws.append(r + ["；".join(advice(q))])
        if q.score is not None and q.score < 0.85:
            ws.cell(ws.max_row, 5).fill = PatternFill("solid", fgColor="FFE0E0")
    ws.freeze_panes = "C2"
    ws2 = wb.create_sheet("问题")
    ws2.append(["数据源代码", "台账名称", "所属部门", "问题"])
    for q in rows:
        for tip in advice(q):
            ws2.append([q.code, q.name, q.department_name, tip])
    wb.save(path)
    return path


def register_cli(hub_app) -> None:
    """``jiedao hub quality [--out report.xlsx|.csv] [--source CODE]``."""
    import typer

    @hub_app.command("quality")
    def quality_cmd(
        out: Path = typer.Option(None, "--out", help="报告文件（.xlsx 或 .csv）"),
        source: str = typer.Option(None, "--source", help="只看一个数据源"),
    ) -> None:
        """各数据源质量：完整率、有效率、源内重复、匹配率、冲突。"""
        from rich.console import Console
        from rich.table import Table

        from jiedao.db import get_database

        with get_database().session() as s:
            rows = compute_quality(s, source)
        if not rows:
            typer.echo("没有已登记的数据源。")
            raise typer.Exit(1)
        t = Table(title="数据源质量")
        for h in ("数据源", "部门", "记录数", "得分", "信用代码完整", "信用代码有效", "源内重复", "匹配率",
                  "冲突", "建议"):
            t.add_column(h)
        for q in rows:
            t.add_row(q.name, q.department_name, f"{q.records:,}", _pct(q.score),
                      _pct(q.completeness.get("credit_code")) if "credit_code" in q.mapped else "未映射",
                      _pct(q.validity.get("credit_code")), f"{q.duplicates:,}", _pct(q.match_rate),
                      f"{q.conflicts:,}", "；".join(advice(q)[:2]))
        Console().print(t)
        if out:
            p = write_report(rows, out)
            typer.echo(f"报告已写入 {p}")
