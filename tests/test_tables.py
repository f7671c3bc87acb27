"""The one spreadsheet reader behind training files and hotline imports."""

import pytest
from openpyxl import Workbook

from jiedao.errors import ValidationError
from jiedao.tables import read_rows


def test_csv_encodings_and_quoting(tmp_path):
    rows = [["内容", "事项编码"], ["小区门口\n路灯不亮", "A01"]]
    text = '内容,事项编码\n"小区门口\n路灯不亮",A01\n'
    for enc in ("utf-8", "utf-8-sig", "gb18030"):
        p = tmp_path / f"h-{enc}.csv"
        p.write_bytes(text.encode(enc))
        assert read_rows(p) == rows, enc
    p = tmp_path / "h.tsv"
    p.write_text("内容\t事项编码\n噪音扰民\tB02\n", encoding="utf-8")
    assert read_rows(p) == [["内容", "事项编码"], ["噪音扰民", "B02"]]


def test_xlsx_sheets_keep_types(tmp_path):
    wb = Workbook()
    wb.active.title = "说明"
    ws = wb.create_sheet("工单")
    ws.append(["内容", "数量"])
    ws.append(["井盖缺失", 3])
    p = tmp_path / "w.xlsx"
    wb.save(p)
    assert read_rows(p, "工单") == [["内容", "数量"], ["井盖缺失", 3]]
    assert read_rows(p) == []  # without a name: the first sheet, which is empty
    with pytest.raises(ValidationError) as e:
        read_rows(p, "不存在")
    assert "工作表" in str(e.value) and "工单" in str(e.value)


@pytest.mark.parametrize("name, content, words", [
    ("missing.csv", None, "文件不存在"),
    ("h.pdf", b"%PDF", "不支持的文件类型"),
    ("broken.xlsx", b"not a zip", "无法读取 XLSX"),
])
def test_bad_files_name_the_file(tmp_path, name, content, words):
    p = tmp_path / name
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(ValidationError) as e:
        read_rows(p)
    assert words in str(e.value) and name in str(e.value)
