"""Open311 GeoReport v2 at /open311/v2/, exercised with a real GeoReport client from PyPI
(``georeport``, which speaks HTTP through ``requests``) against the app served by uvicorn on
a loopback port, plus plain HTTP for what that client does not cover (POST, tokens, errors)."""

from __future__ import annotations

import pytest
import requests
from live_server import serve
from sqlalchemy import func, select

georeport = pytest.importorskip("georeport")


@pytest.fixture(scope="module")
def demo_db(demo_db):
    """This module's copy of the demo database: the cases added here stay out of the shared
    one (see channels_db.py)."""
    from channels_db import channels_db

    return channels_db(demo_db)


@pytest.fixture(scope="module")
def server(demo_db):
    """The real app served by uvicorn on 127.0.0.1:<free port> in a thread."""
    from jiedao.cases.runtime import get_pipeline
    from jiedao.web.app import create_app

    app = create_app(demo_db)
    get_pipeline(app)  # build before the first request
    with serve(app, lifespan="auto") as url:
        yield f"{url}/open311/v2"


@pytest.fixture(scope="module")
def api_key(demo_db):
    from jiedao.auth import service as auth

    keys = {}

    def make(username: str = "operator01") -> str:
        if username not in keys:
            with demo_db.session() as s:
                keys[username], _ = auth.create_api_token(s, auth.get_user(s, username), "open311")
        return keys[username]

    return make


@pytest.fixture(scope="module")
def place(demo_db):
    from jiedao.geo.models import Address

    with demo_db.session() as s:
        a = s.scalars(select(Address).where(Address.street_code.like("%001"),
                                            Address.compound.is_not(None))
                      .order_by(Address.code)).first()
        return {"full": a.full, "street": a.street_code, "lon": a.lon, "lat": a.lat}


def count_cases(db) -> int:
    from jiedao.cases.models import Case

    with db.session() as s:
        return s.scalar(select(func.count()).select_from(Case))


def test_service_list_and_definitions_through_the_georeport_client(server, demo_db):
    from jiedao.catalog.models import Matter

    client = georeport.GeoReport(server)
    services = client.get_service_list()
    with demo_db.session() as s:
        matters = {m.code: m for m in s.scalars(select(Matter))}
    assert len(services) == len(matters) > 100
    first = services[0]
    m = matters[first["service_code"]]
    assert first["service_name"] == m.name and first["group"] == m.level1
    assert first["type"] == "realtime" and first["metadata"] is True
    assert first["keywords"] == ",".join(m.keywords)
    definition = client.get_service_definition(first["service_code"])
    assert definition["service_code"] == first["service_code"]
    urgency = next(a for a in definition["attributes"] if a["code"] == "urgency")
    assert [v["key"] for v in urgency["values"]] == ["紧急", "较急", "一般"]
    # the same resources as XML
    xml_client = georeport.GeoReport(server, output_format="xml")
    xml_services = xml_client.get_service_list()
    assert len(xml_services) == len(services)
    assert xml_services[0]["service_code"] == first["service_code"]
    assert xml_client.get_service_definition(first["service_code"])["service_code"] == \
        first["service_code"]
    with pytest.raises(requests.HTTPError) as e:
        client.get_service_definition("NOPE99")
    assert e.value.response.status_code == 404
    body = e.value.response.json()
    assert body[0]["code"] == 404 and "NOPE99" in body[0]["description"]


def test_post_then_read_back_with_the_client_by_id_token_and_filters(server, api_key, place,
                                                                     demo_db):
    from jiedao.cases.models import Case

    client = georeport.GeoReport(server, api_key=api_key())
    services = {s["service_code"]: s for s in client.get_service_list()}
    code = next(c for c, s in services.items() if "占道" in s["service_name"] or
                "占道" in s["keywords"])
    before = count_cases(demo_db)
    r = requests.post(f"{server}/requests.json", data={
        "api_key": api_key(), "service_code": code, "address_string": place["full"],
        "description": f"{place['full']}门口烧烤摊占道经营，油烟大", "phone": "13812345678",
        "first_name": "三丰", "last_name": "张", "email": "zhang@example.org",
        "attribute[urgency]": "较急"}, timeout=30)
    assert r.status_code == 201, r.text
    [answer] = r.json()
    rid, token = answer["service_request_id"], answer["token"]
    assert answer["service_notice"]
    assert count_cases(demo_db) == before + 1
    with demo_db.session() as s:
        case = s.scalar(select(Case).where(Case.code == rid))
        assert case.channel == "open311" and case.urgency == "较急"
        assert case.street_code == place["street"] and case.caller.name == "张三丰"
        assert case.analysis["open311"]["service_code"] == code
    # the client reads it back: the public view hides the text, the exact point and the caller
    public = client.get_service_request(rid)
    assert public["service_request_id"] == rid and public["status"] == "open"
    assert public["description"] is None and public["lat"] is None
    assert public["requested_datetime"].endswith("+08:00")
    listed = client.get_service_requests(service_request_id=rid)
    assert [x["service_request_id"] for x in listed] == [rid]
    open_now = client.get_service_requests(status="open")
    assert rid in {x["service_request_id"] for x in open_now}
    assert rid not in {x["service_request_id"] for x in client.get_service_requests(status="closed")}
    day = public["requested_datetime"][:10]
    ranged = client.get_service_requests(start_date=f"{day}T00:00:00+08:00",
                                         end_date=f"{day}T23:59:59+08:00")
    assert rid in {x["service_request_id"] for x in ranged}
    xml = georeport.GeoReport(server, output_format="xml").get_service_requests(
        service_request_id=rid)
    assert (xml if isinstance(xml, dict) else xml[0])["service_request_id"] == rid
    # with the api_key (a Jiedao token inside whose scope the case is) the full view
    full = requests.get(f"{server}/requests/{rid}.json", params={"api_key": api_key()},
                        timeout=30).json()[0]
    assert "烧烤摊" in full["description"] and full["address"]
    # token → id
    t = requests.get(f"{server}/tokens/{token}.json", timeout=30)
    assert t.status_code == 200 and t.json() == [{"service_request_id": rid, "token": token}]
    assert requests.get(f"{server}/tokens/forged.json", timeout=30).status_code == 404


