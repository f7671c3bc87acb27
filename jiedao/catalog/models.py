"""Departments and the responsibility list (职责清单).

The source of truth for both is a file a district edits (``catalog/data/*.yaml|csv`` or
``JIEDAO_CATALOG_DIR``); these tables mirror it so cases can join on matter and department.
"""

from __future__ import annotations

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from jiedao.db import Base


class Department(Base):
    """A body that handles cases: a district department, a utility or a street office."""

    __tablename__ = "catalog_department"
    code: Mapped[str] = mapped_column(String(20), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(20), index=True)  # district / utility / street
    street_code: Mapped[str | None] = mapped_column(
        ForeignKey("geo_street.code"), default=None, index=True
    )  # set for street offices: the street they are the office of
    typical_matters: Mapped[str] = mapped_column(Text, default="")


class Matter(Base):
    """One matter of the three-level responsibility list (一级 / 二级 / 三级事项)."""

    __tablename__ = "catalog_matter"
    code: Mapped[str] = mapped_column(String(20), primary_key=True)
    level1: Mapped[str] = mapped_column(String(50), index=True)
    level2: Mapped[str] = mapped_column(String(50), index=True)
    name: Mapped[str] = mapped_column(String(100))
    main_department_code: Mapped[str] = mapped_column(ForeignKey("catalog_department.code"), index=True)
    # "district": the main department itself handles; "street": the street office of the
    # place handles, with the main department as the professional backstop.
    handling_level: Mapped[str] = mapped_column(String(10))
    sla: Mapped[dict] = mapped_column(default=dict)  # urgency -> SLA spec, e.g. {"紧急": "2h"}
    keywords: Mapped[list] = mapped_column(default=list)
    examples: Mapped[list] = mapped_column(default=list)
    description: Mapped[str] = mapped_column(Text, default="")
    main_department: Mapped[Department] = relationship()
    co_handlers: Mapped[list[MatterCoHandler]] = relationship(
        cascade="all, delete-orphan", order_by="MatterCoHandler.department_code"
    )


class MatterCoHandler(Base):
    __tablename__ = "catalog_matter_cohandler"
    matter_code: Mapped[str] = mapped_column(
        ForeignKey("catalog_matter.code", ondelete="CASCADE"), primary_key=True
    )
    department_code: Mapped[str] = mapped_column(ForeignKey("catalog_department.code"), primary_key=True)
