"""The monthly briefing (月度分析报告) on the small demo district: the numbers in its Chinese
sentences and tables are the metrics layer's numbers; the wording of up / down / flat and
missing comparisons; the DOCX opens with python-docx and holds the tables and charts; the PDF
is a real PDF whose text holds the Chinese headline; the CLI writes files and refuses a bad
month or a month without data without writing anything; the page and its downloads, scoped
(a street leader gets the street's briefing)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from datetime import datetime, time, timedelta
from html import unescape
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from jiedao.cockpit import briefing as br

PASSWORD = "jiedao2026"
HTML = {"accept": "text/html,application/xhtml+xml"}
MONTH = "2025-06"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def squash(text: str) -> str:
    return re.sub(r"[\s\x00]+", "", text)


# ---------------------------------------------------------------- wording (no database)


def test_change_wording_for_counts_rates_and_hours():
    cp = br.change_phrase
    assert cp("count", 103.2, 100) == "环比上升3.2%"
    assert cp("count", 99, 100, against="yoy") == "同比下降1.0%"
    assert cp("count", 100.01, 100) == "与上月持平"
    assert cp("count", 100, None, against="yoy") == "去年同期无数据"
    assert cp("count", 100, 0, against="yoy") == "去年同期无数据"  # no cases then: nothing to compare
    assert cp("count", 100, None) == "上月无数据"
    assert cp("count", 100, 90, grain="quarter") == "环比上升11.1%"
    assert cp("count", 100, None, grain="quarter") == "上季度无数据"
    # rates are percentages: changes in points
    assert cp("rate", 98.7, 98.4) == "环比提高0.3个百分点"
    assert cp("rate", 95.0, 97.5, against="yoy") == "同比降低2.5个百分点"
    assert cp("rate", 97.51, 97.5) == "与上月持平"
    assert cp("rate", 97.5, None) == "上月无数据"
    assert cp("rate", None, 97.5) == "环比无法比较"
    assert cp("mean", 30.0, 32.2) == "环比缩短2.2小时"
    assert cp("mean", 35.0, 32.0, against="yoy") == "同比延长3.0小时"
    assert cp("mean", 32.0, 32.04, against="yoy") == "与去年同期持平"
    assert br.change_cell("count", 110, 100) == "+10.0%"
    assert br.change_cell("rate", 90.0, 95.5) == "-5.5个百分点"
    assert br.change_cell("rate", 90.0, None) == "—"
    assert br.fmt_count(12345) == "12,345"
    assert br.fmt_rate(98.71) == "98.7%" and br.fmt_rate(None) == "—"
    assert br.fmt_share(25, 200) == "12.5%"


def test_svg_chart_escapes_text_and_draws_marks():
    chart = br.Chart("t", "bar", "<受理量>", ["1月", "<b>2月</b>"], [("受理量", [3, 5])], unit="件")
    svg = br.svg_chart(chart)
    assert "<b>" not in svg and "&lt;b&gt;2月&lt;/b&gt;" in svg
    assert svg.count('class="bc-bar"') == 2 and "<script" not in svg
    line = br.Chart("l", "line", "率", ["1月", "2月", "3月"], [("满意率", [97.0, None, 98.0]),
                                                            ("按时办结率", [99.0, 98.0, 100.0])], percent=True)
    svg = br.svg_chart(line)
    assert svg.count("<polyline") == 2 and svg.count('class="bc-point"') == 5


def test_bad_month_is_refused():
    for bad in ("2025-13", "2025-6-1", "2025", "June", "", "2025-00"):
        with pytest.raises(br.ValidationError) as e:
            br.parse_month(bad)
        assert "--month 必须是 YYYY-MM" in str(e.value)
    assert br.parse_month("2025-06").key == "2025-06"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def m(demo_db):
    """A metrics instance that does not re-sync during a test (other tests add cases)."""
    from jiedao.cockpit.metrics import Metrics

    mm = Metrics(demo_db, refresh_seconds=10**9)
    mm.refresh(force=True)
    yield mm
    mm.close()


@pytest.fixture(scope="module")
def period():
    from jiedao.cockpit.periods import Period

    return Period.parse(MONTH)


@pytest.fixture(scope="module")
def brief(demo_db, m, period):
    return br.build_briefing(demo_db, period, metrics=m)


@pytest.fixture(scope="module")
def street_leader(demo_db):
    from jiedao.auth import service

    with demo_db.session() as s:
        p = service.principal_for(service.get_user(s, "leader.001"))
    assert p.scope_level == "street"
    return p


# ---------------------------------------------------------------- numbers


def test_headline_numbers_are_the_metrics_numbers(brief, m, period):
    from jiedao.cockpit.metrics import METRICS

    s = m.summary(period)
    r = s["received"]
    assert r.value > 0
    head = brief.headline
    assert head.startswith(f"2025年6月，共受理诉求{br.fmt_count(r.value)}件，"
                           f"{br.change_phrase('count', r.value, r.previous)}，去年同期无数据。")
    assert not r.last_year  # the demo holds 2025 only
    for key in br.HEADLINE_RATES:
        mv = s[key]
        label = METRICS[key].label
        assert f"{label}{br.fmt_rate(mv.value)}，{br.change_phrase('rate', mv.value, mv.previous)}" in head, key
    h = s["handling_hours"]
    assert f"平均办理时长{br.fmt_hours(h.value)}，{br.change_phrase('mean', h.value, h.previous)}" in head
    # the indicator table: one row per metric, this month and last month
    table = brief.section("overview").tables[0]
    rows = {row[0]: row for row in table.rows}
    assert set(rows) == {d.label for d in METRICS.values()}
    assert rows["受理量"][1] == br.fmt_count(r.value) and rows["受理量"][2] == br.fmt_count(r.previous)
    assert rows["满意率"][1] == br.fmt_rate(s["satisfied"].value)
    assert rows["满意率"][3] == br.change_cell("rate", s["satisfied"].value, s["satisfied"].previous)
    # the trend chart: January to June with the monthly counts
    chart = next(c for c in brief.section("overview").charts if c.key == "trend_received")
    assert chart.labels == [f"{i}月" for i in range(1, 7)]
    assert chart.series[0][1] == [v["received"].value for _, v in m.trend("2025", "month", metrics=["received"])][:6]
    assert brief.title == "临江区2025年6月诉求办理情况分析报告" or brief.title.endswith("2025年6月诉求办理情况分析报告")
    assert brief.demo


def test_category_section_ranks_matters_and_names_the_movers(brief, m, period):
    rows = [x for x in m.breakdown(period, "category", metrics=["received"]) if x.values["received"].value]
    rows.sort(key=lambda x: (-x.values["received"].value, x.code))
    total = m.summary(period, metrics=["received"])["received"].value
    sec = brief.section("category")
    first = sec.paragraphs[0]
    assert f"共涉及{len(rows)}类事项" in first
    top = rows[0]
    assert f"{top.label}（{br.fmt_count(top.values['received'].value)}件，占" \
           f"{br.fmt_share(top.values['received'].value, total)}）" in first
    table = sec.tables[0]
    assert [row[1] for row in table.rows] == [x.label for x in rows[:br.TOP_N]]
    assert [row[2] for row in table.rows] == [br.fmt_count(x.values["received"].value) for x in rows[:br.TOP_N]]
    # the biggest rise against last month is named with its increase
    ups = sorted(((x.values["received"].value - (x.values["received"].previous or 0), x)
                  for x in m.breakdown(period, "category", metrics=["received"])
                  if x.values["received"].value > (x.values["received"].previous or 0)),
                 key=lambda t: (-t[0], t[1].code))
    if ups:
        delta, x = ups[0]
        assert f"增幅较大的有{x.label}（增加{br.fmt_count(delta)}件" in sec.paragraphs[1]
    assert "去年同期" in " ".join(sec.paragraphs)


def test_area_and_department_sections_follow_the_rankings(brief, m, period):
    streets = [r for r in m.ranking(period, "street") if r.values["received"].value]
    table = brief.section("area").tables[0]
    assert [(row[0], row[1], row[2]) for row in table.rows] == [
        (str(r.rank), r.label, f"{r.score:.1f}") for r in streets]
    depts = [r for r in m.ranking(period, "department") if r.values["received"].value]
    sec = brief.section("department")
    assert f"共有{len(depts)}个部门参与排名" in sec.paragraphs[0]
    assert f"{depts[0].label}（{depts[0].score:.1f}分）" in sec.paragraphs[0]
    rows = sec.tables[0].rows
    assert [row[1] for row in rows] == [r.label for r in depts]
    for row, r in zip(rows, depts, strict=True):
        fd = r.values["first_dispatch"]
        assert row[5] == br.fmt_rate(r.values["close_ontime"].value)
        assert row[7] == br.fmt_count(fd.denominator - fd.numerator)
    # a department below the overall on-time rate is named with its own rate
    overall = m.summary(period)["close_ontime"].value
    below = sorted((r for r in depts if r.values["close_ontime"].value is not None
                    and r.values["close_ontime"].value < overall),
                   key=lambda r: (r.values["close_ontime"].value, r.code))
    text = " ".join(sec.paragraphs)
    if below:
        assert f"{below[0].label}（{br.fmt_rate(below[0].values['close_ontime'].value)}）" in text
        assert f"部门有{len(below)}个" in text


def test_satisfaction_warnings_and_advice(brief, m, period):
    sat = m.summary(period)["satisfied"]
    p = brief.section("satisfaction").paragraphs[0]
    assert (f"回访诉求{br.fmt_count(sat.denominator)}件，其中满意（含基本满意）{br.fmt_count(sat.numerator)}件，"
            f"满意率{br.fmt_rate(sat.value)}") in p
    line = next(c for c in brief.section("satisfaction").charts if c.kind == "line")
    assert line.series[0][0] == "满意率" and len(line.series[0][1]) == 6
    warn = brief.section("warning").paragraphs
    assert warn and all(x.endswith("。") for x in warn)
    advice = brief.section("advice")
    assert advice.title == "七、下一步建议" and advice.items
    # the lowest-ranked department is named in the advice with its score
    depts = [r for r in m.ranking(period, "department") if r.values["received"].value]
    assert f"{depts[-1].label}综合得分{depts[-1].score:.1f}分" in advice.items[0]
    assert [s.title[:2] for s in brief.sections] == ["一、", "二、", "三、", "四、", "五、", "六、", "七、"]


def test_street_leader_gets_the_street_briefing(demo_db, m, period, street_leader):
    from jiedao.geo.models import Street

    b = br.build_briefing(demo_db, period, principal=street_leader, metrics=m)
    s = m.summary(period, principal=street_leader)
    with demo_db.session() as ses:
        name = ses.get(Street, street_leader.scope_code).name
    assert b.title.startswith(name) and b.scope_label == name
    assert f"共受理诉求{br.fmt_count(s['received'].value)}件" in b.headline
    assert s["received"].value < m.summary(period)["received"].value
    # the area section goes down to the street's communities
    assert b.section("area").tables[0].columns[0] == "社区"
    comms = [x for x in m.breakdown(period, "community", principal=street_leader, metrics=["received"])
             if x.values["received"].value]
    assert sum(int(row[1].replace(",", "")) for row in b.section("area").tables[0].rows) == \
        sum(x.values["received"].value for x in comms)


def test_a_month_without_cases_is_refused(demo_db, m):
    from jiedao.cockpit.periods import Period
    from jiedao.errors import NotFound

    with pytest.raises(NotFound, match="2030年1月没有诉求数据"):
        br.build_briefing(demo_db, Period.parse("2030-01"), metrics=m)


# ---------------------------------------------------------------- documents


def test_html_document_is_standalone_and_script_free(brief):
    page = br.render_html(brief)
    assert page.startswith("<!doctype html>") and "<script" not in page
    assert squash(brief.headline) in squash(unescape(page))
    assert page.count("<svg") == sum(len(s.charts) for s in brief.sections) >= 4
    assert page.count("<table") == sum(len(s.tables) for s in brief.sections)
    assert "@media print" in page  # the printable stylesheet is inlined


def test_docx_opens_and_holds_the_tables(brief):
    from docx import Document

    doc = Document(io.BytesIO(br.render_docx(brief)))
    text = "\n".join(p.text for p in doc.paragraphs)
    assert brief.title in text and brief.headline in text
    assert [p.text for p in doc.paragraphs if p.style.name == "Heading 1"] == [s.title for s in brief.sections]
    tables = [t for s in brief.sections for t in s.tables]
    assert len(doc.tables) == len(tables)
    for dt, t in zip(doc.tables, tables, strict=True):
        assert [c.text for c in dt.rows[0].cells] == t.columns
        assert len(dt.rows) == len(t.rows) + 1
        assert [c.text for c in dt.rows[1].cells] == t.rows[0]
    if br.find_cjk_font() is not None:
        assert len(doc.inline_shapes) == sum(len(s.charts) for s in brief.sections)


def test_pdf_is_a_pdf_with_the_chinese_headline(brief):
    if br.find_cjk_font() is None:
        if os.environ.get("CI"):
            pytest.fail("no CJK font on the CI machine (install fonts-noto-cjk)")
        with pytest.raises(br.PdfUnavailable, match="未找到中文字体"):
            br.render_pdf(brief)
        return
    from pypdf import PdfReader

    data = br.render_pdf(brief)
    assert data.startswith(b"%PDF-")
    reader = PdfReader(io.BytesIO(data))
    assert len(reader.pages) >= 3
    assert reader.metadata.title == brief.title
    # pypdf maps the first glyphs of fpdf2's CJK subset right (later ones it confuses, though
    # viewers such as MuPDF extract them all): check the first page's Chinese sentences
    text = squash(reader.pages[0].extract_text())
    assert squash(brief.title) in text
    assert squash(brief.headline) in text
    assert "一、总体情况" in text


# ---------------------------------------------------------------- CLI


def _cli():
    import typer

    from jiedao.cockpit.cli_briefing import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test root"""

    register(app)
    return app


