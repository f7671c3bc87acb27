"""The audit log (every write, every sensitive read) and PIPL masking helpers.

:func:`record` adds the audit row to the caller's session, so it commits or rolls back with
the write it describes: an audit row exists if and only if the write happened.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from jiedao import clock
from jiedao.auth.models import AuditLog

if TYPE_CHECKING:
    from jiedao.auth.scope import Principal


def actor_for(principal: Principal | None) -> str:
    """The actor text of ``principal``: username, ``api:<token prefix>`` or ``system``."""
    if principal is None:
        return "system"
    if principal.token_prefix:
        return f"api:{principal.token_prefix}"
    return principal.username


def record(
    session: Session,
    *,
    principal: Principal | None = None,
    actor: str | None = None,
    action: str,
    object_type: str,
    object_id: str | int | None = None,
    detail: dict | None = None,
    ip: str | None = None,
    user_id: int | None = None,
    at: datetime | None = None,
) -> AuditLog:
    """Add an audit row to ``session`` (the caller's transaction) and return it.

    ``actor`` defaults to the principal (or ``system``); ``user_id`` defaults to the principal's;
    ``at`` defaults to now.
    """
    row = AuditLog(
        at=at or clock.now(),
        user_id=user_id if user_id is not None else (principal.user_id if principal else None),
        actor=(actor or actor_for(principal))[:64],
        action=action[:40],
        object_type=object_type[:40],
        object_id=None if object_id is None else str(object_id)[:64],
        detail=detail,
        ip=ip[:45] if ip else None,
    )
    session.add(row)
    return row


def mask_phone(phone: str | None) -> str:
    """Mask a phone number for display: ``13812345678`` → ``138****5678``."""
    if not phone:
        return ""
    p = str(phone).strip()
    n = len(p)
    if n >= 8:
        return p[:3] + "*" * (n - 7) + p[-4:]
    if n > 2:
        return "*" * (n - 2) + p[-2:]
    return "*" * n


def mask_name(name: str | None) -> str:
    """Mask a person's name for display: ``张三丰`` → ``张**``, ``张三`` → ``张*``."""
    if not name:
        return ""
    n = str(name).strip()
    if len(n) <= 1:
        return "*"
    return n[0] + "*" * (len(n) - 1)


def mask_id_number(value: str | None) -> str:
    """Mask a resident ID number: keep the first 6 and last 4 characters."""
    if not value:
        return ""
    v = str(value).strip()
    if len(v) <= 10:
        return "*" * len(v)
    return v[:6] + "*" * (len(v) - 10) + v[-4:]
