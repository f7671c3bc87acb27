"""Alembic environment: uses the engine handed in by jiedao.db.upgrade, or the settings URL."""

from alembic import context

from jiedao.db import Base, all_models, make_engine

all_models()
config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        from jiedao.config import get_settings

        engine = make_engine(get_settings().database_url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `jiedao init`")
run_migrations_online()
