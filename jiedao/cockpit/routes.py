"""Cockpit pages (驾驶舱): the home with headline KPIs, trend, a grid map coloured by any
metric, top matters, overdue / warning lists and early warnings; rankings of departments and
streets; a page per department, street, community, grid, matter (事项) and channel; the
drill-down from any number to the cases behind it; the data hub overview; XLSX export of
every table (same URL + ``format=xlsx&table=<key>``).

Every number comes from :mod:`jiedao.cockpit.metrics` (one place for every definition); the
routes only choose the period, the filters and the principal, and format the results. Scope:
the metrics layer restricts every figure to the request's principal; pages of one object
(street, community, grid, department) check visibility first and answer 403 / 404 as the
geo pages do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from jiedao.auth.deps import require_roles, require_user
from jiedao.auth.scope import Principal, check_visible
from jiedao.cockpit.export import Column, SheetTable, to_xlsx, xlsx_response
from jiedao.errors import NotFound, PermissionDenied, ValidationError
from jiedao.web.deps import get_session
from jiedao.web.nav import NavItem, add_nav
from jiedao.web.templating import render

router = APIRouter(include_in_schema=False)

LANDING_ROLES = ("leader", "admin")  # "/" opens the cockpit for these roles
RANKING_ROLES = ("leader", "admin", "operator", "steward")
HUB_ROLES = ("steward", "admin", "leader")

add_nav(NavItem("cockpit", "驾驶舱", "/cockpit", order=5, icon="◉", prefix="/cockpit",
                roles=("leader", "admin", "operator", "steward", "handler", "street_staff")))
add_nav(NavItem("cockpit_rankings", "排名", "/cockpit/rankings", roles=RANKING_ROLES, order=6,
                icon="≡", prefix="/cockpit/rankings"))
add_nav(NavItem("cockpit_hub", "数据归集概览", "/cockpit/hub", roles=HUB_ROLES, order=7, icon="◫",
                prefix="/cockpit/hub"))

User = Annotated[Principal, Depends(require_user)]
Ranker = Annotated[Principal, Depends(require_roles(*RANKING_ROLES))]
HubViewer = Annotated[Principal, Depends(require_roles(*HUB_ROLES))]
DB = Annotated[Session, Depends(get_session)]

PeriodQ = Annotated[str | None, Query(max_length=12, pattern=r"^[0-9WQ-]*$",
                                      description="周期：2025-06 / 2025-W23 / 2025-Q2 / 2025")]
GrainQ = Annotated[str | None, Query(max_length=8)]
FormatQ = Annotated[str | None, Query(alias="format", max_length=8)]
TableQ = Annotated[str | None, Query(max_length=40)]
StreetCode = Annotated[str, Path(pattern=r"^\d{9}$", description="街道代码（9位）")]
CommunityCode = Annotated[str, Path(pattern=r"^\d{12}$", description="社区代码（12位）")]
GridCode = Annotated[str, Path(pattern=r"^\d{15}$", description="网格代码（15位）")]
DeptCode = Annotated[str, Path(pattern=r"^[A-Za-z0-9_]{1,20}$", description="部门编码")]
MatterCode = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,20}$", description="事项编码")]
ChannelCode = Annotated[str, Path(pattern=r"^[a-z0-9_]{1,16}$", description="渠道")]

GRAINS = {"week": "按周", "month": "按月", "quarter": "按季度", "year": "按年"}
PERIOD_CHOICES = {"week": 26, "month": 24, "quarter": 8, "year": 4}
FILTER_KEYS = ("department", "street", "community", "grid", "category", "channel")
PAGE_URL = {"department": "/cockpit/departments/", "street": "/cockpit/streets/",
            "community": "/cockpit/communities/", "grid": "/cockpit/grids/",
            "category": "/cockpit/categories/", "channel": "/cockpit/channels/"}
DIM_LABELS = {"department": "部门", "street": "街道", "community": "社区", "grid": "网格",
              "category": "事项", "channel": "渠道"}
# The level below each scope / page (the breakdown shown on it).
CHILD_OF_SCOPE = {"district": "street", "street": "community", "community": "grid",
                  "department": "category"}
PARTS = {"denominator": "全部", "numerator": "达标", "miss": "未达标"}
PER_PAGE = 50
EXPORT_CAP = 100_000  # most cases written to one drill-down workbook
WARN_SCAN = 300  # open assignments (nearest deadline first) checked for the 临期 warning


# ---------------------------------------------------------------- metrics access


def metrics(request: Request):
    """The process-wide metrics layer of this app's database (it syncs its own mirror)."""
    from jiedao.cockpit.metrics import Metrics

    return Metrics.for_database(request.app.state.db)


def metric_defs() -> dict:
    from jiedao.cockpit.metrics import METRICS

    return METRICS


def bad_query(field_: str, message: str):
    """Answer 422 naming the query parameter, like FastAPI's own parameter validation."""
    from fastapi.exceptions import RequestValidationError

    raise RequestValidationError([{"type": "value_error", "loc": ("query", field_),
                                   "msg": message, "input": None}])


def parse_period(value: str):
    from jiedao.cockpit.periods import Period

    try:
        return Period.parse(value)
    except ValidationError:
        bad_query("period", f"统计期“{value}”格式不正确（例如 2025-06、2025-W23、2025-Q2、2025）")


def resolve_period(m, period: str | None, grain: str | None):
    """(period, grain): the requested period, else the latest period with data at ``grain``."""
    grain = grain if grain in GRAINS else None
    if period:
        p = parse_period(period)
        if grain is None or p.grain == grain:
            return p, p.grain
    g = grain or "month"
    return m.latest_period(g), g


