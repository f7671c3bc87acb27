"""Who is asking and what they may see.

Every query that returns scoped rows goes through :func:`restrict`; every single-object page
goes through :func:`check_visible`. Both deny by default: a scope the entity cannot express
(e.g. a department user looking at grids, which carry no department) sees nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from sqlalchemy import false

from jiedao.auth.models import ROLES
from jiedao.errors import PermissionDenied

DISTRICT_ROLES = ("operator", "steward", "admin")


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a user and the scope that bounds every row they can see."""

    user_id: int
    username: str
    display_name: str
    role: str
    scope_level: str  # district / department / street / community
    scope_code: str
    # set when the caller authenticated with an API token (audit actor "api:<prefix>")
    token_prefix: str | None = field(default=None, compare=False)

    @property
    def is_district_wide(self) -> bool:
        """True when the principal sees the whole district."""
        return self.scope_level == "district"

    @property
    def role_label(self) -> str:
        """The role's Chinese name, e.g. 受理员."""
        return ROLES.get(self.role, self.role)

    @property
    def scope_label(self) -> str:
        return {"district": "全区", "department": "部门", "street": "街道", "community": "社区"}.get(
            self.scope_level, self.scope_level
        )

    def has_role(self, *roles: str) -> bool:
        return self.role in roles

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("token_prefix")
        d["role_label"] = self.role_label
        d["is_district_wide"] = self.is_district_wide
        d["via_token"] = self.token_prefix is not None
        return d


def restrict(stmt, principal: Principal | None, *, street=None, community=None, department=None):
    """Add WHERE clauses to ``stmt`` so it returns only rows inside ``principal``'s scope.

    ``street``/``community``/``department`` are the columns that carry scope on the selected
    entity (pass only those it has). District-wide principals see everything; a street scope
    matches the street column (or, when the entity has only a community column, community
    codes starting with the street code); a community scope matches the community column;
    a department scope matches the department column. Anything else returns no rows.
    """
    if principal is None:
        return stmt.where(false())
    level, code = principal.scope_level, principal.scope_code
    if level == "district":
        return stmt
    if not code:
        return stmt.where(false())
    if level == "street":
        if street is not None:
            return stmt.where(street == code)
        if community is not None:
            return stmt.where(community.startswith(code, autoescape=True))
        return stmt.where(false())
    if level == "community":
        if community is not None:
            return stmt.where(community == code)
        return stmt.where(false())
    if level == "department":
        if department is not None:
            return stmt.where(department == code)
        return stmt.where(false())
    return stmt.where(false())


def is_visible(
    principal: Principal | None,
    *,
    street_code: str | None = None,
    community_code: str | None = None,
    department_code: str | None = None,
) -> bool:
    """The single-object version of :func:`restrict`: may ``principal`` see this object?

    Pass the scope codes the object carries (None for the ones it has none of).
    """
    if principal is None:
        return False
    level, code = principal.scope_level, principal.scope_code
    if level == "district":
        return True
    if not code:
        return False
    if level == "street":
        if street_code is not None:
            return street_code == code
        if community_code is not None:
            return community_code.startswith(code)
        return False
    if level == "community":
        return community_code is not None and community_code == code
    if level == "department":
        return department_code is not None and department_code == code
    return False


def check_visible(
    principal: Principal | None,
    *,
    street_code: str | None = None,
    community_code: str | None = None,
    department_code: str | None = None,
) -> None:
    """Raise PermissionDenied unless ``principal`` may see an object with these scope codes."""
    if not is_visible(
        principal,
        street_code=street_code,
        community_code=community_code,
        department_code=department_code,
    ):
        raise PermissionDenied("无权查看：该对象不在您的数据范围内")
