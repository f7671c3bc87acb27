"""The monthly briefing (月度分析报告): sections of Chinese sentences, tables and charts filled
from the metrics layer (:class:`jiedao.cockpit.metrics.Metrics`) — every number in a briefing
comes from there — and renderers to HTML, DOCX and PDF.

``build_briefing(db, period, principal=...)`` gathers the numbers once into a
:class:`Briefing`; ``render_html`` / ``render_docx`` / ``render_pdf`` only lay it out, so the
three formats always say the same thing. Charts are described by :class:`Chart` and drawn as
hand-written SVG for HTML (no script, strict CSP, printable) and as PNG through matplotlib
for DOCX/PDF, with a CJK font found on the system (see :func:`find_cjk_font`).
"""

from __future__ import annotations

import html
import io
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from jiedao.errors import NotFound, Problem, ValidationError

SECTION_NUMBERS = "一二三四五六七八九十"
PREV_NAMES = {"day": "前一日", "week": "上周", "month": "上月", "quarter": "上季度", "year": "上年"}
THIS_NAMES = {"day": "当日", "week": "本周", "month": "本月", "quarter": "本季度", "year": "本年"}
# the order in which the 总体情况 sentence lists the rates
HEADLINE_RATES = ("sign_ontime", "close_ontime", "resolved", "satisfied", "first_dispatch", "repeat")
TOP_N = 10
CHART_COLORS = ("#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6")


# ---------------------------------------------------------------- model


