"""The briefing page in headless Chromium: a leader opens 月度分析报告 from the sidebar, the
server-rendered SVG charts are drawn (element screenshots checked for ink and colours), the
month selector switches months, the print stylesheet hides the navigation, and nothing
breaks the strict CSP (no console errors). Screenshots go to $JIEDAO_SCREENSHOTS or /tmp."""

from __future__ import annotations

import io
import os

import pytest
from live_server import chromium, serve

pytestmark = pytest.mark.browser

PASSWORD = "jiedao2026"
SHOTS = os.environ.get("JIEDAO_SCREENSHOTS", "/tmp")


def ink(png: bytes) -> tuple[float, int]:
    """(share of pixels that are not near-white, distinct colours) of a screenshot."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    px = list(img.getdata())
    dark = sum(1 for r, g, b in px if min(r, g, b) < 225)
    return dark / len(px), len(set(px))


@pytest.fixture(scope="module")
def server(demo_db):
    from jiedao.web.app import create_app

    with serve(create_app(demo_db)) as url:
        yield url


def test_briefing_page_draws_its_charts(server, demo_db):
    from jiedao.cockpit import briefing as br
    from jiedao.cockpit.metrics import Metrics

    m = Metrics.for_database(demo_db)
    with chromium() as browser:
        ctx = browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
        page = ctx.new_page()
        page.set_default_timeout(60_000)
        errors: list[str] = []
        page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server}/login")
        page.fill("input[name=username]", "leader01")
        page.fill("input[name=password]", PASSWORD)
        page.click("form button[type=submit]")
        page.wait_for_url(f"{server}/cockpit")
        page.click("[data-nav=cockpit_briefing]")
        page.wait_for_url(f"{server}/cockpit/briefing")
        latest = m.latest_period("month")
        assert page.inner_text("#briefing .briefing-title") == f"临江区{latest.label}诉求办理情况分析报告"
        assert page.locator("#briefing h2").count() == 7

        # switch to June with the month selector
        page.select_option("#briefing-month", "2025-06")
        page.click(".briefing-pick button[type=submit]")
        page.wait_for_url(f"{server}/cockpit/briefing?month=2025-06")
        received = m.summary("2025-06")["received"].value
        assert f"共受理诉求{br.fmt_count(received)}件" in page.inner_text("#briefing-overview")
        page.screenshot(path=os.path.join(SHOTS, "jiedao_briefing.png"), full_page=True)

        charts = page.locator("#briefing svg.chart")
        assert charts.count() >= 4
        for i in range(charts.count()):
            chart = charts.nth(i)
            chart.scroll_into_view_if_needed()
            key = chart.get_attribute("data-chart")
            box = chart.bounding_box()
            assert box and box["width"] > 300 and box["height"] > 80, (key, box)
            marks = page.evaluate("""el => [...el.querySelectorAll('rect.bc-bar, polyline.bc-line')]
                .filter(r => { const b = r.getBBox(); return b.width > 0 && b.height > 0; }).length""",
                                  chart.element_handle())
            assert marks >= 2, (key, marks)
            share, colours = ink(chart.screenshot(path=os.path.join(SHOTS, f"jiedao_briefing_{key}.png")))
            is_line = chart.locator("polyline").count() > 0  # thin lines ink less than bars
            assert share > (0.01 if is_line else 0.04) and colours >= 8, (key, share, colours)

        # printing hides the sidebar and the toolbar, keeps the report
        page.emulate_media(media="print")
        assert not page.locator(".sidebar").is_visible()
        assert not page.locator(".briefing-toolbar").is_visible()
        assert page.locator("#briefing-advice").is_visible()
        page.emulate_media(media="screen")

        # the download link answers with a Word document
        with page.expect_download() as dl:
            page.click("#download-docx")
        assert dl.value.suggested_filename == "临江区2025年6月诉求办理情况分析报告.docx"  # filename*
        assert errors == []
        ctx.close()