def period_choices(m, period, grain: str) -> list:
    """Periods offered in the selector: the latest with data and the ones before it."""
    latest = m.latest_period(grain)
    out = []
    cur = latest
    for _ in range(PERIOD_CHOICES.get(grain, 12)):
        if cur is None:
            break
        out.append(cur)
        cur = cur.previous()
    if period is not None and all(x.key != period.key for x in out):
        out.insert(0, period)
    return out


def trend_window(period):
    """(window, grain) of the trend chart: the year by month (week: its quarter by week)."""
    from jiedao.cockpit.periods import Period

    y = period.start.year
    if period.grain in ("week", "day"):
        q = (period.start.month - 1) // 3 + 1
        return Period.parse(f"{y}-Q{q}"), "week"
    return Period.parse(str(y)), "month"


# ---------------------------------------------------------------- formatting


def _num(v) -> float | None:
    return None if v is None else float(v)


def fmt_value(d, v) -> str:
    """A metric value as shown: 12,345 / 96.3% / 18.5."""
    v = _num(v)
    if v is None:
        return "—"
    if d.kind == "count":
        return f"{int(round(v)):,}"
    if d.kind == "rate":  # the metrics layer gives rates in percent
        return f"{v:.1f}%"
    return f"{v:,.1f}"


def xval(d, v) -> float | None:
    """A metric value for a workbook cell (rates as fractions, shown with a % format)."""
    v = _num(v)
    if v is None:
        return None
    return v / 100 if d.kind == "rate" else v


def fmt_change(d, mv_value, base) -> dict | None:
    """环比 / 同比 against ``base``: text and whether it is good, bad or flat."""
    v, b = _num(mv_value), _num(base)
    if v is None or b is None:
        return None
    diff = v - b
    if d.kind == "rate":
        text = f"{diff:+.1f}个百分点"
        flat = abs(diff) < 0.05
    elif d.kind == "count":
        text = f"{diff:+,.0f}" + (f"（{diff / b * 100:+.1f}%）" if b else "")
        flat = diff == 0
    else:
        text = f"{diff:+,.1f}"
        flat = abs(diff) < 0.05
    if flat:
        css = "flat"
    elif d.kind == "count":
        css = "up" if diff > 0 else "down"  # volume is neither good nor bad
    else:
        css = "good" if (diff > 0) == bool(d.higher_is_better) else "bad"
    return {"text": text, "css": css, "arrow": "→" if flat else ("↑" if diff > 0 else "↓")}


def xlsx_kind(d) -> str:
    return {"count": "int", "rate": "rate"}.get(d.kind, "float")


def cases_url(metric: str, part: str, period, filters: dict) -> str:
    """The drill-down page listing the cases behind one number."""
    q = {"metric": metric, "part": part, "period": period.key}
    q.update({k: v for k, v in filters.items() if v is not None})
    return "/cockpit/cases?" + urlencode(q)


def page_url(dim: str, code: str, period) -> str:
    return f"{PAGE_URL[dim]}{code}?" + urlencode({"period": period.key})


# ---------------------------------------------------------------- tables


@dataclass
class Cell:
    text: str
    value: object = None
    href: str | None = None
    title: str | None = None
    css: str = ""


@dataclass
class Table:
    """A table on a page; exportable to XLSX by its ``key``."""

    key: str
    title: str
    columns: list[Column]
    rows: list[list[Cell]] = field(default_factory=list)
    hint: str = ""
    num_cols: set[int] = field(default_factory=set)
    empty: str = "暂无数据"

    def sheet(self, note: str | None = None) -> SheetTable:
        return SheetTable(self.title, self.columns, [[c.value for c in r] for r in self.rows],
                          note=note)


def metric_table(key: str, title: str, rows, by: str, period, filters: dict, *,
                 metric_keys: list[str] | None = None, link_rows: bool = True,
                 sort_by: str | None = None, limit: int | None = None, hint: str = "") -> Table:
    """A breakdown (``Metrics.breakdown`` rows) as a table: name + each metric, every cell a
    link to its cases."""
    defs = metric_defs()
    keys = metric_keys or list(defs)
    cols = [Column(DIM_LABELS.get(by, "名称")), Column("编码")]
    cols += [Column(defs[k].label, xlsx_kind(defs[k])) for k in keys]
    if sort_by:
        rows = sorted(rows, key=lambda r: -(_num(r.values[sort_by].value) or 0)
                      if sort_by in r.values else 0)
    if limit:
        rows = rows[:limit]
    t = Table(key, title, cols, hint=hint, num_cols=set(range(2, len(cols))))
    for r in rows:
        f = dict(filters, **{by: r.code})  # code "" = cases without one (未指定)
        line = [Cell(r.label or r.code, r.label or r.code,
                     href=page_url(by, r.code, period) if link_rows and r.code else None),
                Cell(r.code, r.code, css="mono muted")]
        for k in keys:
            mv = r.values.get(k)
            d = defs[k]
            title_ = None
            if mv is not None and d.kind == "rate" and mv.denominator is not None:
                title_ = f"{mv.numerator or 0:,} / {mv.denominator:,}"
            line.append(Cell(fmt_value(d, mv.value if mv else None), xval(d, mv.value) if mv else None,
                             href=cases_url(k, "denominator", period, f) if mv and mv.denominator
                             else None, title=title_))
        t.rows.append(line)
    return t