@dataclass
class Table:
    """A table: column titles, rows of display strings; ``numeric[i]`` right-aligns column i."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    numeric: list[bool] = field(default_factory=list)
    note: str = ""


@dataclass
class Chart:
    """A chart: ``kind`` bar (vertical), hbar (horizontal, ranked) or line; one or more series."""

    key: str
    kind: str
    title: str
    labels: list[str]
    series: list[tuple[str, list[float | None]]]
    unit: str = ""
    percent: bool = False  # values are percentages (0–100)


@dataclass
class Section:
    """One numbered chapter of the briefing."""

    key: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    items: list[str] = field(default_factory=list)  # numbered list (下一步建议)


@dataclass
class Briefing:
    """A built briefing: title, scope, sections, and the raw summary it was built from."""

    period: object  # jiedao.cockpit.periods.Period
    title: str
    scope_label: str
    generated_at: datetime
    sections: list[Section]
    summary: dict  # metric key -> MetricValue (the numbers the 总体情况 sentences use)
    demo: bool = False
    demo_label: str | None = None

    @property
    def headline(self) -> str:
        """The first sentence block of 总体情况."""
        return self.sections[0].paragraphs[0] if self.sections and self.sections[0].paragraphs else ""

    def section(self, key: str) -> Section:
        """The section with ``key`` (overview, category, area, department, satisfaction, warning, advice)."""
        for s in self.sections:
            if s.key == key:
                return s
        raise KeyError(key)

    def text(self) -> str:
        """All sentences of the briefing as plain text (titles, paragraphs, items)."""
        out = [self.title]
        for s in self.sections:
            out.append(s.title)
            out.extend(s.paragraphs)
            out.extend(s.items)
        return "\n".join(out)


# ---------------------------------------------------------------- wording


def fmt_count(n: float | int | None) -> str:
    """12345 -> "12,345" (None -> "—")."""
    if n is None:
        return "—"
    return f"{int(round(n)):,}"


def fmt_rate(v: float | None) -> str:
    """A percentage (0–100, as Metrics returns rates) with one decimal: 98.71 -> "98.7%"."""
    if v is None:
        return "—"
    return f"{v:.1f}%"


def fmt_share(part: float | None, total: float | None) -> str:
    """``part`` as a share of ``total``: (25, 200) -> "12.5%"."""
    if part is None or not total:
        return "—"
    return fmt_rate(100.0 * part / total)


def fmt_hours(v: float | None) -> str:
    """Hours with one decimal: 36.54 -> "36.5小时"."""
    if v is None:
        return "—"
    return f"{v:.1f}小时"


def fmt_value(mdef, v: float | None) -> str:
    """A metric value in its unit (count / rate / mean hours)."""
    if mdef.kind == "count":
        return fmt_count(v)
    if mdef.kind == "rate":
        return fmt_rate(v)
    return fmt_hours(v)


def _relative(v: float, base: float) -> float:
    return (v - base) / base * 100


def change_phrase(kind: str, value: float | None, base: float | None, *, against: str = "prev",
                  grain: str = "month") -> str:
    """Chinese wording of a comparison: "环比上升3.2%", "同比下降1.0%", "与上月持平",
    "环比提高0.3个百分点", "环比缩短2.1小时", "上月无数据", "去年同期无数据".

    ``kind`` is the metric kind (count: relative change in %; rate: percentage points;
    mean: hours). ``against`` is "prev" (环比) or "yoy" (同比).
    """
    word = "环比" if against == "prev" else "同比"
    base_name = PREV_NAMES.get(grain, "上期") if against == "prev" else "去年同期"
    if value is None:
        return f"{word}无法比较"
    if base is None or (kind == "count" and base == 0):
        # a count of 0 in the comparison period means no cases there: nothing to compare
        return f"{base_name}无数据"
    if kind == "count":
        rel = _relative(value, base)
        if round(rel, 1) == 0:
            return f"与{base_name}持平"
        return f"{word}{'上升' if rel > 0 else '下降'}{abs(rel):.1f}%"
    if kind == "rate":
        pts = value - base  # rates are percentages: the difference is in points
        if round(pts, 1) == 0:
            return f"与{base_name}持平"
        return f"{word}{'提高' if pts > 0 else '降低'}{abs(pts):.1f}个百分点"
    diff = value - base
    if round(diff, 1) == 0:
        return f"与{base_name}持平"
    return f"{word}{'延长' if diff > 0 else '缩短'}{abs(diff):.1f}小时"


def change_cell(kind: str, value: float | None, base: float | None) -> str:
    """Short table form of a change: "+3.2%", "-0.3个百分点", "+2.1小时", "—"."""
    if value is None or base is None:
        return "—"
    if kind == "count":
        if base == 0:
            return "—"
        rel = _relative(value, base)
        return "0.0%" if round(rel, 1) == 0 else f"{rel:+.1f}%"
    if kind == "rate":
        pts = value - base
        return "0.0个百分点" if round(pts, 1) == 0 else f"{pts:+.1f}个百分点"
    diff = value - base
    return "0.0小时" if round(diff, 1) == 0 else f"{diff:+.1f}小时"


def _join(parts: list[str]) -> str:
    return "、".join(parts)


def _v(mv) -> float | None:
    return None if mv is None else mv.value


# ---------------------------------------------------------------- building


def _scope(session, principal) -> str:
    from jiedao.catalog.models import Department
    from jiedao.geo.models import Community, District, Street

    if principal is None or principal.scope_level == "district":
        d = session.query(District).order_by(District.code).first()
        return d.name if d else "全区"
    model = {"street": Street, "community": Community, "department": Department}.get(principal.scope_level)
    row = session.get(model, principal.scope_code) if model else None
    return row.name if row is not None else principal.scope_code


def _system_principal(session):
    """Whole-district principal for the CLI (``principal=None``) where a scoped API needs one."""
    from jiedao.auth.scope import Principal
    from jiedao.geo.models import District

    d = session.query(District).order_by(District.code).first()
    return Principal(user_id=0, username="system", display_name="系统", role="admin",
                     scope_level="district", scope_code=d.code if d else "")


def build_briefing(db, period, *, principal=None, metrics=None) -> Briefing:
    """Build the briefing of ``period`` (a :class:`~jiedao.cockpit.periods.Period`) within
    ``principal``'s scope (None: the whole district, for the CLI).

    Every number comes from :class:`~jiedao.cockpit.metrics.Metrics`. Raises
    :class:`jiedao.errors.NotFound` when the period has no cases in scope.
    """
    from jiedao.cockpit.metrics import METRICS, Metrics
    from jiedao.db import get_meta

    m = metrics or Metrics.for_database(db)
    summary = m.summary(period, principal=principal)
    received = summary["received"]
    if not received.value:
        raise NotFound(f"{period.label}没有诉求数据")
    with db.session() as s:
        scope = _scope(s, principal)
        demo = (get_meta(s, "demo") or "").lower() in ("true", "1", "yes")
        demo_label = get_meta(s, "demo_label") or "示例数据" if demo else None

    grain = period.grain
    this = THIS_NAMES.get(grain, "本期")
    ctx = _Ctx(m=m, period=period, principal=principal, grain=grain, this=this,
               prev=PREV_NAMES.get(grain, "上期"), defs=METRICS, summary=summary, db=db)
    sections = [
        _overview(ctx),
        _categories(ctx),
        _areas(ctx),
        _departments(ctx),
        _satisfaction(ctx),
        _warnings(ctx),
    ]
    sections.append(_advice(ctx))
    for i, sec in enumerate(sections):
        sec.title = f"{SECTION_NUMBERS[i]}、{sec.title}"
    title = f"{scope}{period.label}诉求办理情况分析报告"
    return Briefing(period=period, title=title, scope_label=scope, generated_at=datetime.now(),
                    sections=sections, summary=summary, demo=demo, demo_label=demo_label)


@dataclass
class _Ctx:
    m: object
    period: object
    principal: object
    grain: str
    this: str
    prev: str
    defs: dict
    summary: dict
    db: object
    facts: dict = field(default_factory=dict)  # what the advice rules read


def _rate_clause(ctx: _Ctx, key: str) -> str:
    d, mv = ctx.defs[key], ctx.summary.get(key)
    if mv is None or mv.value is None:
        return f"{d.label}暂无数据"
    return (f"{d.label}{fmt_value(d, mv.value)}，"
            f"{change_phrase(d.kind, mv.value, mv.previous, grain=ctx.grain)}")


def _overview(ctx: _Ctx) -> Section:
    sm, defs = ctx.summary, ctx.defs
    r = sm["received"]
    first = (f"{ctx.period.label}，共受理诉求{fmt_count(r.value)}件，"
             f"{change_phrase('count', r.value, r.previous, grain=ctx.grain)}，"
             f"{change_phrase('count', r.value, r.last_year, against='yoy', grain=ctx.grain)}。")
    rates = "；".join(_rate_clause(ctx, k) for k in HEADLINE_RATES if k in defs)
    hours = ""
    if "handling_hours" in defs:
        hours = "；" + _rate_clause(ctx, "handling_hours").replace("平均办理时长(小时)", "平均办理时长")
    para = [first + "其中，" + rates + hours + "。"]

    # channels
    try:
        rows = ctx.m.breakdown(ctx.period, "channel", principal=ctx.principal,
                               metrics=["received"], compare=False)
    except Exception:  # a metrics layer without the channel dimension: no channel sentence
        rows = []
    rows = sorted((x for x in rows if _v(x.values.get("received"))),
                  key=lambda x: -x.values["received"].value)
    total = r.value or 0
    ctx.facts["channels"] = {x.code: x.values["received"].value for x in rows}
    if rows and total:
        parts = [f"{x.label}{fmt_count(x.values['received'].value)}件（占{fmt_share(x.values['received'].value, total)}）"
                 for x in rows[:4]]
        para.append("从受理渠道看，" + _join(parts) + "。")

    # table of every metric
    trows = []
    for key, d in defs.items():
        mv = sm.get(key)
        if mv is None:
            continue
        trows.append([d.label, fmt_value(d, mv.value), fmt_value(d, mv.previous),
                      change_cell(d.kind, mv.value, mv.previous), fmt_value(d, mv.last_year),
                      change_cell(d.kind, mv.value, mv.last_year)])
    table = Table("主要指标", ["指标", ctx.this, ctx.prev, "环比", "去年同期", "同比"], trows,
                  [False, True, True, True, True, True])

    charts = []
    trend = _trend(ctx)
    if trend:
        labels = [p.short_label for p, _ in trend]
        charts.append(Chart("trend_received", "bar", f"{ctx.period.start.year}年各月受理量", labels,
                            [("受理量", [_v(vals.get("received")) for _, vals in trend])], unit="件"))
    return Section("overview", "总体情况", para, [table], charts)


def _trend(ctx: _Ctx) -> list:
    """Months of the period's year up to the period (for the month briefing), cached on ctx."""
    if "trend" in ctx.facts:
        return ctx.facts["trend"]
    from jiedao.cockpit.periods import Period

    out = []
    if ctx.grain in ("month", "week", "day", "quarter"):
        year = Period.parse(str(ctx.period.start.year))
        try:
            points = ctx.m.trend(year, "month", principal=ctx.principal,
                                 metrics=["received", "close_ontime", "satisfied"])
        except Exception:  # noqa: BLE001 — a trend is decoration; the briefing stands without it
            points = []
        out = [(p, vals) for p, vals in points if p.start < ctx.period.end]
    ctx.facts["trend"] = out
    return out


