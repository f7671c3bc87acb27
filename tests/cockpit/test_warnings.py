"""Early warnings (jiedao.cockpit.warnings): every detector on constructed data with a known
answer (a burst is found, a flat baseline raises nothing), the scan on a copy of the small demo
district with an injected burst (idempotent, keeps statuses), scope, and the one-click
proactive task through the domain function and through the page with its CSRF token."""

from __future__ import annotations

import random
import re
from datetime import datetime, timedelta

import pytest
from dbkit import clone_database
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from jiedao.cockpit import warnings as W
from jiedao.cockpit.warnings import CaseRow

PASSWORD = "jiedao2026"
HTML = {"accept": "text/html,application/xhtml+xml"}
AS_OF = datetime(2025, 6, 30, 23, 0)
CFG = W.load_config()


# ---------------------------------------------------------------- constructed data


def flat_rows(rng=None, cells=40, weeks=9, rate=1.0, matters=("M1", "M2", "M3")):
    """Every grid × matter cell with about ``rate`` problems a week over ``weeks`` weeks."""
    rows, n = [], 0
    for g in range(cells):
        for m in matters:
            for w in range(weeks):
                k = int(rate) if rng is None else _poisson(rng, rate)
                for _ in range(k):
                    n += 1
                    at = AS_OF - timedelta(days=7 * w, hours=1 + (n % 150))
                    rows.append(CaseRow(id=n, at=at, matter_code=m, grid_code=f"G{g:02d}",
                                        community_code=f"C{g // 4:02d}", street_code=f"S{g // 20}"))
    return rows


def _poisson(rng, lam):
    k, p, L = 0, 1.0, pow(2.718281828459045, -lam)
    while True:
        p *= rng.random()
        if p <= L:
            return k
        k += 1


def burst(start_id, n, grid="G07", matter="M2", street="S0", community="C01", days=6):
    return [CaseRow(id=start_id + i, at=AS_OF - timedelta(hours=2 + i * 24 * days / n), matter_code=matter,
                    grid_code=grid, community_code=community, street_code=street) for i in range(n)]


def test_benjamini_hochberg_known_values():
    # the textbook example: p = 0.01, 0.04, 0.03, 0.005 → q = 0.02, 0.04, 0.04, 0.02
    q = W.benjamini_hochberg([0.01, 0.04, 0.03, 0.005])
    assert q == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert W.benjamini_hochberg([]) == []


def test_spike_found_in_the_burst_cell_only():
    rows = flat_rows()
    assert W.detect_spikes(rows, AS_OF, CFG["spike"]) == []  # exactly flat: nothing
    rows += burst(10_000, 7)
    found = W.detect_spikes(rows, AS_OF, CFG["spike"])
    assert [(f.grid_code, f.matter_code) for f in found] == [("G07", "M2")]
    f = found[0]
    d = f.detail
    assert d["observed"] == 8 and d["baseline_counts"] == [1] * 8
    assert d["expected"] == pytest.approx((8 + 0.5) / 9, abs=1e-3)
    from scipy.stats import poisson

    assert d["p"] == pytest.approx(poisson.sf(7, (8 + 0.5) / 9))
    assert d["q"] <= CFG["spike"]["fdr"] and d["q"] >= d["p"]
    assert d["family_size"] == 40 * 3
    assert set(range(10_000, 10_007)) <= set(f.case_ids)
    assert f.street_code == "S0" and f.community_code == "C01"
    assert f.key.startswith("spike:grid:G07:M2:") and f.window_end == AS_OF


def test_spike_no_false_alarm_on_a_noisy_flat_baseline():
    """Poisson noise around a constant rate in 400 cells over 9 weeks: no warning."""
    for seed in range(5):
        rows = flat_rows(random.Random(seed), cells=100, matters=("M1", "M2", "M3", "M4"), rate=1.2)
        assert W.detect_spikes(rows, AS_OF, CFG["spike"]) == [], seed