def kpi_cards(summary: dict, period, filters: dict) -> list[dict]:
    """The headline KPIs: value, 环比, 同比 and the drill-down links of each metric."""
    defs = metric_defs()
    out = []
    for k, d in defs.items():
        mv = summary.get(k)
        if mv is None:
            continue
        links = [("cases", "查看工单", cases_url(k, "denominator", period, filters))]
        if d.kind == "rate":
            links = [("numerator", f"分子 {mv.numerator or 0:,}", cases_url(k, "numerator", period, filters)),
                     ("denominator", f"分母 {mv.denominator or 0:,}",
                      cases_url(k, "denominator", period, filters)),
                     ("miss", f"未达 {max((mv.denominator or 0) - (mv.numerator or 0), 0):,}",
                      cases_url(k, "miss", period, filters))]
        elif d.kind == "mean":
            links = [("denominator", f"样本 {mv.denominator or 0:,} 件",
                      cases_url(k, "denominator", period, filters))]
        out.append({"key": k, "label": d.label, "kind": d.kind, "definition": d.definition,
                    "value": fmt_value(d, mv.value), "raw": _num(mv.value),
                    "href": cases_url(k, "denominator", period, filters),
                    "prev": fmt_change(d, mv.value, mv.previous),
                    "yoy": fmt_change(d, mv.value, mv.last_year),
                    "prev_value": fmt_value(d, mv.previous), "yoy_value": fmt_value(d, mv.last_year),
                    "links": links, "unit": getattr(d, "unit", "")})
    return out


def kpi_table(summary: dict, period, filters: dict) -> Table:
    """The KPI cards as a table (for the XLSX export)."""
    defs = metric_defs()
    t = Table("kpi", "核心指标", [Column("指标"), Column("本期", "float"), Column("上期", "float"),
                                Column("去年同期", "float"), Column("分子", "int"),
                                Column("分母", "int"), Column("口径")])
    for k, d in defs.items():
        mv = summary.get(k)
        if mv is None:
            continue
        t.rows.append([Cell(d.label, d.label), Cell(fmt_value(d, mv.value), xval(d, mv.value)),
                       Cell(fmt_value(d, mv.previous), xval(d, mv.previous)),
                       Cell(fmt_value(d, mv.last_year), xval(d, mv.last_year)),
                       Cell(str(mv.numerator), mv.numerator), Cell(str(mv.denominator), mv.denominator),
                       Cell(d.definition, d.definition)])
    return t


def trend_data(m, period, p: Principal, filters: dict) -> dict:
    """The trend chart's data: labels and one series per metric over the trend window."""
    defs = metric_defs()
    window, grain = trend_window(period)
    points = m.trend(window, grain, principal=p, filters=filters or None)
    labels, keys = [], []
    series: dict[str, list] = {k: [] for k in defs}
    for per, values in points:
        labels.append(per.label)
        keys.append(per.key)
        for k in defs:
            mv = values.get(k)
            v = _num(mv.value) if mv is not None else None
            if v is not None:
                v = round(v, 2)
            series[k].append(v)
    return {"labels": labels, "keys": keys, "current": period.key, "title": window.label,
            "metrics": [{"key": k, "label": d.label, "kind": d.kind} for k, d in defs.items()],
            "series": series}


def trend_table(trend: dict) -> Table:
    defs = metric_defs()
    t = Table("trend", f"趋势（{trend['title']}）", [Column("周期")] + [
        Column(d.label, "float") for d in defs.values()])
    for i, label in enumerate(trend["labels"]):
        row = [Cell(label, label)]
        for k, d in defs.items():
            row.append(Cell("", xval(d, trend["series"][k][i])))
        t.rows.append(row)
    return t


# ---------------------------------------------------------------- overdue / warning lists


def sla_lists(request: Request, s: Session, p: Principal, limit: int = 10) -> dict:
    """Open assignments past their deadline (超时) and close to it (临期预警), in scope."""
    from jiedao import clock
    from jiedao.cases import queries as q
    from jiedao.cases.models import Assignment, Case
    from jiedao.cases.sla import OPEN_STATES
    from jiedao.catalog.calendar import get_calendar

    now = clock.now()
    # Scope on the joined case row (as jiedao.cases.queries.restrict_cases: a street also sees
    # its street office's assignments), written as plain conditions so the open-state index
    # drives the query at any size.
    conds = [Assignment.state.in_(OPEN_STATES)]
    need_case = False
    if p.scope_level == "department":  # coalesce: let the state index lead, not the department's
        conds.append(func.coalesce(Assignment.department_code, "") == p.scope_code)
    elif p.scope_level == "street":
        conds.append(or_(Case.street_code == p.scope_code,
                         Assignment.department_code == "JD" + p.scope_code))
        need_case = True
    elif p.scope_level == "community":
        conds.append(Case.community_code == p.scope_code)
        need_case = True
    elif p.scope_level != "district":
        conds.append(Assignment.id.is_(None))
    base = (select(Assignment, Case.code, Case.title, Case.street_code)
            .join(Case, Case.id == Assignment.case_id).where(*conds))
    late = or_(Assignment.overdue.is_(True), Assignment.deadline <= now)
    count = select(func.count()).select_from(Assignment)
    if need_case:
        count = count.join(Case, Case.id == Assignment.case_id)
    n_overdue = s.scalar(count.where(*conds, late)) or 0
    depts = q.department_names(s)

    def row(a, code, title, sla=None):
        return {"case_id": a.case_id, "code": code, "title": title,
                "department": depts.get(a.department_code, a.department_code),
                "deadline": a.deadline, "sla": sla}

    overdue = []
    by_deadline = (func.coalesce(Assignment.deadline, Assignment.dispatched_at), Assignment.id)
    for a, c, t, _ in s.execute(base.where(late).order_by(*by_deadline).limit(limit)):
        # natural time past the deadline (working time over months of holidays is slow and
        # says little more at this distance)
        days = (now - a.deadline).days
        text = f"已超时 {days}天" if days >= 1 else \
            f"已超时 {max(int((now - a.deadline).total_seconds() // 3600), 0)}小时"
        overdue.append(row(a, c, t, {"css": "red", "text": text}))
    cal = get_calendar()
    warned = []
    n_warned = 0
    # the open assignments nearest their deadline; the warning (≥ 75 % of the allowed working
    # time used, or flagged by the SLA sweep) as the inbox computes it
    for a, c, t, _ in s.execute(base.where(~late).order_by(*by_deadline).limit(WARN_SCAN)):
        st = q.sla_status(cal, a, now)
        if st.warned and not st.overdue:
            n_warned += 1
            if len(warned) < limit:
                warned.append(row(a, c, t, {"css": st.css, "text": st.text}))
    return {"overdue": overdue, "overdue_total": n_overdue, "warned": warned,
            "warned_total": n_warned, "warned_capped": n_warned >= WARN_SCAN}


