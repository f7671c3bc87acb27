"""Cockpit pages through the real app (TestClient, logged in through the real /login form)
on the small demo district: every figure a page shows is the metrics layer's figure, every
number links to the cases behind it, every table exports to XLSX, and scope holds — a
street leader sees the street, a department handler the department."""

from __future__ import annotations

import io
import json
import re
from html import unescape
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

PASSWORD = "jiedao2026"
HTML = {"accept": "text/html,application/xhtml+xml"}
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


# ---------------------------------------------------------------- helpers


class Page(HTMLParser):
    """The bits of a page the tests look at: links, elements by id and table cells."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.ids: dict[str, dict] = {}
        self.texts: dict[str, list[str]] = {}
        self.tables: dict[str, list[list[dict]]] = {}
        self._open: list[tuple[str, str | None]] = []
        self._table: str | None = None
        self._cell: dict | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
            if self._cell is not None:
                self._cell["href"] = a["href"]
        if a.get("id"):
            self.ids[a["id"]] = a
            self.texts.setdefault(a["id"], [])
        if tag in ("br", "img", "input", "meta", "link"):
            return
        self._open.append((tag, a.get("id")))
        if tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = {"text": "", "href": None, "title": a.get("title"),
                          "cls": (a.get("class") or "").split()}

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table:
            self._cell["text"] = self._cell["text"].strip()
            self.tables[self._table][-1].append(self._cell)
            self._cell = None
        if tag == "table":
            self._table = None
        while self._open:
            t, _ = self._open.pop()
            if t == tag:
                break

    def handle_data(self, data):
        for _, i in self._open:
            if i:
                self.texts[i].append(data)
        if self._cell is not None:
            self._cell["text"] += data

    def text(self, id_: str) -> str:
        return re.sub(r"\s+", " ", "".join(self.texts[id_])).strip()

    def body_rows(self, table_id: str) -> list[list[dict]]:
        """Data rows (not the header, not the "no data" row)."""
        return [r for r in self.tables[table_id][1:] if r and "empty" not in r[0]["cls"]]


def page(client: TestClient, url: str, status: int = 200) -> Page:
    r = client.get(url, headers=HTML)
    assert r.status_code == status, (url, r.status_code, r.text[:500])
    return Page(r.text)


def login(client: TestClient, username: str) -> TestClient:
    r = client.post("/login", data={"username": username, "password": PASSWORD, "next": "/"},
                    headers=HTML, follow_redirects=False)
    assert r.status_code == 303, (username, r.status_code)
    return client


def workbook(resp):
    from openpyxl import load_workbook

    assert resp.status_code == 200, resp.text[:300]
    assert resp.headers["content-type"] == XLSX
    assert resp.headers["content-disposition"].startswith("attachment;")
    return load_workbook(io.BytesIO(resp.content))


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(unescape(url)).query,
                                         keep_blank_values=True).items()}


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def app(demo_db):
    from jiedao.web.app import create_app

    return create_app(demo_db)


@pytest.fixture(scope="module")
def as_user(app):
    cache: dict[str, TestClient] = {}

    def make(username: str) -> TestClient:
        if username not in cache:
            cache[username] = login(TestClient(app), username)
        return cache[username]

    return make


@pytest.fixture(scope="module")
def m(demo_db):
    from jiedao.cockpit.metrics import Metrics

    return Metrics.for_database(demo_db)


@pytest.fixture(scope="module")
def principals(demo_db):
    from jiedao.auth import service

    def get(username):
        with demo_db.session() as s:
            return service.principal_for(service.get_user(s, username))

    return get


@pytest.fixture(scope="module")
def places(demo_db):
    """(own street, other street, a grid of each, a community of each) — street 001 is own."""
    from jiedao.geo.models import Community, Grid, Street

    with demo_db.session() as s:
        streets = list(s.scalars(select(Street.code).order_by(Street.code)))
        own, other = streets[0], streets[1]
        grid = {st: s.scalars(select(Grid.code).where(Grid.street_code == st)
                              .order_by(Grid.code)).first() for st in (own, other)}
        comm = {st: s.scalars(select(Community.code).where(Community.street_code == st)
                              .order_by(Community.code)).first() for st in (own, other)}
    assert own.endswith("001")
    return {"own": own, "other": other, "grid": grid, "community": comm}


def fmt(d, v) -> str:
    from jiedao.cockpit.routes import fmt_value

    return fmt_value(d, v)


# ---------------------------------------------------------------- landing and home


def test_leaders_land_on_the_cockpit_and_others_on_the_map(as_user):
    for user in ("leader01", "admin", "leader.001"):
        r = as_user(user).get("/", headers=HTML, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/cockpit", user
    home = page(as_user("street.001"), "/")
    assert "home-map" in home.ids
    assert "home-map" in page(as_user("leader01"), "/map").ids  # the map home at its own URL
    nav = page(as_user("leader01"), "/cockpit")
    assert {"/cockpit", "/cockpit/rankings", "/cockpit/hub", "/map"} <= set(nav.links)


def test_home_shows_the_metrics_layer_figures_with_comparisons(as_user, m):
    from jiedao.cockpit.metrics import METRICS

    latest = m.latest_period("month")
    html = page(as_user("leader01"), "/cockpit")
    assert html.text("period-label") == latest.label
    summary = m.summary(latest, principal=None)
    body = as_user("leader01").get("/cockpit", headers=HTML).text
    for key, d in METRICS.items():
        block = body.split(f'data-metric="{key}"', 1)[1].split('class="kpi-links"', 1)[0]
        value = re.search(r'class="kpi-value"[^>]*>([^<]+)<', block).group(1)
        assert value == fmt(d, summary[key].value), key
        assert "环比" in block and "同比" in block
    # the trend covers the year of the period by month, the map is at grid level
    trend = json.loads(html.ids["trend-chart"]["data-trend"])
    assert len(trend["labels"]) == 12 and trend["current"] == latest.key
    points = m.trend(str(latest.start.year), "month", principal=None)
    assert trend["series"]["received"] == [p[1]["received"].value for p in points]
    assert html.ids["cockpit-map"]["data-geojson-url"] == "/api/geo/boundaries.geojson?level=grid"
    # top matters: the ten matters with most cases, in that order
    rows = html.body_rows("table-top_matters")
    by_cat = sorted(m.breakdown(latest, "category"), key=lambda r: -r.values["received"].value)
    assert [r[1]["text"] for r in rows] == [r.code for r in by_cat[:10]]
    assert "overdue-list" in html.ids and "warned-list" in html.ids
    assert html.text("overdue-total").replace(",", "").isdigit()


def test_home_lists_open_early_warnings_and_overdue_assignments(as_user, principals, demo_db):
    from jiedao.cases.models import Assignment
    from jiedao.cases.sla import OPEN_STATES
    from jiedao.cockpit.warnings import list_warnings

    c = as_user("leader.001")
    p = principals("leader.001")
    html = page(c, "/cockpit")
    with demo_db.session() as s:
        expected = [f"/cockpit/warnings/{w.id}" for w in list_warnings(s, p, status="open", limit=8)]
        overdue = s.execute(select(Assignment.case_id).where(
            Assignment.state.in_(OPEN_STATES)).order_by(Assignment.deadline, Assignment.id)).all()
    links = [u for u in html.links if u.startswith("/cockpit/warnings/")]
    assert links == expected
    shown = [u for u in html.links if re.fullmatch(r"/cases/\d+", u)]
    assert shown and all(int(u.split("/")[2]) in {r[0] for r in overdue} for u in shown)


def test_community_staff_home_is_the_community(as_user, demo_db):
    from jiedao.auth.models import User

    with demo_db.session() as s:
        user = s.scalars(select(User.username).where(User.username.like("sq.%"))
                         .order_by(User.username)).first()
    comm = user.removeprefix("sq.")
    html = page(as_user(user), "/cockpit")
    assert html.ids["cockpit-map"]["data-geojson-url"].endswith(f"parent={comm}")
    grids = [r[1]["text"] for r in html.body_rows("table-by_grid")]
    assert grids and all(g.startswith(comm) or g == "" for g in grids)


def test_period_selector_grains_and_bad_period(as_user, m):
    c = as_user("leader01")
    for grain in ("week", "month", "quarter", "year"):
        html = page(c, f"/cockpit?grain={grain}")
        assert html.text("period-label") == m.latest_period(grain).label
        assert html.ids["grain-select"]
    html = page(c, "/cockpit?period=2025-06")
    assert html.text("period-label") == "2025年6月"
    trend = json.loads(html.ids["trend-chart"]["data-trend"])
    assert trend["current"] == "2025-06"
    html = page(c, "/cockpit?period=2025-W10")
    assert len(json.loads(html.ids["trend-chart"]["data-trend"])["labels"]) >= 13  # weeks of Q1
    r = c.get("/cockpit?period=2025-13", headers=HTML)
    assert r.status_code == 422 and "统计期" in r.text


# ---------------------------------------------------------------- drill-down


def test_every_kpi_drills_down_to_exactly_its_cases(as_user, m):
    from jiedao.cockpit.metrics import METRICS

    c = as_user("leader01")
    html = page(c, "/cockpit?period=2025-06")
    drill = sorted({u for u in html.links if u.startswith("/cockpit/cases?")})
    assert len(drill) > 30
    kpi_links = [u for u in drill if set(query(u)) == {"metric", "part", "period"}]
    parts = {(query(u)["metric"], query(u)["part"]) for u in kpi_links}
    for key, d in METRICS.items():
        wanted = {"numerator", "denominator", "miss"} if d.kind == "rate" else {"denominator"}
        assert {p for k, p in parts if k == key} == wanted, key
    for u in kpi_links:
        q = query(u)
        ids = m.case_ids("2025-06", q["metric"], part=q["part"])
        listing = page(c, unescape(u))
        assert listing.text("drill-total") == f"{len(ids):,}"
        rows = listing.body_rows("drill-table")
        assert [r[0]["href"] for r in rows] == [f"/cases/{i}" for i in ids[:50]]


def test_drill_down_pages_and_filters(as_user, m, places):
    c = as_user("leader01")
    ids = m.case_ids("2025", "received", filters={"street": places["own"]})
    assert len(ids) > 50
    p2 = page(c, f"/cockpit/cases?metric=received&period=2025&street={places['own']}&page=2")
    assert [r[0]["href"] for r in p2.body_rows("drill-table")] == [
        f"/cases/{i}" for i in ids[50:100]]
    # every listed case is a real page the leader can open
    first = p2.body_rows("drill-table")[0][0]["href"]
    assert c.get(first, headers=HTML).status_code == 200
    # the rate tabs switch between numerator, denominator and miss
    html = page(c, "/cockpit/cases?metric=satisfied&part=miss&period=2025")
    tabs = {query(u)["part"] for u in html.links if "part=" in u and "page=" not in u
            and "format" not in u}
    assert tabs == {"numerator", "denominator", "miss"}
    n, d, miss = (len(m.case_ids("2025", "satisfied", part=p))
                  for p in ("numerator", "denominator", "miss"))
    assert n + miss == d and html.text("drill-total") == f"{miss:,}"
    for bad in ("metric=nope", "metric=received&part=half", "metric=received&street=12"):
        assert c.get(f"/cockpit/cases?{bad}", headers=HTML).status_code == 422, bad


def test_breakdown_cells_link_to_their_cases(as_user, m):
    c = as_user("leader01")
    html = page(c, "/cockpit?period=2025-06")
    rows = html.body_rows("table-by_street")
    expected = m.breakdown("2025-06", "street")
    assert [r[1]["text"] for r in rows] == [r.code for r in expected]
    for row, exp in zip(rows, expected, strict=True):
        if exp.code:
            assert row[0]["href"] == f"/cockpit/streets/{exp.code}?period=2025-06"
        cell = row[2]  # 受理量
        assert cell["text"] == f"{int(exp.values['received'].value):,}"
        if exp.values["received"].denominator:
            q = query(cell["href"])
            assert q == {"metric": "received", "part": "denominator", "period": "2025-06",
                         "street": exp.code}
            listing = page(c, unescape(cell["href"]))
            assert listing.text("drill-total") == cell["text"]


# ---------------------------------------------------------------- object pages


def test_object_pages_show_their_figures_and_next_level(as_user, m, places, demo_db):
    from jiedao.cases.models import Case

    c = as_user("leader01")
    with demo_db.session() as s:
        matter, dept = s.execute(select(Case.matter_code, Case.main_department_code)
                                 .where(Case.matter_code.is_not(None),
                                        Case.main_department_code.is_not(None))
                                 .order_by(Case.id)).first()
    own, grid, comm = places["own"], places["grid"][places["own"]], places["community"][places["own"]]
    cases = [("street", own, "table-by_community"), ("community", comm, "table-by_grid"),
             ("grid", grid, "table-by_category"), ("department", dept, "table-by_street"),
             ("category", matter, "table-by_street"), ("channel", "hotline", "table-by_street")]
    urls = {"street": "streets", "community": "communities", "grid": "grids",
            "department": "departments", "category": "categories", "channel": "channels"}
    for dim, code, table in cases:
        html = page(c, f"/cockpit/{urls[dim]}/{code}?period=2025")
        summary = m.summary("2025", filters={dim: code})
        body = c.get(f"/cockpit/{urls[dim]}/{code}?period=2025", headers=HTML).text
        block = body.split('data-metric="received"', 1)[1]
        assert re.search(r'class="kpi-value"[^>]*>([^<]+)<', block).group(1) == \
            f"{int(summary['received'].value):,}", dim
        child = table.removeprefix("table-by_")
        rows = html.body_rows(table)
        assert [r[1]["text"] for r in rows] == [
            r.code for r in sorted(m.breakdown("2025", child, filters={dim: code}),
                                   key=lambda r: -(r.values["received"].value or 0))
        ] if child in ("category", "department", "channel") else [
            r.code for r in m.breakdown("2025", child, filters={dim: code})], dim
        drills = [u for u in html.links if u.startswith("/cockpit/cases?")]
        assert drills and all(query(u)[dim] == code for u in drills), dim
    html = page(c, "/cockpit/channels?period=2025")
    assert [r[1]["text"] for r in html.body_rows("table-by_channel")]
    for url in ("/cockpit/streets/420199999", "/cockpit/grids/420199001001999",
                "/cockpit/departments/NOPE", "/cockpit/categories/ZZ9999",
                "/cockpit/channels/pigeon"):
        assert c.get(url, headers=HTML).status_code == 404, url


def test_grid_map_values_and_click_target(as_user, m):
    c = as_user("leader01")
    r = c.get("/cockpit/map.json?metric=satisfied&period=2025-06")
    assert r.status_code == 200
    data = r.json()
    assert data["kind"] == "rate" and data["higher_is_better"] is True
    expected = {x.code: round(x.values["satisfied"].value, 2)
                for x in m.breakdown("2025-06", "grid", metrics=["satisfied"], compare=False)
                if x.values["satisfied"].value is not None and x.code}
    assert data["values"] == expected and expected
    html = page(c, "/cockpit?period=2025-06")
    assert html.ids["cockpit-map"]["data-click-template"] == "/cockpit/grids/{code}?period=2025-06"
    assert c.get("/cockpit/map.json?metric=nope").status_code == 422


def test_rankings_follow_the_metrics_layer(as_user, m):
    c = as_user("leader01")
    html = page(c, "/cockpit/rankings?period=2025-06")
    for by in ("street", "department"):
        rows = html.body_rows(f"table-rank_{by}")
        ranked = m.ranking("2025-06", by)
        assert [(int(r[0]["text"]), r[2]["text"]) for r in rows] == [(x.rank, x.code) for x in ranked]
        assert rows[0][1]["href"].startswith(f"/cockpit/{'streets' if by == 'street' else 'departments'}/")
    assert "综合得分" in html.text("weights")
    assert as_user("handler.cgj").get("/cockpit/rankings", headers=HTML).status_code == 403


# ---------------------------------------------------------------- scope


def test_street_leader_sees_only_the_street(as_user, m, places, principals):
    own, other = places["own"], places["other"]
    c = as_user("leader.001")
    p = principals("leader.001")
    latest = m.latest_period("month")
    body = c.get("/cockpit", headers=HTML).text
    html = Page(body)
    block = body.split('data-metric="received"', 1)[1]
    mine = m.summary(latest, principal=p)["received"].value
    assert re.search(r'class="kpi-value"[^>]*>([^<]+)<', block).group(1) == f"{int(mine):,}"
    assert mine < m.summary(latest)["received"].value
    assert html.ids["cockpit-map"]["data-geojson-url"].endswith(f"parent={own}")
    comms = [r[1]["text"] for r in html.body_rows("table-by_community")]
    assert comms and all(x.startswith(own) or x == "" for x in comms)
    # other streets' pages are refused, own pages open
    for url in (f"/cockpit/streets/{other}", f"/cockpit/communities/{places['community'][other]}",
                f"/cockpit/grids/{places['grid'][other]}",
                f"/cockpit/cases?metric=received&period=2025&street={other}",
                f"/cockpit/cases?metric=received&period=2025&grid={places['grid'][other]}"):
        assert c.get(url, headers=HTML).status_code == 403, url
    for url in (f"/cockpit/streets/{own}", f"/cockpit/grids/{places['grid'][own]}"):
        assert c.get(url, headers=HTML).status_code == 200, url
    # the map and the drill-down hold only the street's grids and cases
    values = c.get("/cockpit/map.json?metric=received&period=2025").json()["values"]
    assert values and all(code.startswith(own) for code in values)
    ids = m.case_ids("2025", "received", principal=p)
    assert page(c, "/cockpit/cases?metric=received&period=2025").text("drill-total") == f"{len(ids):,}"
    assert len(ids) < len(m.case_ids("2025", "received"))


def test_department_handler_sees_only_the_department(as_user, m, principals, places):
    c = as_user("handler.cgj")
    p = principals("handler.cgj")
    latest = m.latest_period("month")
    body = c.get("/cockpit", headers=HTML).text
    block = body.split('data-metric="received"', 1)[1]
    assert re.search(r'class="kpi-value"[^>]*>([^<]+)<', block).group(1) == \
        f"{int(m.summary(latest, principal=p)['received'].value):,}"
    html = Page(body)
    assert "cockpit-map" not in html.ids  # grids carry no department
    assert html.body_rows("table-by_category") and html.body_rows("table-by_street")
    assert all(r[0]["href"] is None for r in html.body_rows("table-by_street"))  # no 403 links
    assert c.get("/cockpit/departments/CGJ", headers=HTML).status_code == 200
    for url in ("/cockpit/departments/GAFJ", f"/cockpit/streets/{places['own']}",
                "/cockpit/cases?metric=received&period=2025&department=GAFJ", "/cockpit/hub"):
        assert c.get(url, headers=HTML).status_code == 403, url
    ids = m.case_ids("2025", "received", principal=p)
    assert page(c, "/cockpit/cases?metric=received&period=2025").text("drill-total") == f"{len(ids):,}"


def test_anonymous_is_sent_to_login(app):
    anon = TestClient(app)
    for url in ("/cockpit", "/cockpit/rankings", "/cockpit/hub", "/cockpit/cases?metric=received"):
        r = anon.get(url, headers=HTML, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login"), url
    assert anon.get("/cockpit/map.json").status_code == 401


# ---------------------------------------------------------------- XLSX


def test_every_table_exports_to_xlsx(as_user, m, places):
    c = as_user("leader01")
    pages = ["/cockpit?period=2025-06", f"/cockpit/streets/{places['own']}?period=2025",
             f"/cockpit/grids/{places['grid'][places['own']]}", "/cockpit/rankings",
             "/cockpit/channels", "/cockpit/hub"]
    n_files = 0
    for url in pages:
        html = page(c, url)
        exports = [unescape(u) for u in html.links if "format=xlsx" in u]
        tables = {k.removeprefix("table-") for k in html.tables}
        assert tables <= {query(u).get("table") for u in exports}, url
        for u in exports:
            key = query(u)["table"]
            wb = workbook(c.get(u))
            ws = wb.worksheets[0]
            rows = list(ws.iter_rows(values_only=True))
            head = next(i for i, r in enumerate(rows) if r[0] and r[1] is not None)
            if f"table-{key}" in html.tables:
                shown = html.body_rows(f"table-{key}")
                assert [str(x) for x in rows[head]] == [h["text"] for h in html.tables[f"table-{key}"][0]]
                assert len(rows) - head - 1 == len(shown), (url, key)
            n_files += 1
    assert n_files >= 15
    # numbers are numbers: a rate cell is the fraction with a percent format
    wb = workbook(c.get("/cockpit?period=2025-06&format=xlsx&table=by_street"))
    ws = wb.worksheets[0]
    expected = m.breakdown("2025-06", "street")
    header = [cell.value for cell in ws[2]]
    col = header.index("满意率") + 1
    first = ws.cell(row=3, column=col)
    v = expected[0].values["satisfied"].value
    assert first.value == pytest.approx(v / 100) and first.number_format == "0.0%"
    assert ws.cell(row=3, column=header.index("受理量") + 1).value == expected[0].values["received"].value
    assert c.get("/cockpit?format=xlsx&table=nope", headers=HTML).status_code == 404


def test_drill_down_exports_all_its_cases(as_user, m, places):
    c = as_user("leader01")
    ids = m.case_ids("2025", "close_ontime", part="denominator", filters={"street": places["own"]})
    html = page(c, f"/cockpit/cases?metric=close_ontime&part=denominator&period=2025"
                   f"&street={places['own']}")
    wb = workbook(c.get(unescape(html.ids["drill-export"]["href"])))
    rows = list(wb.worksheets[0].iter_rows(values_only=True))
    assert rows[1][0] == "工单编号" and len(rows) - 2 == len(ids) > 50


# ---------------------------------------------------------------- data hub overview


def test_hub_overview(as_user, demo_db):
    from jiedao.hub.models import Entity, Source

    with demo_db.session() as s:
        names = set(s.scalars(select(Source.name)))
        n_ent = len(s.scalars(select(Entity.id).where(Entity.retired.is_(False),
                                                      Entity.merged_into.is_(None))).all())
    html = page(as_user("steward01"), "/cockpit/hub")
    rows = html.body_rows("table-sources")
    assert {r[0]["text"] for r in rows} == names and names
    assert all(r[5]["text"].startswith(("及时", "临近", "逾期", "未导入")) for r in rows)
    ents = {r[0]["text"]: int(r[1]["text"].replace(",", "")) for r in html.body_rows("table-entities")}
    assert sum(ents.values()) == n_ent
    assert html.body_rows("table-runs")
    assert as_user("leader01").get("/cockpit/hub", headers=HTML).status_code == 200
    assert as_user("street.001").get("/cockpit/hub", headers=HTML).status_code == 403


def test_freshness_against_rhythm():
    from datetime import datetime, timedelta

    from jiedao.cockpit.routes import freshness

    now = datetime(2026, 11, 23, 12)
    assert freshness("每日", now - timedelta(hours=20), now)["label"] == "及时"
    assert freshness("每日", now - timedelta(hours=30), now)["label"] == "临近"
    assert freshness("每日", now - timedelta(days=3), now)["label"] == "逾期"
    assert freshness("每月", now - timedelta(days=20), now)["label"] == "及时"
    assert freshness("每季", now - timedelta(days=200), now)["label"] == "逾期"
    assert freshness("每月", None, now)["label"] == "未导入"