def _categories(ctx: _Ctx) -> Section:
    rows_all = ctx.m.breakdown(ctx.period, "category", principal=ctx.principal, metrics=["received"])
    rows = [x for x in rows_all if _v(x.values.get("received"))]
    rows.sort(key=lambda x: (-x.values["received"].value, x.code))
    total = ctx.summary["received"].value or 0
    para = []
    sec = Section("category", "分类分析")
    if not rows:
        sec.paragraphs.append(f"{ctx.this}暂无分类数据。")
        return sec
    top = rows[:5]
    top_sum = sum(x.values["received"].value for x in top)
    para.append(f"从诉求类别看，{ctx.this}共涉及{len(rows)}类事项。受理量居前{len(top)}位的是："
                + _join(f"{x.label}（{fmt_count(x.values['received'].value)}件，"
                        f"占{fmt_share(x.values['received'].value, total)}）" for x in top)
                + f"，合计占受理总量的{fmt_share(top_sum, total)}。")

    def movers(attr: str):
        ups, downs = [], []
        for x in rows_all:
            mv = x.values["received"]
            base = getattr(mv, attr)
            if not base and not mv.value:
                continue
            base = base or 0
            delta = (mv.value or 0) - base
            if delta > 0:
                ups.append((delta, x, base))
            elif delta < 0:
                downs.append((delta, x, base))
        ups.sort(key=lambda t: (-t[0], t[1].code))
        downs.sort(key=lambda t: (t[0], t[1].code))
        return ups[:3], downs[:3]


    def mover_text(t) -> str:
        delta, x, base = t
        rel = f"，{'上升' if delta > 0 else '下降'}{abs(delta) / base * 100:.1f}%" if base else ""
        return f"{x.label}（{'增加' if delta > 0 else '减少'}{fmt_count(abs(delta))}件{rel}）"

    ups, downs = movers("previous")
    ctx.facts["rising"] = ups
    if ups or downs:
        s = f"与{ctx.prev}相比，"
        s += ("增幅较大的有" + _join(mover_text(t) for t in ups)) if ups else "无明显上升的类别"
        s += "；" + (("降幅较大的有" + _join(mover_text(t) for t in downs)) if downs else "无明显下降的类别") + "。"
        para.append(s)
    elif all(x.values["received"].previous is None for x in rows):
        para.append(f"{ctx.prev}无分类数据，暂不作环比分析。")
    yups, ydowns = movers("last_year")
    if yups or ydowns:
        s = "与去年同期相比，"
        s += ("增幅较大的有" + _join(mover_text(t) for t in yups)) if yups else "无明显上升的类别"
        s += "；" + (("降幅较大的有" + _join(mover_text(t) for t in ydowns)) if ydowns else "无明显下降的类别") + "。"
        para.append(s)
    elif all(x.values["received"].last_year is None for x in rows):
        para.append("去年同期无数据，暂不作同比分析。")
    sec.paragraphs = para
    table_rows = []
    for i, x in enumerate(rows[:TOP_N], 1):
        mv = x.values["received"]
        table_rows.append([str(i), x.label, fmt_count(mv.value), fmt_share(mv.value, total),
                           fmt_count(mv.previous), change_cell("count", mv.value, mv.previous),
                           change_cell("count", mv.value, mv.last_year)])
    sec.tables.append(Table(f"受理量前{min(TOP_N, len(rows))}位事项",
                            ["序号", "事项", "受理量", "占比", ctx.prev, "环比", "同比"], table_rows,
                            [True, False, True, True, True, True, True]))
    top10 = rows[:TOP_N]
    sec.charts.append(Chart("top_categories", "hbar", f"受理量前{len(top10)}位事项",
                            [x.label for x in top10],
                            [("受理量", [x.values["received"].value for x in top10])], unit="件"))
    return sec


def _score(v) -> str:
    return "—" if v is None else f"{v:.1f}"


def _areas(ctx: _Ctx) -> Section:
    p = ctx.principal
    sec = Section("area", "区域分析")
    if p is not None and p.scope_level in ("street", "community"):
        by = "community" if p.scope_level == "street" else "grid"
        name = "社区" if by == "community" else "网格"
        rows = ctx.m.breakdown(ctx.period, by, principal=p,
                               metrics=["received", "close_ontime", "satisfied"])
        rows = [x for x in rows if _v(x.values.get("received"))]
        rows.sort(key=lambda x: (-x.values["received"].value, x.code))
        if not rows:
            sec.paragraphs.append(f"{ctx.this}暂无分{name}数据。")
            return sec
        sec.paragraphs.append(f"从{name}看，受理量居前的是" + _join(
            f"{x.label}（{fmt_count(x.values['received'].value)}件）" for x in rows[:3]) + "。")
        sec.tables.append(Table(f"各{name}办理情况", [name, "受理量", "按时办结率", "满意率"],
                                [[x.label, fmt_count(x.values["received"].value),
                                  fmt_rate(_v(x.values.get("close_ontime"))),
                                  fmt_rate(_v(x.values.get("satisfied")))] for x in rows[:20]],
                                [False, True, True, True]))
        sec.charts.append(Chart(f"{by}_received", "hbar", f"各{name}受理量", [x.label for x in rows[:TOP_N]],
                                [("受理量", [x.values["received"].value for x in rows[:TOP_N]])], unit="件"))
        return sec

    ranks = ctx.m.ranking(ctx.period, "street", principal=p)
    ranks = [r for r in ranks if _v(r.values.get("received"))]
    if not ranks:
        sec.paragraphs.append(f"{ctx.this}暂无分街道数据。")
        return sec
    by_count = sorted(ranks, key=lambda r: (-r.values["received"].value, r.code))
    ranked = sorted(ranks, key=lambda r: (r.rank, r.code))
    if len(ranks) > 3:
        s = ("从街道看，受理量居前三位的是" + _join(
            f"{r.label}（{fmt_count(r.values['received'].value)}件）" for r in by_count[:3]) + "。")
        s += "综合排名前三位的是" + _join(f"{r.label}（{_score(r.score)}分）" for r in ranked[:3])
    else:
        s = (f"从街道看，{len(ranks)}个街道的受理量依次为" + _join(
            f"{r.label}{fmt_count(r.values['received'].value)}件" for r in by_count) + "。")
        s += "综合排名依次为" + _join(f"{r.label}（{_score(r.score)}分）" for r in ranked)
    if len(ranked) > 3:
        last = ranked[-1]
        s += (f"；排名末位的是{last.label}（{_score(last.score)}分，按时办结率"
              f"{fmt_rate(_v(last.values.get('close_ontime')))}，满意率{fmt_rate(_v(last.values.get('satisfied')))}）")
    sec.paragraphs.append(s + "。")
    ctx.facts["street_last"] = ranked[-1] if len(ranked) > 3 else None
    sec.tables.append(Table("街道综合排名", ["排名", "街道", "综合得分", "受理量", "按时办结率", "满意率", "重复诉求率"],
                            [[str(r.rank), r.label, _score(r.score), fmt_count(_v(r.values.get("received"))),
                              fmt_rate(_v(r.values.get("close_ontime"))), fmt_rate(_v(r.values.get("satisfied"))),
                              fmt_rate(_v(r.values.get("repeat")))] for r in ranked],
                            [True, False, True, True, True, True, True]))
    sec.charts.append(Chart("street_received", "bar", "各街道受理量", [r.label for r in by_count],
                            [("受理量", [r.values["received"].value for r in by_count])], unit="件"))
    return sec


def _misses(mv) -> int | None:
    if mv is None or mv.denominator is None or mv.numerator is None:
        return None
    return mv.denominator - mv.numerator


