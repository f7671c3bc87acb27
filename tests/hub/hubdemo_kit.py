"""A small hub for the DEMO+PAGES tests: the small demo district (geography, catalogue,
users — without the year of appeals), its six ledgers written by the generator, loaded
through the real loader, linked by the generator's truth (so the pages do not depend on
the linker's quality) and golden records built by the real survivorship code."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

PASSWORD = "jiedao2026"
HTML = {"accept": "text/html,application/xhtml+xml"}


@dataclass
class SmallHub:
    db: object
    data_dir: Path
    drop: object


def build_small_hub(tmp_path_factory) -> SmallHub:
    from dbkit import new_database

    from jiedao.demo import build
    from jiedao.demo.hub import LOAD_ORDER, link_by_truth
    from jiedao.demo.ledgers import write_ledgers
    from jiedao.demo.pipeline import generate
    from jiedao.hub.golden import build_golden
    from jiedao.hub.loads import load_source
    from jiedao.hub.sources import sync_sources

    db, drop = new_database(tmp_path_factory)
    stages = build.DB_STAGES
    try:
        build.DB_STAGES = [st for st in stages if st[0] in ("catalog", "users")]
        build.build_demo(db, small=True, progress=False)
    finally:
        build.DB_STAGES = stages
    data_dir = tmp_path_factory.mktemp("ledgers")
    write_ledgers(generate("small"), data_dir)
    with db.session() as s:
        sync_sources(s)
    for code in LOAD_ORDER:
        with db.session() as s:
            load_source(s, code, data_dir=data_dir)
    with db.session() as s:
        link_by_truth(s, data_dir)
        build_golden(s, "enterprise")
        with contextlib.suppress(Exception), s.begin_nested():
            build_golden(s, "building")
    return SmallHub(db, Path(data_dir), drop)


def login(client, username: str, password: str = PASSWORD):
    """Log in through the real /login form."""
    page = client.get("/login", headers=HTML)
    assert page.status_code == 200
    r = client.post("/login", data={"username": username, "password": password, "next": "/"},
                    headers=HTML, follow_redirects=False)
    assert r.status_code == 303, (username, r.status_code, r.text[:300])
    return client
