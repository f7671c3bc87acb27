"""Batch import of hotline exports (CSV or XLSX) through the real intake pipeline.

Columns are mapped to intake fields by name (:class:`Mapping`: flags, a small YAML file, or
the built-in Chinese/English header synonyms). Every row is validated first
(:func:`jiedao.cases.service.validate_intake`, phone, dates, external id) and each bad row is
reported with its row number as a person counts it in the spreadsheet (header = row 1) and the
reason. Then:

* all-or-nothing (default): any bad row → :class:`~jiedao.errors.ValidationError` listing
  them all, and nothing is written; otherwise every row goes in ONE transaction;
* ``partial=True``: good rows are imported (committed in chunks), bad rows are written to a
  rejects CSV next to the input (``<name>.rejects.csv``: row, field, reason, then the row).

Each row is taken in by :func:`jiedao.cases.intake.submit` with an idempotency key derived
from the external id (``import:<id>``), or — without an external id column — from a hash of
the row's content, so re-importing the same file creates no duplicates.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from jiedao import clock
from jiedao.cases import service
from jiedao.cases.models import CHANNELS, KINDS
from jiedao.errors import Problem, ValidationError
from jiedao.tables import read_rows

FIELDS = ("text", "received_at", "phone", "name", "location", "channel", "urgency",
          "external_id", "kind", "lon", "lat", "enterprise")
# Header names recognised without a mapping (lower-cased, spaces removed).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "text": ("text", "content", "description", "诉求内容", "诉求描述", "来电内容", "内容", "问题描述",
             "诉求"),
    "received_at": ("received_at", "time", "datetime", "受理时间", "来电时间", "登记时间", "时间",
                    "诉求时间"),
    "phone": ("phone", "mobile", "来电号码", "联系电话", "电话", "手机号", "手机"),
    "name": ("name", "caller", "姓名", "来电人", "诉求人", "联系人"),
    "location": ("location", "location_text", "address", "地址", "诉求地址", "事发地址", "地点",
                 "事发地点"),
    "channel": ("channel", "渠道", "来源", "来源渠道"),
    "urgency": ("urgency", "紧急程度", "缓急程度", "紧急度"),
    "external_id": ("external_id", "id", "工单编号", "工单号", "编号", "热线工单号", "流水号"),
    "kind": ("kind", "类型", "诉求类型"),
    "lon": ("lon", "lng", "longitude", "经度"),
    "lat": ("lat", "latitude", "纬度"),
    "enterprise": ("enterprise", "company", "企业名称", "企业"),
}
CHANNEL_LABELS = {v: k for k, v in CHANNELS.items()} | {"12345": "hotline", "热线": "hotline",
                                                         "网络": "web", "网站": "web"}
KIND_LABELS = {v: k for k, v in KINDS.items()}
DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M",
                "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y%m%d%H%M%S", "%Y-%m-%d", "%Y/%m/%d",
                "%Y年%m月%d日 %H:%M:%S", "%Y年%m月%d日 %H:%M", "%Y年%m月%d日")
MAX_EXTERNAL_ID = 80
CHUNK = 500
EXCEL_EPOCH = datetime(1899, 12, 30)


@dataclass
class Mapping:
    """Which source column feeds each intake field, plus defaults and date format."""

    columns: dict[str, str] = field(default_factory=dict)  # field -> source header
    defaults: dict[str, str] = field(default_factory=dict)  # field -> value when no column
    date_format: str | None = None

    @classmethod
    def from_yaml(cls, path: str | Path) -> Mapping:
        """Read a mapping file: either ``{field: header}`` or ``{columns: {...}, defaults: {...},
        date_format: "..."}``."""
        import yaml

        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
            raise ValidationError(Problem(f"无法读取映射文件：{e}", source=str(p))) from None
        if not isinstance(data, dict):
            raise ValidationError(Problem("映射文件必须是键值对（字段: 列名）", source=str(p)))
        if "columns" in data or "defaults" in data or "date_format" in data:
            cols, defaults, fmt = data.get("columns") or {}, data.get("defaults") or {}, data.get(
                "date_format")
        else:
            cols, defaults, fmt = data, {}, None
        m = cls({str(k): str(v) for k, v in dict(cols).items()},
                {str(k): str(v) for k, v in dict(defaults).items()}, fmt and str(fmt))
        m.check(source=str(p))
        return m

    @classmethod
    def from_pairs(cls, pairs: list[str], base: Mapping | None = None) -> Mapping:
        """Add ``field=header`` pairs (command-line flags) to ``base``."""
        m = Mapping(dict(base.columns), dict(base.defaults), base.date_format) if base else Mapping()
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise ValidationError(Problem(f"映射应写成 字段=列名：{pair!r}", field="map"))
            m.columns[key.strip()] = value.strip()
        m.check()
        return m

    def check(self, source: str | None = None) -> None:
        bad = [k for k in [*self.columns, *self.defaults] if k not in FIELDS]
        if bad:
            raise ValidationError([Problem(f"未知字段 {k!r}，可选：{', '.join(FIELDS)}",
                                           source=source, field=k) for k in bad])


@dataclass
class RowIssue:
    row: int
    field: str | None
    reason: str


@dataclass
class ImportReport:
    """What an import did."""

    source: str
    rows: int = 0
    created: int = 0
    existing: int = 0  # rows whose case was already there (re-import): skipped
    dispatched: int = 0
    rejected: list[RowIssue] = field(default_factory=list)
    rejects_path: Path | None = None
    case_ids: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"source": self.source, "rows": self.rows, "created": self.created,
                "existing": self.existing, "dispatched": self.dispatched,
                "rejected": len(self.rejected),
                "rejects_file": str(self.rejects_path) if self.rejects_path else None}


# ---------------------------------------------------------------- reading


def read_table(path: str | Path, sheet: str | None = None) -> tuple[list[str], Iterator[tuple[int, list]]]:
    """Header and (row number, values) of a CSV (UTF-8/BOM/GB18030) or XLSX file.

    Row numbers count as a spreadsheet does: the header is row 1. Blank rows are skipped.
    XLSX cells keep their types (dates stay datetimes).
    """
    name = str(path)
    rows = read_rows(path, sheet)
    if not rows or not any(v not in (None, "") for v in rows[0]):
        raise ValidationError(Problem("文件为空或缺少表头", source=name, row=1))
    header = ["" if v is None else str(v).strip() for v in rows[0]]

    def body():
        for i, r in enumerate(rows[1:], start=2):
            if any(v not in (None, "") and str(v).strip() for v in r):
                yield i, r

    return header, body()


def resolve_columns(header: list[str], mapping: Mapping, source: str) -> dict[str, int]:
    """field → column index; mapped headers must exist, others are found by synonym."""
    norm = {re.sub(r"\s+", "", h).lower(): i for i, h in enumerate(header) if h}
    out: dict[str, int] = {}
    probs = []
    for fld, col in mapping.columns.items():
        i = norm.get(re.sub(r"\s+", "", col).lower())
        if i is None:
            probs.append(Problem(f"找不到列 {col!r}（表头：{'、'.join(h for h in header if h)}）",
                                 source=source, row=1, field=fld))
        else:
            out[fld] = i
    for fld, names in SYNONYMS.items():
        if fld in out or fld in mapping.defaults:
            continue
        for n in names:
            if n.lower() in norm:
                out[fld] = norm[n.lower()]
                break
    if "text" not in out and not probs:
        probs.append(Problem("缺少诉求内容列：请用 --map text=列名 指定", source=source, row=1,
                             field="text"))
    if probs:
        raise ValidationError(probs)
    return out


# ---------------------------------------------------------------- validation


def parse_datetime(value, fmt: str | None = None) -> datetime:
    """A cell as a naive local datetime (XLSX dates, Excel serials, common text formats)."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=None) if value.tzinfo is None else _local(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if 20000 < value < 80000:  # an Excel serial date exported as a number
            return EXCEL_EPOCH + timedelta(days=float(value))
        raise ValueError(value)
    s = str(value).strip()
    if fmt:
        return datetime.strptime(s, fmt)
    try:
        d = datetime.fromisoformat(s.replace("Z", "+00:00"))
        return d if d.tzinfo is None else _local(d)
    except ValueError:
        pass
    for f in DATE_FORMATS:
        try:
            return datetime.strptime(s, f)
        except ValueError:
            continue
    raise ValueError(s)