def test_cli_writes_the_files(demo_db, tmp_path, m, period):
    from typer.testing import CliRunner

    runner = CliRunner()
    out = tmp_path / "reports" / "june.docx"
    r = runner.invoke(_cli(), ["briefing", "--month", MONTH, "--format", "docx", "--out", str(out)])
    assert r.exit_code == 0, (r.output, r.exception)
    assert "已生成《" in r.output and str(out) in r.output
    from docx import Document

    doc = Document(str(out))
    received = m.summary(period)["received"].value
    assert any(f"共受理诉求{br.fmt_count(received)}件" in p.text for p in doc.paragraphs)
    # html by default, named after the month, in the given directory
    r = runner.invoke(_cli(), ["briefing", "--month", MONTH, "--out", str(tmp_path)])
    assert r.exit_code == 0, (r.output, r.exception)
    page = (tmp_path / "briefing-2025-06.html").read_text(encoding="utf-8")
    assert "<svg" in page and "一、总体情况" in page
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".briefing-")] == []


def test_cli_refuses_a_bad_month_or_a_month_without_data_and_writes_nothing(demo_db, tmp_path):
    from typer.testing import CliRunner

    from jiedao.errors import NotFound, ValidationError

    runner = CliRunner()
    for bad in ("2025-13", "25-06", "2025/06"):
        out = tmp_path / f"bad-{bad.replace('/', '_')}.pdf"
        r = runner.invoke(_cli(), ["briefing", "--month", bad, "--format", "pdf", "--out", str(out)])
        assert isinstance(r.exception, ValidationError) and "--month 必须是 YYYY-MM" in str(r.exception)
        assert not out.exists()
    out = tmp_path / "empty.docx"
    r = runner.invoke(_cli(), ["briefing", "--month", "2030-01", "--format", "docx", "--out", str(out)])
    assert isinstance(r.exception, NotFound) and "2030年1月没有诉求数据" in str(r.exception)
    r = runner.invoke(_cli(), ["briefing", "--month", MONTH, "--format", "odt", "--out", str(out)])
    assert isinstance(r.exception, ValidationError) and "--format 必须是" in str(r.exception)
    assert list(tmp_path.iterdir()) == []


