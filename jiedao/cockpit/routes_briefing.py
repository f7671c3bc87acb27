"""The monthly briefing page (/cockpit/briefing?month=YYYY-MM) and its downloads
(/cockpit/briefing.docx, .pdf, .html). Scoped: every figure is the request principal's
(a street leader gets the street's briefing)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from jiedao.auth.deps import require_roles
from jiedao.auth.scope import Principal
from jiedao.cockpit import briefing as br
from jiedao.errors import NotFound
from jiedao.web.nav import NavItem, add_nav
from jiedao.web.templating import render, templates

router = APIRouter(include_in_schema=False)

BRIEFING_ROLES = ("leader", "admin", "operator", "steward", "handler", "street_staff")
add_nav(NavItem("cockpit_briefing", "月度报告", "/cockpit/briefing", roles=BRIEFING_ROLES, order=8,
                icon="▤", prefix="/cockpit/briefing"))

Reader = Annotated[Principal, Depends(require_roles(*BRIEFING_ROLES))]
MonthQ = Annotated[str | None, Query(max_length=10, description="月份 YYYY-MM")]


def _ensure_loader() -> None:
    """Find cockpit/briefing*.html even if the shared environment does not list the cockpit yet."""
    from jinja2 import ChoiceLoader, FileSystemLoader

    env = templates.env
    try:
        env.get_template("cockpit/briefing.html")
    except Exception:  # noqa: BLE001 — TemplateNotFound
        if isinstance(env.loader, ChoiceLoader):
            env.loader.loaders = [*env.loader.loaders, FileSystemLoader(str(br.TEMPLATES))]


_ensure_loader()


def _metrics(request: Request):
    from jiedao.cockpit.metrics import Metrics

    return Metrics.for_database(request.app.state.db)


def _period(request: Request, month: str | None):
    if month:
        return br.parse_month(month)
    p = _metrics(request).latest_period("month")
    if p is None:
        raise NotFound("暂无诉求数据，无法生成月度分析报告")
    return p


def _months(request: Request) -> list:
    m = _metrics(request)
    first, last = m.first_period("month"), m.latest_period("month")
    out = []
    p = last
    while p is not None and first is not None and p.start >= first.start and len(out) < 60:
        out.append(p)
        p = p.previous()
    return out


def _build(request: Request, principal: Principal, month: str | None) -> tuple[br.Briefing, tuple]:
    return br.cache.briefing(request.app.state.db, _period(request, month), principal=principal,
                             metrics=_metrics(request))


@router.get("/cockpit/briefing")
def briefing_page(request: Request, p: Reader, month: MonthQ = None):
    """The briefing of a month within the caller's scope, with download links."""
    b, _ = _build(request, p, month)
    ctx = br.briefing_context(b)
    months = _months(request)
    if b.period not in months:
        months.insert(0, b.period)
    ctx.update(months=months, pdf_ok=br.find_cjk_font() is not None)
    return render(request, "cockpit/briefing.html", ctx)


@router.get("/cockpit/briefing.{fmt}")
def briefing_download(request: Request, fmt: str, p: Reader, month: MonthQ = None):
    """The same briefing as a file: docx, pdf or html."""
    if fmt not in br.FORMATS:
        raise NotFound("不支持的格式")
    b, key = _build(request, p, month)
    data = br.cache.file(b, key, fmt)
    name = br.filename(b, fmt)
    cn = quote(f"{b.title}.{fmt}")
    return Response(data, media_type=br.FORMATS[fmt][0], headers={
        "content-disposition": f"attachment; filename=\"{name}\"; filename*=UTF-8''{cn}",
        "cache-control": "private, no-store"})
