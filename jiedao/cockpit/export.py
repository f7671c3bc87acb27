"""Any cockpit table as an XLSX workbook (openpyxl).

A table is a title, a list of columns and rows of plain values. Rates are written as numbers
with a percent format (so Excel can sort and sum them), counts as integers, text as text;
the first row holds the headers, frozen, with a note row naming the period and scope.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from urllib.parse import quote

XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@dataclass(frozen=True)
class Column:
    """One column: header text and how its values are shown ("text", "int", "rate", "float")."""

    label: str
    kind: str = "text"


@dataclass
class SheetTable:
    """A table ready for export: ``rows`` hold raw values (rates as fractions 0..1)."""

    title: str
    columns: Sequence[Column]
    rows: Iterable[Sequence[object]]
    note: str | None = None
    extra: dict = field(default_factory=dict)


_FORMATS = {"int": "#,##0", "rate": "0.0%", "float": "#,##0.0", "pct_points": "+0.0;-0.0;0.0"}
_BAD_SHEET_CHARS = re.compile(r"[\[\]:*?/\\]")


def sheet_name(title: str) -> str:
    """A valid worksheet name (≤ 31 characters, none of []:*?/\\)."""
    return (_BAD_SHEET_CHARS.sub(" ", title).strip() or "Sheet")[:31]


def _cell_value(value: object) -> object:
    if value is None:
        return None
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, (int, float, str, date, datetime)):
        return value
    return str(value)


def to_xlsx(*tables: SheetTable) -> bytes:
    """Write one worksheet per table and return the workbook bytes."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font, PatternFill
    from openpyxl.utils import get_column_letter

    wb = Workbook()
    wb.remove(wb.active)
    used: set[str] = set()
    for t in tables:
        name = sheet_name(t.title)
        base, n = name, 2
        while name in used:
            suffix = f" ({n})"
            name, n = base[:31 - len(suffix)] + suffix, n + 1
        used.add(name)
        ws = wb.create_sheet(name)
        row0 = 1
        if t.note:
            ws.cell(row=1, column=1, value=t.note).font = Font(italic=True, color="64748B")
            row0 = 2
        head_fill = PatternFill("solid", fgColor="E8F0FB")
        widths = []
        for j, col in enumerate(t.columns, start=1):
            c = ws.cell(row=row0, column=j, value=col.label)
            c.font = Font(bold=True)
            c.fill = head_fill
            c.alignment = Alignment(horizontal="center", vertical="center")
            widths.append(max(8, 2 * len(col.label) + 2))
        for i, row in enumerate(t.rows, start=row0 + 1):
            for j, (col, value) in enumerate(zip(t.columns, row, strict=False), start=1):
                c = ws.cell(row=i, column=j, value=_cell_value(value))
                fmt = _FORMATS.get(col.kind)
                if fmt and isinstance(value, (int, float)):
                    c.number_format = fmt
                if isinstance(value, datetime):
                    c.number_format = "yyyy-mm-dd hh:mm"
                if isinstance(value, str):
                    widths[j - 1] = min(60, max(widths[j - 1], int(len(value) * 1.8) + 2))
        for j, w in enumerate(widths, start=1):
            ws.column_dimensions[get_column_letter(j)].width = w
        ws.freeze_panes = ws.cell(row=row0 + 1, column=1)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def xlsx_response(data: bytes, filename: str):
    """A download response for ``data`` named ``filename`` (UTF-8 file names per RFC 5987)."""
    from fastapi.responses import Response

    ascii_name = re.sub(r"[^A-Za-z0-9._-]", "_", filename).strip("_") or "table.xlsx"
    disposition = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
    return Response(data, media_type=XLSX_MEDIA_TYPE,
                    headers={"content-disposition": disposition, "cache-control": "no-store"})