def test_the_jiedao_command_reports_a_bad_month_with_exit_code_2(tmp_path):
    exe = Path(sys.executable).with_name("jiedao")
    out = tmp_path / "x.html"
    r = subprocess.run([str(exe), "briefing", "--month", "2025-6x", "--out", str(out)],
                       capture_output=True, text=True, env={**os.environ, "JIEDAO_HOME": str(tmp_path)},
                       timeout=120)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "--month 必须是 YYYY-MM" in r.stderr
    assert not out.exists()


# ---------------------------------------------------------------- page


@pytest.fixture(scope="module")
def as_user(demo_db):
    from jiedao.web.app import create_app

    app = create_app(demo_db)
    cache: dict[str, TestClient] = {}

    def make(username: str) -> TestClient:
        if username not in cache:
            c = TestClient(app)
            r = c.post("/login", data={"username": username, "password": PASSWORD, "next": "/"},
                       headers=HTML, follow_redirects=False)
            assert r.status_code == 303, (username, r.status_code)
            cache[username] = c
        return cache[username]

    return make


def test_page_shows_the_briefing_with_downloads(as_user, m, period):
    c = as_user("leader01")
    r = c.get(f"/cockpit/briefing?month={MONTH}", headers=HTML)
    assert r.status_code == 200, r.text[:500]
    body = unescape(r.text)
    received = m.summary(period)["received"].value
    assert f"2025年6月，共受理诉求{br.fmt_count(received)}件" in body
    assert 'id="download-docx"' in body and f"/cockpit/briefing.docx?month={MONTH}" in body
    assert body.count('class="chart"') >= 4 and "<script>" not in body
    assert 'data-nav="cockpit_briefing"' in body
    # the latest month by default
    r = c.get("/cockpit/briefing", headers=HTML)
    assert r.status_code == 200 and f"{m.latest_period('month').label}，共受理诉求" in unescape(r.text)
    # downloads
    d = c.get(f"/cockpit/briefing.docx?month={MONTH}")
    assert d.status_code == 200 and d.headers["content-type"] == DOCX
    assert d.headers["content-disposition"].startswith('attachment; filename="briefing-2025-06.docx"')
    from docx import Document

    assert len(Document(io.BytesIO(d.content)).tables) >= 4
    if br.find_cjk_font() is not None:
        assert 'id="download-pdf"' in body
        p = c.get(f"/cockpit/briefing.pdf?month={MONTH}")
        assert p.status_code == 200 and p.content.startswith(b"%PDF-")
    h = c.get(f"/cockpit/briefing.html?month={MONTH}")
    assert h.status_code == 200 and "<!doctype html>" in h.text


