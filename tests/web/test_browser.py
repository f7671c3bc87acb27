"""The web shell in headless Chromium (Debian's /usr/bin/chromium) against a real uvicorn
server on 127.0.0.1 serving the small demo district."""

from __future__ import annotations

import pytest
from live_server import chromium, png_pixels, serve
from shapely.geometry import shape

from .conftest import PASSWORD

pytestmark = pytest.mark.browser



@pytest.fixture(scope="module")
def server(web_app):
    """uvicorn serving the demo app in a background thread on a free local port."""
    with serve(web_app) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


class Recorder:
    """Everything a page requested, and every console error / page error it raised."""

    def __init__(self, page):
        self.urls: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda r: self.urls.append(r.url))
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(str(e)))


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
    pg = ctx.new_page()
    pg.set_default_timeout(20_000)
    pg.recorder = Recorder(pg)
    yield pg
    ctx.close()


def log_in(page, server: str, username: str) -> None:
    page.goto(f"{server}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("form button[type=submit]")
    # leaders and admins land on the cockpit, everyone else on the map home
    page.wait_for_url(lambda u: u in (f"{server}/", f"{server}/cockpit"))


def wait_map(page, selector: str) -> None:
    page.wait_for_selector(f"{selector}[data-ready]")


def map_regions(page, selector: str) -> list[str]:
    return page.evaluate(
        """sel => echarts.getInstanceByDom(document.querySelector(sel))
                 .getOption().geo[0].regions.map(r => r.name)""", selector)


def click_region(page, selector: str, geometry: dict) -> None:
    """Click inside a region: a point surely inside its polygon, converted to screen pixels
    by the chart itself."""
    pt = shape(geometry).representative_point()
    page.locator(selector).scroll_into_view_if_needed()
    x, y = page.evaluate(
        """([sel, lon, lat]) => {
             const el = document.querySelector(sel);
             const px = echarts.getInstanceByDom(el).convertToPixel({geoIndex: 0}, [lon, lat]);
             const box = el.getBoundingClientRect();
             return [box.left + px[0], box.top + px[1]];
           }""", [selector, pt.x, pt.y])
    page.mouse.click(x, y)


def fetch_json(page, url: str):
    return page.evaluate("u => fetch(u, {headers: {Accept: 'application/json'}}).then(r => r.json())",
                         url)


def png_colours(data: bytes, step: int = 3) -> set[bytes]:
    """Distinct RGB colours (sampled every ``step`` pixels) of an 8-bit RGB/RGBA PNG."""
    width, _height, rows = png_pixels(data)
    bpp = len(rows[0]) // width
    return {row[x:x + 3] for row in rows for x in range(0, width * bpp, bpp * step)}


def test_street_staff_sees_own_street_and_drills_into_a_grid(page, server, codes):
    log_in(page, server, "street.001")
    # the home map holds exactly the user's own communities
    wait_map(page, "#home-map")
    assert sorted(map_regions(page, "#home-map")) == sorted(codes.communities)
    assert page.inner_text("#current-user")
    # the street list holds only the user's street
    page.goto(f"{server}/geo/streets")
    rows = page.eval_on_selector_all("#street-table tbody tr[data-code]",
                                     "els => els.map(e => e.dataset.code)")
    assert rows == [codes.street]

    # click a community on the street map → community page
    page.goto(f"{server}/geo/streets/{codes.street}")
    wait_map(page, "#street-map")
    assert sorted(map_regions(page, "#street-map")) == sorted(codes.communities)
    target = codes.communities[-1]
    fc = fetch_json(page, f"/api/geo/boundaries.geojson?level=community&parent={codes.street}")
    geom = next(f["geometry"] for f in fc["features"] if f["properties"]["code"] == target)
    click_region(page, "#street-map", geom)
    page.wait_for_url(f"{server}/geo/communities/{target}")

    # click a grid on the community map → grid page with its buildings
    wait_map(page, "#community-map")
    grids = fetch_json(page, f"/api/geo/boundaries.geojson?level=grid&parent={target}")["features"]
    assert sorted(map_regions(page, "#community-map")) == sorted(
        f["properties"]["code"] for f in grids)
    grid = max(grids, key=lambda f: f["properties"]["buildings"])
    click_region(page, "#community-map", grid["geometry"])
    code = grid["properties"]["code"]
    page.wait_for_url(f"{server}/geo/grids/{code}")
    detail = fetch_json(page, f"/api/geo/grids/{code}")
    shown = page.eval_on_selector_all("#building-table tbody tr[data-code]",
                                      "els => els.map(e => e.dataset.code)")
    assert shown == [b["code"] for b in detail["buildings"]] and shown
    assert detail["buildings"][0]["name"] in page.inner_text("#building-table")
    wait_map(page, "#grid-map")
    n_points = page.evaluate("""() => echarts.getInstanceByDom(document.querySelector('#grid-map'))
                                .getOption().series[0].data.length""")
    assert n_points == len(detail["buildings"])
    assert page.recorder.errors == []


def test_home_map_canvas_is_drawn(page, server, codes):
    log_in(page, server, "admin")
    page.goto(f"{server}/map")
    wait_map(page, "#home-map")
    assert sorted(map_regions(page, "#home-map")) == sorted(codes.all_streets)
    page.wait_for_timeout(300)
    colours = png_colours(page.locator("#home-map").screenshot())
    assert len(colours) >= 8, f"map looks flat: {len(colours)} colours"
    page.screenshot(path="/tmp/jiedao-home-map.png")


def test_catalogue_search_filters_the_list(page, server):
    log_in(page, server, "street.001")
    page.goto(f"{server}/catalog/matters")
    total = page.locator(".matter-row").count()
    assert total >= 80
    matters = fetch_json(page, "/api/catalog/matters")
    kw = next(m["keywords"][0] for m in matters if m["keywords"])
    expected = fetch_json(page, "/api/catalog/matters?q=" + kw)
    page.fill("#matter-search", kw)
    page.wait_for_function(
        "n => document.querySelector('#result-count').dataset.count == n", arg=len(expected))
    codes_shown = page.eval_on_selector_all(".matter-row", "els => els.map(e => e.dataset.code)")
    assert codes_shown == [m["code"] for m in expected] and 0 < len(codes_shown) < total
    assert "q=" in page.url  # the search is in the address bar (hx-push-url)
    page.fill("#matter-search", "")
    page.wait_for_function(f"() => document.querySelectorAll('.matter-row').length == {total}")
    assert page.recorder.errors == []


def test_pages_request_nothing_but_localhost(page, server, codes):
    log_in(page, server, "admin")
    for path in ["/", "/map", "/geo/streets", f"/geo/streets/{codes.street}",
                 f"/geo/communities/{codes.community}", f"/geo/grids/{codes.grids[0]}",
                 "/catalog/matters", "/catalog/departments", "/account", "/docs"]:
        page.goto(server + path)
        if page.locator("[data-map]").count():
            page.wait_for_selector("[data-map][data-ready]")
    page.wait_for_selector(".swagger-ui .opblock")  # /docs rendered from /openapi.json
    external = [u for u in page.recorder.urls
                if not u.startswith((server + "/", "data:", "blob:", "about:"))]
    assert external == []
    assert any(u.endswith("/static/vendor/echarts.min.js") for u in page.recorder.urls)
    assert page.recorder.errors == []