def test_spike_counts_problems_not_callers():
    """Eight callers about one event are one problem: no spike; eight separate problems are."""
    rows = flat_rows()
    one_event = burst(10_000, 8)
    for r in one_event:
        r.event_id = 77
    assert W.detect_spikes(rows + one_event, AS_OF, CFG["spike"]) == []
    by_case = dict(CFG["spike"], unit="case")
    assert len(W.detect_spikes(rows + one_event, AS_OF, by_case)) == 1


def test_spike_at_street_level_when_grids_are_sparse():
    rows = flat_rows(rate=0)  # nothing before
    rows += [CaseRow(id=1, at=AS_OF - timedelta(days=30), matter_code="M9", grid_code="G00",
                     street_code="S0")]
    for i, g in enumerate(("G01", "G02", "G03", "G04", "G05", "G06")):
        rows += burst(100 + i * 10, 1, grid=g, matter="M9", street="S0")
    found = W.detect_spikes(rows, AS_OF, CFG["spike"])
    assert [(f.detail["level"], f.street_code, f.grid_code) for f in found] == [("street", "S0", None)]
    assert found[0].detail["observed"] == 6


def test_recurring_same_place_over_weeks_not_one_burst():
    cfg = CFG["recurring"]
    spread = [CaseRow(id=i, at=AS_OF - timedelta(days=3 + 9 * i), matter_code="M1", grid_code="G1",
                      street_code="S0", address_code="A1") for i in range(4)]
    burst_day = [CaseRow(id=100 + i, at=AS_OF - timedelta(days=2, hours=i), matter_code="M1",
                         grid_code="G2", street_code="S0", address_code="A2") for i in range(10)]
    reopened = [CaseRow(id=200, at=AS_OF - timedelta(days=40), matter_code="M3", address_code="A3",
                        reopen_count=1),
                CaseRow(id=201, at=AS_OF - timedelta(days=39), matter_code="M3", address_code="A3")]
    other_matter = [CaseRow(id=300 + i, at=AS_OF - timedelta(days=3 + 9 * i), matter_code=f"M{i}",
                            address_code="A4") for i in range(4)]
    old = [CaseRow(id=400 + i, at=AS_OF - timedelta(days=100 + 9 * i), matter_code="M1",
                   address_code="A5") for i in range(4)]
    found = {f.detail["place"]: f for f in
             W.detect_recurring(spread + burst_day + reopened + other_matter + old, AS_OF, cfg)}
    assert set(found) == {"A1", "A3"}
    assert found["A1"].detail["weeks"] == 4 and found["A1"].detail["rule"] == "spread"
    assert sorted(found["A1"].case_ids) == [0, 1, 2, 3]
    assert found["A3"].detail["rule"] == "reopened" and found["A3"].detail["reopened"] == 1


def test_repeat_callers_threshold():
    cfg = CFG["repeat_caller"]
    n = cfg["min_cases"]
    rows = [CaseRow(id=i, at=AS_OF - timedelta(days=i * 2), caller_id=1, matter_code="M1",
                    street_code="S1") for i in range(n)]
    rows += [CaseRow(id=100 + i, at=AS_OF - timedelta(days=i), caller_id=2) for i in range(n - 1)]
    rows += [CaseRow(id=200 + i, at=AS_OF - timedelta(days=40 + i), caller_id=3) for i in range(n)]
    found = W.detect_repeat_callers(rows, AS_OF, cfg)
    assert [f.detail["caller_id"] for f in found] == [1]
    assert found[0].detail["cases"] == n and found[0].street_code == "S1"


BASE_TEXTS = ["小区门口垃圾桶满了没人清运", "晚上广场舞音响太吵影响休息", "楼道灯坏了很久没人修",
              "路面有个大坑电动车容易摔倒", "餐馆油烟直排熏得不能开窗", "停车位被占用物业不管"]