def _departments(ctx: _Ctx) -> Section:
    sec = Section("department", "部门办理情况")
    ranks = ctx.m.ranking(ctx.period, "department", principal=ctx.principal)
    ranks = [r for r in ranks if _v(r.values.get("received"))]
    if not ranks:
        sec.paragraphs.append(f"{ctx.this}暂无部门办理数据。")
        return sec
    ranked = sorted(ranks, key=lambda r: (r.rank, r.code))
    ctx.facts["dept_ranked"] = ranked
    s = f"{ctx.this}共有{len(ranked)}个部门参与排名。"
    if len(ranked) > 1:
        s += "综合排名前三位的是" + _join(f"{r.label}（{_score(r.score)}分）" for r in ranked[:3]) + "。"
    if len(ranked) > 3:
        bottom = ranked[-3:]
        s += "排名靠后的是" + _join(f"{r.label}（{_score(r.score)}分）" for r in reversed(bottom)) + "。"
    para = [s]
    overall = _v(ctx.summary.get("close_ontime"))
    if overall is not None:
        below = [r for r in ranked if _v(r.values.get("close_ontime")) is not None
                 and r.values["close_ontime"].value < overall]
        below.sort(key=lambda r: (r.values["close_ontime"].value, r.code))
        ctx.facts["dept_late"] = below
        if below:
            para.append(f"按时办结率低于{'全区' if ctx.principal is None or ctx.principal.is_district_wide else '总体'}"
                        f"水平（{fmt_rate(overall)}）的部门有{len(below)}个，其中较低的是"
                        + _join(f"{r.label}（{fmt_rate(r.values['close_ontime'].value)}）" for r in below[:3]) + "。")
        else:
            para.append(f"各部门按时办结率均不低于总体水平（{fmt_rate(overall)}）。")
    returned = [(n, r) for r in ranked if (n := _misses(r.values.get("first_dispatch")))]
    returned.sort(key=lambda t: (-t[0], t[1].code))
    ctx.facts["dept_returns"] = returned
    if returned:
        total = sum(n for n, _ in returned)
        para.append(f"{ctx.this}未能一次派准（退回或改派）的诉求涉及{len(returned)}个部门、共{fmt_count(total)}件次，"
                    "较多的是" + _join(f"{r.label}（{fmt_count(n)}件）" for n, r in returned[:3]) + "。")
    elif "first_dispatch" in ctx.defs:
        para.append(f"{ctx.this}各部门均无退回或改派。")
    sec.paragraphs = para
    sec.tables.append(Table("部门综合排名",
                            ["排名", "部门", "综合得分", "承办量", "按时签收率", "按时办结率", "一次派单准确率",
                             "退回/改派", "满意率"],
                            [[str(r.rank), r.label, _score(r.score), fmt_count(_v(r.values.get("received"))),
                              fmt_rate(_v(r.values.get("sign_ontime"))), fmt_rate(_v(r.values.get("close_ontime"))),
                              fmt_rate(_v(r.values.get("first_dispatch"))),
                              fmt_count(_misses(r.values.get("first_dispatch"))),
                              fmt_rate(_v(r.values.get("satisfied")))] for r in ranked],
                            [True, False, True, True, True, True, True, True, True]))
    top = sorted(ranked, key=lambda r: (-r.values["received"].value, r.code))[:TOP_N]
    sec.charts.append(Chart("department_close_ontime", "hbar", "承办量前列部门的按时办结率",
                            [r.label for r in top], [("按时办结率", [_v(r.values.get("close_ontime")) for r in top])],
                            percent=True))
    return sec


def _satisfaction(ctx: _Ctx) -> Section:
    sec = Section("satisfaction", "满意度与回访")
    sat = ctx.summary.get("satisfied")
    res = ctx.summary.get("resolved")
    if sat is None or sat.value is None:
        sec.paragraphs.append(f"{ctx.this}暂无回访数据。")
    else:
        s = (f"{ctx.this}回访诉求{fmt_count(sat.denominator)}件，其中满意（含基本满意）{fmt_count(sat.numerator)}件，"
             f"满意率{fmt_rate(sat.value)}，{change_phrase('rate', sat.value, sat.previous, grain=ctx.grain)}，"
             f"{change_phrase('rate', sat.value, sat.last_year, against='yoy', grain=ctx.grain)}")
        if res is not None and res.value is not None:
            s += f"；解决率{fmt_rate(res.value)}，{change_phrase('rate', res.value, res.previous, grain=ctx.grain)}"
        sec.paragraphs.append(s + "。")
        ranked = ctx.facts.get("dept_ranked") or []
        rated = [r for r in ranked if _v(r.values.get("satisfied")) is not None
                 and (r.values["satisfied"].denominator or 0) >= 3]
        rated.sort(key=lambda r: (r.values["satisfied"].value, r.code))
        low = [r for r in rated if r.values["satisfied"].value < sat.value][:3]
        ctx.facts["dept_unsatisfied"] = low
        if low:
            sec.paragraphs.append("满意率低于总体水平的部门中，较低的是" + _join(
                f"{r.label}（{fmt_rate(r.values['satisfied'].value)}，回访{fmt_count(r.values['satisfied'].denominator)}件）"
                for r in low) + "。")
    trend = _trend(ctx)
    if trend:
        labels = [p.short_label for p, _ in trend]
        sec.charts.append(Chart("trend_rates", "line", f"{ctx.period.start.year}年各月满意率与按时办结率", labels,
                                [("满意率", [_v(v.get("satisfied")) for _, v in trend]),
                                 ("按时办结率", [_v(v.get("close_ontime")) for _, v in trend])],
                                percent=True))
    return sec


def _warnings(ctx: _Ctx) -> Section:
    sec = Section("warning", "预警与主动治理")
    proactive = (ctx.facts.get("channels") or {}).get("proactive")
    try:
        from jiedao.cockpit.warnings import WARNING_KINDS, list_warnings
    except ImportError:
        sec.paragraphs.append("预警模块未启用，本期不作预警分析。")
        list_warnings = None
    if list_warnings is not None:
        with ctx.db.session() as s:
            who = ctx.principal or _system_principal(s)
            p0, p1 = ctx.period.start, ctx.period.end
            # expired = open until nobody acted on it in time: still not dealt with
            ws = list_warnings(s, who, status=("open", "expired"), overlapping=(p0, p1), limit=1000)
            rows = []
            for w in ws:
                ws_, we_ = _as_date(w.window_start), _as_date(w.window_end)
                if ws_ is not None and we_ is not None and (we_ < p0 or ws_ >= p1):
                    continue
                rows.append((w.kind, w.title, w.score, len(w.case_ids or [])))
        ctx.facts["open_warnings"] = len(rows)
        if rows:
            counts: dict[str, int] = {}
            for k, *_ in rows:
                counts[k] = counts.get(k, 0) + 1
            sec.paragraphs.append(f"{ctx.this}未处置的预警共{len(rows)}条，其中" + _join(
                f"{WARNING_KINDS.get(k, k)}{n}条" for k, n in counts.items()) + "。")
            rows.sort(key=lambda t: -(t[2] or 0))
            sec.tables.append(Table("未处置预警（按预警强度）", ["类型", "预警", "涉及诉求"],
                                    [[WARNING_KINDS.get(k, k), t, fmt_count(n)] for k, t, _, n in rows[:10]],
                                    [False, False, True]))
        else:
            sec.paragraphs.append(f"{ctx.this}暂无未处置的预警。")
    if proactive:
        sec.paragraphs.append(f"{ctx.this}通过主动治理（未诉先办）立案{fmt_count(proactive)}件。")
    else:
        sec.paragraphs.append(f"{ctx.this}暂无主动治理立案。")
    return sec


