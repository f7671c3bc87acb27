"""Load, validate and sync the catalogue: departments (departments.csv) and the three-level
responsibility list (matters.yaml).

The files live in ``get_settings().catalog_dir`` (env ``JIEDAO_CATALOG_DIR``) so a district can
point to its own edited copy. ``load_catalog`` is pure (no database); ``sync_catalog`` mirrors
the files into the database inside the caller's transaction, all or nothing.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, inspect, select
from sqlalchemy.orm import Session

from jiedao.catalog.calendar import Sla, parse_sla
from jiedao.errors import NotFound, Problem, ValidationError

URGENCIES = ("紧急", "较急", "一般")
DEFAULT_SLA = {"紧急": "2h", "较急": "1wd", "一般": "5wd"}
KINDS = ("district", "utility", "street")
LEVELS = ("district", "street")
STREET_OFFICE_GENERIC = "JD"
DEPT_COLUMNS = ("code", "name", "kind", "typical_matters")
MATTER_FIELDS = {"code", "level1", "level2", "name", "main", "co", "level", "sla", "keywords",
                 "examples", "description"}
_DEPT_CODE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,19}$")
_MATTER_CODE_RE = re.compile(r"^[A-Za-z0-9_-]{1,20}$")
_STREET_OFFICE_RE = re.compile(r"^JD\d+$")
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: 10x faster
_FIELD_LABELS = {"level1": "一级分类", "level2": "二级分类", "name": "事项名称"}


def street_office_code(street_code: str) -> str:
    """Department code of the office of a street: ``"JD" + street code``."""
    return f"{STREET_OFFICE_GENERIC}{street_code}"


def street_office_name(street_name: str) -> str:
    """Department name of the office of a street: ``"<街道名>办事处"``."""
    return f"{street_name}办事处"


@dataclass(frozen=True)
class DepartmentSpec:
    """One row of departments.csv."""

    code: str
    name: str
    kind: str
    typical_matters: str = ""
    row: int | None = None

    @property
    def typical_list(self) -> list[str]:
        return [t for t in re.split(r"[、,，;；]", self.typical_matters) if t.strip()]


@dataclass(frozen=True)
class MatterSpec:
    """One matter (三级事项) of matters.yaml, with defaults applied."""

    code: str
    level1: str
    level2: str
    name: str
    main: str
    co: tuple[str, ...]
    level: str
    sla: dict[str, Sla]
    keywords: tuple[str, ...]
    examples: tuple[str, ...]
    description: str = ""
    line: int | None = None

    @property
    def path(self) -> str:
        """``一级 / 二级 / 三级`` as one text."""
        return f"{self.level1} / {self.level2} / {self.name}"

    def sla_specs(self) -> dict[str, str]:
        """SLA as urgency → spec text, in urgency order."""
        return {u: str(self.sla[u]) for u in URGENCIES}


@dataclass
class Catalog:
    """The validated catalogue in memory, with lookups."""

    departments: list[DepartmentSpec]
    matters: list[MatterSpec]
    source_dir: Path | None = None
    by_dept: dict[str, DepartmentSpec] = field(init=False, repr=False)
    by_code: dict[str, MatterSpec] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.by_dept = {d.code: d for d in self.departments}
        self.by_code = {m.code: m for m in self.matters}

    def department(self, code: str) -> DepartmentSpec:
        try:
            return self.by_dept[code]
        except KeyError:
            raise NotFound(f"部门 {code} 不存在") from None

    def matter(self, code: str) -> MatterSpec:
        try:
            return self.by_code[code]
        except KeyError:
            raise NotFound(f"事项 {code} 不存在") from None

    def matters_for_department(self, code: str, include_co: bool = True) -> list[MatterSpec]:
        """Matters the department leads (主办), plus those it co-handles when ``include_co``."""
        return [m for m in self.matters if m.main == code or (include_co and code in m.co)]

    def sla_for(self, matter_code: str, urgency: str) -> Sla:
        """The SLA of a matter for an urgency (紧急 / 较急 / 一般)."""
        if urgency not in URGENCIES:
            raise ValidationError(Problem(
                f"未知紧急程度 {urgency!r}，应为 {' / '.join(URGENCIES)}", field="urgency"))
        return self.matter(matter_code).sla[urgency]

    def level1_names(self) -> list[str]:
        return list(dict.fromkeys(m.level1 for m in self.matters))

    def tree(self) -> dict[str, dict[str, list[MatterSpec]]]:
        """level1 → level2 → matters, in file order."""
        out: dict[str, dict[str, list[MatterSpec]]] = {}
        for m in self.matters:
            out.setdefault(m.level1, {}).setdefault(m.level2, []).append(m)
        return out

    def counts(self) -> dict[str, Any]:
        """Counts per level1 and per department (主办 / 协办), for reports."""
        per_l1 = Counter(m.level1 for m in self.matters)
        main = Counter(m.main for m in self.matters)
        co = Counter(c for m in self.matters for c in m.co)
        return {
            "departments": len(self.departments),
            "matters": len(self.matters),
            "level1": dict(per_l1),
            "main": {d.code: main.get(d.code, 0) for d in self.departments},
            "co": {d.code: co.get(d.code, 0) for d in self.departments},
        }


# ---- departments.csv --------------------------------------------------------------------
def parse_departments(text: str, source: str = "departments.csv") -> tuple[list[DepartmentSpec], list[Problem]]:
    """Parse departments.csv text; returns (departments, problems)."""
    problems: list[Problem] = []
    out: list[DepartmentSpec] = []
    text = text.lstrip("\ufeff")
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        return [], [Problem("文件为空，缺少表头 code,name,kind,typical_matters", source=source, row=1)]
    missing = [c for c in DEPT_COLUMNS if c not in header]
    if missing:
        return [], [Problem(f"表头缺少列 {', '.join(missing)}（应为 {','.join(DEPT_COLUMNS)}）",
                            source=source, row=1)]
    idx = {c: header.index(c) for c in DEPT_COLUMNS}
    seen_code: dict[str, int] = {}
    seen_name: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            problems.append(Problem(f"列数 {len(row)} 与表头 {len(header)} 不一致（文本含逗号请加引号）",
                                    source=source, row=line))
            continue
        rec = {c: row[i].strip() for c, i in idx.items()}
        bad = False
        code, name, kind = rec["code"], rec["name"], rec["kind"]
        if not code:
            problems.append(Problem("部门编码为空", source=source, row=line, field="code"))
            bad = True
        elif not _DEPT_CODE_RE.match(code):
            problems.append(Problem(f"部门编码 {code!r} 不合法：字母开头，字母数字，不超过20位",
                                    source=source, row=line, field="code"))
            bad = True
        elif _STREET_OFFICE_RE.match(code):
            problems.append(Problem(f"部门编码 {code!r} 是街道办事处保留格式（JD+街道编码，由系统按街道自动生成）",
                                    source=source, row=line, field="code"))
            bad = True
        elif code in seen_code:
            problems.append(Problem(f"部门编码 {code} 重复（第{seen_code[code]}行已有）",
                                    source=source, row=line, field="code"))
            bad = True
        if not name:
            problems.append(Problem("部门名称为空", source=source, row=line, field="name"))
            bad = True
        elif len(name) > 100:
            problems.append(Problem("部门名称超过100字", source=source, row=line, field="name"))
            bad = True
        elif name in seen_name:
            problems.append(Problem(f"部门名称 {name} 重复（第{seen_name[name]}行已有）",
                                    source=source, row=line, field="name"))
            bad = True
        if kind not in KINDS:
            problems.append(Problem(f"部门类型 {kind!r} 不合法，应为 {' / '.join(KINDS)}",
                                    source=source, row=line, field="kind"))
            bad = True
        if code:
            seen_code.setdefault(code, line)
        if name:
            seen_name.setdefault(name, line)
        if not bad:
            out.append(DepartmentSpec(code, name, kind, rec["typical_matters"], row=line))
    if not out and not problems:
        problems.append(Problem("没有任何部门", source=source, row=2))
    return out, problems


# ---- matters.yaml -----------------------------------------------------------------------
class _Lines:
    """Line numbers of matters and their fields, from the YAML node tree."""

    def __init__(self, root: yaml.Node | None):
        self.matter: list[int] = []
        self.fields: list[dict[str, int]] = []
        self.dup_keys: list[tuple[int, str]] = []  # (line, key) of repeated mapping keys
        self.defaults: dict[str, int] = {}
        if isinstance(root, yaml.MappingNode):
            self._dups(root)
            for k, v in root.value:
                if k.value == "matters" and isinstance(v, yaml.SequenceNode):
                    for item in v.value:
                        self.matter.append(item.start_mark.line + 1)
                        f = {}
                        if isinstance(item, yaml.MappingNode):
                            for fk, fv in item.value:
                                f[str(fk.value)] = fk.start_mark.line + 1
                                if isinstance(fv, yaml.MappingNode):
                                    for sk, _sv in fv.value:
                                        f[f"{fk.value}.{sk.value}"] = sk.start_mark.line + 1
                        self.fields.append(f)
                elif k.value == "defaults" and isinstance(v, yaml.MappingNode):
                    for dk, dv in v.value:
                        self.defaults[str(dk.value)] = dk.start_mark.line + 1
                        if isinstance(dv, yaml.MappingNode):
                            for sk, _ in dv.value:
                                self.defaults[f"{dk.value}.{sk.value}"] = sk.start_mark.line + 1

    def _dups(self, node: yaml.Node) -> None:
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for k, v in node.value:
                key = getattr(k, "value", None)
                if isinstance(key, str):
                    if key in seen:
                        self.dup_keys.append((k.start_mark.line + 1, key))
                    seen.add(key)
                self._dups(v)
        elif isinstance(node, yaml.SequenceNode):
            for v in node.value:
                self._dups(v)

    def line(self, i: int, fname: str | None = None) -> int | None:
        if i >= len(self.matter):
            return None
        if fname and fname in self.fields[i]:
            return self.fields[i][fname]
        return self.matter[i]


def _str_list(value, min_len: int) -> tuple[list[str] | None, str | None]:
    if value is None:
        return None, "缺少"
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return None, "应为文本列表"
    # A bare number such as 996 or 12345 is read by YAML as a number: take it as text.
    items = [str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
             for v in value]
    items = [v.strip() if isinstance(v, str) else v for v in items]
    if any(not isinstance(v, str) or not v for v in items):
        return None, "列表中每一项都应为非空文本"
    items = list(dict.fromkeys(items))
    if len(items) < min_len:
        return None, f"至少需要 {min_len} 项（去重后只有 {len(items)} 项）"
    return items, None


def _parse_sla_map(raw, where: str, report) -> dict[str, Sla] | None:
    """Parse an urgency → spec mapping; report(problem_message, subfield) on errors."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        report(f"{where}时限应为 紧急/较急/一般 → 时限 的映射", None)
        return None
    out: dict[str, Sla] = {}
    ok = True
    for k, v in raw.items():
        if k not in URGENCIES:
            report(f"{where}未知紧急程度 {k!r}，应为 {' / '.join(URGENCIES)}", str(k))
            ok = False
            continue
        try:
            out[k] = parse_sla(v)
        except ValidationError as e:
            report(f"{where}{k}: {e.problems[0].message}", str(k))
            ok = False
    return out if ok else None