def _text_rows(new_term_cases: int, *, start_id=0):
    rows, n = [], start_id
    for w in range(7):  # 7 windows of 14 days; the same mix in each
        for k in range(12):
            n += 1
            rows.append(CaseRow(id=n, at=AS_OF - timedelta(days=14 * w, hours=3 + 20 * k),
                                text=BASE_TEXTS[k % len(BASE_TEXTS)], matter_code="M1", street_code="S0"))
    for k in range(new_term_cases):
        n += 1
        rows.append(CaseRow(id=n, at=AS_OF - timedelta(days=1, hours=k),
                            text="共享单车乱停放堵住了盲道", matter_code="M2", street_code="S1"))
    return rows


def test_tokens_drop_stopwords_places_and_numbers():
    toks = W.tokens("你好，汉江路43号小区门口的共享单车乱停放，请尽快处理", frozenset(CFG["new_term"]["stopwords"]))
    assert {"单车", "停放"} <= toks
    assert not toks & {"你好", "汉江", "汉江路", "43", "尽快", "处理", "小区", "门口"}
    assert "云顶" not in W.tokens("地址是云顶公馆里面，一下雨就排不出去")
    assert "钟家" not in W.tokens("钟家附近下水道堵了", place_words=frozenset({"钟家路", "钟家"}))


def test_new_term_rises_and_flat_texts_raise_nothing():
    cfg = CFG["new_term"]
    assert W.detect_new_terms(_text_rows(0), AS_OF, cfg) == []
    found = W.detect_new_terms(_text_rows(8), AS_OF, cfg)
    terms = {f.detail["term"]: f for f in found}
    assert "单车" in terms, list(terms)
    f = terms["单车"]
    assert f.detail["observed"] == 8 and f.detail["baseline"] == 0
    assert f.detail["q"] <= cfg["fdr"] and f.detail["g2"] > 10
    assert len(f.case_ids) == 8 and f.matter_code == "M2" and f.street_code == "S1"
    assert not set(terms) & {"垃圾桶", "广场舞", "楼道"}  # steady words are not "new"
    # below the minimum count nothing is reported
    assert W.detect_new_terms(_text_rows(cfg["min_count"] - 1), AS_OF, cfg) == []


def test_config_errors_name_the_field(tmp_path):
    p = tmp_path / "w.yaml"
    p.write_text("spike: {window_days: 7}\n", encoding="utf-8")
    from jiedao.errors import ValidationError

    with pytest.raises(ValidationError) as e:
        W.load_config(p)
    fields = {pr.field for pr in e.value.problems}
    assert "spike.baseline_weeks" in fields and "recurring" in fields


def test_parse_as_of():
    assert W.parse_as_of("2025-06-30") == datetime(2025, 6, 30, 23, 59, 59)
    assert W.parse_as_of("2025-06-30T08:00") == datetime(2025, 6, 30, 8, 0)
    assert W.parse_as_of(None) is None
    from jiedao.errors import ValidationError

    with pytest.raises(ValidationError):
        W.parse_as_of("30/06/2025")


# ---------------------------------------------------------------- on the demo district


def inject_burst(db, *, n: int, as_of: datetime, street_suffix="001", matter_hint="井盖"):
    """``n`` separate problems of one matter in one grid in the week before ``as_of``, written
    as case rows; returns (grid, matter, case ids)."""
    from jiedao.cases.models import Case
    from jiedao.cases.service import new_case_code
    from jiedao.catalog.models import Matter
    from jiedao.geo.models import Grid

    with db.session() as s:
        grid = s.scalars(select(Grid).where(Grid.street_code.like(f"%{street_suffix}"))
                         .order_by(Grid.code)).first()
        matter = s.scalars(select(Matter).where(Matter.name.like(f"%{matter_hint}%"))
                           .order_by(Matter.code)).first()
        ids = []
        for i in range(n):
            at = as_of - timedelta(days=6) + timedelta(hours=10 * i + 1)
            c = Case(version=0, code=new_case_code(at), channel="hotline", kind="appeal",
                     title=f"{matter.name}问题第{i + 1}处", text=f"{grid.name}第{i + 1}处{matter.name}问题，请处理",
                     grid_code=grid.code, community_code=grid.community_code, street_code=grid.street_code,
                     matter_code=matter.code, state="received", received_at=at, updated_at=at,
                     created_by="test")
            s.add(c)
            s.flush()
            ids.append(c.id)
        return grid.code, matter.code, ids


