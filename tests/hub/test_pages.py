"""Hub pages and API twins on a small hub (small demo district, its six ledgers loaded by the
real loader, linked by the generator's truth, golden records by the real survivorship):
一企一档, 一楼一档, search, sources, review queue, quality; roles and street scope."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from hubdemo_kit import HTML, build_small_hub, login
from sqlalchemy import func, select


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    h = build_small_hub(tmp_path_factory)
    yield h
    h.drop()


@pytest.fixture(scope="module")
def app(hub):
    from jiedao.web.app import create_app

    return create_app(hub.db)


@pytest.fixture(scope="module")
def client_as(app):
    cache: dict[str, TestClient] = {}

    def make(username: str) -> TestClient:
        if username not in cache:
            cache[username] = login(TestClient(app), username)
        return cache[username]

    return make


@pytest.fixture(scope="module")
def facts(hub):
    """Entities to look at: one in street 001, one in street 002, an office building."""
    from jiedao.geo.models import Building
    from jiedao.hub.models import Golden

    with hub.db.session() as s:
        street = dict(s.execute(select(Golden.entity_id, Golden.value)
                                .where(Golden.field == "street_code")).all())
        names = dict(s.execute(select(Golden.entity_id, Golden.value)
                               .where(Golden.field == "name")).all())
        codes = dict(s.execute(select(Golden.entity_id, Golden.value)
                               .where(Golden.field == "credit_code")).all())
        conflict = s.scalars(select(Golden.entity_id).where(Golden.conflict.is_(True))
                             .order_by(Golden.entity_id)).first()
        office = s.scalars(select(Building.code).where(Building.kind == "office")
                           .order_by(Building.code)).first()
    s1 = sorted(e for e, v in street.items() if v and v.endswith("001") and e in codes)
    s2 = sorted(e for e, v in street.items() if v and v.endswith("002") and e in codes)
    return {"e1": s1[0], "e2": s2[0], "names": names, "codes": codes, "street": street,
            "conflict": conflict, "office": office}


def test_search_by_name_fuzzy_and_open_archive(client_as, facts):
    c = client_as("steward01")
    name = facts["names"][facts["e1"]]
    r = c.get("/hub/search", params={"q": name}, headers=HTML)
    assert r.status_code == 200
    assert f'/hub/enterprises/{facts["e1"]}' in r.text
    # an abbreviation (no region, no legal form) still finds it
    from jiedao.hub.standardise import NameStandardiser

    core = NameStandardiser().core(name)
    hits = c.get("/api/hub/search", params={"q": core}).json()
    assert hits["kind"] == "名称"
    assert facts["e1"] in [h["id"] for h in hits["hits"][:5]]
    # htmx partial
    part = c.get("/hub/search", params={"q": core}, headers={"hx-request": "true"})
    assert part.status_code == 200 and "<html" not in part.text and "hit-link" in part.text


def test_search_by_credit_code_and_address(client_as, facts, hub):
    c = client_as("steward01")
    code = facts["codes"][facts["e1"]]
    r = c.get("/api/hub/search", params={"q": code}).json()
    assert r["kind"] == "信用代码" and r["hits"][0]["id"] == facts["e1"]
    from jiedao.geo.models import Address

    with hub.db.session() as s:
        full = s.scalars(select(Address.full).where(Address.building_code == facts["office"])).first()
    r = c.get("/api/hub/search", params={"q": full}).json()
    assert r["kind"] == "地址" and r["building"]["code"] == facts["office"]
    assert r["total"] > 0


def test_enterprise_archive_lineage_records_building_timeline(client_as, facts):
    c = client_as("steward01")
    e = facts["e1"]
    r = c.get(f"/hub/enterprises/{e}", headers=HTML)
    assert r.status_code == 200
    assert 'class="lineage"' in r.text and "市场主体登记信息" in r.text
    a = c.get(f"/api/hub/enterprises/{e}").json()
    assert a["id"] == e and a["name"] == facts["names"][e]
    by_field = {f["field"]: f for f in a["fields"]}
    assert by_field["name"]["source_code"] and by_field["name"]["at"]
    assert len(a["records"]) >= 1 and all(x["method"] for x in a["records"])
    assert a["timeline"] and any(t["kind"] == "import" for t in a["timeline"])
    if a["building"]:
        assert f'/hub/buildings/{a["building"]["code"]}' in r.text
        assert f'/geo/grids/{a["building"]["grid_code"]}' in r.text


def test_conflicts_are_highlighted(client_as, facts):
    if facts["conflict"] is None:
        pytest.skip("no conflicting golden field in this small hub")
    c = client_as("steward01")
    r = c.get(f"/hub/enterprises/{facts['conflict']}", headers=HTML)
    assert r.status_code == 200 and 'class="conflict"' in r.text and "另：" in r.text
    a = c.get(f"/api/hub/enterprises/{facts['conflict']}").json()
    assert a["conflicts"] >= 1
    assert any(f["conflict"] and f["alternatives"] for f in a["fields"])


def test_building_archive(client_as, facts):
    c = client_as("steward01")
    b = c.get(f"/api/hub/buildings/{facts['office']}").json()
    assert b["building"]["kind"] == "office"
    assert b["counts"]["enterprises"] == len(b["enterprises"]) > 0
    assert b["tax_total"] >= 0 and b["counts"]["sishang"] >= 0
    page = c.get(f"/hub/buildings/{facts['office']}", headers=HTML)
    assert page.status_code == 200 and "入驻企业" in page.text
    first = b["enterprises"][0]["id"]
    assert f"/hub/enterprises/{first}" in page.text


def test_street_scope(client_as, facts, hub):
    own = client_as("street.001")
    assert own.get(f"/api/hub/enterprises/{facts['e1']}").status_code == 200
    assert own.get(f"/api/hub/enterprises/{facts['e2']}").status_code == 403
    assert own.get(f"/hub/enterprises/{facts['e2']}", headers=HTML).status_code == 403
    # search never shows another street's enterprises
    name2 = facts["names"][facts["e2"]]
    hits = own.get("/api/hub/search", params={"q": name2}).json()["hits"]
    assert all((h["street_code"] or "").endswith("001") for h in hits)
    assert facts["e2"] not in [h["id"] for h in hits]
    hits = own.get("/api/hub/search", params={"q": facts["codes"][facts["e2"]]}).json()["hits"]
    assert hits == []
    from jiedao.geo.models import Building

    with hub.db.session() as s:
        other_b = s.scalars(select(Building.code).where(Building.street_code.like("%002"))).first()
    assert own.get(f"/api/hub/buildings/{other_b}").status_code == 403
    other = client_as("leader.002")
    assert other.get(f"/api/hub/enterprises/{facts['e2']}").status_code == 200
    assert other.get(f"/api/hub/enterprises/{facts['e1']}").status_code == 403


def test_roles_and_bad_input(client_as, facts):
    op = client_as("operator01")
    assert op.get("/api/hub/search", params={"q": "科技"}).status_code == 403
    assert op.get(f"/api/hub/enterprises/{facts['e1']}").status_code == 403
    st = client_as("street.001")
    assert st.get("/api/hub/quality").status_code == 403
    assert st.get("/hub/review", headers=HTML).status_code == 403
    lead = client_as("leader01")
    assert lead.get("/api/hub/quality").status_code == 200
    assert lead.get("/api/hub/review").status_code == 403
    sw = client_as("steward01")
    assert sw.get("/api/hub/enterprises/99999999").status_code == 404
    assert sw.get("/api/hub/buildings/12345").status_code == 422
    assert sw.get("/api/hub/search", params={"q": ""}).status_code == 422
    anon = TestClient(op.app)
    assert anon.get("/api/hub/search", params={"q": "x"}).status_code == 401


def test_sources_and_runs(client_as):
    c = client_as("steward01")
    o = c.get("/api/hub/sources").json()
    codes = {x["code"] for x in o["sources"]}
    assert {"scjg_registry", "sw_taxpayers", "tj_sishang", "rsj_employers", "kjj_tech",
            "jd_tenants"} <= codes
    assert all(x["records"] > 0 and x["last_run"]["status"] == "ok" for x in o["sources"])
    assert len(o["runs"]) >= 7
    page = c.get("/hub/sources", headers=HTML)
    assert page.status_code == 200 and "导入批次" in page.text and "市场主体登记信息" in page.text


def _csrf(client: TestClient, url: str) -> str:
    page = client.get(url, headers=HTML)
    return re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)


def test_review_accept_reject_with_csrf(client_as, hub):
    from jiedao.hub.models import Record, Review

    with hub.db.session() as s:
        ids = s.scalars(select(Record.id).where(Record.source_code == "jd_tenants")
                        .order_by(Record.id).limit(4)).all()
        s.add(Review(record_a=ids[0], record_b=ids[1], probability=0.7, status="pending"))
        s.add(Review(record_a=ids[2], record_b=ids[3], probability=0.6, status="pending"))
        s.flush()
        rv = s.scalars(select(Review).order_by(Review.id)).all()
        first, second = rv[-2].id, rv[-1].id
    c = client_as("steward01")
    page = c.get("/hub/review", headers=HTML)
    assert page.status_code == 200 and f"review-{first}" in page.text
    assert c.post(f"/hub/review/{first}", data={"decision": "accept"}, headers=HTML,
                  follow_redirects=False).status_code == 403  # no CSRF token
    token = _csrf(c, "/hub/review")
    r = c.post(f"/hub/review/{first}", data={"decision": "accept", "csrf_token": token},
               headers=HTML, follow_redirects=False)
    assert r.status_code == 303
    r = c.post(f"/api/hub/review/{second}", json={"decision": "reject"},
               headers={"X-CSRF-Token": token})
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    assert c.post("/api/hub/review/999999", json={"decision": "reject"},
                  headers={"X-CSRF-Token": token}).status_code == 404
    with hub.db.session() as s:
        got = dict(s.execute(select(Review.id, Review.status).where(
            Review.id.in_((first, second)))).all())
        assert got == {first: "accepted", second: "rejected"}
        assert s.scalar(select(func.count()).select_from(Review).where(
            Review.decided_by == "steward01")) >= 2


def test_quality_page_and_api(client_as):
    c = client_as("steward01")
    rows = c.get("/api/hub/quality").json()
    by = {q["code"]: q for q in rows}
    assert by["scjg_registry"]["completeness"]["credit_code"] > 0.95
    assert by["jd_tenants"]["completeness"]["credit_code"] < 0.5
    assert by["rsj_employers"]["match_rate"] > 0.5
    page = c.get("/hub/quality", headers=HTML)
    assert page.status_code == 200 and "quality-table" in page.text and "街道楼宇台账" in page.text


def test_pages_render_for_every_role_in_scope(client_as, facts):
    for user in ("admin", "leader01", "steward01", "street.001", "leader.001"):
        c = client_as(user)
        assert c.get(f"/hub/enterprises/{facts['e1']}", headers=HTML).status_code == 200
        assert c.get("/hub/search", params={"q": "科技"}, headers=HTML).status_code == 200
