"""Database plumbing: declarative base, engines for SQLite and PostgreSQL, unit of work,
and schema upgrades through Alembic.

SQLite is the embedded default; PostgreSQL is the production database. Code above this
module never branches on the backend except through the helpers here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import JSON, MetaData, String, create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base class of every table. Constraint names are deterministic for migrations."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict: JSON, list: JSON}


class Meta(Base):
    """Key/value facts about this database (schema purpose, demo fingerprint…)."""

    __tablename__ = "jiedao_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(1000))


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


POOL_SIZE = 10  # connections a PostgreSQL engine keeps open (see make_engine)


def make_engine(url: str, **kw) -> Engine:
    """Create an engine; for SQLite, make the folder and turn on FKs, WAL and a busy timeout."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        kw.setdefault("connect_args", {"check_same_thread": False})
        engine = create_engine(url, **kw)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if u.drivername in ("postgresql", "postgres"):
        url = u.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    # No pre-ping: it costs a round trip on every checkout (every request). A connection the
    # server dropped fails its statement once, the pool then discards all its connections;
    # pool_recycle retires connections before server-side idle timeouts.
    kw.setdefault("pool_pre_ping", False)
    kw.setdefault("pool_recycle", 1800)
    # Keep up to POOL_SIZE connections open. With SQLAlchemy's default of 5, a web worker
    # serving more than 5 requests at once (8 API clients over 2 workers are rarely split
    # 4/4) opened an overflow connection and closed it after the request: a new PostgreSQL
    # backend (fork, catalogue caches, statements prepared again) every ~25 intakes.
    kw.setdefault("pool_size", POOL_SIZE)
    kw.setdefault("max_overflow", 10)
    return create_engine(url, **kw)


class Database:
    """One engine and its session factory. ``db.session()`` is the unit of work."""

    def __init__(self, url: str, **engine_kw):
        self.url = url
        self.engine = make_engine(url, **engine_kw)
        self.Session = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """Open a session that commits on success and rolls back on any error."""
        s = self.Session()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    def upgrade(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        upgrade(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(engine: Engine | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run Alembic migrations up to ``revision`` on ``engine``."""
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def get_meta(session: Session, key: str) -> str | None:
    row = session.get(Meta, key)
    return row.value if row else None


def set_meta(session: Session, key: str, value: str) -> None:
    session.merge(Meta(key=key, value=value))


def truncate_all(engine: Engine, tables) -> None:
    """Empty the given tables (children first). Used by loaders that replace a whole set."""
    with engine.begin() as conn:
        for t in reversed(list(tables)):
            conn.execute(text(f"DELETE FROM {t.name}"))


_default: Database | None = None


def get_database() -> Database:
    """The process-wide database from settings (created on first use)."""
    global _default
    if _default is None:
        from jiedao.config import get_settings

        _default = Database(get_settings().database_url)
    return _default


def set_database(db: Database | None) -> None:
    """Replace the process-wide database (tests, CLI --database)."""
    global _default
    _default = db


def all_models() -> None:
    """Import every subpackage's models so Base.metadata knows all tables."""
    import jiedao.auth.models  # noqa: F401
    import jiedao.cases.models  # noqa: F401
    import jiedao.catalog.models  # noqa: F401
    import jiedao.cockpit.models  # noqa: F401
    import jiedao.geo.models  # noqa: F401
    import jiedao.hub.models  # noqa: F401
