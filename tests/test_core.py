"""Database plumbing: migrations match the models, the unit of work rolls back, meta values."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from jiedao.db import Base, all_models, get_meta, set_meta
from jiedao.errors import Problem, ValidationError


def test_migrations_match_models(fresh_db):
    """Every model change comes with a migration: autogenerate finds nothing to add."""
    all_models()
    with fresh_db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == []


def test_unit_of_work_rolls_back_on_error(fresh_db):
    with pytest.raises(RuntimeError), fresh_db.session() as s:
        set_meta(s, "probe", "1")
        s.flush()
        raise RuntimeError("boom")
    with fresh_db.session() as s:
        assert get_meta(s, "probe") is None
        set_meta(s, "probe", "2")
    with fresh_db.session() as s:
        assert get_meta(s, "probe") == "2"


def test_schema_at_head(fresh_db):
    with fresh_db.engine.connect() as conn:
        rev = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
    from alembic.script import ScriptDirectory

    from jiedao.db import alembic_config

    assert rev == ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_validation_error_names_every_problem():
    err = ValidationError([Problem("未知部门 XYZ", source="matters.yaml", row=7, field="main"),
                           Problem("缺少示例", source="matters.yaml", row=9, field="examples")])
    text = str(err)
    assert "matters.yaml 第7行 字段 main: 未知部门 XYZ" in text
    assert "第9行" in text and len(err.problems) == 2
