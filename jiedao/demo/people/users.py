"""Demo users for every role, following the contract in the shared notes.

All demo users share the password :data:`DEMO_PASSWORD` (示例数据 only). The password is
hashed once per process and the hash reused, since argon2 per user would dominate the build.
"""

from __future__ import annotations

from functools import lru_cache

DEMO_PASSWORD = "jiedao2026"


def demo_user_specs(
    district_code: str,
    streets: list[dict],
    communities: list[dict],
    departments: list[tuple[str, str]],
) -> list[dict]:
    """Username, display name, role and scope of every demo user.

    ``streets``/``communities`` are geo rows (code, name); ``departments`` are
    (code, name) of the district and utility departments (one handler each).
    """
    specs = [
        _u("admin", "系统管理员（演示）", "admin", "district", district_code),
        _u("operator01", "热线受理员01（演示）", "operator", "district", district_code),
        _u("steward01", "数据管理员01（演示）", "steward", "district", district_code),
        _u("leader01", "区领导01（演示）", "leader", "district", district_code),
    ]
    for code, name in departments:
        specs.append(_u(f"handler.{code.lower()}", f"{name}处置人（演示）", "handler",
                        "department", code))
    for s in streets:
        nnn = s["code"][-3:]
        specs.append(_u(f"street.{nnn}", f"{s['name']}工作人员（演示）", "street_staff",
                        "street", s["code"]))
        specs.append(_u(f"leader.{nnn}", f"{s['name']}领导（演示）", "leader", "street", s["code"]))
    for c in communities:
        specs.append(_u(f"sq.{c['code']}", f"{c['name']}工作人员（演示）", "street_staff",
                        "community", c["code"]))
    return specs


def _u(username: str, display_name: str, role: str, scope_level: str, scope_code: str) -> dict:
    return {"username": username, "display_name": display_name, "role": role,
            "scope_level": scope_level, "scope_code": scope_code}


@lru_cache(maxsize=1)
def demo_password_hash() -> str:
    """One argon2 hash of the demo password, computed once per process."""
    from jiedao.auth.passwords import hash_password

    return hash_password(DEMO_PASSWORD)


def check_specs(specs: list[dict]) -> None:
    """Refuse a spec whose role or scope level breaks the auth contract."""
    from jiedao.auth.models import ROLES, SCOPE_LEVELS

    try:
        from jiedao.auth.service import ROLE_SCOPES
    except ImportError:  # pragma: no cover - auth service always present in practice
        ROLE_SCOPES = {}
    seen: dict[str, None] = {}
    for s in specs:
        if s["role"] not in ROLES or s["scope_level"] not in SCOPE_LEVELS:
            raise ValueError(f"bad demo user {s}")
        if ROLE_SCOPES and s["scope_level"] not in ROLE_SCOPES[s["role"]]:
            raise ValueError(f"role {s['role']} cannot have scope {s['scope_level']}")
        if s["username"] in seen:
            raise ValueError(f"duplicate demo user {s['username']}")
        seen[s["username"]] = None