def test_page_errors_and_scope(as_user, m, period, street_leader):
    c = as_user("leader01")
    r = c.get("/cockpit/briefing?month=2025-13", headers=HTML)
    assert r.status_code == 400 and "--month 必须是 YYYY-MM" in r.text
    r = c.get("/cockpit/briefing?month=2030-01", headers=HTML)
    assert r.status_code == 404 and "2030年1月没有诉求数据" in r.text
    assert c.get(f"/cockpit/briefing.exe?month={MONTH}", headers=HTML).status_code == 404
    # the street leader sees the street's figures, not the district's
    s = as_user("leader.001")
    body = unescape(s.get(f"/cockpit/briefing?month={MONTH}", headers=HTML).text)
    mine = m.summary(period, principal=street_leader)["received"].value
    district = m.summary(period)["received"].value
    assert f"共受理诉求{br.fmt_count(mine)}件" in body
    assert f"共受理诉求{br.fmt_count(district)}件" not in body
    d = s.get(f"/cockpit/briefing.docx?month={MONTH}")
    from docx import Document

    text = "\n".join(p.text for p in Document(io.BytesIO(d.content)).paragraphs)
    assert f"共受理诉求{br.fmt_count(mine)}件" in text
    # anonymous: sent to log in, no briefing
    anon = TestClient(c.app).get(f"/cockpit/briefing?month={MONTH}", headers=HTML, follow_redirects=False)
    assert anon.status_code in (302, 303, 401)