def _as_date(v):
    if v is None:
        return None
    return v.date() if isinstance(v, datetime) else v


def _weakest(ctx: _Ctx, row) -> str:
    """", 短板在X（本部门a%，总体b%）": the ranked rate furthest below the overall value."""
    worst, gap = None, 0.0
    for key, mv in row.values.items():
        d, overall = ctx.defs.get(key), _v(ctx.summary.get(key))
        if d is None or d.kind != "rate" or mv.value is None or overall is None:
            continue
        diff = (overall - mv.value) if d.higher_is_better else (mv.value - overall)
        if diff > gap:
            worst, gap = key, diff
    if worst is None:
        return ""
    return (f"，短板在{ctx.defs[worst].label}（{fmt_rate(row.values[worst].value)}，"
            f"总体为{fmt_rate(ctx.summary[worst].value)}）")


def _advice(ctx: _Ctx) -> Section:
    """下一步建议: rules over the numbers gathered by the other sections."""
    items = []
    ranked = ctx.facts.get("dept_ranked") or []
    if len(ranked) > 3:
        bottom = list(reversed(ranked[-2:]))
        items.append("加强对排名靠后部门的督办。" + "；".join(
            f"{r.label}综合得分{_score(r.score)}分{_weakest(ctx, r)}" for r in bottom)
            + "。建议对照短板指标逐件梳理问题诉求，压实办理责任。")
    late = ctx.facts.get("dept_late") or []
    if late and not items:
        items.append("提升按时办结水平。" + _join(
            f"{r.label}按时办结率{fmt_rate(r.values['close_ontime'].value)}" for r in late[:2]) + "，建议加强时限提醒和督办。")
    rising = [t for t in (ctx.facts.get("rising") or []) if t[2]]
    if rising:
        delta, x, base = rising[0]
        items.append(f"关注上升较快的诉求类别。{x.label}{ctx.this}较{ctx.prev}增加{fmt_count(delta)}件、"
                     f"上升{delta / base * 100:.1f}%，建议分析成因，开展源头治理和专项整治。")
    rep = ctx.summary.get("repeat")
    if rep is not None and rep.value is not None and rep.previous is not None and rep.value > rep.previous:
        items.append(f"减少重复诉求。重复诉求率{fmt_rate(rep.value)}，{change_phrase('rate', rep.value, rep.previous, grain=ctx.grain)}，"
                     "建议对反复来电、同址反复问题开展“回头看”，一次解决到位。")
    returns = ctx.facts.get("dept_returns") or []
    if returns:
        n, r = returns[0]
        items.append(f"提高派单精准度。{r.label}退回或改派{fmt_count(n)}件，建议结合职责清单校准派单规则，减少推诿扯皮。")
    low = ctx.facts.get("dept_unsatisfied") or []
    if low:
        r = low[0]
        items.append(f"提升群众满意度。{r.label}满意率{fmt_rate(r.values['satisfied'].value)}，"
                     "建议对不满意诉求逐件回访、重办，改进答复质量。")
    last = ctx.facts.get("street_last")
    if last is not None:
        items.append(f"补齐区域短板。{last.label}综合排名末位，建议街道对标先进、查找差距。")
    open_w = ctx.facts.get("open_warnings")
    if open_w:
        items.append(f"用好预警研判。尚有{fmt_count(open_w)}条预警未处置，建议尽快研判，符合条件的转为主动治理任务，做到未诉先办。")
    if not items:
        items.append("各项指标运行平稳，建议保持现有工作机制，持续跟踪重点类别和重点区域。")
    return Section("advice", "下一步建议", items=items)


# ---------------------------------------------------------------- period parsing (CLI / page)


def parse_month(text: str | None):
    """"2025-06" -> the month Period; anything else -> ValidationError("--month 必须是 YYYY-MM")."""
    import re

    from jiedao.cockpit.periods import Period

    if not text or not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", text.strip()):
        raise ValidationError([Problem("--month 必须是 YYYY-MM（如 2025-06）")])
    return Period.parse(text.strip())


# ---------------------------------------------------------------- SVG charts (HTML)


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1
    exp = 10 ** math.floor(math.log10(v))
    for f in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if v <= f * exp:
            return f * exp
    return 10 * exp


def _tick(v: float, chart: Chart) -> str:
    if chart.percent:
        return f"{v:.0f}%"
    return f"{v:,.0f}" if v >= 10 or v == int(v) else f"{v:.1f}"


def _label(v: float | None, chart: Chart) -> str:
    if v is None:
        return ""
    return fmt_rate(v) if chart.percent else fmt_count(v)