@pytest.fixture(scope="module")
def wdb(demo_db):
    return clone_database(demo_db, "warnings")


@pytest.fixture(scope="module")
def injected(wdb):
    """A burst in a grid of street 001, a week before the end of the demo year; scanned."""
    with wdb.session() as s:
        end = W.latest_case_time(s)
    as_of = end - timedelta(days=3)
    grid, matter, ids = inject_burst(wdb, n=7, as_of=as_of)
    with wdb.session() as s:
        counts = W.scan(s, as_of=as_of)
    return {"as_of": as_of, "grid": grid, "matter": matter, "ids": ids, "counts": counts}


def principal(db, username):
    from jiedao.auth.models import User
    from jiedao.auth.scope import Principal

    with db.session() as s:
        u = s.scalar(select(User).where(User.username == username))
        return Principal(u.id, u.username, u.display_name, u.role, u.scope_level, u.scope_code)


def test_scan_finds_the_injected_burst(wdb, injected):
    from jiedao.cockpit.models import CockpitWarning

    assert injected["counts"]["spike"] >= 1
    with wdb.session() as s:
        rows = s.scalars(select(CockpitWarning).where(CockpitWarning.kind == "spike",
                                                      CockpitWarning.grid_code == injected["grid"],
                                                      CockpitWarning.matter_code == injected["matter"])).all()
        assert len(rows) == 1
        w = rows[0]
        assert set(injected["ids"]) <= set(w.case_ids)
        assert w.detail["observed"] >= 7 and w.detail["q"] <= CFG["spike"]["fdr"]
        assert w.window_end == injected["as_of"] and w.status == "open"
        assert "泊松" in " ".join(W.explain(w))


def test_demo_year_spikes_are_rare_and_justified(demo_db):
    """On the replayed demo year (no injected burst; a burst of callers is one problem) the
    month-end scans raise few spikes, each meeting every stated condition."""
    total = 0
    with demo_db.session() as s:
        for month in range(3, 13):
            _, found = W.find(s, as_of=datetime(2025, month, 1) + timedelta(days=27), kinds=["spike"])
            total += len(found)
            for f in found:
                d = f.detail
                assert d["observed"] >= d["min_count"] and d["observed"] >= d["min_ratio"] * d["expected"]
                assert d["q"] <= d["fdr"] and d["p"] <= d["q"]
    assert total <= 10


def test_scan_is_idempotent_and_keeps_status(wdb, injected):
    from jiedao.cockpit.models import CockpitWarning

    with wdb.session() as s:
        before = s.scalar(select(func.count()).select_from(CockpitWarning))
        ws = s.scalars(select(CockpitWarning).order_by(CockpitWarning.id)).all()
        assert len(ws) >= 2
        ws[-1].status = "dismissed"
        dismissed = ws[-1].id
    with wdb.session() as s:
        again = W.scan(s, as_of=injected["as_of"])
    assert again == injected["counts"]
    with wdb.session() as s:
        assert s.scalar(select(func.count()).select_from(CockpitWarning)) == before
        assert s.get(CockpitWarning, dismissed).status == "dismissed"
        assert len({w.key for w in s.scalars(select(CockpitWarning))}) == before


def test_list_is_scoped_to_the_street(wdb, injected):
    from jiedao.errors import PermissionDenied

    district = principal(wdb, "leader01")
    s1, s2 = principal(wdb, "leader.001"), principal(wdb, "leader.002")
    with wdb.session() as s:
        everything = W.list_warnings(s, district, status=None, limit=1000)
        own = W.list_warnings(s, s1, status=None, limit=1000)
        other = W.list_warnings(s, s2, status=None, limit=1000)
        assert own and all(w.street_code == s1.scope_code for w in own)
        assert all(w.street_code == s2.scope_code for w in other)
        assert {w.id for w in own} | {w.id for w in other} <= {w.id for w in everything}
        spike = next(w for w in own if w.kind == "spike" and w.grid_code == injected["grid"])
        with pytest.raises(PermissionDenied):
            W.get_warning(s, spike.id, s2)
        assert W.list_warnings(s, None) == []
        # the cases of a warning are scoped too
        assert {c.id for c in W.warning_cases(s, spike, s1)} >= set(injected["ids"])
        assert W.warning_cases(s, spike, s2) == []
        kinds = {w.kind for w in W.list_warnings(s, district, status=None, kind="spike", limit=1000)}
        assert kinds == {"spike"}


