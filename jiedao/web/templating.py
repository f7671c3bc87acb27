"""One Jinja2 environment for all capabilities.

Each subpackage keeps its pages in ``jiedao/<pkg>/templates/<pkg>/*.html``; shared layout
lives in ``jiedao/web/templates`` (``base.html``). Autoescaping is on for every page.
"""

from __future__ import annotations

from pathlib import Path

from fastapi.templating import Jinja2Templates
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape

PKG = Path(__file__).resolve().parent.parent
CAPABILITIES = ("web", "auth", "geo", "catalog", "cases", "hub", "cockpit")

_env = Environment(
    loader=ChoiceLoader(
        [FileSystemLoader(str(PKG / "web" / "templates"))]
        + [FileSystemLoader(str(PKG / c / "templates")) for c in CAPABILITIES if c != "web"]
    ),
    autoescape=select_autoescape(["html", "xml"], default=True),
)
templates = Jinja2Templates(env=_env)


def render(request, name: str, context: dict | None = None, status_code: int = 200):
    """Render a page; the layout reads ``principal`` and ``csrf_token`` from ``request.state``."""
    ctx = {"request": request}
    ctx.update(context or {})
    return templates.TemplateResponse(request, name, ctx, status_code=status_code)