def _local(d: datetime) -> datetime:
    from zoneinfo import ZoneInfo

    from jiedao.config import get_settings

    return d.astimezone(ZoneInfo(get_settings().timezone)).replace(tzinfo=None)


@dataclass
class Row:
    """One validated row, ready for intake."""

    row: int
    text: str
    received_at: datetime
    channel: str
    kind: str
    urgency: str | None
    phone: str | None
    name: str | None
    location_text: str | None
    enterprise: str | None
    lon: float | None
    lat: float | None
    idempotency_key: str


def _cell(values: list, cols: dict[str, int], mapping: Mapping, fld: str):
    i = cols.get(fld)
    if i is None:
        return mapping.defaults.get(fld)
    v = values[i] if i < len(values) else None
    if isinstance(v, str):
        v = v.strip()
    return None if v == "" else v


def _text(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).strip() or None


def validate_row(n: int, values: list, cols: dict[str, int], mapping: Mapping, source: str,
                 now: datetime, *, default_channel: str) -> tuple[Row | None, list[Problem]]:
    """Validate one data row; returns (Row, []) or (None, problems naming row and field)."""
    get = lambda f: _cell(values, cols, mapping, f)  # noqa: E731
    probs: list[Problem] = []

    def bad(msg, fld):
        probs.append(Problem(msg, source=source, row=n, field=fld))

    text = _text(get("text"))
    channel = _text(get("channel")) or default_channel
    channel = CHANNEL_LABELS.get(channel, channel)
    kind = _text(get("kind")) or "appeal"
    kind = KIND_LABELS.get(kind, kind)
    urgency = _text(get("urgency"))
    lon, lat = get("lon"), get("lat")
    probs += service.validate_intake(text=text, channel=channel, kind=kind,
                                     urgency=urgency or "一般", lon=lon, lat=lat, source=source,
                                     row=n)
    raw_at = get("received_at")
    received_at = now
    if raw_at is None:
        if "received_at" in cols:
            bad("受理时间为空", "received_at")
    else:
        try:
            received_at = parse_datetime(raw_at, mapping.date_format)
        except (ValueError, TypeError, OverflowError):
            bad(f"无法识别的时间 {str(raw_at)[:40]!r}"
                + (f"（格式应为 {mapping.date_format}）" if mapping.date_format else
                   "（如 2026-03-02 09:30）"), "received_at")
        else:
            if received_at > now + timedelta(minutes=5):
                bad(f"受理时间在未来：{received_at:%Y-%m-%d %H:%M}", "received_at")
            elif received_at.year < 2000:
                bad(f"受理时间过早：{received_at:%Y-%m-%d}", "received_at")
    phone = _text(get("phone"))
    if phone:
        try:
            phone = service.normalise_phone(phone)
        except ValidationError:
            bad(f"电话号码格式不正确：{phone[:20]!r}", "phone")
    name = _text(get("name"))
    if name and len(name) > 64:
        bad("姓名过长（上限 64 字）", "name")
    location = _text(get("location"))
    if location and len(location) > 300:
        bad("地址过长（上限 300 字）", "location")
    enterprise = _text(get("enterprise"))
    if enterprise and len(enterprise) > 200:
        bad("企业名称过长（上限 200 字）", "enterprise")
    ext = _text(get("external_id"))
    if ext is not None and len(ext) > MAX_EXTERNAL_ID:
        bad(f"工单编号过长（上限 {MAX_EXTERNAL_ID} 字符）", "external_id")
    if probs:
        return None, probs
    if ext is not None:
        key = f"import:{ext}"
    else:
        digest = hashlib.sha256("\x1f".join(
            [text or "", received_at.isoformat(), phone or "", location or ""]).encode()).hexdigest()
        key = f"import:sha256:{digest[:40]}"
    return Row(n, text.strip(), received_at, channel, kind, urgency, phone, name, location,
               enterprise, float(lon) if lon is not None else None,
               float(lat) if lat is not None else None, key), []