def test_to_task_makes_one_dispatched_proactive_case(wdb, injected):
    from jiedao.cases.models import Case
    from jiedao.cases.runtime import get_pipeline
    from jiedao.cockpit.models import CockpitWarning

    p = principal(wdb, "leader01")
    with wdb.session() as s:
        w = s.scalar(select(CockpitWarning).where(CockpitWarning.kind == "spike",
                                                  CockpitWarning.grid_code == injected["grid"]))
        wid = w.id
        n0 = s.scalar(select(func.count()).select_from(Case).where(Case.channel == "proactive"))
    with wdb.session() as s:
        case = W.to_task(s, wid, p, actor="leader01", pipeline=get_pipeline())
        cid = case.id
    with wdb.session() as s:
        case = s.get(Case, cid)
        assert case.channel == "proactive" and case.kind == "patrol"
        assert case.state == "dispatched" and case.main_department_code
        assert case.assignments and case.matter_code == injected["matter"]
        assert case.grid_code == injected["grid"]
        assert "主动治理" in case.text and case.analysis  # analysed by the normal engine
        w = s.get(CockpitWarning, wid)
        assert w.status == "tasked" and w.task_case_id == cid
    with wdb.session() as s:  # twice: the same case
        assert W.to_task(s, wid, p, actor="leader01", pipeline=get_pipeline()).id == cid
    with wdb.session() as s:
        assert s.scalar(select(func.count()).select_from(Case)
                        .where(Case.channel == "proactive")) == n0 + 1
        # a re-scan keeps it tasked and does not count the task as an appeal
        W.scan(s, as_of=injected["as_of"])
    with wdb.session() as s:
        w = s.get(CockpitWarning, wid)
        assert w.status == "tasked" and w.task_case_id == cid and cid not in w.case_ids


# ---------------------------------------------------------------- pages


@pytest.fixture(scope="module")
def app(wdb, injected):
    from jiedao.cases.runtime import get_pipeline
    from jiedao.web.app import create_app

    app = create_app(wdb)
    app.state.case_pipeline = get_pipeline()  # same catalogue and geography, built once
    return app


@pytest.fixture(scope="module")
def as_user(app):
    cache: dict[str, TestClient] = {}

    def make(username: str) -> TestClient:
        if username not in cache:
            c = TestClient(app)
            r = c.post("/login", data={"username": username, "password": PASSWORD, "next": "/"},
                       headers=HTML, follow_redirects=False)
            assert r.status_code == 303, (username, r.text[:300])
            cache[username] = c
        return cache[username]

    return make


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert m
    return m.group(1)


def test_pages_list_filter_and_scope(as_user, wdb, injected):
    from jiedao.cockpit.models import CockpitWarning

    leader = as_user("leader01")
    r = leader.get("/cockpit/warnings", headers=HTML)
    assert r.status_code == 200 and "未诉先办 · 预警" in r.text
    assert 'data-nav="cockpit_warnings"' in r.text
    r = leader.get("/cockpit/warnings?kind=spike&status=all", headers=HTML)
    kinds = set(re.findall(r'data-kind="([a-z_]+)"', r.text))
    assert kinds == {"spike"}
    with wdb.session() as s:
        other = s.scalars(select(CockpitWarning).where(CockpitWarning.street_code.like("%002"))).first()
        own = s.scalars(select(CockpitWarning).where(CockpitWarning.street_code.like("%001"))).first()
    s1 = as_user("leader.001")
    page = s1.get("/cockpit/warnings?status=all", headers=HTML).text
    shown = {int(x) for x in re.findall(r'data-warning="(\d+)"', page)}
    assert own.id in shown
    if other is not None:
        assert other.id not in shown
        assert s1.get(f"/cockpit/warnings/{other.id}", headers=HTML).status_code == 403
    r = s1.get(f"/cockpit/warnings/{own.id}", headers=HTML)
    assert r.status_code == 200 and "发现依据" in r.text
    assert leader.get("/cockpit/warnings/999999", headers=HTML).status_code == 404