def test_cache_reuses_a_briefing_until_the_data_changes(demo_db, m, period, street_leader, monkeypatch):
    """The same month and scope on the same data is built once and each file drawn once; a
    warnings change (or a mirror sync that saw new cases) builds it again; scopes never share."""
    from jiedao.cockpit.models import CockpitWarning

    cache = br.BriefingCache(size=4)
    built, drawn = [], []
    real_build, real_render = br.build_briefing, br.render
    monkeypatch.setattr(br, "build_briefing", lambda *a, **k: built.append(1) or real_build(*a, **k))
    monkeypatch.setattr(br, "render", lambda b, fmt: drawn.append(fmt) or real_render(b, fmt))
    b1, k1 = cache.briefing(demo_db, period, metrics=m)
    b2, k2 = cache.briefing(demo_db, period, metrics=m)
    assert b1 is b2 and k1 == k2 and len(built) == 1
    assert cache.file(b1, k1, "html") == cache.file(b2, k2, "html") and drawn == ["html"]
    street, _ = cache.briefing(demo_db, period, principal=street_leader, metrics=m)
    assert street is not b1 and street.scope_label != b1.scope_label and len(built) == 2
    # a new open warning in the month changes the briefing's warnings section
    with demo_db.session() as s:
        at = datetime.combine(period.start + timedelta(days=19), time(12))
        w = CockpitWarning(key="repeat_caller:cache-test", kind="repeat_caller", title="来电人 缓存测试",
                           detail={}, window_start=at, window_end=at, score=99.0, status="open",
                           case_ids=[], created_at=at, updated_at=at)
        s.add(w)
        s.flush()
        wid = w.id
    try:
        b3, k3 = cache.briefing(demo_db, period, metrics=m)
        assert b3 is not b1 and k3 != k1 and len(built) == 3
        titles = lambda b: [r[1] for t in b.section("warning").tables for r in t.rows]  # noqa: E731
        assert "来电人 缓存测试" in titles(b3) and "来电人 缓存测试" not in titles(b1)
    finally:
        with demo_db.session() as s:
            s.delete(s.get(CockpitWarning, wid))
    # a new mirror version (what a sync after new cases gives) misses as well
    monkeypatch.setattr(type(m.mirror), "version", property(lambda self: ("changed",)))
    b4, _ = cache.briefing(demo_db, period, metrics=m)
    assert b4 is not b1 and len(built) == 4
    assert len(cache._entries) == 4