def parse_matters(text: str, dept_codes: set[str] | None, source: str = "matters.yaml"
                  ) -> tuple[list[MatterSpec], list[Problem]]:
    """Parse matters.yaml text; ``dept_codes`` are the known departments (None: skip check)."""
    problems: list[Problem] = []
    try:
        loader = _SafeLoader(text)
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        return [], [Problem(f"YAML 语法错误：{getattr(e, 'problem', None) or e}", source=source,
                            row=mark.line + 1 if mark else None)]
    lines = _Lines(root)
    for line, key in lines.dup_keys:
        problems.append(Problem(f"字段 {key} 在同一处重复出现", source=source, row=line, field=key))
    if not isinstance(data, dict) or not isinstance(data.get("matters"), list):
        problems.append(Problem("文件应含 matters: 事项列表（可选 defaults:）", source=source, row=1,
                                field="matters"))
        return [], problems
    for key in sorted(set(data) - {"defaults", "matters"}, key=str):
        problems.append(Problem(f"未知顶层字段 {key!r}", source=source, field=str(key)))

    defaults = data.get("defaults") or {}
    default_sla: dict[str, Sla] = {}
    if not isinstance(defaults, dict) or set(defaults) - {"sla"}:
        problems.append(Problem("defaults 只能包含 sla", source=source, row=lines.defaults.get("sla"),
                                field="defaults"))
    else:
        def report_default(msg, sub):
            problems.append(Problem(msg, source=source, field="defaults.sla" + (f".{sub}" if sub else ""),
                                    row=lines.defaults.get(f"sla.{sub}", lines.defaults.get("sla"))))
        default_sla = _parse_sla_map(defaults.get("sla"), "默认", report_default) or {}

    out: list[MatterSpec] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(data["matters"]):
        n = i + 1
        code = raw.get("code") if isinstance(raw, dict) else None
        label = f"第{n}条事项" + (f"（{code}）" if code else "")
        errors_before = len(problems)

        def bad(msg, fname, _i=i, _label=label):
            problems.append(Problem(f"{_label}: {msg}", source=source,
                                    row=lines.line(_i, fname), field=fname))

        if not isinstance(raw, dict):
            bad("应为键值映射（code, level1, level2, name, main, …）", None)
            continue
        for key in sorted(set(raw) - MATTER_FIELDS, key=str):
            bad(f"未知字段 {key!r}（可用字段：{', '.join(sorted(MATTER_FIELDS))}）", str(key))
        # code
        if not isinstance(code, str) or not code.strip():
            bad("缺少事项编码", "code")
        elif not _MATTER_CODE_RE.match(code):
            bad(f"事项编码 {code!r} 不合法（字母、数字、-、_，不超过20位）", "code")
        elif code in seen:
            bad(f"事项编码 {code} 重复（第{seen[code]}条事项已使用）", "code")
        else:
            seen[code] = n
        # names
        for fname, limit in (("level1", 50), ("level2", 50), ("name", 100)):
            v = raw.get(fname)
            if not isinstance(v, str) or not v.strip():
                bad(f"缺少{_FIELD_LABELS[fname]} {fname}", fname)
            elif len(v) > limit:
                bad(f"超过{limit}字", fname)
        # departments
        main = raw.get("main")
        if not isinstance(main, str) or not main.strip():
            bad("缺少主办部门 main", "main")
        elif dept_codes is not None and main not in dept_codes:
            bad(f"主办部门 {main} 不在 departments.csv 中", "main")
        co_raw = raw.get("co") or []
        if isinstance(co_raw, str):
            co_raw = [co_raw]
        co: list[str] = []
        if not isinstance(co_raw, list):
            bad("协办部门 co 应为部门编码列表", "co")
        else:
            for c in co_raw:
                if not isinstance(c, str) or not c.strip():
                    bad(f"协办部门编码 {c!r} 不合法", "co")
                elif dept_codes is not None and c not in dept_codes:
                    bad(f"协办部门 {c} 不在 departments.csv 中", "co")
                elif c == main:
                    bad(f"协办部门 {c} 与主办部门相同", "co")
                elif c in co:
                    bad(f"协办部门 {c} 重复", "co")
                else:
                    co.append(c)
        # handling level
        level = raw.get("level")
        if level not in LEVELS:
            bad(f"处理层级 level 为 {level!r}，应为 district（区级部门办理）或 street（属地街道办理）",
                "level")
        elif level == "district" and main == STREET_OFFICE_GENERIC:
            bad("主办为街道办事处（JD）时，处理层级 level 应为 street", "level")
        # SLA
        def report_sla(msg, sub, _bad=bad):
            _bad(msg, "sla" + (f".{sub}" if sub else ""))

        own = _parse_sla_map(raw.get("sla"), "", report_sla)
        sla: dict[str, Sla] = {}
        if own is not None:
            sla = {**default_sla, **own}
            missing = [u for u in URGENCIES if u not in sla]
            if missing:
                bad(f"缺少时限：{', '.join(missing)}（在事项 sla 或 defaults.sla 中设置）", "sla")
        # keywords, examples
        keywords, err = _str_list(raw.get("keywords"), 1)
        if err:
            bad(f"关键词 keywords {err}", "keywords")
        examples, err = _str_list(raw.get("examples"), 2)
        if err:
            bad(f"诉求示例 examples {err}", "examples")
        desc = raw.get("description") or ""
        if not isinstance(desc, str):
            bad("说明 description 应为文本", "description")
        if len(problems) == errors_before:
            out.append(MatterSpec(
                code=code, level1=raw["level1"].strip(), level2=raw["level2"].strip(),
                name=raw["name"].strip(), main=main, co=tuple(co), level=level, sla=sla,
                keywords=tuple(keywords), examples=tuple(examples), description=desc.strip(),
                line=lines.line(i)))
    if not data["matters"]:
        problems.append(Problem("matters 列表为空", source=source, field="matters"))
    return out, problems


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValidationError(Problem("文件不存在", source=str(path))) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValidationError(Problem(f"无法读取（需 UTF-8 编码）：{e}", source=str(path))) from None


