"""Early warnings in headless Chromium against a real server on a copy of the small demo
district with an injected burst: a leader opens the warning list, opens the spike, reads the
test that found it, clicks "转为主动治理任务" and lands on the new case (channel 主动治理),
dispatched by the normal engine; the warning then links to its task."""

from __future__ import annotations

import os
import re
from datetime import timedelta

import pytest
from live_server import chromium, serve
from sqlalchemy import func, select

pytestmark = pytest.mark.browser

PASSWORD = "jiedao2026"
SHOTS = os.environ.get("JIEDAO_SCREENSHOTS", "/tmp")


@pytest.fixture(scope="module")
def setup(demo_db):
    try:
        from test_warnings import clone_database, inject_burst
    except ImportError:  # tests/cockpit became a package
        from .test_warnings import clone_database, inject_burst

    from jiedao.cases.runtime import get_pipeline
    from jiedao.cockpit import warnings as W
    from jiedao.cockpit.models import CockpitWarning
    from jiedao.web.app import create_app

    db = clone_database(demo_db, "warnings_ui")
    with db.session() as s:
        as_of = W.latest_case_time(s) - timedelta(days=2)
    grid, matter, ids = inject_burst(db, n=6, as_of=as_of, street_suffix="002")
    with db.session() as s:
        W.scan(s, as_of=as_of)
        wid = s.scalar(select(CockpitWarning.id).where(CockpitWarning.kind == "spike",
                                                       CockpitWarning.grid_code == grid))
    app = create_app(db)
    app.state.case_pipeline = get_pipeline()  # same catalogue and geography, built once
    with serve(app) as url:
        yield {"url": url, "db": db, "wid": wid, "ids": ids}


def test_leader_turns_a_warning_into_a_proactive_task(setup):
    from jiedao.cases.models import Case
    from jiedao.cockpit.models import CockpitWarning

    base, db, wid = setup["url"], setup["db"], setup["wid"]
    assert wid is not None
    with db.session() as s:
        n0 = s.scalar(select(func.count()).select_from(Case))
    errors: list[str] = []
    with chromium() as browser:
        ctx = browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
        pg = ctx.new_page()
        pg.set_default_timeout(30_000)
        pg.on("console", lambda m: m.type == "error" and errors.append(m.text))
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(f"{base}/login")
        pg.fill("input[name=username]", "leader.002")
        pg.fill("input[name=password]", PASSWORD)
        pg.click("form button[type=submit]")
        pg.wait_for_load_state()

        pg.goto(f"{base}/cockpit/warnings")
        assert pg.locator("[data-nav=cockpit_warnings]").count() == 1
        pg.select_option("#kind-select", "spike")
        pg.click("#warning-filter button[type=submit]")
        pg.wait_for_url(re.compile(r".*kind=spike.*"))
        row = pg.locator(f"tr[data-warning='{wid}']")
        assert row.count() == 1
        pg.screenshot(path=os.path.join(SHOTS, "jiedao_warnings.png"), full_page=True)
        row.locator("a.warning-link").click()
        pg.wait_for_url(re.compile(rf".*/cockpit/warnings/{wid}$"))
        assert "泊松" in pg.inner_text("#warning-explain")
        shown = {int(x) for x in pg.eval_on_selector_all("#warning-cases tr[data-case]",
                                                         "els => els.map(e => e.dataset.case)")}
        assert set(setup["ids"]) <= shown
        pg.screenshot(path=os.path.join(SHOTS, "jiedao_warning_detail.png"), full_page=True)

        pg.click("#to-task")
        pg.wait_for_url(re.compile(r".*/cases/\d+\?ok=intake$"))
        case_id = int(re.search(r"/cases/(\d+)", pg.url).group(1))
        assert "主动治理" in pg.inner_text("#case-header")
        assert pg.inner_text("#case-main-dept").strip() not in ("", "未派单")
        pg.screenshot(path=os.path.join(SHOTS, "jiedao_warning_task.png"), full_page=True)

        pg.goto(f"{base}/cockpit/warnings/{wid}")
        assert pg.locator("#task-link").count() == 1 and pg.locator("#to-task").count() == 0
        assert pg.inner_text("#warning-status") == "已转任务"
        ctx.close()
    assert errors == [], errors
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Case)) == n0 + 1
        case = s.get(Case, case_id)
        assert case.channel == "proactive" and case.state == "dispatched"
        assert s.get(CockpitWarning, wid).task_case_id == case_id