def early_warnings(request: Request, p: Principal, limit: int = 8) -> list | None:
    """Open early warnings (jiedao.cockpit.warnings), or None while that module is absent."""
    try:
        from jiedao.cockpit.warnings import WARNING_KINDS, list_warnings
    except ImportError:
        return None
    try:  # own session: a database without the table must not spoil the page's transaction
        with request.app.state.db.session() as ws:
            return [{"id": w.id, "title": w.title, "kind": WARNING_KINDS.get(w.kind, w.kind),
                     "score": w.score, "n": len(w.case_ids or [])}
                    for w in list_warnings(ws, p, status="open", limit=limit)]
    except Exception:  # table not migrated yet on an old database
        return None


# ---------------------------------------------------------------- page assembly


def names_for(s: Session, dim: str, code: str) -> str | None:
    """The Chinese name of one object of a dimension (None when it does not exist)."""
    from jiedao.cases.models import CHANNELS
    from jiedao.catalog.models import Department, Matter
    from jiedao.geo.models import Community, Grid, Street

    if dim == "channel":
        return CHANNELS.get(code)
    model = {"department": Department, "street": Street, "community": Community, "grid": Grid,
             "category": Matter}[dim]
    row = s.get(model, code)
    return row.name if row is not None else None


def check_filter(s: Session, p: Principal, dim: str, code: str) -> str:
    """404 for an unknown code, 403 for an object outside the caller's scope; its name."""
    from jiedao.geo.models import Community, Grid

    if code == "":
        if dim == "department" and p.scope_level == "department":
            raise PermissionDenied("无权查看：该部门不在您的数据范围内")
        return "（未指定）"
    name = names_for(s, dim, code)
    if name is None:
        raise NotFound(f"{DIM_LABELS[dim]} {code} 不存在")
    if dim == "street":
        check_visible(p, street_code=code)
    elif dim == "community":
        check_visible(p, street_code=s.get(Community, code).street_code, community_code=code)
    elif dim == "grid":
        g = s.get(Grid, code)
        check_visible(p, street_code=g.street_code, community_code=g.community_code)
    elif dim == "department" and p.scope_level == "department" and code != p.scope_code:
        raise PermissionDenied("无权查看：该部门不在您的数据范围内")
    return name


def period_ctx(m, period, grain: str, base_url: str) -> dict:
    return {"period": period, "grain": grain, "grains": GRAINS, "base_url": base_url,
            "choices": period_choices(m, period, grain) if period else []}


def scope_title(request: Request, p: Principal) -> str:
    from jiedao.web.app import scope_label

    return scope_label(request, p) or "全区"


def export_or_render(request: Request, template: str, ctx: dict, tables: list[Table],
                     fmt: str | None, table: str | None, filename: str):
    """Render the page, or (``format=xlsx``) the chosen table (default: the first) as XLSX."""
    if fmt == "xlsx":
        chosen = next((t for t in tables if t.key == table), None) if table else (
            tables[0] if tables else None)
        if chosen is None:
            raise NotFound(f"表格 {table} 不存在")
        note = f"{filename} · {ctx.get('period').label if ctx.get('period') else ''} · " \
               f"数据范围：{scope_title(request, request.state.principal)}"
        return xlsx_response(to_xlsx(chosen.sheet(note)), f"{filename}-{chosen.title}.xlsx")
    if fmt not in (None, "", "html"):
        bad_query("format", "导出格式只支持 xlsx")
    ctx["tables"] = {t.key: t for t in tables}
    ctx["export_base"] = _export_base(request)
    return render(request, template, ctx)


def _export_base(request: Request) -> str:
    q = [(k, v) for k, v in request.query_params.multi_items() if k not in ("format", "table")]
    return request.url.path + "?" + urlencode(q + [("format", "xlsx")])


def dashboard(request: Request, s: Session, p: Principal, m, period, grain: str, *,
              filters: dict, children: list[tuple[str, str]], map_parent: str | None | bool,
              base_url: str) -> tuple[dict, list[Table]]:
    """KPIs, trend and breakdown tables for ``filters`` (shared by the home and object pages).

    ``children``: (dimension, title) of each breakdown table; ``map_parent``: parent code of
    the grid map (None: all grids in scope; False: no map)."""
    ctx = period_ctx(m, period, grain, base_url)
    tables: list[Table] = []
    ctx["filters"] = filters
    if period is None:
        ctx["nodata"] = True
        return ctx, tables
    summary = m.summary(period, principal=p, filters=filters or None)
    ctx["kpis"] = kpi_cards(summary, period, filters)
    trend = trend_data(m, period, p, filters)
    ctx["trend_json"] = json.dumps(trend, ensure_ascii=False)
    ctx["breakdowns"] = []
    for dim, title in children:
        rows = m.breakdown(period, dim, principal=p, filters=filters or None)
        t = metric_table(f"by_{dim}", title, rows, dim, period, filters,
                         link_rows=not (p.scope_level == "department"
                                        and dim in ("street", "community", "grid")),
                         sort_by="received" if dim in ("category", "department", "channel") else None)
        tables.append(t)
        ctx["breakdowns"].append(t.key)
    tables.append(kpi_table(summary, period, filters))
    tables.append(trend_table(trend))
    if map_parent is not False:
        geo = "/api/geo/boundaries.geojson?level=grid" + (f"&parent={map_parent}" if map_parent else "")
        q = {"period": period.key}
        q.update({k: v for k, v in filters.items() if k not in ("street", "community", "grid")})
        ctx["map"] = {"geojson": geo, "values": "/cockpit/map.json?" + urlencode(q),
                      "click": "/cockpit/grids/{code}?" + urlencode({"period": period.key}),
                      "metrics": [(k, d.label) for k, d in metric_defs().items()]}
    return ctx, tables


