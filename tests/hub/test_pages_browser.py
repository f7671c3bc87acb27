"""一企一档 in headless Chromium (Debian's /usr/bin/chromium) against a real uvicorn server on
the small hub: log in, search by name (htmx), open the archive, see lineage and the building,
follow it to 一楼一档 — with no console errors (strict CSP, no inline scripts)."""

from __future__ import annotations

import pytest
from hubdemo_kit import PASSWORD, build_small_hub
from live_server import chromium, serve
from sqlalchemy import select

pytestmark = pytest.mark.browser



@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    h = build_small_hub(tmp_path_factory)
    yield h
    h.drop()


@pytest.fixture(scope="module")
def server(hub):
    from jiedao.web.app import create_app

    with serve(create_app(hub.db)) as url:
        yield url


@pytest.fixture(scope="module")
def browser(hub):
    with chromium() as b:
        yield b


def test_search_then_archive_shows_lineage(browser, server, hub):
    from jiedao.geo.models import Building
    from jiedao.hub.models import Golden

    with hub.db.session() as s:
        # an enterprise in an office tower
        towers = select(Building.code).where(Building.kind == "office")
        office = {e for (e,) in s.execute(select(Golden.entity_id).where(
            Golden.field == "building_code", Golden.value.in_(towers)))}
        names = dict(s.execute(select(Golden.entity_id, Golden.value).where(
            Golden.field == "name", Golden.entity_id.in_(office))).all())
    entity_id, name = sorted(names.items())[0]

    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
    page = ctx.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{server}/login")
        page.fill("input[name=username]", "steward01")
        page.fill("input[name=password]", PASSWORD)
        page.click("form button[type=submit]")
        page.wait_for_url(f"{server}/")
        page.click("a[data-nav=hub_search]")
        page.wait_for_url(f"{server}/hub/search")
        page.fill("#hub-q", name)  # htmx fetches the hits as the user types
        link = page.locator(f"#hit-table a[href='/hub/enterprises/{entity_id}']")
        link.wait_for()
        link.click()
        page.wait_for_url(f"{server}/hub/enterprises/{entity_id}")
        assert page.inner_text("#ent-name") == name
        row = page.locator("#golden-table tr[data-field=name]")
        assert "市场主体登记信息" in row.locator(".lineage").inner_text()
        assert page.locator("#records-table tbody tr").count() >= 1
        assert page.locator("#timeline li").count() >= 1
        page.click("#ent-building a")
        page.wait_for_url(f"{server}/hub/buildings/*")
        assert page.locator(f"#tenant-table tr[data-id='{entity_id}']").count() == 1
        assert errors == []
    finally:
        ctx.close()