def test_scope_of_the_full_view_follows_the_token(server, api_key, place):
    r = requests.post(f"{server}/requests.json", data={
        "api_key": api_key(), "service_code": "CG0101", "lat": place["lat"], "long": place["lon"],
        "description": "这里路灯坏了好几天，晚上很黑"}, timeout=30)
    assert r.status_code == 201, r.text
    rid = r.json()[0]["service_request_id"]
    own = requests.get(f"{server}/requests.json", params={
        "api_key": api_key("street.001"), "service_request_id": rid}, timeout=30).json()
    other = requests.get(f"{server}/requests.json", params={
        "api_key": api_key("street.002"), "service_request_id": rid}, timeout=30).json()
    assert [x["service_request_id"] for x in own] == [rid] and own[0]["description"]
    assert other == []
    one = requests.get(f"{server}/requests/{rid}.json", params={"api_key": api_key("street.002")},
                       timeout=30).json()[0]
    assert one["description"] is None  # outside the token's scope: the public view only


@pytest.mark.parametrize("change,status,word", [
    ({"api_key": None}, 403, "api_key"),
    ({"api_key": "jd_not-a-real-token"}, 403, "api_key"),
    ({"service_code": None}, 400, "service_code"),
    ({"service_code": "NOPE99"}, 400, "service_code"),
    ({"address_string": None}, 400, "lat"),
    ({"description": ""}, 400, "description"),
    ({"description": "长" * 100_000}, 400, "description"),
    ({"lat": "north", "long": "114.3"}, 400, "lat"),
    ({"lat": "95", "long": "114.3"}, 400, "lat"),
    ({"attribute[urgency]": "特急"}, 400, "urgency"),
    ({"attribute[colour]": "red"}, 400, "colour"),
])
def test_bad_posts_answer_spec_errors_and_create_nothing(server, api_key, place, demo_db, change,
                                                         status, word):
    data = {"api_key": api_key(), "service_code": "CG0101", "address_string": place["full"],
            "description": "路灯不亮"}
    for k, v in change.items():
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    before = count_cases(demo_db)
    r = requests.post(f"{server}/requests.json", data=data, timeout=30)
    assert r.status_code == status, r.text
    [err] = r.json()
    assert err["code"] == status and word in err["description"]
    assert count_cases(demo_db) == before


def test_handler_tokens_cannot_submit_and_retries_with_a_key_are_idempotent(server, api_key, place,
                                                                             demo_db):
    data = {"api_key": api_key("handler.cgj"), "service_code": "CG0101",
            "address_string": place["full"], "description": "路灯不亮"}
    assert requests.post(f"{server}/requests.json", data=data, timeout=30).status_code == 403
    data["api_key"] = api_key()
    before = count_cases(demo_db)
    h = {"Idempotency-Key": "open311-retry-1"}
    a = requests.post(f"{server}/requests.json", data=data, headers=h, timeout=30)
    b = requests.post(f"{server}/requests.json", data=data, headers=h, timeout=30)
    assert a.status_code == b.status_code == 201
    assert a.json()[0]["service_request_id"] == b.json()[0]["service_request_id"]
    assert count_cases(demo_db) == before + 1


def test_request_errors_and_xml_errors(server):
    r = requests.get(f"{server}/requests/NOPE.json", timeout=30)
    assert r.status_code == 404 and r.json()[0]["code"] == 404
    r = requests.get(f"{server}/requests.json", params={"start_date": "yesterday"}, timeout=30)
    assert r.status_code == 400 and "start_date" in r.json()[0]["description"]
    r = requests.get(f"{server}/requests.json", params={
        "start_date": "2026-01-01T00:00:00Z", "end_date": "2026-06-01T00:00:00Z"}, timeout=30)
    assert r.status_code == 400 and "90" in r.json()[0]["description"]
    r = requests.get(f"{server}/requests.json", params={"status": "lost"}, timeout=30)
    assert r.status_code == 400
    r = requests.get(f"{server}/services/NOPE99.xml", timeout=30)
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/xml")
    assert "<errors><error><code>404</code>" in r.text
    assert requests.get(f"{server}/services.csv", timeout=30).status_code == 404