# ---------------------------------------------------------------- landing


@router.get("/")
def landing(request: Request, p: User, s: DB):
    """Leaders and admins land on the cockpit; everyone else on the district map home."""
    if p.role in LANDING_ROLES:
        return RedirectResponse("/cockpit", status_code=303)
    from jiedao.geo.routes import home

    return home(request, p, s)


@router.get("/map")
def map_home(request: Request, p: User, s: DB):
    """The district map home at its own URL (the landing page of non-leaders)."""
    from jiedao.geo.routes import home

    return home(request, p, s)


# ---------------------------------------------------------------- pages


@router.get("/cockpit")
def cockpit_home(request: Request, p: User, s: DB, period: PeriodQ = None, grain: GrainQ = None,
                 fmt: FormatQ = None, table: TableQ = None):
    """驾驶舱首页: KPIs with 环比/同比, trend, grid map by any metric, top matters, overdue and
    warning lists, early warnings — all inside the caller's scope."""
    m = metrics(request)
    per, g = resolve_period(m, period, grain)
    level = p.scope_level
    child = CHILD_OF_SCOPE.get(level, "category")
    children = [(child, f"各{DIM_LABELS[child]}")]
    if level == "department":
        children.append(("street", "各街道"))
    map_parent: str | None | bool = False
    if level == "district":
        map_parent = None
    elif level in ("street", "community"):
        map_parent = p.scope_code
    ctx, tables = dashboard(request, s, p, m, per, g, filters={}, children=children,
                            map_parent=map_parent, base_url="/cockpit")
    if per is not None:
        keys = ["received", "close_ontime", "resolved", "satisfied", "repeat"]
        rows = m.breakdown(per, "category", principal=p, metrics=keys, compare=False)
        top = metric_table("top_matters", "高频事项 Top 10", rows, "category", per, {},
                           metric_keys=keys, sort_by="received", limit=10)
        tables.append(top)
        ctx["top"] = top.key
    ctx["sla"] = sla_lists(request, s, p)
    ctx["warnings"] = early_warnings(request, p)
    ctx["title"] = scope_title(request, p)
    ctx["is_home"] = True
    ctx["ranking_link"] = p.role in RANKING_ROLES
    return export_or_render(request, "cockpit/home.html", ctx, tables, fmt, table, "驾驶舱")


def _object_page(request: Request, s: Session, p: Principal, dim: str, code: str, *,
                 period: str | None, grain: str | None, fmt: str | None, table: str | None):
    from jiedao.geo.models import Community, Grid

    name = check_filter(s, p, dim, code)
    m = metrics(request)
    per, g = resolve_period(m, period, grain)
    geo_child = CHILD_OF_SCOPE.get(p.scope_level if p.scope_level != "department" else "district")
    crumbs = [("驾驶舱", "/cockpit")]
    map_parent: str | None | bool = False
    if dim == "street":
        children = [("community", "各社区"), ("category", "各事项"), ("department", "各部门")]
        map_parent = code
    elif dim == "community":
        c = s.get(Community, code)
        children = [("grid", "各网格"), ("category", "各事项")]
        map_parent = code
        if p.scope_level in ("district", "street"):
            crumbs.append((c.street.name, PAGE_URL["street"] + c.street_code))
    elif dim == "grid":
        gr = s.get(Grid, code)
        children = [("category", "各事项"), ("channel", "各渠道")]
        if p.scope_level in ("district", "street"):
            crumbs.append((gr.community.street.name, PAGE_URL["street"] + gr.street_code))
        crumbs.append((gr.community.name, PAGE_URL["community"] + gr.community_code))
    elif dim == "department":
        children = [("category", "各事项")]
        if geo_child:
            children.insert(0, (geo_child, f"各{DIM_LABELS[geo_child]}"))
    elif dim == "category":
        children = [("department", "各部门")]
        if geo_child:
            children.insert(0, (geo_child, f"各{DIM_LABELS[geo_child]}"))
    else:  # channel
        children = [("category", "各事项")]
        if geo_child:
            children.insert(0, (geo_child, f"各{DIM_LABELS[geo_child]}"))
    base = PAGE_URL[dim] + code
    ctx, tables = dashboard(request, s, p, m, per, g, filters={dim: code}, children=children,
                            map_parent=map_parent, base_url=base)
    if dim == "grid":
        ctx["grid_map"] = {"geojson": f"/api/geo/boundaries.geojson?level=grid&parent="
                                      f"{s.get(Grid, code).community_code}", "highlight": code}
    ctx.update({"dim": dim, "dim_label": DIM_LABELS[dim], "code": code, "name": name,
                "title": name, "crumbs": crumbs})
    return export_or_render(request, "cockpit/entity.html", ctx, tables, fmt, table,
                            f"{DIM_LABELS[dim]}-{name}")