def test_page_to_task_needs_csrf_and_makes_one_case(as_user, wdb, injected):
    from jiedao.cases.models import Case
    from jiedao.cockpit.models import CockpitWarning

    with wdb.session() as s:
        w = s.scalars(select(CockpitWarning).where(CockpitWarning.status == "open",
                                                   CockpitWarning.street_code.like("%001"))
                      .order_by(CockpitWarning.score.desc())).first()
        wid = w.id
        n0 = s.scalar(select(func.count()).select_from(Case))
    c = as_user("leader.001")
    page = c.get(f"/cockpit/warnings/{wid}", headers=HTML)
    assert "转为主动治理任务" in page.text
    r = c.post(f"/cockpit/warnings/{wid}/task", data={}, headers=HTML, follow_redirects=False)
    assert r.status_code == 403
    with wdb.session() as s:
        assert s.scalar(select(func.count()).select_from(Case)) == n0
        assert s.get(CockpitWarning, wid).status == "open"
    token = _csrf(page.text)
    r = c.post(f"/cockpit/warnings/{wid}/task", data={"csrf_token": token}, headers=HTML,
               follow_redirects=False)
    assert r.status_code == 303
    cid = int(re.search(r"/cases/(\d+)", r.headers["location"]).group(1))
    r2 = c.post(f"/cockpit/warnings/{wid}/task", data={"csrf_token": token}, headers=HTML,
                follow_redirects=False)
    assert r2.status_code == 303 and r2.headers["location"] == r.headers["location"]
    with wdb.session() as s:
        assert s.scalar(select(func.count()).select_from(Case)) == n0 + 1
        case = s.get(Case, cid)
        assert case.channel == "proactive" and case.created_by == "leader.001"
        assert s.get(CockpitWarning, wid).task_case_id == cid
    case_page = c.get(f"/cases/{cid}", headers=HTML)
    assert case_page.status_code == 200 and "主动治理" in case_page.text
    detail = c.get(f"/cockpit/warnings/{wid}", headers=HTML).text
    assert 'id="task-link"' in detail and 'id="to-task"' not in detail


def test_handler_cannot_open_warnings(as_user, wdb):
    from jiedao.auth.models import User

    with wdb.session() as s:
        handler = s.scalar(select(User.username).where(User.role == "handler").order_by(User.username))
    r = as_user(handler).get("/cockpit/warnings", headers=HTML)
    assert r.status_code == 403


def test_cli_scan_prints_counts_and_is_idempotent(wdb, injected, demo_db):
    import typer
    from typer.testing import CliRunner

    from jiedao.cockpit.cli_warnings import register
    from jiedao.cockpit.models import CockpitWarning
    from jiedao.db import set_database

    a = typer.Typer()

    @a.callback()
    def _root() -> None:
        """test root"""

    register(a)
    when = injected["as_of"].isoformat(timespec="seconds")
    set_database(wdb)
    try:
        with wdb.session() as s:
            before = s.scalar(select(func.count()).select_from(CockpitWarning))
        r = CliRunner().invoke(a, ["cockpit", "scan", "--as-of", when])
        assert r.exit_code == 0, r.output
        assert f"类别激增 {injected['counts']['spike']}" in r.output and "用时" in r.output
        with wdb.session() as s:
            assert s.scalar(select(func.count()).select_from(CockpitWarning)) == before
        r = CliRunner().invoke(a, ["cockpit", "scan", "--as-of", "30/12/2025"])
        assert r.exit_code != 0
    finally:
        set_database(demo_db)