def catalog_dir_or_default(catalog_dir: str | Path | None) -> Path:
    if catalog_dir is None:
        from jiedao.config import get_settings

        catalog_dir = get_settings().catalog_dir
    return Path(catalog_dir)


def load_catalog(catalog_dir: str | Path | None = None) -> Catalog:
    """Read and validate departments.csv and matters.yaml; raise ValidationError listing every
    problem found (file, line, field). Pure: touches no database."""
    d = catalog_dir_or_default(catalog_dir)
    depts, problems = parse_departments(_read(d / "departments.csv"))
    # Only check references against a department list that parsed completely: otherwise a
    # bad CSV row would also show up as "unknown department" in every matter using it.
    codes = {x.code for x in depts} if not problems else None
    matters, mproblems = parse_matters(_read(d / "matters.yaml"), codes)
    problems += mproblems
    if problems:
        raise ValidationError(problems)
    return Catalog(departments=depts, matters=matters, source_dir=d)


# ---- database sync ----------------------------------------------------------------------
def _references(session: Session, table_name: str, codes: set[str], skip: set[str]) -> list[Problem]:
    """Rows in other tables (known to the metadata) that still point at ``codes``."""
    from jiedao.db import Base, all_models

    all_models()
    problems = []
    if not codes:
        return problems
    present = set(inspect(session.connection()).get_table_names())
    for table in Base.metadata.sorted_tables:
        if table.name in skip or table.name not in present:
            continue
        for fk in table.foreign_keys:
            if fk.column.table.name != table_name:
                continue
            col = fk.parent
            rows = session.execute(
                select(col, func.count()).where(col.in_(sorted(codes))).group_by(col)).all()
            for code, n in rows:
                problems.append(Problem(
                    f"{code} 仍被 {table.name}.{col.name} 的 {n} 条记录引用，不能从清单删除；"
                    f"请保留它（可改名称、分类）或先处理这些记录", source=table_name, field=code))
    return problems


