"""Reading a user's spreadsheet: CSV (UTF-8, UTF-8 with BOM or GB18030, as hotline and
department systems export them; ``.tsv`` tab-separated) or XLSX (one sheet).

One reader for every file a user hands the platform (labelled training history, hotline
exports), so they all accept the same encodings and fail with the same errors, naming the file.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from jiedao.errors import Problem, ValidationError

SUFFIXES = (".csv", ".txt", ".tsv", ".xlsx", ".xlsm")


def read_rows(path: str | Path, sheet: str | None = None) -> list[list]:
    """Every row of the file as a list of cells, the header included (row 1).

    CSV cells are strings; XLSX cells keep their types (dates stay datetimes, empty cells are
    None). ``sheet`` picks an XLSX sheet by name (default: the first). A missing file, an
    unknown suffix, an unreadable workbook, a missing sheet or broken CSV quoting raises
    :class:`ValidationError` naming the file.
    """
    p = Path(path)
    name = str(p)
    if not p.is_file():
        raise ValidationError(Problem("文件不存在", source=name))
    suffix = p.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        from openpyxl import load_workbook

        try:
            wb = load_workbook(p, read_only=True, data_only=True)
        except Exception as e:
            raise ValidationError(Problem(f"无法读取 XLSX 文件：{e}", source=name)) from None
        try:
            if sheet is not None and sheet not in wb.sheetnames:
                raise ValidationError(Problem(f"工作表 {sheet!r} 不存在（有：{', '.join(wb.sheetnames)}）",
                                              source=name, field="sheet"))
            ws = wb[sheet] if sheet else wb.worksheets[0]
            return [list(r) for r in ws.iter_rows(values_only=True)]
        finally:
            wb.close()
    if suffix not in (".csv", ".txt", ".tsv"):
        raise ValidationError(Problem(f"不支持的文件类型 {suffix or '(无扩展名)'}：请用 CSV 或 XLSX",
                                      source=name))
    raw = p.read_bytes()
    for enc in ("utf-8-sig", "gb18030"):
        try:
            text = raw.decode(enc)
            break
        except UnicodeDecodeError:
            continue
    else:  # pragma: no cover - gb18030 decodes nearly anything
        raise ValidationError(Problem("文件编码无法识别（请用 UTF-8 或 GBK）", source=name))
    try:
        return list(csv.reader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ","))
    except csv.Error as e:
        raise ValidationError(Problem(f"CSV 格式错误：{e}", source=name)) from None