def svg_chart(chart: Chart) -> str:
    """The chart as an inline SVG (escaped text, no script): works under a strict CSP and in print."""
    e = html.escape
    vals = [v for _, ser in chart.series for v in ser if v is not None]
    if chart.percent:  # percentages 0–100; zoom in when every value is high
        lo = min(vals, default=0)
        vmin = max(0.0, math.floor(lo / 10) * 10 - 10) if vals and lo > 30 and chart.kind == "line" else 0.0
        vmax = 100.0
    else:
        vmin, vmax = 0.0, _nice_max(max(vals, default=0))
    span = (vmax - vmin) or 1
    parts = []
    if chart.kind == "hbar":
        n = len(chart.labels)
        row, left, right, top = 26, 190, 70, 10
        w, h = 720, top + n * row + 24
        plot_w = w - left - right
        parts.append(f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {w} {h}" '
                     f'width="100%" role="img" aria-label="{e(chart.title)}" data-chart="{e(chart.key)}">')
        for i in range(5):
            x = left + plot_w * i / 4
            parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + n * row}" class="bc-grid"/>')
            parts.append(f'<text x="{x:.1f}" y="{h - 6}" class="bc-tick" text-anchor="middle">'
                         f'{e(_tick(vmin + span * i / 4, chart))}</text>')
        ser = chart.series[0][1]
        for i, (lab, v) in enumerate(zip(chart.labels, ser, strict=False)):
            y = top + i * row
            short = lab if len(lab) <= 12 else lab[:11] + "…"
            parts.append(f'<text x="{left - 8}" y="{y + row * 0.65:.1f}" class="bc-label" text-anchor="end">'
                         f'<title>{e(lab)}</title>{e(short)}</text>')
            if v is None:
                continue
            bw = max(0.0, plot_w * (v - vmin) / span)
            parts.append(f'<rect x="{left}" y="{y + 4}" width="{bw:.1f}" height="{row - 8}" '
                         f'fill="{CHART_COLORS[0]}" class="bc-bar"><title>{e(lab)}：{e(_label(v, chart))}</title></rect>')
            parts.append(f'<text x="{left + bw + 4:.1f}" y="{y + row * 0.65:.1f}" class="bc-value">'
                         f'{e(_label(v, chart))}</text>')
        parts.append("</svg>")
        return "".join(parts)

    n = max(1, len(chart.labels))
    w, h, left, right, top, bottom = 720, 300, 56, 16, 16, 56
    plot_w, plot_h = w - left - right, h - top - bottom
    parts.append(f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {w} {h}" '
                 f'width="100%" role="img" aria-label="{e(chart.title)}" data-chart="{e(chart.key)}">')
    for i in range(5):
        y = top + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{w - right}" y2="{y:.1f}" class="bc-grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="bc-tick" text-anchor="end">'
                     f'{e(_tick(vmin + span * i / 4, chart))}</text>')
    slot = plot_w / n
    rotate = n > 8 and max((len(x) for x in chart.labels), default=0) > 3
    for i, lab in enumerate(chart.labels):
        x = left + slot * (i + 0.5)
        short = lab if len(lab) <= 8 else lab[:7] + "…"
        if rotate:
            parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 14}" class="bc-label" text-anchor="end" '
                         f'transform="rotate(-35 {x:.1f} {top + plot_h + 14})"><title>{e(lab)}</title>{e(short)}</text>')
        else:
            parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 18}" class="bc-label" text-anchor="middle">'
                         f'<title>{e(lab)}</title>{e(short)}</text>')

    def ypos(v: float) -> float:
        return top + plot_h - plot_h * (max(v, vmin) - vmin) / span

    if chart.kind == "bar":
        k = len(chart.series)
        bw = slot * 0.7 / k
        for j, (name, ser) in enumerate(chart.series):
            for i, v in enumerate(ser):
                if v is None:
                    continue
                x = left + slot * i + slot * 0.15 + j * bw
                y = ypos(v)
                parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw:.1f}" height="{top + plot_h - y:.1f}" '
                             f'fill="{CHART_COLORS[j % len(CHART_COLORS)]}" class="bc-bar">'
                             f'<title>{e(chart.labels[i])} {e(name)}：{e(_label(v, chart))}</title></rect>')
                if n <= 14 and k == 1:
                    parts.append(f'<text x="{x + bw / 2:.1f}" y="{y - 4:.1f}" class="bc-value" text-anchor="middle">'
                                 f'{e(_label(v, chart))}</text>')
    else:
        for j, (name, ser) in enumerate(chart.series):
            color = CHART_COLORS[j % len(CHART_COLORS)]
            pts = [(left + slot * (i + 0.5), ypos(v)) for i, v in enumerate(ser) if v is not None]
            if len(pts) > 1:
                parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2.5" class="bc-line" points="'
                             + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
            for (x, y), v in zip(pts, [v for v in ser if v is not None], strict=False):
                parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}" class="bc-point">'
                             f'<title>{e(name)}：{e(_label(v, chart))}</title></circle>')
    if len(chart.series) > 1:
        x = left
        for j, (name, _) in enumerate(chart.series):
            color = CHART_COLORS[j % len(CHART_COLORS)]
            parts.append(f'<rect x="{x}" y="{h - 16}" width="12" height="12" fill="{color}"/>'
                         f'<text x="{x + 16}" y="{h - 6}" class="bc-legend">{e(name)}</text>')
            x += 24 + 14 * len(name)
    parts.append("</svg>")
    return "".join(parts)


# ---------------------------------------------------------------- HTML

TEMPLATES = Path(__file__).resolve().parent / "templates"
CSS_FILE = Path(__file__).resolve().parent.parent / "web" / "static" / "cockpit_briefing.css"


@lru_cache(maxsize=1)
def _env():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"], default=True))
    env.globals["svg_chart"] = svg_chart
    return env


def briefing_context(b: Briefing) -> dict:
    """What the briefing templates need (also used by the web page)."""
    from markupsafe import Markup

    return {"b": b, "charts": {c.key: Markup(svg_chart(c)) for s in b.sections for c in s.charts}}


def render_html(b: Briefing) -> str:
    """A standalone printable HTML document (CSS inline, charts as SVG, no script)."""
    css = CSS_FILE.read_text(encoding="utf-8") if CSS_FILE.exists() else ""
    return _env().get_template("cockpit/briefing_doc.html").render(css=css, **briefing_context(b))


# ---------------------------------------------------------------- fonts and PNG charts


def find_cjk_font() -> tuple[str, int] | None:
    """(path, face index) of a Simplified-Chinese font on this system, or None.

    ``JIEDAO_CJK_FONT`` (a .ttf/.otf/.ttc path, optionally "path#index") wins; then fontconfig
    (``fc-match``), then well-known locations (Debian fonts-noto-cjk, WenQuanYi, Droid).
    """
    return _find_cjk_font(os.environ.get("JIEDAO_CJK_FONT", ""))


@lru_cache(maxsize=4)
def _find_cjk_font(override: str) -> tuple[str, int] | None:
    candidates: list[str] = []
    if override:
        path, _, idx = override.partition("#")
        if Path(path).exists():
            return path, int(idx or 0) if idx else _sc_index(path)
    import shutil
    import subprocess

    if shutil.which("fc-match"):
        try:
            out = subprocess.run(["fc-match", "-f", "%{file}", "sans-serif:lang=zh-cn"], capture_output=True,
                                 text=True, timeout=10).stdout.strip()
            if out:
                candidates.append(out)
        except (OSError, subprocess.SubprocessError):
            pass
    candidates += [
        "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
        "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
        "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
        "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
        "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
        "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
        "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
        "/System/Library/Fonts/PingFang.ttc",
        "C:/Windows/Fonts/msyh.ttc",
        "C:/Windows/Fonts/simhei.ttf",
    ]
    for path in candidates:
        if path and Path(path).exists() and _has_cjk(path):
            return path, _sc_index(path)
    return None


def _has_cjk(path: str) -> bool:
    try:
        from fontTools.ttLib import TTCollection, TTFont

        font = TTCollection(path, lazy=True).fonts[0] if path.lower().endswith(".ttc") else TTFont(path, lazy=True)
        cmap = font.getBestCmap() or {}
        return ord("诉") in cmap and ord("率") in cmap
    except Exception:  # noqa: BLE001 — an unreadable font is simply not a candidate
        return False


def _sc_index(path: str) -> int:
    if not path.lower().endswith(".ttc"):
        return 0
    try:
        from fontTools.ttLib import TTCollection

        for i, f in enumerate(TTCollection(path, lazy=True).fonts):
            name = f["name"].getDebugName(1) or ""
            if name.endswith(" SC") or "SC" in name.split():
                return i
    except Exception:  # noqa: BLE001
        pass
    return 0


NO_FONT = ("未找到中文字体，无法生成图表和 PDF。请安装中文字体（如 Debian/Ubuntu 的 fonts-noto-cjk），"
           "或用环境变量 JIEDAO_CJK_FONT 指定字体文件路径。")