def sync_catalog(session: Session, catalog_dir: str | Path | None = None) -> dict:
    """Mirror the catalogue files into the database within the caller's transaction.

    Departments from departments.csv, one street office per geo_street row (code "JD"+street
    code, kind street, name "<街道名>办事处"), matters and their co-handlers. Rows that vanished
    from the files are deleted; those still referenced elsewhere make the sync fail. Raises
    ValidationError before writing anything when the files (or references) are wrong.
    Returns counts: departments, street_offices, matters, cohandlers, added/updated/removed.
    """
    from jiedao.catalog.models import Department, Matter, MatterCoHandler
    from jiedao.geo.models import Street

    cat = load_catalog(catalog_dir)
    generic = cat.by_dept.get(STREET_OFFICE_GENERIC)
    streets = session.scalars(select(Street).order_by(Street.code)).all()

    want_depts: dict[str, dict] = {
        d.code: {"name": d.name, "kind": d.kind, "street_code": None,
                 "typical_matters": d.typical_matters} for d in cat.departments}
    problems: list[Problem] = []
    names = {v["name"]: k for k, v in want_depts.items()}
    for st in streets:
        code, name = street_office_code(st.code), street_office_name(st.name)
        if name in names:
            problems.append(Problem(f"街道办事处名称 {name} 与部门 {names[name]} 重名",
                                    source="geo_street", row=None, field=st.code))
        names[name] = code
        want_depts[code] = {"name": name, "kind": "street", "street_code": st.code,
                            "typical_matters": generic.typical_matters if generic else ""}

    existing_depts = {d.code: d for d in session.scalars(select(Department))}
    existing_matters = {m.code: m for m in session.scalars(select(Matter))}
    gone_matters = set(existing_matters) - set(cat.by_code)
    gone_depts = set(existing_depts) - set(want_depts)
    problems += _references(session, "catalog_matter", gone_matters, {"catalog_matter_cohandler"})
    problems += _references(session, "catalog_department", gone_depts,
                            {"catalog_matter", "catalog_matter_cohandler"})
    if problems:
        raise ValidationError(problems)

    summary = {"departments": len(cat.departments), "street_offices": len(streets),
               "matters": len(cat.matters), "cohandlers": sum(len(m.co) for m in cat.matters),
               "departments_added": 0, "departments_updated": 0, "departments_removed": 0,
               "matters_added": 0, "matters_updated": 0, "matters_removed": 0}

    # 1. Departments. Names are unique, so park every name that changes (or leaves) under a
    #    temporary one first; then write the final names.
    parked = False
    for code, row in existing_depts.items():
        want = want_depts.get(code)
        if want is None or want["name"] != row.name:
            row.name = f"~{code}~"
            parked = True
    if parked:
        session.flush()
    for code, want in want_depts.items():
        row = existing_depts.get(code)
        if row is None:
            session.add(Department(code=code, **want))
            summary["departments_added"] += 1
        else:
            changed = any(getattr(row, k) != v for k, v in want.items())
            for k, v in want.items():
                setattr(row, k, v)
            summary["departments_updated"] += changed
    session.flush()

    # 2. Matters and co-handlers.
    for m in cat.matters:
        values = {"level1": m.level1, "level2": m.level2, "name": m.name,
                  "main_department_code": m.main, "handling_level": m.level,
                  "sla": m.sla_specs(), "keywords": list(m.keywords),
                  "examples": list(m.examples), "description": m.description}
        row = existing_matters.get(m.code)
        if row is None:
            row = Matter(code=m.code, **values)
            row.co_handlers = [MatterCoHandler(department_code=c) for c in m.co]
            session.add(row)
            summary["matters_added"] += 1
            continue
        changed = any(getattr(row, k) != v for k, v in values.items())
        for k, v in values.items():
            setattr(row, k, v)
        have = {c.department_code: c for c in row.co_handlers}
        if set(have) != set(m.co):
            changed = True
            row.co_handlers = [have.get(c) or MatterCoHandler(department_code=c) for c in m.co]
        summary["matters_updated"] += changed
    session.flush()

    # 3. What vanished: matters first (their co-handlers go with them), then departments.
    for code in sorted(gone_matters):
        session.delete(existing_matters[code])
        summary["matters_removed"] += 1
    session.flush()
    for code in sorted(gone_depts):
        session.delete(existing_depts[code])
        summary["departments_removed"] += 1
    session.flush()
    return summary