def validate_file(path: str | Path, mapping: Mapping | None = None, *, sheet: str | None = None,
                  default_channel: str = "import", now: datetime | None = None
                  ) -> tuple[list[Row], list[Problem], list[str], dict[int, list]]:
    """Read and validate every row. Returns (good rows, problems, header, raw rows by number).

    File-level problems (missing file, missing columns) raise ValidationError at once.
    A repeated external id within the file is a problem of the later row.
    """
    mapping = mapping or Mapping()
    source = Path(path).name
    if default_channel not in CHANNELS:
        raise ValidationError(Problem(f"未知渠道 {default_channel!r}", field="channel"))
    header, body = read_table(path, sheet)
    cols = resolve_columns(header, mapping, source)
    now = now or clock.now()
    good: list[Row] = []
    probs: list[Problem] = []
    raw: dict[int, list] = {}
    seen: dict[str, int] = {}
    for n, values in body:
        raw[n] = values
        row, p = validate_row(n, values, cols, mapping, source, now, default_channel=default_channel)
        if row is not None and row.idempotency_key in seen:
            p = [Problem(f"工单编号与第{seen[row.idempotency_key]}行重复", source=source, row=n,
                         field="external_id" if "external_id" in cols else None)]
            row = None
        if row is None:
            probs += p
        else:
            seen[row.idempotency_key] = n
            good.append(row)
    if not good and not probs:
        raise ValidationError(Problem("文件没有数据行", source=source, row=2))
    return good, probs, header, raw