@router.get("/cockpit/departments/{code}")
def department_page(request: Request, code: DeptCode, p: User, s: DB, period: PeriodQ = None,
                    grain: GrainQ = None, fmt: FormatQ = None, table: TableQ = None):
    """A department: its KPIs, trend and breakdown by area and matter."""
    return _object_page(request, s, p, "department", code, period=period, grain=grain, fmt=fmt,
                        table=table)


@router.get("/cockpit/streets/{code}")
def street_page(request: Request, code: StreetCode, p: User, s: DB, period: PeriodQ = None,
                grain: GrainQ = None, fmt: FormatQ = None, table: TableQ = None):
    """A street: KPIs, trend, its grids on the map, breakdown by community, matter, department."""
    return _object_page(request, s, p, "street", code, period=period, grain=grain, fmt=fmt,
                        table=table)


@router.get("/cockpit/communities/{code}")
def community_page(request: Request, code: CommunityCode, p: User, s: DB, period: PeriodQ = None,
                   grain: GrainQ = None, fmt: FormatQ = None, table: TableQ = None):
    """A community: KPIs, trend, its grids on the map and in a table."""
    return _object_page(request, s, p, "community", code, period=period, grain=grain, fmt=fmt,
                        table=table)


@router.get("/cockpit/grids/{code}")
def grid_page(request: Request, code: GridCode, p: User, s: DB, period: PeriodQ = None,
              grain: GrainQ = None, fmt: FormatQ = None, table: TableQ = None):
    """A grid: KPIs, trend, breakdown by matter and channel."""
    return _object_page(request, s, p, "grid", code, period=period, grain=grain, fmt=fmt,
                        table=table)


@router.get("/cockpit/categories/{code}")
def category_page(request: Request, code: MatterCode, p: User, s: DB, period: PeriodQ = None,
                  grain: GrainQ = None, fmt: FormatQ = None, table: TableQ = None):
    """A matter (事项) of the responsibility list: KPIs, trend, by area and by department."""
    return _object_page(request, s, p, "category", code, period=period, grain=grain, fmt=fmt,
                        table=table)


@router.get("/cockpit/channels/{code}")
def channel_page(request: Request, code: ChannelCode, p: User, s: DB, period: PeriodQ = None,
                 grain: GrainQ = None, fmt: FormatQ = None, table: TableQ = None):
    """One intake channel: KPIs, trend, by area and by matter."""
    return _object_page(request, s, p, "channel", code, period=period, grain=grain, fmt=fmt,
                        table=table)


@router.get("/cockpit/channels")
def channels_page(request: Request, p: User, s: DB, period: PeriodQ = None, grain: GrainQ = None,
                  fmt: FormatQ = None, table: TableQ = None):
    """渠道分析: every metric by intake channel."""
    m = metrics(request)
    per, g = resolve_period(m, period, grain)
    ctx, tables = dashboard(request, s, p, m, per, g, filters={},
                            children=[("channel", "各渠道")], map_parent=False,
                            base_url="/cockpit/channels")
    ctx.update({"title": "渠道分析", "name": "渠道分析", "dim": None, "dim_label": "",
                "code": "", "crumbs": [("驾驶舱", "/cockpit")]})
    return export_or_render(request, "cockpit/entity.html", ctx, tables, fmt, table, "渠道分析")


@router.get("/cockpit/rankings")
def rankings_page(request: Request, p: Ranker, s: DB, period: PeriodQ = None,
                  fmt: FormatQ = None, table: TableQ = None):
    """月度排名: streets and departments by the composite assessment score."""
    m = metrics(request)
    per, g = resolve_period(m, period, "month")
    ctx = period_ctx(m, per, "month", "/cockpit/rankings")
    ctx["month_only"] = True
    tables: list[Table] = []
    if per is None:
        ctx["nodata"] = True
    else:
        defs = metric_defs()
        keys = list(defs)
        for by, title in (("street", "街道排名"), ("department", "部门排名")):
            rows = m.ranking(per, by, principal=p)
            cols = [Column("排名", "int"), Column(DIM_LABELS[by]), Column("编码"),
                    Column("综合得分", "float")] + [Column(defs[k].label, xlsx_kind(defs[k]))
                                                  for k in keys]
            t = Table(f"rank_{by}", title, cols, num_cols={0, 3} | set(range(4, len(cols))))
            for r in rows:
                f = {by: r.code}
                line = [Cell(str(r.rank), r.rank, css="rank"),
                        Cell(r.label or r.code, r.label or r.code, href=page_url(by, r.code, per)),
                        Cell(r.code, r.code, css="mono muted"),
                        Cell("—" if r.score is None else f"{r.score:.1f}", _num(r.score), css="score")]
                for k in keys:
                    mv = r.values.get(k)
                    d = defs[k]
                    line.append(Cell(fmt_value(d, mv.value if mv else None),
                                     xval(d, mv.value) if mv else None,
                                     href=cases_url(k, "denominator", per, f)
                                     if mv and mv.denominator else None))
                t.rows.append(line)
            tables.append(t)
        ctx["weights"] = _ranking_weights()
    ctx["title"] = "月度排名"
    return export_or_render(request, "cockpit/rankings.html", ctx, tables, fmt, table, "月度排名")


def _ranking_weights() -> list[tuple[str, float]]:
    """The composite score's weights, when the metrics layer publishes them."""
    from jiedao.cockpit.metrics import ranking_config

    weights = ranking_config().get("weights", {})
    defs = metric_defs()
    return [(defs[k].label if k in defs else k, w) for k, w in weights.items()]


