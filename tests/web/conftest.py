"""Fixtures for the web tests: the real app on the small demo district, and clients logged
in through the real /login form."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

PASSWORD = "jiedao2026"
HTML = {"accept": "text/html,application/xhtml+xml"}


@dataclass(frozen=True)
class Codes:
    """Codes of the demo district the tests navigate: street 001 (own) and another street."""

    district: str
    street: str
    other_street: str
    communities: tuple[str, ...]  # of street
    other_community: str  # of other_street
    community: str  # first community of street
    grids: tuple[str, ...]  # of community
    other_grid: str
    all_streets: tuple[str, ...]


@pytest.fixture(scope="session")
def web_app(demo_db):
    from jiedao.web.app import create_app

    return create_app(demo_db)


@pytest.fixture(scope="session")
def codes(demo_db) -> Codes:
    from jiedao.geo.models import Community, District, Grid, Street

    with demo_db.session() as s:
        district = s.scalars(select(District.code)).first()
        streets = tuple(s.scalars(select(Street.code).order_by(Street.code)))
        street = district + "001"
        assert street in streets and len(streets) >= 2
        other = next(c for c in streets if c != street)
        comms = tuple(s.scalars(select(Community.code).where(Community.street_code == street)
                                .order_by(Community.code)))
        other_comm = s.scalars(select(Community.code).where(Community.street_code == other)
                               .order_by(Community.code)).first()
        grids = tuple(s.scalars(select(Grid.code).where(Grid.community_code == comms[0])
                                .order_by(Grid.code)))
        other_grid = s.scalars(select(Grid.code).where(Grid.street_code == other)
                               .order_by(Grid.code)).first()
    return Codes(district, street, other, comms, other_comm, comms[0], grids, other_grid, streets)


def login(client: TestClient, username: str, password: str = PASSWORD) -> TestClient:
    """Log in through the real login form (GET the page, POST its fields)."""
    page = client.get("/login", headers=HTML)
    assert page.status_code == 200 and "password" in page.text
    r = client.post("/login", data={"username": username, "password": password, "next": "/"},
                    headers=HTML, follow_redirects=False)
    assert r.status_code == 303, (username, r.status_code, r.text[:300])
    return client


@pytest.fixture(scope="session")
def client_as(web_app):
    """``client_as("street.001")``: a TestClient logged in as that demo user (cached)."""
    cache: dict[str, TestClient] = {}

    def make(username: str) -> TestClient:
        if username not in cache:
            cache[username] = login(TestClient(web_app), username)
        return cache[username]

    return make


@pytest.fixture(scope="session")
def anon(web_app) -> TestClient:
    return TestClient(web_app)
