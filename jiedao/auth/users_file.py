"""Import users from a YAML or CSV file, all or nothing.

Columns / keys: username, display_name, role, scope_level, scope_code, password or
password_hash, phone. Every row is validated first and every problem is reported with its
row number (CSV: the line number in the file, the header being line 1; YAML: the entry's
1-based position in the list); only a clean file creates users, in one transaction.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from jiedao.auth import audit, service
from jiedao.auth.models import User
from jiedao.auth.scope import Principal
from jiedao.errors import Problem, ValidationError

FIELDS = ("username", "display_name", "role", "scope_level", "scope_code", "password",
          "password_hash", "phone")


def read_users_file(path: str | Path) -> list[tuple[int, dict]]:
    """Parse the file into (row number, fields) pairs; raise ValidationError if unreadable."""
    path = Path(path)
    src = path.name
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ValidationError(Problem("文件不存在", source=str(path))) from None
    except UnicodeDecodeError:
        raise ValidationError(Problem("文件不是 UTF-8 编码", source=src)) from None
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return _read_yaml(text, src)
    if suffix == ".csv":
        return _read_csv(text, src)
    raise ValidationError(Problem("不支持的文件类型（应为 .yaml/.yml 或 .csv）", source=src))


def _read_yaml(text: str, src: str) -> list[tuple[int, dict]]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValidationError(Problem(f"YAML 格式错误：{e}", source=src)) from None
    if isinstance(data, dict) and "users" in data:
        data = data["users"]
    if data is None:
        data = []
    if not isinstance(data, list):
        raise ValidationError(Problem("YAML 应为用户列表（或含 users: 列表的映射）", source=src))
    rows, problems = [], []
    for i, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            problems.append(Problem("每个用户应为键值映射", source=src, row=i))
            continue
        unknown = sorted(str(k) for k in item if k not in FIELDS)
        if unknown:
            problems.append(Problem(f"未知字段：{', '.join(unknown)}", source=src, row=i))
        rows.append((i, {k: (None if item.get(k) is None else str(item[k])) for k in FIELDS}))
    if problems:
        raise ValidationError(problems)
    return rows


def _read_csv(text: str, src: str) -> list[tuple[int, dict]]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise ValidationError(Problem("CSV 文件为空或缺少表头", source=src, row=1))
    unknown = [h for h in header if h not in FIELDS]
    if unknown:
        raise ValidationError(Problem(f"未知列：{', '.join(unknown)}", source=src, row=1))
    reader.fieldnames = header
    rows, problems = [], []
    for rec in reader:
        line = reader.line_num
        if None in rec:
            problems.append(Problem("列数多于表头（含逗号的值请用双引号括起来）", source=src, row=line))
            continue
        if not any((v or "").strip() for v in rec.values()):
            continue  # blank line
        rows.append((line, {k: (rec.get(k) or "").strip() or None for k in FIELDS}))
    if problems:
        raise ValidationError(problems)
    return rows


def validate_rows(
    session: Session, rows: list[tuple[int, dict]], *, source: str | None = None, update: bool = False
) -> list[Problem]:
    """Every problem of every row: fields, scope, duplicates in the file, clashes with the DB."""
    codes = service.ScopeCodes(session)
    existing = set(session.scalars(select(User.username)))
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for row, f in rows:
        uname = (f.get("username") or "").strip()
        is_update = update and uname in existing
        problems += service.user_problems(f, codes, source=source, row=row, require_password=not is_update)
        if not uname:
            continue
        if uname in seen:
            problems.append(Problem(f"用户名在文件中重复（首次出现于第{seen[uname]}行）：{uname}",
                                    source=source, row=row, field="username"))
        else:
            seen[uname] = row
        if uname in existing and not update:
            problems.append(Problem(f"用户名已存在：{uname}（如需更新请加 --update）",
                                    source=source, row=row, field="username"))
    return problems


def import_users(
    session: Session, path: str | Path, *, update: bool = False, by: Principal | None = None
) -> dict:
    """Validate the whole file, then create (or with ``update`` also change) every user in
    the caller's transaction. Raises ValidationError listing all problems; changes nothing then.
    Returns {"created": n, "updated": n}.
    """
    path = Path(path)
    rows = read_users_file(path)
    problems = validate_rows(session, rows, source=path.name, update=update)
    if problems:
        raise ValidationError(problems)
    codes = service.ScopeCodes(session)
    created = updated = 0
    for _row, f in rows:
        existing = service.get_user(session, f["username"].strip())
        common = dict(
            display_name=f["display_name"], role=f["role"], scope_level=f["scope_level"],
            scope_code=f["scope_code"], phone=f.get("phone"), password=f.get("password"),
            password_hash=f.get("password_hash"), by=by, codes=codes,
        )
        if existing is not None:
            service.update_user(session, existing, **common)
            updated += 1
        else:
            service.create_user(session, username=f["username"], **common)
            created += 1
    audit.record(session, principal=by, action="import", object_type="user_file",
                 object_id=path.name, detail={"created": created, "updated": updated})
    return {"created": created, "updated": updated}