def test_district_wide_warning_task_and_dismiss(wdb, injected, as_user):
    """A district-wide warning (a new term spread over streets) becomes a task without a
    made-up place; dismissing through the page needs the CSRF token and survives a re-scan."""
    from jiedao.cases.models import Case
    from jiedao.cases.runtime import get_pipeline
    from jiedao.cockpit.models import CockpitWarning

    with wdb.session() as s:
        ids = list(s.scalars(select(Case.id).where(Case.channel == "hotline")
                             .order_by(Case.received_at.desc()).limit(6)))
        matter = s.get(Case, ids[0]).matter_code
        now = injected["as_of"]
        wide = CockpitWarning(key="new_term:测试词:test", kind="new_term", title="新词「测试词」上升",
                              detail={"term": "测试词"}, matter_code=matter, window_start=now - timedelta(days=14),
                              window_end=now, score=50, status="open", case_ids=ids, created_at=now,
                              updated_at=now)
        other = CockpitWarning(key="repeat_caller:test", kind="repeat_caller", title="来电人 测试",
                               detail={}, street_code=s.get(Case, injected["ids"][0]).street_code,
                               window_start=now - timedelta(days=30), window_end=now, score=10, status="open",
                               case_ids=[], created_at=now, updated_at=now)
        s.add_all([wide, other])
        s.flush()
        wide_id, other_id = wide.id, other.id
    with wdb.session() as s:
        case = W.to_task(s, wide_id, principal(wdb, "operator01"), actor="operator01", pipeline=get_pipeline())
        assert case.channel == "proactive" and case.lon is None
        assert case.state in ("analysed", "dispatched")
    with wdb.session() as s:
        assert s.get(CockpitWarning, wide_id).status == "tasked"
    c = as_user("leader.001")
    page = c.get(f"/cockpit/warnings/{other_id}", headers=HTML)
    assert page.status_code == 200 and 'id="dismiss"' in page.text
    assert c.post(f"/cockpit/warnings/{other_id}/dismiss", data={}, headers=HTML,
                  follow_redirects=False).status_code == 403
    r = c.post(f"/cockpit/warnings/{other_id}/dismiss", data={"csrf_token": _csrf(page.text)}, headers=HTML,
               follow_redirects=False)
    assert r.status_code == 303
    assert "已忽略" in c.get(r.headers["location"], headers=HTML).text
    with wdb.session() as s:
        W.scan(s, as_of=injected["as_of"])
    with wdb.session() as s:
        assert s.get(CockpitWarning, other_id).status == "dismissed"


# ---------------------------------------------------------------- JSON API and expiry


@pytest.fixture(scope="module")
def bearer(wdb):
    from jiedao.auth import service as auth

    def make(username: str) -> dict:
        with wdb.session() as s:
            raw, _ = auth.create_api_token(s, auth.get_user(s, username), "warnings tests")
        return {"authorization": f"Bearer {raw}"}

    return make


