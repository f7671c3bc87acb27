"""The web shell over HTTP on the small demo district: scope, error answers, headers, docs."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from shapely.geometry import shape

from .conftest import HTML, login

STREET_USER = "street.001"


# ---------------------------------------------------------------- shell


def test_healthz_reports_db_schema_and_demo(anon):
    r = anon.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert body["schema_revision"]
    assert body["demo"] is True and "示例数据" in body["demo_label"]


@pytest.mark.parametrize("path", ["/login", "/healthz", "/static/app.js", "/api/geo/streets"])
def test_security_headers_everywhere(anon, path):
    r = anon.get(path, headers=HTML)
    h = r.headers
    assert h["x-content-type-options"] == "nosniff"
    assert h["x-frame-options"] == "DENY"
    assert h["referrer-policy"]
    csp = h["content-security-policy"]
    script_src = re.search(r"script-src ([^;]+)", csp).group(1).split()
    assert script_src == ["'self'"], csp
    assert "frame-ancestors 'none'" in csp


def test_pages_have_no_inline_scripts(client_as, codes):
    c = client_as("admin")
    for path in ["/", "/geo/streets", f"/geo/streets/{codes.street}",
                 f"/geo/communities/{codes.community}", f"/geo/grids/{codes.grids[0]}",
                 "/catalog/matters", "/catalog/departments", "/login"]:
        html = c.get(path, headers=HTML).text
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert re.search(r'\bsrc="/static/', tag), (path, tag)
        assert not re.search(r"\son[a-z]+=", html), path  # no inline event handlers


def test_docs_serve_swagger_from_local_static_files(anon):
    r = anon.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    urls = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert "/static/vendor/swagger-ui-bundle.js" in urls
    assert "/static/vendor/swagger-ui.css" in urls
    assert all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    assert "http://" not in r.text and "https://" not in r.text
    # the one inline initialiser is allowed by its hash, nothing else
    assert "'sha256-" in r.headers["content-security-policy"]
    assert anon.get("/static/vendor/swagger-ui-bundle.js").status_code == 200
    assert anon.get("/redoc").status_code == 404


def test_openapi_documents_geo_and_catalog_with_models(anon):
    spec = anon.get("/openapi.json").json()
    assert spec["info"]["title"] == "Jiedao 数字街道"
    for path in ["/api/geo/streets", "/api/geo/streets/{code}", "/api/geo/communities/{code}",
                 "/api/geo/grids/{code}", "/api/geo/boundaries.geojson", "/api/geo/locate",
                 "/api/geo/resolve", "/api/catalog/matters", "/api/catalog/matters/{code}",
                 "/api/catalog/departments", "/api/catalog/departments/{code}"]:
        assert path in spec["paths"], path
        ok = spec["paths"][path]["get"]["responses"]["200"]["content"]
        assert any("schema" in v for v in ok.values()), path
    assert {"GridDetail", "StreetDetail", "MatterOut", "FeatureCollection"} <= set(
        spec["components"]["schemas"])


def test_anonymous_browser_is_sent_to_login_and_api_gets_401(anon):
    r = anon.get("/geo/streets", headers=HTML, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    r = anon.get("/api/geo/streets")
    assert r.status_code == 401 and r.json()["detail"]


def test_layout_shows_user_role_scope_demo_banner_and_logout(client_as, codes):
    html = client_as(STREET_USER).get("/", headers=HTML).text
    assert '<html lang="zh-CN">' in html
    assert 'id="demo-banner"' in html and "示例数据" in html
    assert "街道/社区工作人员" in html
    assert re.search(r'<form method="post" action="/logout">\s*<input type="hidden" '
                     r'name="csrf_token" value="[^"]{16,}">', html)
    # navigation: the area entry leads to the user's own street
    assert f'href="/geo/streets/{codes.street}"' in html
    assert 'href="/catalog/matters"' in html and 'href="/catalog/departments"' in html
    assert 'data-nav="docs"' not in html  # API docs entry only for admin / steward


def test_unknown_page_is_a_chinese_404_for_browsers_and_json_for_api(client_as):
    c = client_as("admin")
    r = c.get("/no/such/page", headers=HTML)
    assert r.status_code == 404 and "页面不存在" in r.text and "<html" in r.text
    r = c.get("/api/geo/streets/420199999")
    assert r.status_code == 404
    assert r.json()["detail"] == "街道 420199999 不存在" and r.json()["problems"] == []


# ---------------------------------------------------------------- scope


def test_street_staff_sees_only_own_street_in_api(client_as, codes):
    c = client_as(STREET_USER)
    assert [s["code"] for s in c.get("/api/geo/streets").json()] == [codes.street]
    street = c.get(f"/api/geo/streets/{codes.street}").json()
    assert tuple(x["code"] for x in street["communities"]) == codes.communities
    assert street["counts"]["communities"] == len(codes.communities)
    for path in [f"/api/geo/streets/{codes.other_street}",
                 f"/api/geo/communities/{codes.other_community}",
                 f"/api/geo/grids/{codes.other_grid}",
                 f"/api/geo/boundaries.geojson?level=community&parent={codes.other_street}"]:
        r = c.get(path)
        assert r.status_code == 403, path
        assert "数据范围" in r.json()["detail"]


def test_street_staff_pages_of_other_street_are_forbidden(client_as, codes):
    c = client_as(STREET_USER)
    assert c.get(f"/geo/streets/{codes.street}", headers=HTML).status_code == 200
    for path in [f"/geo/streets/{codes.other_street}", f"/geo/communities/{codes.other_community}",
                 f"/geo/grids/{codes.other_grid}"]:
        r = c.get(path, headers=HTML)
        assert r.status_code == 403, path
        assert "无权访问" in r.text and "<html" in r.text
    listing = c.get("/geo/streets", headers=HTML).text
    assert f'data-code="{codes.street}"' in listing
    for other in codes.all_streets:
        if other != codes.street:
            assert other not in listing


def test_boundaries_for_street_staff_hold_only_own_communities(client_as, codes):
    c = client_as(STREET_USER)
    r = c.get("/api/geo/boundaries.geojson", params={"level": "community"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/geo+json")
    fc = r.json()
    assert fc["type"] == "FeatureCollection"
    assert tuple(f["properties"]["code"] for f in fc["features"]) == codes.communities
    for f in fc["features"]:
        assert shape(f["geometry"]).is_valid and f["properties"]["name"]
        assert f["properties"]["url"] == f"/geo/communities/{f['properties']['code']}"
    streets = c.get("/api/geo/boundaries.geojson?level=street").json()["features"]
    assert [f["properties"]["code"] for f in streets] == [codes.street]
    grids = c.get("/api/geo/boundaries.geojson?level=grid").json()["features"]
    assert grids and all(f["properties"]["code"].startswith(codes.street) for f in grids)


def test_district_user_sees_every_street(client_as, codes):
    c = client_as("admin")
    fc = c.get("/api/geo/boundaries.geojson?level=street").json()
    assert tuple(f["properties"]["code"] for f in fc["features"]) == codes.all_streets
    p = fc["features"][0]["properties"]
    assert p["communities"] > 0 and p["grids"] > 0 and p["buildings"] > 0
    assert c.get(f"/api/geo/communities/{codes.other_community}").status_code == 200


def test_community_staff_sees_only_own_community(client_as, codes):
    c = client_as(f"sq.{codes.community}")
    assert c.get("/api/geo/streets").json() == []
    assert c.get(f"/api/geo/communities/{codes.community}").status_code == 200
    sibling = [x for x in codes.communities if x != codes.community]
    if sibling:
        assert c.get(f"/api/geo/communities/{sibling[0]}").status_code == 403
    assert c.get(f"/api/geo/streets/{codes.street}").status_code == 403
    fc = c.get(f"/api/geo/boundaries.geojson?level=grid&parent={codes.community}").json()
    assert tuple(f["properties"]["code"] for f in fc["features"]) == codes.grids
    home = c.get("/", headers=HTML).text
    assert f"level=grid&amp;parent={codes.community}" in home


def test_grid_api_lists_buildings_with_addresses(client_as, codes):
    c = client_as(STREET_USER)
    g = c.get(f"/api/geo/grids/{codes.grids[0]}").json()
    assert g["community_code"] == codes.community and g["street_code"] == codes.street
    assert g["buildings"], "demo grid has buildings"
    b = g["buildings"][0]
    assert b["code"].startswith(codes.grids[0]) and b["kind_label"] and b["address"]
    assert shape(g["geometry"]).is_valid
    page = c.get(f"/geo/grids/{codes.grids[0]}", headers=HTML).text
    assert page.count('<tr data-code="') == len(g["buildings"])


def test_locate_finds_the_grid_of_a_point_and_respects_scope(client_as, codes):
    admin = client_as("admin")
    for code in (codes.grids[0], codes.other_grid):
        geom = shape(admin.get(f"/api/geo/grids/{code}").json()["geometry"])
        pt = geom.representative_point()
        r = admin.get("/api/geo/locate", params={"lon": pt.x, "lat": pt.y})
        assert r.status_code == 200 and r.json()["grid"]["code"] == code
        street_r = client_as(STREET_USER).get("/api/geo/locate", params={"lon": pt.x, "lat": pt.y})
        assert street_r.status_code == (200 if code.startswith(codes.street) else 403)
    far = admin.get("/api/geo/locate", params={"lon": 0.0, "lat": 0.0}).json()
    assert far["grid"] is None


def test_resolve_an_address_to_its_grid(client_as, codes, demo_db):
    from sqlalchemy import select

    from jiedao.geo.models import Address

    with demo_db.session() as s:
        a = s.scalars(select(Address).where(Address.grid_code == codes.grids[0])).first()
    r = client_as(STREET_USER).get("/api/geo/resolve", params={"q": a.full})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["matched"] is True and body["grid"]["code"] == codes.grids[0]


@pytest.mark.parametrize("path, field", [
    ("/api/geo/boundaries.geojson?level=city", "level"),
    ("/api/geo/boundaries.geojson?level=community&parent=abc", "parent"),
    ("/api/geo/boundaries.geojson?level=street&parent=420199001", "parent"),
    ("/api/geo/locate?lon=abc&lat=30.5", "lon"),
    ("/api/geo/locate?lon=114.2&lat=95", "lat"),
    ("/api/geo/locate?lon=114.2", "lat"),
    ("/api/geo/streets/12", "code"),
    ("/api/geo/grids/42019900100100", "code"),
    ("/api/geo/resolve?q=", "q"),
    ("/api/catalog/matters?department=%3Cx%3E", "department"),
])
def test_bad_parameters_are_422_naming_the_field(client_as, path, field):
    r = client_as("admin").get(path)
    assert r.status_code == 422, (path, r.status_code, r.text[:200])
    fields = [p["field"] for p in r.json()["problems"]]
    assert field in fields, (path, r.json())


def test_bad_parameter_on_a_page_is_a_chinese_422_page(client_as):
    r = client_as("admin").get("/geo/streets/abc", headers=HTML)
    assert r.status_code == 422 and "参数有误" in r.text and "code" in r.text


# ---------------------------------------------------------------- catalogue


def test_catalogue_api_and_pages(client_as, demo_db):
    c = client_as(STREET_USER)
    matters = c.get("/api/catalog/matters").json()
    assert len(matters) >= 80
    m = matters[0]
    assert m["main_department"]["name"] and m["handling_level"] in ("district", "street")
    assert [x["urgency"] for x in m["sla"]] == ["紧急", "较急", "一般"]
    assert len(m["examples"]) >= 2
    detail = c.get(f"/api/catalog/matters/{m['code']}").json()
    assert detail == m
    page = c.get(f"/catalog/matters/{m['code']}", headers=HTML).text
    assert m["name"] in page and m["examples"][0] in page

    depts = c.get("/api/catalog/departments").json()
    by_code = {d["code"]: d for d in depts}
    assert {"district", "street"} <= {d["kind"] for d in depts}
    main_code = m["main_department"]["code"]
    if main_code in by_code and main_code != "JD":
        d = c.get(f"/api/catalog/departments/{main_code}").json()
        assert m["code"] in [x["code"] for x in d["matters_main"]]
        assert d["main_matters"] == by_code[main_code]["main_matters"]
    listing = c.get("/catalog/departments", headers=HTML).text
    assert "区直部门" in listing and "街道办事处" in listing
    assert c.get("/api/catalog/matters/NOPE").status_code == 404
    assert c.get("/api/catalog/departments/NOPE").status_code == 404


def test_catalogue_search_filters_by_keyword_and_example(client_as):
    c = client_as(STREET_USER)
    matters = c.get("/api/catalog/matters").json()
    target = next(m for m in matters if m["keywords"])
    kw = target["keywords"][0]
    hits = c.get("/api/catalog/matters", params={"q": kw}).json()
    assert target["code"] in [h["code"] for h in hits] and len(hits) < len(matters)
    example = target["examples"][0]
    assert target["code"] in [h["code"] for h in
                              c.get("/api/catalog/matters", params={"q": example}).json()]
    # htmx partial: only the result fragment, with matching rows
    r = c.get("/catalog/matters", params={"q": kw},
              headers={"HX-Request": "true", "HX-Target": "matter-results"})
    assert "<html" not in r.text
    assert r.text.count('class="matter-row"') == len(hits)
    assert c.get("/api/catalog/matters", params={"q": "没有这种事项zzz"}).json() == []


def test_search_text_is_escaped(client_as):
    r = client_as("admin").get("/catalog/matters", params={"q": "<script>alert(1)</script>"},
                               headers=HTML)
    assert r.status_code == 200
    assert "<script>alert(1)" not in r.text and "&lt;script&gt;" in r.text


def test_empty_database_still_serves_pages(fresh_db):
    from jiedao.auth import service
    from jiedao.web.app import create_app

    with fresh_db.session() as s:
        service.create_user(s, username="root", password="jiedao2026", display_name="管理员",
                            role="admin", scope_level="district", scope_code="420199")
    c = login(TestClient(create_app(fresh_db)), "root")
    assert c.get("/healthz").json()["demo"] is False
    for path in ["/", "/geo/streets", "/catalog/matters", "/catalog/departments"]:
        r = c.get(path, headers=HTML)
        assert r.status_code == 200, path
        assert 'id="demo-banner"' not in r.text