@lru_cache(maxsize=1)
def _mpl_family() -> str | None:
    font = find_cjk_font()
    if font is None:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import font_manager

    path, index = font
    try:
        font_manager.fontManager.addfont(path)
    except Exception:  # noqa: BLE001
        return None
    names = [f.name for f in font_manager.fontManager.ttflist if f.fname == path]
    # prefer the Simplified Chinese face of a collection
    for n in names:
        if n.endswith(" SC"):
            return n
    return names[0] if names else None


def chart_png(chart: Chart, *, width_in: float = 6.4) -> bytes | None:
    """The chart as a PNG (matplotlib, CJK font); None when no CJK font is available.
    Cached on the chart, so DOCX and PDF of one briefing draw it once."""
    cached = getattr(chart, "_png", None)
    if cached is None:
        cached = _chart_png(chart, width_in)
        chart._png = cached
    return cached


def _chart_png(chart: Chart, width_in: float) -> bytes | None:
    family = _mpl_family()
    if family is None:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    rc = {"font.family": [family], "font.size": 9, "axes.spines.top": False, "axes.spines.right": False}
    with plt.rc_context(rc):
        n = len(chart.labels)
        height = max(2.4, 0.28 * n + 0.8) if chart.kind == "hbar" else 3.0
        fig, ax = plt.subplots(figsize=(width_in, height), dpi=160)
        try:
            vals = [v for _, ser in chart.series for v in ser if v is not None]
            narrow = chart.percent and vals and max(vals) - min(vals) < 5
            fmt = FuncFormatter(lambda v, _: (f"{v:.1f}%" if narrow else f"{v:.0f}%") if chart.percent
                                else f"{v:,.0f}")
            if chart.kind == "hbar":
                vals = [v or 0 for v in chart.series[0][1]]
                ys = list(range(n))[::-1]
                bars = ax.barh(ys, vals, color=CHART_COLORS[0])
                ax.set_yticks(ys, [lab if len(lab) <= 14 else lab[:13] + "…" for lab in chart.labels])
                ax.xaxis.set_major_formatter(fmt)
                ax.bar_label(bars, labels=[_label(v, chart) for v in chart.series[0][1]], padding=3, fontsize=8)
                if chart.percent:
                    ax.set_xlim(0, 112)
            elif chart.kind == "bar":
                k = len(chart.series)
                w = 0.7 / k
                for j, (name, ser) in enumerate(chart.series):
                    xs = [i + (j - (k - 1) / 2) * w for i in range(n)]
                    bars = ax.bar(xs, [v or 0 for v in ser], width=w, color=CHART_COLORS[j % 5], label=name)
                    if k == 1 and n <= 14:
                        ax.bar_label(bars, labels=[_label(v, chart) for v in ser], padding=2, fontsize=7)
                ax.set_xticks(range(n), chart.labels, rotation=35 if n > 8 and max(map(len, chart.labels)) > 3 else 0,
                              ha="right" if n > 8 and max(map(len, chart.labels)) > 3 else "center")
                ax.yaxis.set_major_formatter(fmt)
                if k > 1:
                    ax.legend(frameon=False)
            else:
                for j, (name, ser) in enumerate(chart.series):
                    pts = [(i, v) for i, v in enumerate(ser) if v is not None]
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=CHART_COLORS[j % 5], label=name)
                ax.set_xticks(range(n), chart.labels)
                ax.yaxis.set_major_formatter(fmt)
                ax.legend(frameon=False)
            ax.set_title(chart.title + (f"（{chart.unit}）" if chart.unit else ""), fontsize=10)
            fig.tight_layout()
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
            return buf.getvalue()
        finally:
            plt.close(fig)


# ---------------------------------------------------------------- DOCX


def _docx_font(run_or_style, name: str) -> None:
    from docx.oxml.ns import qn

    run_or_style.font.name = name
    rpr = run_or_style.element.get_or_add_rPr()
    fonts = rpr.find(qn("w:rFonts"))
    if fonts is None:
        fonts = rpr.makeelement(qn("w:rFonts"), {})
        rpr.append(fonts)
    for attr in ("w:eastAsia", "w:ascii", "w:hAnsi"):
        fonts.set(qn(attr), name)


def render_docx(b: Briefing) -> bytes:
    """The briefing as a Word document: headings, paragraphs, tables (Table Grid) and chart images."""
    from docx import Document
    from docx.enum.table import WD_TABLE_ALIGNMENT
    from docx.enum.text import WD_ALIGN_PARAGRAPH
    from docx.shared import Cm, Pt, RGBColor

    doc = Document()
    sec = doc.sections[0]
    sec.page_width, sec.page_height = Cm(21), Cm(29.7)
    sec.left_margin = sec.right_margin = Cm(2.4)
    sec.top_margin = sec.bottom_margin = Cm(2.2)
    normal = doc.styles["Normal"]
    _docx_font(normal, "宋体")
    normal.font.size = Pt(11)
    for name in ("Title", "Heading 1", "Heading 2"):
        st = doc.styles[name]
        _docx_font(st, "黑体")
        st.font.color.rgb = RGBColor(0, 0, 0)

    t = doc.add_paragraph(style="Title")
    t.alignment = WD_ALIGN_PARAGRAPH.CENTER
    t.add_run(b.title).font.size = Pt(18)
    meta = doc.add_paragraph()
    meta.alignment = WD_ALIGN_PARAGRAPH.CENTER
    meta.add_run(_meta_line(b)).font.size = Pt(9)
    png_missing = False
    for s in b.sections:
        doc.add_heading(s.title, level=1)
        for ptext in s.paragraphs:
            para = doc.add_paragraph(ptext)
            para.paragraph_format.first_line_indent = Pt(22)
        for i, item in enumerate(s.items, 1):
            para = doc.add_paragraph(f"{i}. {item}")
            para.paragraph_format.first_line_indent = Pt(22)
        for c in s.charts:
            png = chart_png(c)
            if png is None:
                png_missing = True
                continue
            doc.add_picture(io.BytesIO(png), width=Cm(15.5))
            doc.paragraphs[-1].alignment = WD_ALIGN_PARAGRAPH.CENTER
        for tb in s.tables:
            cap = doc.add_paragraph()
            cap.alignment = WD_ALIGN_PARAGRAPH.CENTER
            r = cap.add_run(tb.title)
            r.bold = True
            r.font.size = Pt(10)
            table = doc.add_table(rows=1, cols=len(tb.columns))
            table.style = "Table Grid"
            table.alignment = WD_TABLE_ALIGNMENT.CENTER
            for j, col in enumerate(tb.columns):
                cell = table.rows[0].cells[j]
                cell.text = ""
                run = cell.paragraphs[0].add_run(col)
                run.bold = True
                run.font.size = Pt(9)
            for row in tb.rows:
                cells = table.add_row().cells
                for j, val in enumerate(row):
                    cells[j].text = ""
                    run = cells[j].paragraphs[0].add_run(val)
                    run.font.size = Pt(9)
                    if j < len(tb.numeric) and tb.numeric[j]:
                        cells[j].paragraphs[0].alignment = WD_ALIGN_PARAGRAPH.RIGHT
            doc.add_paragraph()
    if png_missing:
        doc.add_paragraph("（" + NO_FONT + "）")
    buf = io.BytesIO()
    doc.save(buf)
    return buf.getvalue()


