"""Read ledgers row by row in constant memory: CSV (utf-8 / utf-8-sig / GBK detected),
XLSX (openpyxl read-only), JSON (an array or JSON Lines) and any SQL query through a
SQLAlchemy URL (streamed).

Every reader yields ``(row_number, row_dict)``; row numbers are as a person counts them
(CSV/XLSX: the spreadsheet row, header = 1; JSON array: the element; JSON Lines: the line;
SQL: the result row). A row that cannot be a record (wrong number of CSV fields, a JSON
element that is not an object) is yielded as ``{ROW_ERROR: reason}`` so the load reports
it. A damaged file (undecodable bytes, broken quoting, invalid JSON, not an XLSX) raises
:class:`~jiedao.errors.ValidationError` naming the file and row.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import json
import zipfile
from collections.abc import Iterable, Iterator
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

from jiedao.errors import Problem, ValidationError

ROW_ERROR = "__row_error__"
CHUNK_SIZE = 2000
_SAMPLE = 1 << 20


class Reader:
    """An opened ledger. ``columns`` is the header (None for JSON, where keys vary by row);
    iterate ``rows()`` once."""

    columns: list[str] | None = None
    label: str = ""

    def rows(self) -> Iterator[tuple[int, dict]]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def chunks(self, size: int = CHUNK_SIZE) -> Iterator[list[tuple[int, dict]]]:
        """The rows in lists of ``size``."""
        return chunked(self.rows(), size)


def chunked(rows: Iterable, size: int = CHUNK_SIZE) -> Iterator[list]:
    buf = []
    for r in rows:
        buf.append(r)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf


def _fail(label: str, message: str, row: int | None = None) -> ValidationError:
    return ValidationError(Problem(message, source=label, row=row))


def _header(cells: list, label: str) -> list[str]:
    names = [("" if c is None else str(c)).replace("\ufeff", "").strip() for c in cells]
    while names and not names[-1]:
        names.pop()
    probs = []
    seen: set[str] = set()
    for i, n in enumerate(names, start=1):
        if not n:
            probs.append(Problem(f"表头第{i}列为空", source=label, row=1))
        elif n in seen:
            probs.append(Problem(f"表头列名重复：{n}", source=label, row=1))
        seen.add(n)
    if not names:
        probs.append(Problem("没有表头行", source=label, row=1))
    if probs:
        raise ValidationError(probs)
    return names


# --------------------------------------------------------------------------- CSV


def detect_encoding(path: Path) -> str:
    """utf-8-sig (BOM), utf-8, or gb18030 (a superset of GBK) from the first megabyte."""
    with path.open("rb") as f:
        head = f.read(_SAMPLE)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < _SAMPLE)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        codecs.getincrementaldecoder("gb18030")().decode(head, final=len(head) < _SAMPLE)
        return "gb18030"
    except UnicodeDecodeError:
        raise _fail(str(path), "无法识别文件编码（支持 UTF-8、GBK）") from None


class CsvReader(Reader):
    text_only = True  # every cell is a str

    def __init__(self, path: Path, encoding: str | None = None, delimiter: str = ","):
        self.path = path
        self.label = str(path)
        enc = (encoding or "").lower()
        self.encoding = "gb18030" if enc in ("gbk", "gb2312", "gb18030") else (enc or detect_encoding(path))
        try:
            self._f = path.open(encoding=self.encoding, newline="", errors="strict")
        except OSError as e:
            raise _fail(self.label, f"无法打开文件：{e.strerror or e}") from None
        self._reader = csv.reader(self._f, delimiter=delimiter, strict=True)
        self._n = 1
        first = self._next()
        if first is None:
            self.close()
            raise _fail(self.label, "文件为空，没有表头行", 1)
        self.columns = _header(first, self.label)

    def _next(self) -> list[str] | None:
        try:
            return next(self._reader)
        except StopIteration:
            return None
        except UnicodeDecodeError:
            raise _fail(self.label, f"文件编码错误（按 {self.encoding} 无法解码）", self._n) from None
        except csv.Error as e:
            raise _fail(self.label, f"CSV 格式错误：{e}", self._n) from None

    def rows(self) -> Iterator[tuple[int, dict]]:
        cols = self.columns
        width = len(cols)
        while True:
            self._n += 1
            cells = self._next()
            if cells is None:
                return
            if not "".join(cells).strip():
                continue
            if len(cells) != width:
                extra = cells[width:]
                if len(cells) > width and not any(c.strip() for c in extra):
                    cells = cells[:width]
                else:
                    yield self._n, {ROW_ERROR: f"列数为{len(cells)}，与表头的{width}列不符"}
                    continue
            yield self._n, dict(zip(cols, cells, strict=True))

    def close(self) -> None:
        self._f.close()


# --------------------------------------------------------------------------- XLSX


class XlsxReader(Reader):
    def __init__(self, path: Path, sheet: str | None = None):
        from openpyxl import load_workbook

        self.label = str(path) + (f"[{sheet}]" if sheet else "")
        try:
            self._wb = load_workbook(path, read_only=True, data_only=True)
        except FileNotFoundError:
            raise _fail(self.label, "文件不存在") from None
        except (zipfile.BadZipFile, KeyError, OSError, ValueError) as e:
            raise _fail(self.label, f"不是有效的 XLSX 文件：{e}") from None
        except Exception as e:  # openpyxl's InvalidFileException and friends
            raise _fail(self.label, f"不是有效的 XLSX 文件：{e}") from None
        if sheet is not None and sheet not in self._wb.sheetnames:
            names = "、".join(self._wb.sheetnames)
            self._wb.close()
            raise _fail(self.label, f"没有名为“{sheet}”的工作表（有：{names}）")
        self._ws = self._wb[sheet] if sheet is not None else self._wb.worksheets[0]
        self._it = enumerate(self._ws.iter_rows(min_row=1, values_only=True), start=1)
        self.columns = None
        for n, cells in self._iter():
            if any(c is not None and str(c).strip() for c in cells):
                self.columns = _header(list(cells), self.label)
                self._header_row = n
                break
        if self.columns is None:
            self.close()
            raise _fail(self.label, "工作表为空，没有表头行", 1)

    def _iter(self):
        try:
            yield from self._it
        except (zipfile.BadZipFile, KeyError, ValueError) as e:
            raise _fail(self.label, f"XLSX 内容损坏：{e}") from None

    def rows(self) -> Iterator[tuple[int, dict]]:
        cols = self.columns
        width = len(cols)
        for n, cells in self._iter():
            vals = [(c.strip() if isinstance(c, str) else c) for c in cells]
            if not any(v not in (None, "") for v in vals):
                continue
            if len(vals) > width:
                if any(v not in (None, "") for v in vals[width:]):
                    yield n, {ROW_ERROR: f"第{width + 1}列起有表头之外的数据"}
                    continue
                vals = vals[:width]
            elif len(vals) < width:
                vals = vals + [None] * (width - len(vals))
            yield n, dict(zip(cols, vals, strict=True))

    def close(self) -> None:
        self._wb.close()


# --------------------------------------------------------------------------- JSON


def _flatten(obj: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


class JsonReader(Reader):
    """A JSON array of objects (streamed element by element) or JSON Lines."""

    def __init__(self, path: Path, encoding: str | None = None):
        self.label = str(path)
        enc = encoding or detect_encoding(path)
        try:
            self._f = path.open(encoding=enc, errors="strict")
        except OSError as e:
            raise _fail(self.label, f"无法打开文件：{e.strerror or e}") from None
        self.columns = None
        first = self._peek()
        self.array = first == "["

    def _peek(self) -> str:
        try:
            while True:
                ch = self._f.read(1)
                if ch == "" or not ch.isspace():
                    break
        except UnicodeDecodeError:
            raise _fail(self.label, "文件编码错误", 1) from None
        self._first = ch
        return ch

    def rows(self) -> Iterator[tuple[int, dict]]:
        return self._array() if self.array else self._lines()

    def _obj(self, n: int, obj: Any) -> tuple[int, dict]:
        if not isinstance(obj, dict):
            return n, {ROW_ERROR: f"不是 JSON 对象（{type(obj).__name__}）"}
        return n, _flatten(obj)

    def _lines(self) -> Iterator[tuple[int, dict]]:
        dec = json.JSONDecoder()
        n = 0
        self._f.seek(0)
        try:
            for text in self._f:
                n += 1
                if not text.strip():
                    continue
                try:
                    obj, end = dec.raw_decode(text.strip())
                    if text.strip()[end:].strip():
                        raise ValueError("一行中有多余内容")
                except ValueError as e:
                    raise _fail(self.label, f"JSON 格式错误：{e}", n) from None
                yield self._obj(n, obj)
        except UnicodeDecodeError:
            raise _fail(self.label, "文件编码错误", n + 1) from None

    def _array(self) -> Iterator[tuple[int, dict]]:
        dec = json.JSONDecoder()
        buf = ""
        pos = 0
        n = 0
        eof = False
        expect_value = True  # after '[' or ','

        def fill() -> bool:
            nonlocal buf, pos, eof
            try:
                chunk = self._f.read(1 << 16)
            except UnicodeDecodeError:
                raise _fail(self.label, "文件编码错误", n + 1) from None
            if not chunk:
                eof = True
                return False
            buf = buf[pos:] + chunk
            pos = 0
            return True

        while True:
            while pos < len(buf) and buf[pos].isspace():
                pos += 1
            if pos >= len(buf):
                if eof or not fill():
                    raise _fail(self.label, "JSON 数组没有结束（缺少 ]）", n + 1)
                continue
            ch = buf[pos]
            if ch == "]" and (n == 0 or not expect_value):
                return
            if ch == "," and not expect_value:
                pos += 1
                expect_value = True
                continue
            if not expect_value:
                raise _fail(self.label, f"JSON 格式错误：第{n}个元素后应为 , 或 ]", n + 1)
            while True:
                try:
                    obj, end = dec.raw_decode(buf, pos)
                    if end >= len(buf) and not eof and fill():
                        continue  # a number may go on in the next chunk
                    break
                except json.JSONDecodeError as e:
                    if not eof and fill():
                        continue
                    raise _fail(self.label, f"JSON 格式错误：{e.msg}", n + 1) from None
            pos = end
            n += 1
            expect_value = False
            yield self._obj(n, obj)

    def close(self) -> None:
        self._f.close()


# --------------------------------------------------------------------------- SQL


class SqlReader(Reader):
    """Rows of ``query`` against any SQLAlchemy URL, fetched in batches (server-side
    cursor where the driver has one)."""

    def __init__(self, url: str, query: str, chunk: int = CHUNK_SIZE):
        import sqlalchemy as sa
        from sqlalchemy.engine import make_url

        self.label = _mask_url(url)
        try:
            u = make_url(url)
            if u.drivername in ("postgresql", "postgres"):
                u = u.set(drivername="postgresql+psycopg")
            self._engine = sa.create_engine(u)
            self._conn = self._engine.connect()
            self._result = self._conn.execution_options(stream_results=True, yield_per=chunk
                                                        ).execute(sa.text(query))
        except Exception as e:
            self.close()
            raise _fail(self.label, f"无法执行查询：{str(e).splitlines()[0][:300]}") from None
        self.columns = _header(list(self._result.keys()), self.label)

    def rows(self) -> Iterator[tuple[int, dict]]:
        cols = self.columns
        n = 0
        try:
            for row in self._result:
                n += 1
                yield n, dict(zip(cols, row, strict=True))
        except Exception as e:
            raise _fail(self.label, f"读取查询结果出错：{str(e).splitlines()[0][:300]}", n + 1) from None

    def close(self) -> None:
        for name in ("_result", "_conn"):
            obj = getattr(self, name, None)
            if obj is not None:
                with contextlib.suppress(Exception):  # must not hide the first error
                    obj.close()
        eng = getattr(self, "_engine", None)
        if eng is not None:
            eng.dispose()


def _mask_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "sql"


# --------------------------------------------------------------------------- opening


def resolve_location(location: str, data_dir: Path | str | None) -> str:
    """A file location relative to ``data_dir`` (or absolute); ``{data_dir}`` is replaced in
    SQL URLs."""
    base = Path(data_dir) if data_dir else None
    if "://" in location:
        return location.replace("{data_dir}", str(base) if base else ".")
    p = Path(location)
    return str(p if p.is_absolute() or base is None else base / p)


def open_reader(connector: str, location: str, options: dict | None = None,
                data_dir: Path | str | None = None) -> Reader:
    """Open a ledger with the named connector (``csv``, ``xlsx``, ``json`` or ``sql``)."""
    opts = options or {}
    loc = resolve_location(location, data_dir)
    if connector == "sql":
        return SqlReader(loc, opts["query"], int(opts.get("chunk", CHUNK_SIZE)))
    path = Path(loc)
    if not path.is_file():
        raise _fail(str(path), "文件不存在")
    if connector == "csv":
        return CsvReader(path, opts.get("encoding"), opts.get("delimiter", ","))
    if connector == "xlsx":
        return XlsxReader(path, opts.get("sheet"))
    if connector == "json":
        return JsonReader(path, opts.get("encoding"))
    raise _fail(str(path), f"不支持的连接方式：{connector}")


def jsonable(value: Any) -> Any:
    """A cell value as JSON can hold it (dates ISO, decimals as text, bytes dropped)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, datetime):
        return value.isoformat(sep=" ") if value.time() != time(0) else value.date().isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return None
    return str(value)


__all__ = ["CHUNK_SIZE", "CsvReader", "JsonReader", "ROW_ERROR", "Reader", "SqlReader",
           "XlsxReader", "chunked", "detect_encoding", "jsonable", "open_reader",
           "resolve_location"]
