"""The registry of source ledgers (``hub/data/sources.yaml``) and their column mappings
(``hub/data/mappings/<source>.yaml``), both files a district's data steward edits.

``sync_sources`` validates the whole registry (every problem named by file, entry and field)
and upserts ``hub_source``; nothing is written when anything is wrong.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from jiedao.errors import NotFound, Problem, ValidationError
from jiedao.hub.models import CONNECTORS, ENTITY_TYPES, Source
from jiedao.hub.standardise import STD_FIELDS

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_SOURCES = DATA_DIR / "sources.yaml"
DEFAULT_MAPPINGS = DATA_DIR / "mappings"
PARSER_TYPES = ("text", "date", "number", "int")
_CODE_RE = re.compile(r"^[a-z][a-z0-9_]{1,39}$")
_SOURCE_KEYS = {"code", "name", "department", "entity_type", "rhythm", "connector", "location",
                "mapping", "priority", "options", "description"}


def default_data_dir() -> Path:
    """Where ledger files live: ``$JIEDAO_HUB_DATA_DIR`` or ``<JIEDAO_HOME>/hub/ledgers``."""
    env = os.environ.get("JIEDAO_HUB_DATA_DIR")
    if env:
        return Path(env).resolve()
    from jiedao.config import get_settings

    return get_settings().home / "hub" / "ledgers"


def _load_yaml(path: Path, what: str):
    if not path.is_file():
        raise ValidationError(Problem(f"{what}文件不存在", source=str(path)))
    try:
        with path.open(encoding="utf-8") as f:
            return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ValidationError(Problem(f"YAML 格式错误：{getattr(e, 'problem', e)}", source=str(path),
                                      row=mark.line + 1 if mark else None)) from None
    except UnicodeDecodeError:
        raise ValidationError(Problem("文件不是 UTF-8 编码", source=str(path))) from None


# --------------------------------------------------------------------------- mappings


@dataclass
class Mapping:
    """How one source's columns feed the standard fields.

    ``columns``: source column → standard field (``name``, ``credit_code``, ``reg_no``,
    ``legal_rep``, ``phone``, ``address``, ``industry_code``, ``established``, ``status``) or
    ``extra.<name>``; ``key``: the column(s) identifying a row across loads; ``parsers``:
    per-field options (``{formats: [...]}`` for dates, ``{type: number}`` for extras);
    ``required``: standard fields a row must have to be loaded.
    """

    columns: dict[str, str]
    key: list[str]
    parsers: dict[str, dict] = field(default_factory=dict)
    required: list[str] = field(default_factory=lambda: ["name"])
    path: str | None = None
    fingerprint: str = ""

    @property
    def needed_columns(self) -> list[str]:
        """Every source column the mapping names (mapped columns, then key columns)."""
        return list(dict.fromkeys([*self.columns, *self.key]))

    @classmethod
    def from_dict(cls, data, path: str | None = None) -> Mapping:
        """Validate a mapping document; ValidationError names the file and field."""
        src = path or "mapping"
        probs: list[Problem] = []
        if not isinstance(data, dict):
            raise ValidationError(Problem("映射文件应为 YAML 字典（key / columns / parsers）", source=src))
        unknown = set(data) - {"key", "columns", "parsers", "required", "description"}
        for k in sorted(unknown):
            probs.append(Problem(f"未知的配置项 {k}", source=src, field=k))
        cols = data.get("columns")
        if not isinstance(cols, dict) or not cols:
            probs.append(Problem("columns 应为非空字典：源列名 → 标准字段", source=src, field="columns"))
            cols = {}
        columns: dict[str, str] = {}
        targets: dict[str, str] = {}
        for col, target in cols.items():
            col = str(col).strip()
            t = str(target).strip() if target is not None else ""
            if not (t in STD_FIELDS or (t.startswith("extra.") and len(t) > 6)):
                probs.append(Problem(f"列“{col}”映射到未知字段 {t or '(空)'}；可用：{', '.join(STD_FIELDS)} 或 extra.名称",
                                     source=src, field=col))
                continue
            if t in targets and not t.startswith("extra."):
                probs.append(Problem(f"列“{col}”与“{targets[t]}”都映射到 {t}", source=src, field=col))
                continue
            targets[t] = col
            columns[col] = t
        key = data.get("key")
        if isinstance(key, str):
            key = [key]
        if not isinstance(key, list) or not key or not all(isinstance(k, str | int) for k in key):
            probs.append(Problem("key 应为标识一行的列名（或列名列表）", source=src, field="key"))
            key = []
        key = [str(k).strip() for k in key]
        parsers = data.get("parsers") or {}
        if not isinstance(parsers, dict):
            probs.append(Problem("parsers 应为字典", source=src, field="parsers"))
            parsers = {}
        clean_parsers: dict[str, dict] = {}
        for f, spec in parsers.items():
            if f not in targets:
                probs.append(Problem(f"parsers 中的字段 {f} 没有被任何列映射", source=src, field=f))
                continue
            if not isinstance(spec, dict):
                probs.append(Problem("解析设置应为字典，如 {formats: ['%Y年%m月%d日']}", source=src, field=f))
                continue
            typ = spec.get("type", "text")
            if typ not in PARSER_TYPES:
                probs.append(Problem(f"未知的解析类型 {typ}；可用：{', '.join(PARSER_TYPES)}",
                                     source=src, field=f))
            fmts = spec.get("formats", [])
            if not isinstance(fmts, list) or not all(isinstance(x, str) for x in fmts):
                probs.append(Problem("formats 应为 strptime 格式列表", source=src, field=f))
            clean_parsers[f] = dict(spec)
        required = data.get("required", ["name"])
        if isinstance(required, str):
            required = [required]
        if not isinstance(required, list):
            probs.append(Problem("required 应为字段列表", source=src, field="required"))
            required = []
        for f in required:
            if f not in STD_FIELDS:
                probs.append(Problem(f"required 中的未知字段 {f}", source=src, field="required"))
            elif f not in targets:
                probs.append(Problem(f"必填字段 {f} 没有映射到任何列", source=src, field="required"))
        if probs:
            raise ValidationError(probs)
        fp = hashlib.blake2b(repr((sorted(columns.items()), key, sorted(
            (k, sorted(v.items(), key=str)) for k, v in clean_parsers.items()), required)).encode(),
            digest_size=8).hexdigest()
        return cls(columns=columns, key=key, parsers=clean_parsers, required=list(required),
                   path=path, fingerprint=fp)

    @classmethod
    def load(cls, path: str | Path) -> Mapping:
        """Read and validate a mapping file."""
        p = Path(path)
        return cls.from_dict(_load_yaml(p, "映射"), str(p))


def mapping_path(mapping: str, mappings_dir: Path | None = None) -> Path:
    """The mapping file a source names (relative names live in the mappings folder)."""
    p = Path(mapping)
    return p if p.is_absolute() else (mappings_dir or DEFAULT_MAPPINGS) / p


def load_mapping(source: Source) -> Mapping:
    """The validated mapping of a registered source."""
    return Mapping.load(mapping_path(source.mapping))


# --------------------------------------------------------------------------- registry


@dataclass
class SourceSpec:
    code: str
    name: str
    department_code: str
    entity_type: str
    rhythm: str
    connector: str
    location: str
    mapping: str
    priority: int
    options: dict
    description: str


def read_sources(path: str | Path | None = None, department_codes: set[str] | None = None
                 ) -> list[SourceSpec]:
    """Parse and validate a sources.yaml; every problem is named by entry (row) and field."""
    p = Path(path) if path else DEFAULT_SOURCES
    src = str(p)
    data = _load_yaml(p, "数据源登记")
    if isinstance(data, dict):
        data = data.get("sources")
    if not isinstance(data, list):
        raise ValidationError(Problem("应为 sources: [ ... ] 列表", source=src))
    mappings_dir = p.parent / "mappings"
    probs: list[Problem] = []
    specs: list[SourceSpec] = []
    seen: dict[str, int] = {}
    for i, e in enumerate(data, start=1):
        if not isinstance(e, dict):
            probs.append(Problem("每个数据源应为字典", source=src, row=i))
            continue

        def bad(msg, f, row=i):
            probs.append(Problem(msg, source=src, row=row, field=f))

        for k in sorted(set(e) - _SOURCE_KEYS):
            bad(f"未知的配置项 {k}", k)
        code = str(e.get("code") or "").strip()
        if not _CODE_RE.match(code):
            bad("code 应为小写字母开头的字母、数字、下划线（2–40位）", "code")
        elif code in seen:
            bad(f"数据源代码 {code} 重复（第{seen[code]}个已使用）", "code")
        else:
            seen[code] = i
        name = str(e.get("name") or "").strip()
        if not name:
            bad("缺少名称 name", "name")
        dept = str(e.get("department") or "").strip()
        if not dept:
            bad("缺少所属部门 department", "department")
        elif department_codes is not None and dept not in department_codes:
            bad(f"部门 {dept} 不在部门目录中", "department")
        et = e.get("entity_type")
        if et not in ENTITY_TYPES:
            bad(f"entity_type 应为 {'/'.join(ENTITY_TYPES)}（实为 {et}）", "entity_type")
        conn = e.get("connector")
        if conn not in CONNECTORS:
            bad(f"不支持的连接方式 {conn}；可用：{', '.join(CONNECTORS)}", "connector")
        loc = str(e.get("location") or "").strip()
        if not loc:
            bad("缺少位置 location（文件路径或 SQLAlchemy URL）", "location")
        options = e.get("options") or {}
        if not isinstance(options, dict):
            bad("options 应为字典", "options")
            options = {}
        if conn == "sql" and not options.get("query"):
            bad("sql 连接需要 options.query", "options")
        if conn == "sql" and loc and "://" not in loc:
            bad("sql 连接的 location 应为 SQLAlchemy URL", "location")
        mp = str(e.get("mapping") or "").strip()
        if not mp:
            bad("缺少映射文件 mapping", "mapping")
        else:
            mpath = mapping_path(mp, mappings_dir)
            if not mpath.is_file():
                bad(f"映射文件不存在：{mpath}", "mapping")
            else:
                try:
                    Mapping.load(mpath)
                except ValidationError as ve:
                    probs.extend(ve.problems)
                if mpath.parent.resolve() != DEFAULT_MAPPINGS.resolve():
                    mp = str(mpath.resolve())
        try:
            priority = int(e.get("priority", 50))
        except (TypeError, ValueError):
            bad("priority 应为整数", "priority")
            priority = 50
        rhythm = str(e.get("rhythm") or "每月").strip()
        specs.append(SourceSpec(code, name, dept, str(et), rhythm, str(conn), loc, mp, priority,
                                dict(options), str(e.get("description") or "")))
    if probs:
        raise ValidationError(probs)
    return specs


def sync_sources(session: Session, path: str | Path | None = None) -> dict:
    """Validate the registry file and upsert every source (all or nothing).

    Sources no longer in the file are kept (their records and runs are history) and listed
    under ``not_in_file``. Returns ``{"created": n, "updated": n, "unchanged": n, ...}``.
    """
    from jiedao.catalog.models import Department

    depts = set(session.scalars(select(Department.code)))
    specs = read_sources(path, depts)
    existing = {s.code: s for s in session.scalars(select(Source))}
    out = {"created": 0, "updated": 0, "unchanged": 0, "not_in_file": []}
    from jiedao.clock import now

    for sp in specs:
        vals = {"name": sp.name, "department_code": sp.department_code,
                "entity_type": sp.entity_type, "rhythm": sp.rhythm, "connector": sp.connector,
                "location": sp.location, "mapping": sp.mapping, "priority": sp.priority,
                "options": sp.options, "description": sp.description}
        row = existing.get(sp.code)
        if row is None:
            session.add(Source(code=sp.code, updated_at=now(), **vals))
            out["created"] += 1
        elif any(getattr(row, k) != v for k, v in vals.items()):
            for k, v in vals.items():
                setattr(row, k, v)
            row.updated_at = now()
            out["updated"] += 1
        else:
            out["unchanged"] += 1
    out["not_in_file"] = sorted(set(existing) - {sp.code for sp in specs})
    session.flush()
    return out


def get_source(session: Session, code: str) -> Source:
    src = session.get(Source, code)
    if src is None:
        raise NotFound(f"数据源 {code} 未登记（先运行 jiedao hub sources --sync）")
    return src