def _meta_line(b: Briefing) -> str:
    s = f"统计范围：{b.scope_label} · 统计周期：{b.period.label} · 生成时间：{b.generated_at:%Y-%m-%d %H:%M}"
    if b.demo:
        s += f" · {b.demo_label or '示例数据'}"
    return s


# ---------------------------------------------------------------- PDF


# first-line indent of two characters; no-break spaces, since fpdf2 wraps CJK text at the last
# breakable space (an ideographic space) and would leave the indent alone on a line
INDENT = "\u00a0" * 4


class PdfUnavailable(ValidationError):
    """PDF cannot be made on this system (no CJK font)."""


def render_pdf(b: Briefing) -> bytes:
    """The briefing as PDF (fpdf2, a CJK font from the system embedded as a subset, chart PNGs).

    Raises :class:`PdfUnavailable` with a clear message when no Chinese font is found.
    """
    from fpdf import FPDF
    from fpdf.fonts import FontFace

    font = find_cjk_font()
    if font is None:
        raise PdfUnavailable([Problem(NO_FONT)])
    path, index = font

    class _Pdf(FPDF):
        def footer(self):
            self.set_y(-14)
            self.set_font("cjk", size=8)
            self.set_text_color(120)
            self.cell(0, 8, f"第 {self.page_no()} 页 / 共 {{nb}} 页", align="C")

    pdf = _Pdf(format="A4")
    pdf.set_margins(20, 18, 20)
    pdf.set_auto_page_break(True, margin=18)
    kw = {"collection_font_number": index} if path.lower().endswith(".ttc") else {}
    pdf.add_font("cjk", "", path, **kw)
    bold = _bold_variant(path)
    if bold:
        pdf.add_font("cjk", "B", bold, **kw)
    bstyle = "B" if bold else ""
    pdf.set_title(b.title)
    pdf.set_creator("Jiedao 数字街道")
    pdf.add_page()
    pdf.set_font("cjk", bstyle, 17)
    pdf.multi_cell(0, 10, b.title, align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("cjk", "", 8.5)
    pdf.set_text_color(90)
    pdf.multi_cell(0, 5, _meta_line(b), align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0)
    pdf.ln(4)
    for s in b.sections:
        pdf.set_font("cjk", bstyle, 13)
        pdf.multi_cell(0, 9, s.title, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("cjk", "", 10.5)
        for ptext in s.paragraphs:
            pdf.multi_cell(0, 6.4, INDENT + ptext, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1.5)
        for i, item in enumerate(s.items, 1):
            pdf.multi_cell(0, 6.4, f"{INDENT}{i}.\u00a0{item}", new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1)
        for c in s.charts:
            png = chart_png(c)
            if png is None:
                continue
            pdf.image(io.BytesIO(png), w=pdf.epw)
            pdf.ln(2)
        for tb in s.tables:
            pdf.set_font("cjk", bstyle, 9.5)
            pdf.multi_cell(0, 7, tb.title, align="C", new_x="LMARGIN", new_y="NEXT")
            pdf.set_font("cjk", "", 8)
            widths = _col_widths(tb)
            aligns = ["RIGHT" if (j < len(tb.numeric) and tb.numeric[j]) else "LEFT" for j in range(len(tb.columns))]
            with pdf.table(col_widths=widths, text_align=aligns, line_height=5.2,
                           headings_style=FontFace(emphasis="BOLD" if bold else None, fill_color=(235, 240, 248)),
                           first_row_as_headings=True) as table:
                table.row(tb.columns)
                for row in tb.rows:
                    table.row(row)
            pdf.ln(4)
    return bytes(pdf.output())


def _bold_variant(path: str) -> str | None:
    for a, bname in (("-Regular", "-Bold"), ("Regular", "Bold")):
        if a in path:
            cand = path.replace(a, bname)
            if cand != path and Path(cand).exists():
                return cand
    return None


def _col_widths(tb: Table) -> list[int]:
    widths = []
    for j, col in enumerate(tb.columns):
        longest = max([len(col)] + [len(r[j]) for r in tb.rows if j < len(r)])
        widths.append(max(3, min(longest, 16)) * (1 if (j < len(tb.numeric) and tb.numeric[j]) else 2))
    return widths


FORMATS = {"html": ("text/html; charset=utf-8", render_html), "docx": (
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document", render_docx),
    "pdf": ("application/pdf", render_pdf)}


def render(b: Briefing, fmt: str) -> bytes:
    """The briefing in ``fmt`` (html / docx / pdf) as bytes."""
    if fmt not in FORMATS:
        raise ValidationError([Problem("--format 必须是 html、docx 或 pdf")])
    out = FORMATS[fmt][1](b)
    return out.encode("utf-8") if isinstance(out, str) else out


# ---------------------------------------------------------------- cache


class BriefingCache:
    """The last few briefings and their files, per (period, caller's scope, data version).

    A briefing of the full demo takes seconds to gather and the DOCX/PDF more to draw, and
    every reader of a month's briefing would otherwise pay that again. The data version is the
    mirror snapshot the numbers come from plus the warnings table's (count, last change), so
    a new case, a workflow action or a re-scan makes the next view rebuild; nothing else can
    change what a briefing says.
    """

    def __init__(self, size: int = 16):
        self.size = size
        self._entries: OrderedDict[tuple, tuple[Briefing, dict[str, bytes]]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(db, period, principal, metrics) -> tuple:
        from sqlalchemy import text

        metrics.refresh()
        with db.engine.connect() as c:
            warnings = tuple(c.execute(text("SELECT COUNT(*), MAX(updated_at) FROM cockpit_warning")).one())
        who = None if principal is None else (principal.role, principal.scope_level, principal.scope_code)
        return (db.url, period.grain, period.start, who, metrics.mirror.version, warnings)

    def briefing(self, db, period, *, principal=None, metrics) -> tuple[Briefing, tuple]:
        """The briefing (built now or reused) and its cache key, for :meth:`file`."""
        key = self._key(db, period, principal, metrics)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                return hit[0], key
        b = build_briefing(db, period, principal=principal, metrics=metrics)
        with self._lock:
            self._entries[key] = (b, {})
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return b, key

    def file(self, b: Briefing, key: tuple, fmt: str) -> bytes:
        """``render(b, fmt)``, drawn once per cached briefing."""
        with self._lock:
            entry = self._entries.get(key)
            files = entry[1] if entry is not None and entry[0] is b else None
            if files is not None and fmt in files:
                return files[fmt]
        data = render(b, fmt)
        if files is not None:
            with self._lock:
                files[fmt] = data
        return data


cache = BriefingCache()


def filename(b: Briefing, fmt: str) -> str:
    """Download name, e.g. "briefing-2025-06.docx"."""
    return f"briefing-{b.period.key}.{fmt}"