# ---------------------------------------------------------------- import


def _submit(session, pipeline, row: Row, actor: str, auto_dispatch: bool):
    return pipeline_submit(pipeline, session, text=row.text, channel=row.channel, actor=actor,
                           auto_dispatch=auto_dispatch, urgency=row.urgency, at=row.received_at,
                           kind=row.kind, phone=row.phone, name=row.name,
                           enterprise=row.enterprise, location_text=row.location_text,
                           lon=row.lon, lat=row.lat, idempotency_key=row.idempotency_key)


def pipeline_submit(pipeline, session, **kw):
    """:func:`jiedao.cases.intake.submit` with the pipeline's analyzer and dispatcher."""
    from jiedao.cases import intake

    return intake.submit(session, pipeline.analyzer, pipeline.dispatcher, **kw)


def write_rejects(path: Path, header: list[str], issues: list[RowIssue],
                  raw: dict[int, list]) -> Path:
    """The rejects CSV (UTF-8 with BOM for Excel): row, field, reason, then the row's cells."""
    with path.open("w", encoding="utf-8-sig", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "field", "reason", *header])
        for it in issues:
            cells = ["" if v is None else v for v in raw.get(it.row, [])]
            w.writerow([it.row, it.field or "", it.reason, *cells])
    return path


def rejects_path_for(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(p.stem + ".rejects.csv")


def import_cases(db, pipeline, path: str | Path, mapping: Mapping | None = None, *,
                 partial: bool = False, sheet: str | None = None, actor: str = "import",
                 default_channel: str = "import", auto_dispatch: bool = True,
                 now: datetime | None = None, progress=None) -> ImportReport:
    """Import a hotline export into ``db`` through ``pipeline`` (see the module docstring).

    Raises ValidationError (nothing written) in all-or-nothing mode when any row is bad.
    ``progress(done, total)`` is called after each chunk when given.
    """
    path = Path(path)
    good, probs, header, raw = validate_file(path, mapping, sheet=sheet,
                                             default_channel=default_channel, now=now)
    report = ImportReport(source=str(path), rows=len(good) + len({p.row for p in probs}))
    if probs and not partial:
        raise ValidationError(probs)
    if probs:
        by_row: dict[int, list[Problem]] = {}
        for p in probs:
            by_row.setdefault(p.row, []).append(p)
        report.rejected = [RowIssue(n, ps[0].field if len(ps) == 1 else ",".join(
            str(p.field) for p in ps if p.field), "；".join(p.message for p in ps))
            for n, ps in sorted(by_row.items())]
    chunk = len(good) if not partial else CHUNK
    done = 0
    for start in range(0, len(good), max(chunk, 1)):
        batch = good[start:start + chunk]
        with db.session() as s:  # all-or-nothing: the whole file is one batch
            for row in batch:
                try:
                    case, created = _submit(s, pipeline, row, actor, auto_dispatch)
                except ValidationError as e:  # validation above should have caught it
                    raise ValidationError([Problem(p.message, source=path.name, row=row.row,
                                                   field=p.field) for p in e.problems]) from None
                report.case_ids.append(case.id)
                if created:
                    report.created += 1
                    report.dispatched += case.state == "dispatched"
                else:
                    report.existing += 1
        done += len(batch)
        if progress:
            progress(done, len(good))
    if partial and report.rejected:
        report.rejected.sort(key=lambda r: r.row)
        report.rejects_path = write_rejects(rejects_path_for(path), header, report.rejected, raw)
    return report
