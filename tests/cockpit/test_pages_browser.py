"""The cockpit in headless Chromium (Debian's /usr/bin/chromium) against a real uvicorn server
on the small demo district: a leader lands on the cockpit, the trend chart and the grid map
are drawn (screenshots checked for drawn pixels, not a blank canvas), the map recolours by
another metric, clicking a grid opens its page, and a KPI opens the cases behind it — with
no console errors under the strict CSP. Screenshots go to $JIEDAO_SCREENSHOTS or /tmp."""

from __future__ import annotations

import os

import pytest
from live_server import chromium, png_pixels, serve
from shapely.geometry import shape

pytestmark = pytest.mark.browser

PASSWORD = "jiedao2026"
SHOTS = os.environ.get("JIEDAO_SCREENSHOTS", "/tmp")


def drawn(data: bytes, step: int = 2) -> tuple[float, int]:
    """(share of sampled pixels that differ from the background, distinct colours)."""
    width, height, rows = png_pixels(data)
    bpp = len(rows[0]) // width
    bg = rows[2][2 * bpp:2 * bpp + 3]  # a corner pixel is the card background
    n = ink = 0
    colours = set()
    for y in range(0, height, step):
        row = rows[y]
        for x in range(0, width, step):
            px = row[x * bpp:x * bpp + 3]
            n += 1
            colours.add(px)
            if max(abs(px[k] - bg[k]) for k in range(3)) > 24:
                ink += 1
    return ink / n, len(colours)


@pytest.fixture(scope="module")
def server(demo_db):
    from jiedao.web.app import create_app

    with serve(create_app(demo_db)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
    pg = ctx.new_page()
    pg.set_default_timeout(30_000)
    pg.errors = []
    pg.on("console", lambda m: m.type == "error" and pg.errors.append(m.text))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    ctx.close()


def log_in(page, server: str, username: str, landing: str) -> None:
    page.goto(f"{server}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("form button[type=submit]")
    page.wait_for_url(f"{server}{landing}")


def fetch_json(page, url: str):
    return page.evaluate("u => fetch(u, {headers: {Accept: 'application/json'}}).then(r => r.json())",
                         url)


def test_home_charts_are_drawn_and_a_grid_click_opens_its_page(page, server, demo_db):
    from jiedao.cockpit.metrics import Metrics

    log_in(page, server, "leader01", "/cockpit")
    assert page.locator("[data-nav=cockpit].current").count() == 1
    page.wait_for_selector("#trend-chart[data-ready]")
    page.wait_for_selector("#cockpit-map[data-metric=received]")
    page.wait_for_timeout(300)
    page.screenshot(path=os.path.join(SHOTS, "jiedao_cockpit_home.png"), full_page=True)

    # the trend chart and the map are drawn: many pixels differ from the card, many colours
    for sel, name in (("#trend-chart", "trend"), ("#cockpit-map", "map")):
        shot = page.locator(sel).screenshot(path=os.path.join(SHOTS, f"jiedao_cockpit_{name}.png"))
        share, colours = drawn(shot)
        assert share > 0.05 and colours >= 12, (sel, share, colours)
    # …and the chart shows the months of the year with the metrics layer's figures
    m = Metrics.for_database(demo_db)
    latest = m.latest_period("month")
    option = page.evaluate("""() => {
        const o = echarts.getInstanceByDom(document.querySelector('#trend-chart')).getOption();
        return {labels: o.xAxis[0].data, received: o.series[0].data};
    }""")
    points = m.trend(str(latest.start.year), "month")
    assert option["labels"] == [p.label for p, _ in points]
    assert option["received"] == [v["received"].value for _, v in points]

    # the map recolours by another metric (values from the metrics layer, per grid)
    page.select_option("#map-metric", "satisfied")
    page.wait_for_selector("#cockpit-map[data-metric=satisfied]")
    shown = page.evaluate("""() => Object.fromEntries(
        echarts.getInstanceByDom(document.querySelector('#cockpit-map')).getOption()
          .series[0].data.filter(d => d.value !== null).map(d => [d.name, d.value]))""")
    expected = {r.code: round(r.values["satisfied"].value, 2)
                for r in m.breakdown(latest, "grid", metrics=["satisfied"], compare=False)
                if r.values["satisfied"].value is not None and r.code}
    assert shown == expected and shown

    # click inside the largest grid → its cockpit page
    fc = fetch_json(page, "/api/geo/boundaries.geojson?level=grid")
    feature = max(fc["features"], key=lambda f: shape(f["geometry"]).area)
    code = feature["properties"]["code"]
    pt = shape(feature["geometry"]).representative_point()
    page.locator("#cockpit-map").scroll_into_view_if_needed()
    x, y = page.evaluate("""([lon, lat]) => {
        const el = document.querySelector('#cockpit-map');
        const px = echarts.getInstanceByDom(el).convertToPixel({seriesIndex: 0}, [lon, lat]);
        const box = el.getBoundingClientRect();
        return [box.left + px[0], box.top + px[1]];
    }""", [pt.x, pt.y])
    page.mouse.click(x, y)
    page.wait_for_url(f"{server}/cockpit/grids/{code}?period={latest.key}")
    assert feature["properties"]["name"] in page.inner_text("#object-name")
    page.wait_for_selector("#trend-chart[data-ready]")
    page.wait_for_selector("#grid-map[data-ready]")
    page.screenshot(path=os.path.join(SHOTS, "jiedao_cockpit_grid.png"), full_page=True)
    assert page.errors == []


def test_kpi_opens_its_cases_and_the_period_selector_works(page, server, demo_db):
    from jiedao.cockpit.metrics import Metrics

    m = Metrics.for_database(demo_db)
    log_in(page, server, "leader.001", "/cockpit")
    page.select_option("#grain-select", "quarter")
    page.wait_for_url(f"{server}/cockpit?grain=quarter")
    quarter = m.latest_period("quarter")
    assert page.inner_text("#period-label") == quarter.label
    page.select_option("#period-select", quarter.previous().key)
    page.wait_for_url(f"**/cockpit?grain=quarter&period={quarter.previous().key}")
    assert page.inner_text("#period-label") == quarter.previous().label
    page.click("[data-metric=close_ontime] a[data-part=miss]")
    page.wait_for_url("**/cockpit/cases?metric=close_ontime&part=miss*")
    from jiedao.auth import service

    with demo_db.session() as s:
        p = service.principal_for(service.get_user(s, "leader.001"))
    ids = m.case_ids(quarter.previous(), "close_ontime", part="miss", principal=p)
    assert page.inner_text("#drill-total") == f"{len(ids):,}"
    links = page.eval_on_selector_all("#drill-table a", "els => els.map(e => e.getAttribute('href'))")
    assert links == [f"/cases/{i}" for i in ids[:50]]
    page.click("#part-tabs a[data-part=denominator]")
    page.wait_for_url("**part=denominator*")
    assert page.errors == []