@router.get("/cockpit/map.json")
def map_values(request: Request, p: User, s: DB, period: PeriodQ = None,
               metric: Annotated[str, Query(max_length=20)] = "received",
               department: Annotated[str | None, Query(max_length=20)] = None,
               category: Annotated[str | None, Query(max_length=20)] = None,
               channel: Annotated[str | None, Query(max_length=16)] = None):
    """Values of one metric per grid (for the map colouring), inside the caller's scope."""
    defs = metric_defs()
    if metric not in defs:
        bad_query("metric", f"未知指标 {metric}")
    m = metrics(request)
    per, _ = resolve_period(m, period, None)
    filters = {k: v for k, v in {"department": department, "category": category,
                                 "channel": channel}.items() if v}
    for k, v in filters.items():
        check_filter(s, p, k, v)
    d = defs[metric]
    out = {"metric": metric, "label": d.label, "kind": d.kind,
           "higher_is_better": bool(d.higher_is_better), "values": {}, "counts": {},
           "period": per.key if per else None, "period_label": per.label if per else None}
    if per is not None:
        for r in m.breakdown(per, "grid", principal=p, filters=filters or None, metrics=[metric],
                             compare=False):
            mv = r.values.get(metric)
            if not r.code or mv is None or mv.value is None:  # cases without a grid: no region
                continue
            v = float(mv.value)
            out["values"][r.code] = round(v, 2)
            out["counts"][r.code] = mv.denominator
    return JSONResponse(out)


