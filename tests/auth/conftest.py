"""Fixtures for the auth tests: a small hand-made district in a fresh database."""

from __future__ import annotations

from functools import lru_cache

import pytest

from jiedao.auth import passwords, service
from jiedao.catalog.models import Department
from jiedao.geo.models import Building, Community, District, Grid, Street

PASSWORD = "jiedao2026"
D = "420199"
S1, S2 = "420199001", "420199002"
C11, C12, C21 = "420199001001", "420199001002", "420199002001"


@lru_cache(maxsize=1)
def password_hash() -> str:
    """One argon2 hash of PASSWORD shared by fixture users (hashing costs ~0.1 s)."""
    return passwords.hash_password(PASSWORD)


def seed_geo(session) -> None:
    """District 420199 with two streets, three communities, a grid and a building in each."""
    session.add(District(code=D, name="临江区", city="江城市"))
    session.add_all([Street(code=S1, name="琴台街道", district_code=D),
                     Street(code=S2, name="汉正街道", district_code=D)])
    session.flush()
    session.add_all([Community(code=C11, name="琴台社区", street_code=S1),
                     Community(code=C12, name="月湖社区", street_code=S1),
                     Community(code=C21, name="汉正社区", street_code=S2)])
    session.flush()
    for c in (C11, C12, C21):
        g = c + "001"
        session.add(Grid(code=g, name=f"网格{g[-6:]}", community_code=c, street_code=c[:9]))
        session.flush()
        session.add(Building(code=g + "001", name=f"楼{g[-6:]}", kind="residential", lon=114.0,
                             lat=30.5, grid_code=g, community_code=c, street_code=c[:9]))
    session.add_all([
        Department(code="CGJ", name="区城管局", kind="district"),
        Department(code="JD" + S1, name="琴台街道办事处", kind="street", street_code=S1),
    ])
    session.flush()


def add_user(session, username, role, level, code, **kw):
    kw.setdefault("display_name", username)
    return service.create_user(session, username=username, password_hash=password_hash(),
                               role=role, scope_level=level, scope_code=code, **kw)


def _fill(db) -> None:
    with db.session() as s:
        seed_geo(s)
        add_user(s, "admin", "admin", "district", D, display_name="管理员")
        add_user(s, "street.001", "street_staff", "street", S1, display_name="琴台街道")
        add_user(s, "street.002", "street_staff", "street", S2, display_name="汉正街道")
        add_user(s, "sq." + C11, "street_staff", "community", C11, display_name="琴台社区")
        add_user(s, "handler.cgj", "handler", "department", "CGJ", display_name="城管局处置人")
        add_user(s, "leader.001", "leader", "street", S1, display_name="琴台街道领导")


@pytest.fixture
def geo_db(fresh_db):
    """A fresh database holding the hand-made district and one user per kind of scope."""
    _fill(fresh_db)
    return fresh_db


@pytest.fixture(scope="module")
def shared_geo_db(tmp_path_factory):
    """Like ``geo_db`` but built once per module, for tests that only read."""
    import os

    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    from jiedao.db import Database

    pg = os.environ.get("JIEDAO_TEST_DATABASE_URL")
    if pg:
        base = make_url(pg).set(drivername="postgresql+psycopg")
        name = f"{base.database}_shared_{os.getpid()}"
        admin = sa.create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
        db = Database(base.set(database=name).render_as_string(hide_password=False))
    else:
        db = Database(f"sqlite:///{tmp_path_factory.mktemp('auth_shared') / 'jiedao.sqlite'}")
    db.upgrade()
    _fill(db)
    yield db
    db.dispose()
    if pg:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
