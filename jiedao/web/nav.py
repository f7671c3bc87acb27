"""Sidebar navigation, filtered by the signed-in user's role and scope.

Capabilities add their entries with :func:`add_nav`; the layout calls :func:`nav_for`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class NavItem:
    """One sidebar entry. ``href`` may be a function of the principal (e.g. "my street")."""

    key: str
    label: str
    href: str | Callable[[object], str]
    roles: tuple[str, ...] | None = None  # None: every signed-in user
    order: int = 100
    icon: str = "•"
    prefix: str | None = None  # path prefix that marks the entry as current


_ITEMS: dict[str, NavItem] = {}


def add_nav(item: NavItem) -> None:
    """Register (or replace) a sidebar entry."""
    _ITEMS[item.key] = item


def _area_href(principal) -> str:
    level = getattr(principal, "scope_level", None)
    code = getattr(principal, "scope_code", None)
    if level == "street" and code:
        return f"/geo/streets/{code}"
    if level == "community" and code:
        return f"/geo/communities/{code}"
    return "/geo/streets"


def _home_href(principal) -> str:
    # leaders and admins land on the cockpit at "/", so their map home is /map
    return "/map" if getattr(principal, "role", None) in ("leader", "admin") else "/"


add_nav(NavItem("home", "首页 · 地图", _home_href, order=10, icon="⌂"))
add_nav(NavItem("geo", "辖区", _area_href, order=20, icon="▦", prefix="/geo"))
add_nav(NavItem("matters", "职责清单", "/catalog/matters", order=30, icon="☰",
                prefix="/catalog/matters"))
add_nav(NavItem("departments", "部门", "/catalog/departments", order=40, icon="◎",
                prefix="/catalog/departments"))
add_nav(NavItem("account", "我的账户", "/account", order=950, icon="☺", prefix="/account"))
add_nav(NavItem("docs", "接口文档", "/docs", roles=("admin", "steward"), order=900, icon="⚙",
                prefix="/docs"))


def nav_for(principal, path: str = "/") -> list[dict]:
    """The entries this principal may see, in order, with ``current`` set for the active one."""
    if principal is None:
        return []
    role = getattr(principal, "role", None)
    out = []
    best = ""  # only the most specific matching prefix is current
    for item in sorted(_ITEMS.values(), key=lambda i: (i.order, i.key)):
        if item.roles is not None and role not in item.roles:
            continue
        href = item.href(principal) if callable(item.href) else item.href
        prefix = item.prefix or href
        current = path == "/" if prefix == "/" else path.startswith(prefix)
        if current and len(prefix) > len(best):
            best = prefix
        out.append({"key": item.key, "label": item.label, "href": href, "icon": item.icon,
                    "current": current, "_prefix": prefix})
    for entry in out:
        prefix = entry.pop("_prefix")
        entry["current"] = entry["current"] and prefix == best
    return out
