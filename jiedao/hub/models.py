"""Data hub tables: source ledgers, import runs, standardised records, entities, links,
the steward's review queue, golden records with field lineage, and saved linkage models.

A *record* is one row of one department's ledger as last loaded (raw row kept as JSON next
to its standardised columns). An *entity* is one real enterprise / building / place; links
tie records to entities, and golden fields are chosen per entity from its records.
Run ids in lineage columns are plain integers (import runs or linkage runs), not FKs, so
history survives clean-ups.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from jiedao.clock import now
from jiedao.db import Base

ENTITY_TYPES = ("enterprise", "building", "place")
CONNECTORS = ("csv", "xlsx", "json", "sql")
RUN_STATUSES = ("running", "ok", "failed")
LINK_METHODS = ("credit_code", "probabilistic", "steward", "singleton")
REVIEW_STATUSES = ("pending", "accepted", "rejected")


class Source(Base):
    """One department ledger registered with the hub (mirrors hub/data/sources.yaml)."""

    __tablename__ = "hub_source"
    code: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    department_code: Mapped[str] = mapped_column(ForeignKey("catalog_department.code"), index=True)
    entity_type: Mapped[str] = mapped_column(String(20), index=True)  # enterprise|building|place
    rhythm: Mapped[str] = mapped_column(String(20), default="每月")  # 每日 / 每周 / 每月 …
    connector: Mapped[str] = mapped_column(String(10))  # csv|xlsx|json|sql
    # path relative to the hub data dir, or a SQLAlchemy URL for the sql connector
    location: Mapped[str] = mapped_column(Text)
    mapping: Mapped[str] = mapped_column(String(200))  # mapping file (relative to mappings dir)
    priority: Mapped[int] = mapped_column(Integer, default=50)  # higher wins in survivorship
    # connector options: {"query": ..., "sheet": ..., "encoding": ..., "key": ...}
    options: Mapped[dict] = mapped_column(default=dict)
    description: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=now)


class ImportRun(Base):
    """One load of one source: counts, rejects and the outcome."""

    __tablename__ = "hub_import_run"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_code: Mapped[str] = mapped_column(ForeignKey("hub_source.code"), index=True)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=now, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    status: Mapped[str] = mapped_column(String(10), default="running")  # running|ok|failed
    file: Mapped[str | None] = mapped_column(Text, default=None)  # what was read
    n_read: Mapped[int] = mapped_column(Integer, default=0)
    n_new: Mapped[int] = mapped_column(Integer, default=0)
    n_changed: Mapped[int] = mapped_column(Integer, default=0)
    n_unchanged: Mapped[int] = mapped_column(Integer, default=0)
    n_vanished: Mapped[int] = mapped_column(Integer, default=0)
    n_rejected: Mapped[int] = mapped_column(Integer, default=0)
    rejects_path: Mapped[str | None] = mapped_column(Text, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    seconds: Mapped[float | None] = mapped_column(Float, default=None)


class Record(Base):
    """One ledger row as last loaded: raw JSON plus standardised columns."""

    __tablename__ = "hub_record"
    __table_args__ = (
        UniqueConstraint("source_code", "source_key", name="uq_hub_record_source_key"),
        Index("ix_hub_record_source_vanished", "source_code", "vanished"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_code: Mapped[str] = mapped_column(ForeignKey("hub_source.code"))
    source_key: Mapped[str] = mapped_column(String(100))
    content_hash: Mapped[str] = mapped_column(String(40))
    row_no: Mapped[int | None] = mapped_column(Integer, default=None)  # row in the last load
    raw: Mapped[dict] = mapped_column(default=dict)
    name: Mapped[str | None] = mapped_column(String(300), default=None)
    name_norm: Mapped[str | None] = mapped_column(String(300), default=None, index=True)
    name_core: Mapped[str | None] = mapped_column(String(300), default=None, index=True)
    credit_code: Mapped[str | None] = mapped_column(String(18), default=None, index=True)
    reg_no: Mapped[str | None] = mapped_column(String(15), default=None, index=True)
    legal_rep: Mapped[str | None] = mapped_column(String(100), default=None)
    phone: Mapped[str | None] = mapped_column(String(30), default=None)
    address_raw: Mapped[str | None] = mapped_column(Text, default=None)
    address_norm: Mapped[str | None] = mapped_column(Text, default=None)
    address_code: Mapped[str | None] = mapped_column(String(24), default=None)
    building_code: Mapped[str | None] = mapped_column(String(18), default=None, index=True)
    grid_code: Mapped[str | None] = mapped_column(String(15), default=None, index=True)
    street_code: Mapped[str | None] = mapped_column(String(9), default=None, index=True)
    industry_code: Mapped[str | None] = mapped_column(String(10), default=None)
    established: Mapped[date | None] = mapped_column(Date, default=None)
    status: Mapped[str | None] = mapped_column(String(40), default=None)
    extra: Mapped[dict] = mapped_column(default=dict)  # other mapped fields, flags (branch…)
    first_run_id: Mapped[int | None] = mapped_column(Integer, default=None)
    last_run_id: Mapped[int | None] = mapped_column(Integer, default=None)
    vanished: Mapped[bool] = mapped_column(Boolean, default=False)
    vanished_run_id: Mapped[int | None] = mapped_column(Integer, default=None)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)


class Entity(Base):
    """One real-world enterprise / building / place; its id never changes while it exists."""

    __tablename__ = "hub_entity"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entity_type: Mapped[str] = mapped_column(String(20), index=True)
    created_run_id: Mapped[int | None] = mapped_column(Integer, default=None)
    retired: Mapped[bool] = mapped_column(Boolean, default=False)
    retired_run_id: Mapped[int | None] = mapped_column(Integer, default=None)
    merged_into: Mapped[int | None] = mapped_column(Integer, default=None)  # entity id
    history: Mapped[list] = mapped_column(default=list)  # merges / splits, newest last
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)


class Link(Base):
    """Which entity a record belongs to, and how that was decided."""

    __tablename__ = "hub_link"
    record_id: Mapped[int] = mapped_column(
        ForeignKey("hub_record.id", ondelete="CASCADE"), primary_key=True
    )
    entity_id: Mapped[int] = mapped_column(ForeignKey("hub_entity.id"), index=True)
    method: Mapped[str] = mapped_column(String(20))  # credit_code|probabilistic|steward|singleton
    probability: Mapped[float | None] = mapped_column(Float, default=None)
    run_id: Mapped[int | None] = mapped_column(Integer, default=None)
    at: Mapped[datetime] = mapped_column(DateTime, default=now)
    # linkage component (smallest record id of the records connected by keys, steward links or
    # scored pairs) and a digest of the record's linkage fields: what an incremental re-link
    # needs to find the part of the graph a change can reach (see link.run_linkage)
    component: Mapped[int | None] = mapped_column(Integer, default=None)
    fingerprint: Mapped[str | None] = mapped_column(String(16), default=None)


class Review(Base):
    """A borderline pair for the data steward; decisions hold on every later linkage run."""

    __tablename__ = "hub_review"
    __table_args__ = (UniqueConstraint("record_a", "record_b", name="uq_hub_review_pair"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    record_a: Mapped[int] = mapped_column(ForeignKey("hub_record.id", ondelete="CASCADE"))
    record_b: Mapped[int] = mapped_column(
        ForeignKey("hub_record.id", ondelete="CASCADE"), index=True
    )
    probability: Mapped[float | None] = mapped_column(Float, default=None)
    status: Mapped[str] = mapped_column(String(10), default="pending", index=True)
    decided_by: Mapped[str | None] = mapped_column(String(64), default=None)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)
    detail: Mapped[dict] = mapped_column(default=dict)  # comparison levels shown to the steward


class Golden(Base):
    """One surviving field value of an entity, with its lineage and any conflict."""

    __tablename__ = "hub_golden"
    entity_id: Mapped[int] = mapped_column(
        ForeignKey("hub_entity.id", ondelete="CASCADE"), primary_key=True
    )
    field: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[str | None] = mapped_column(Text, default=None)
    source_code: Mapped[str | None] = mapped_column(String(40), default=None)
    record_id: Mapped[int | None] = mapped_column(Integer, default=None, index=True)
    run_id: Mapped[int | None] = mapped_column(Integer, default=None)  # import run of the value
    at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    conflict: Mapped[bool] = mapped_column(Boolean, default=False)
    alternatives: Mapped[list] = mapped_column(default=list)  # [{value, source_code, record_id}]



class LinkModel(Base):
    """Saved parameters of a trained linkage model."""

    __tablename__ = "hub_model"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entity_type: Mapped[str] = mapped_column(String(20), default="enterprise", index=True)
    backend: Mapped[str] = mapped_column(String(20), default="duckdb")
    params: Mapped[dict] = mapped_column(default=dict)
    trained_at: Mapped[datetime] = mapped_column(DateTime, default=now)
    metrics: Mapped[dict] = mapped_column(default=dict)