def test_api_lists_scoped_warnings_and_tasks_one_case(app, wdb, injected, bearer):
    from jiedao.cases.models import Case
    from jiedao.cockpit.models import CockpitWarning

    client = TestClient(app)
    assert client.get("/api/warnings").status_code == 401
    leader = bearer("leader01")
    everything = client.get("/api/warnings?status=all&limit=500", headers=leader).json()
    assert everything["warnings"] and sum(everything["counts"].values()) == len(everything["warnings"])
    s1 = bearer("leader.001")
    own = client.get("/api/warnings?status=all&limit=500", headers=s1).json()["warnings"]
    assert own and all(w["street_code"] and w["street_code"].endswith("001") for w in own)
    spikes = client.get("/api/warnings?kind=spike&status=all&limit=500", headers=leader).json()["warnings"]
    assert spikes and {w["kind"] for w in spikes} == {"spike"}
    burst = next(w for w in spikes if w["grid_code"] == injected["grid"] and w["matter_code"] == injected["matter"])
    detail = client.get(f"/api/warnings/{burst['id']}", headers=s1).json()
    assert set(injected["ids"]) <= set(detail["case_ids"]) and any("泊松" in e for e in detail["explain"])
    assert client.get(f"/api/warnings/{burst['id']}", headers=bearer("leader.002")).status_code == 403
    # bad input names the field and changes nothing
    r = client.get("/api/warnings?status=bogus", headers=leader)
    assert r.status_code == 422 and "status" in r.text
    assert client.get("/api/warnings?limit=0", headers=leader).status_code == 422
    assert client.get("/api/warnings/0", headers=leader).status_code == 422
    assert client.get("/api/warnings/999999", headers=leader).status_code == 404
    # an open warning of the street becomes one proactive case, however often it is asked
    with wdb.session() as s:
        w = s.scalars(select(CockpitWarning).where(CockpitWarning.status == "open",
                                                   CockpitWarning.street_code.like("%001"))
                      .order_by(CockpitWarning.id)).first()
        wid = w.id
        n0 = s.scalar(select(func.count()).select_from(Case))
    r1 = client.post(f"/api/warnings/{wid}/task", headers=s1)
    r2 = client.post(f"/api/warnings/{wid}/task", headers=s1)
    assert r1.status_code == 200 and r1.json() == r2.json()
    with wdb.session() as s:
        assert s.scalar(select(func.count()).select_from(Case)) == n0 + 1
        case = s.get(Case, r1.json()["case_id"])
        assert case.channel == "proactive" and case.code == r1.json()["case_code"]
        assert s.get(CockpitWarning, wid).status == "tasked"
    assert client.get(f"/api/warnings/{wid}", headers=s1).json()["status_label"] == "已转任务"


def test_scan_expires_open_warnings_nobody_acted_on(wdb, injected):
    """An open warning whose period ended more than expire_after_days before the scan, and
    that the scan did not find again, expires; tasked/dismissed ones and recent ones stay."""
    from jiedao.cockpit.models import CockpitWarning

    as_of = injected["as_of"]
    days = CFG["expire_after_days"]
    made = {}
    with wdb.session() as s:
        for key, status, age in (("old-open", "open", days + 5), ("old-dismissed", "dismissed", days + 5),
                                 ("recent-open", "open", days - 5)):
            end = as_of - timedelta(days=age)
            w = CockpitWarning(key=f"repeat_caller:expiry-test:{key}", kind="repeat_caller", title=key,
                               detail={}, window_start=end - timedelta(days=30), window_end=end, score=0.1,
                               status=status, case_ids=[], created_at=end, updated_at=end)
            s.add(w)
            s.flush()
            made[key] = w.id
    report: dict = {}
    with wdb.session() as s:
        counts = W.scan(s, as_of=as_of, report=report)
    assert counts == injected["counts"] and report["expired"] >= 1 and report["created"] == 0
    with wdb.session() as s:
        status = {k: s.get(CockpitWarning, i).status for k, i in made.items()}
        assert status == {"old-open": "expired", "old-dismissed": "dismissed", "recent-open": "open"}
        # what the scan found again is never expired, however old its period
        assert not s.scalars(select(CockpitWarning).where(CockpitWarning.status == "expired",
                                                          CockpitWarning.window_end == as_of)).all()
    # without expire_after_days nothing expires
    cfg = {k: v for k, v in CFG.items() if k != "expire_after_days"}
    with wdb.session() as s:
        s.get(CockpitWarning, made["old-open"]).status = "open"
    with wdb.session() as s:
        W.scan(s, as_of=as_of, config=cfg)
        assert s.get(CockpitWarning, made["old-open"]).status == "open"


def test_expire_after_days_must_be_positive(tmp_path):
    import yaml

    from jiedao.errors import ValidationError

    p = tmp_path / "w.yaml"
    p.write_text(yaml.safe_dump({**CFG, "expire_after_days": -3}, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ValidationError) as e:
        W.load_config(p)
    assert "expire_after_days" in str(e.value)