@router.get("/cockpit/cases")
def cases_page(request: Request, p: User, s: DB,
               metric: Annotated[str, Query(max_length=20)],
               period: PeriodQ = None,
               part: Annotated[str, Query(max_length=12)] = "denominator",
               department: Annotated[str | None, Query(max_length=20)] = None,
               street: Annotated[str | None, Query(pattern=r"^(\d{9})?$")] = None,
               community: Annotated[str | None, Query(pattern=r"^(\d{12})?$")] = None,
               grid: Annotated[str | None, Query(pattern=r"^(\d{15})?$")] = None,
               category: Annotated[str | None, Query(max_length=20)] = None,
               channel: Annotated[str | None, Query(max_length=16)] = None,
               page: Annotated[int, Query(ge=1, le=100_000)] = 1,
               fmt: FormatQ = None):
    """The cases behind one number (``Metrics.case_ids``), paged, each linking to its case."""
    from jiedao.cases.models import CHANNELS, Case
    from jiedao.cases.queries import STATE_BADGE, department_names, matter_names
    from jiedao.cases.workflow import CASE_STATES
    from jiedao.geo.models import Street

    defs = metric_defs()
    if metric not in defs:
        bad_query("metric", f"未知指标 {metric}")
    if part not in PARTS:
        bad_query("part", "part 只能是 numerator、denominator 或 miss")
    d = defs[metric]
    if d.kind != "rate" and part != "denominator":
        part = "denominator"
    m = metrics(request)
    per, g = resolve_period(m, period, None)
    filters = {k: v for k, v in {"department": department, "street": street,
                                 "community": community, "grid": grid, "category": category,
                                 "channel": channel}.items() if v is not None}
    labels = [(DIM_LABELS[k], check_filter(s, p, k, v)) for k, v in filters.items()]
    ids = m.case_ids(per, metric, part=part, principal=p, filters=filters or None) if per else []
    total = len(ids)
    pages = max(1, (total + PER_PAGE - 1) // PER_PAGE)
    page = min(page, pages)
    chunk = ids[:EXPORT_CAP] if fmt == "xlsx" else ids[(page - 1) * PER_PAGE: page * PER_PAGE]
    rows = []
    if chunk:
        cols = (Case.id, Case.code, Case.title, Case.state, Case.channel, Case.matter_code,
                Case.main_department_code, Case.street_code, Case.received_at, Case.closed_at,
                Case.satisfaction)  # plain rows, not ORM objects: exports list up to 100,000
        cases = {}
        for i in range(0, len(chunk), 900):
            for c in s.execute(select(*cols).where(Case.id.in_(chunk[i:i + 900]))):
                cases[c.id] = c
        depts = department_names(s)
        matters = matter_names(s, {c.matter_code for c in cases.values() if c.matter_code})
        streets = dict(s.execute(select(Street.code, Street.name)).all())
        for cid in chunk:
            c = cases.get(cid)
            if c is None:
                continue
            rows.append({"id": c.id, "code": c.code, "title": c.title,
                         "state": CASE_STATES.get(c.state, c.state),
                         "badge": STATE_BADGE.get(c.state, "gray"),
                         "channel": CHANNELS.get(c.channel, c.channel),
                         "matter": (matters.get(c.matter_code) or {}).get("name"),
                         "department": depts.get(c.main_department_code),
                         "street": streets.get(c.street_code), "received_at": c.received_at,
                         "closed_at": c.closed_at, "satisfaction": c.satisfaction})
    part_label = PARTS[part] if d.kind == "rate" else "全部"
    title = f"{d.label} · {part_label}工单"
    if fmt == "xlsx":
        cols = [Column("工单编号"), Column("诉求"), Column("状态"), Column("渠道"), Column("事项"),
                Column("主办部门"), Column("街道"), Column("受理时间"), Column("办结时间"),
                Column("满意度")]
        sheet = SheetTable(title, cols, [[r["code"], r["title"], r["state"], r["channel"],
                                          r["matter"], r["department"], r["street"],
                                          r["received_at"], r["closed_at"], r["satisfaction"]]
                                         for r in rows],
                           note=f"{per.label if per else ''} · {d.label} · {part_label} · 共 {total} 件"
                           + ("".join(f" · {a}：{b}" for a, b in labels)))
        return xlsx_response(to_xlsx(sheet), f"工单-{d.label}-{per.key if per else ''}.xlsx")
    base_q = {"metric": metric, "period": per.key if per else "", **filters}
    ctx = {"metric": d, "metric_key": metric, "part": part, "parts": PARTS, "period": per,
           "rows": rows, "total": total, "page": page, "pages": pages, "labels": labels,
           "title": title, "is_rate": d.kind == "rate",
           "part_urls": {k: "/cockpit/cases?" + urlencode({**base_q, "part": k}) for k in PARTS},
           "page_base": "/cockpit/cases?" + urlencode({**base_q, "part": part}),
           "export_url": "/cockpit/cases?" + urlencode({**base_q, "part": part, "format": "xlsx"})}
    return render(request, "cockpit/cases.html", ctx)


# ---------------------------------------------------------------- data hub overview

RHYTHM_DAYS = {"每日": 1, "每周": 7, "每月": 31, "每季": 92, "每季度": 92, "每半年": 183, "每年": 366}


def freshness(rhythm: str, last, now) -> dict:
    """Is a source's last load within its refresh rhythm? 及时 / 临近 / 逾期 / 未导入."""
    if last is None:
        return {"label": "未导入", "css": "gray", "age": None}
    days = RHYTHM_DAYS.get((rhythm or "").strip(), 31)
    age = (now - last).total_seconds() / 86400
    if age <= days:
        label, css = "及时", "green"
    elif age <= days * 1.5:
        label, css = "临近", "amber"
    else:
        label, css = "逾期", "red"
    age_text = f"{max(age * 24, 0):.0f} 小时前" if age < 1 else f"{age:.0f} 天前"
    return {"label": label, "css": css, "age": age_text, "days": days}


@router.get("/cockpit/hub")
def hub_page(request: Request, p: HubViewer, s: DB, fmt: FormatQ = None, table: TableQ = None):
    """数据归集概览: sources with freshness and quality, entities by type, recent import runs."""
    from jiedao import clock
    from jiedao.hub.models import ENTITY_TYPES, Entity
    from jiedao.hub.routes import RUN_STATUS, quality_rows, sources_overview

    now = clock.now()
    o = sources_overview(s, limit=20)
    quality = {q.code: q for q in quality_rows(request, s)}
    type_labels = {"enterprise": "企业", "building": "楼宇", "place": "场所"}
    src = Table("sources", "数据源", [Column("数据源"), Column("部门"), Column("对象"),
                                    Column("更新频率"), Column("最近导入"), Column("时效"),
                                    Column("记录数", "int"), Column("质量得分", "rate"),
                                    Column("匹配率", "rate")], num_cols={6, 7, 8})
    fresh_count = {"及时": 0, "临近": 0, "逾期": 0, "未导入": 0}
    for x in o.sources:
        last = x.last_run.finished_at or x.last_run.started_at if x.last_run else None
        f = freshness(x.rhythm, last, now)
        fresh_count[f["label"]] = fresh_count.get(f["label"], 0) + 1
        q = quality.get(x.code)
        score = getattr(q, "score", None) if q else None
        match = getattr(q, "match_rate", None) if q else None
        src.rows.append([
            Cell(x.name, x.name, href=f"/hub/sources?source={x.code}"),
            Cell(x.department_name or x.department_code, x.department_name or x.department_code),
            Cell(type_labels.get(x.entity_type, x.entity_type), type_labels.get(x.entity_type)),
            Cell(x.rhythm, x.rhythm),
            Cell(last.strftime("%Y-%m-%d %H:%M") if last else "—", last),
            Cell(f["label"] + (f"（{f['age']}）" if f["age"] else ""), f["label"],
                 css=f"fresh-{f['css']}"),
            Cell(f"{x.records:,}", x.records),
            Cell("—" if score is None else f"{score * 100:.1f}", score),
            Cell("—" if match is None else f"{match * 100:.1f}%", match)])
    ents = dict(s.execute(select(Entity.entity_type, func.count())
                          .where(Entity.retired.is_(False), Entity.merged_into.is_(None))
                          .group_by(Entity.entity_type)).all())
    ent = Table("entities", "实体（一档）按类型", [Column("类型"), Column("档案数", "int")],
                num_cols={1})
    for et in ENTITY_TYPES:
        ent.rows.append([Cell(type_labels.get(et, et), type_labels.get(et, et)),
                         Cell(f"{ents.get(et, 0):,}", ents.get(et, 0))])
    runs = Table("runs", "最近导入批次", [Column("批次", "int"), Column("数据源"), Column("开始时间"),
                                      Column("状态"), Column("读取", "int"), Column("新增", "int"),
                                      Column("变更", "int"), Column("拒收", "int"),
                                      Column("用时(秒)", "float")], num_cols={0, 4, 5, 6, 7, 8})
    for r in o.runs:
        st = RUN_STATUS.get(r.status, r.status)
        runs.rows.append([Cell(str(r.id), r.id), Cell(r.source_name or r.source_code, r.source_name),
                          Cell(r.started_at.strftime("%Y-%m-%d %H:%M"), r.started_at),
                          Cell(st, st, css="fresh-" + {"ok": "green", "failed": "red"}.get(r.status, "gray")),
                          Cell(f"{r.n_read:,}", r.n_read), Cell(f"{r.n_new:,}", r.n_new),
                          Cell(f"{r.n_changed:,}", r.n_changed), Cell(f"{r.n_rejected:,}", r.n_rejected),
                          Cell("—" if r.seconds is None else f"{r.seconds:.1f}", r.seconds)])
    ctx = {"title": "数据归集概览", "n_sources": len(o.sources), "fresh": fresh_count,
           "entities_total": sum(ents.values()),
           "records_total": sum(x.records for x in o.sources), "period": None}
    return export_or_render(request, "cockpit/hub.html", ctx, [src, ent, runs], fmt, table,
                            "数据归集概览")
