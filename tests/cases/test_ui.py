"""Case screens through the real app (TestClient) on the small demo district: workbench intake
with the real analysis, dispatch, inbox actions, case page, approvals, street view; scope,
CSRF and optimistic-locking conflicts."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

PASSWORD = "jiedao2026"
HTML = {"accept": "text/html,application/xhtml+xml"}


@pytest.fixture(scope="module")
def app(demo_db):
    from jiedao.cases.runtime import get_pipeline
    from jiedao.web.app import create_app

    app = create_app(demo_db)
    app.state.case_pipeline = get_pipeline()  # the process one (same database), built once
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


@pytest.fixture(scope="module")
def places(demo_db):
    """A standard address in street 001 and one in another street."""
    from jiedao.geo.models import Address

    with demo_db.session() as s:
        own = s.scalars(select(Address).where(Address.street_code.like("%001"),
                                              Address.compound.is_not(None))
                        .order_by(Address.code)).first()
        other = s.scalars(select(Address).where(Address.street_code != own.street_code,
                                                Address.compound.is_not(None))
                          .order_by(Address.code)).first()
        return {"own": (own.full, own.street_code, own.grid_code),
                "other": (other.full, other.street_code, other.grid_code)}


def csrf(client: TestClient, url: str = "/cases/workbench") -> str:
    page = client.get(url, headers=HTML)
    m = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert m, page.text[:500]
    return m.group(1)


def case_row(db, case_id):
    from jiedao.cases.models import Case

    with db.session() as s:
        c = s.get(Case, case_id)
        return {"state": c.state, "version": c.version, "street": c.street_code,
                "main": c.main_department_code, "matter": c.matter_code,
                "assignments": [(a.department_code, a.role, a.state, a.deadline)
                                for a in c.assignments],
                "transitions": [t.action for t in c.transitions]}


def intake(client: TestClient, text: str, **fields) -> int:
    data = {"csrf_token": csrf(client), "text": text, "channel": "hotline", "urgency": "",
            "phone": "13912345678", "name": "张三丰", **fields}
    r = client.post("/cases/workbench/intake", data=data, headers=HTML, follow_redirects=False)
    assert r.status_code == 303, r.text[:2000]
    m = re.match(r"^/cases/(\d+)/triage$", r.headers["location"])
    assert m, r.headers["location"]
    return int(m.group(1))


def dispatch(client: TestClient, db, case_id: int, **fields) -> None:
    data = {"csrf_token": csrf(client), "expected_version": case_row(db, case_id)["version"],
            "mode": "accept", **fields}
    r = client.post(f"/cases/{case_id}/dispatch", data=data, headers=HTML,
                    follow_redirects=False)
    assert r.status_code == 303, r.text[:3000]


def act(client: TestClient, db, case_id: int, action: str, expect: int = 303, **fields):
    data = {"csrf_token": csrf(client, f"/cases/{case_id}"), "action": action,
            "expected_version": case_row(db, case_id)["version"], **fields}
    r = client.post(f"/cases/{case_id}/act", data=data, headers=HTML, follow_redirects=False)
    assert r.status_code == expect, r.text[:3000]
    return r


def handler_for(dept: str) -> str:
    return "street." + dept[-3:] if dept.startswith("JD") else "handler." + dept.lower()


GARBAGE = "{addr}楼下的垃圾桶满了好几天没人清运，垃圾堆到路边，臭味很大，请尽快处理"
LIGHTS = "{addr}门口的路灯坏了一个多星期，晚上黑漆漆的，老人出门很不安全"


@pytest.fixture(scope="module")
def dispatched(as_user, demo_db, places):
    """A case taken by operator01 at a real street-001 address and dispatched as suggested."""
    op = as_user("operator01")
    cid = intake(op, GARBAGE.format(addr=places["own"][0]))
    dispatch(op, demo_db, cid)
    return cid


# ---------------------------------------------------------------- access


def test_pages_need_login_and_roles(app, as_user):
    anon = TestClient(app)
    r = anon.get("/cases/workbench", headers=HTML, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert as_user("handler.cgj").get("/cases/workbench", headers=HTML).status_code == 403
    assert as_user("operator01").get("/cases/inbox", headers=HTML).status_code == 403
    assert as_user("handler.cgj").get("/cases/area", headers=HTML).status_code == 403
    page = as_user("operator01").get("/cases/workbench", headers=HTML)
    assert page.status_code == 200
    assert 'id="intake-form"' in page.text and "待研判/待派单" in page.text
    assert 'href="/cases/workbench"' in page.text  # nav entry 工作台
    assert 'href="/cases/inbox"' in as_user("handler.cgj").get("/", headers=HTML).text
    assert 'href="/cases/area"' in as_user("street.001").get("/", headers=HTML).text


def test_csrf_missing_is_refused_and_nothing_is_written(as_user, demo_db, dispatched):
    from jiedao.cases.models import Case

    op = as_user("operator01")
    with demo_db.session() as s:
        before = s.scalar(select(func.count()).select_from(Case))
    r = op.post("/cases/workbench/intake", data={"text": "小区门口有人占道经营"}, headers=HTML)
    assert r.status_code == 403 and "CSRF" in r.text
    r = op.post(f"/cases/{dispatched}/act", headers=HTML,
                data={"action": "close", "expected_version": 1, "csrf_token": "wrong"})
    assert r.status_code == 403
    with demo_db.session() as s:
        assert s.scalar(select(func.count()).select_from(Case)) == before


def test_intake_rejects_bad_input_with_field_messages(as_user, demo_db):
    from jiedao.cases.models import Case

    op = as_user("operator01")
    with demo_db.session() as s:
        before = s.scalar(select(func.count()).select_from(Case))
    token = csrf(op)
    r = op.post("/cases/workbench/intake", headers=HTML,
                data={"csrf_token": token, "text": "   ", "channel": "hotline"})
    assert r.status_code == 422 and "诉求内容不能为空" in r.text
    r = op.post("/cases/workbench/intake", headers=HTML,
                data={"csrf_token": token, "text": "路灯坏了", "lon": "东经", "lat": "30"})
    assert r.status_code == 422 and "经度必须是数字" in r.text and "路灯坏了" in r.text
    r = op.post("/cases/workbench/intake", headers=HTML,
                data={"csrf_token": token, "text": "路灯坏了", "phone": "123"})
    assert r.status_code == 422 and "电话号码格式不正确" in r.text
    r = op.post("/cases/workbench/intake", headers=HTML,
                data={"csrf_token": token, "text": "<script>alert(1)</script>" * 2,
                      "channel": "nope"})
    assert r.status_code == 422 and "<script>alert" not in r.text
    with demo_db.session() as s:
        assert s.scalar(select(func.count()).select_from(Case)) == before


def test_intake_same_form_twice_makes_one_case(as_user, places):
    op = as_user("operator01")
    token = csrf(op)
    data = {"csrf_token": token, "text": LIGHTS.format(addr=places["own"][0]),
            "channel": "hotline", "idempotency_key": "double-click-test-1"}
    a = op.post("/cases/workbench/intake", data=data, headers=HTML, follow_redirects=False)
    b = op.post("/cases/workbench/intake", data=data, headers=HTML, follow_redirects=False)
    assert a.status_code == b.status_code == 303
    assert a.headers["location"] == b.headers["location"]


# ---------------------------------------------------------------- workbench → dispatch


def test_triage_shows_analysis_card_and_suggestion(as_user, demo_db, places):
    op = as_user("operator01")
    cid = intake(op, GARBAGE.format(addr=places["own"][0]))
    row = case_row(demo_db, cid)
    assert row["state"] == "analysed" and row["street"] == places["own"][1]
    page = op.get(f"/cases/{cid}/triage", headers=HTML)
    assert page.status_code == 200
    for part in ('id="analysis-card"', 'id="card-category"', 'id="card-urgency"',
                 'id="card-location"', 'id="suggestion-card"', 'id="accept-dispatch"',
                 'id="override-matter"', "置信度", "依据"):
        assert part in page.text, part
    assert places["own"][0] in page.text  # the standard address
    assert "139****5678" in page.text and "13912345678" not in page.text
    # it is in the operator's 待研判 queue
    assert f'data-case="{cid}"' in op.get("/cases/workbench?queue=triage", headers=HTML).text
    frag = op.get("/cases/workbench/queue?queue=triage", headers={"hx-request": "true"})
    assert frag.status_code == 200 and f'data-case="{cid}"' in frag.text


def test_accept_dispatches_as_suggested(as_user, demo_db, dispatched):
    row = case_row(demo_db, dispatched)
    assert row["state"] == "dispatched"
    assert row["assignments"][0][0] == row["main"] and row["assignments"][0][1] == "main"
    page = as_user("operator01").get(f"/cases/{dispatched}?ok=dispatch", headers=HTML)
    assert "已派单" in page.text and 'id="timeline"' in page.text


def test_override_is_recorded(as_user, demo_db, places):
    from jiedao.cases.models import DispatchOverride

    op = as_user("operator01")
    cid = intake(op, LIGHTS.format(addr=places["own"][0]))
    frag = op.get(f"/cases/{cid}/suggest?matter_code=", headers={"hx-request": "true"})
    assert frag.status_code == 200 and 'id="override-main"' in frag.text
    r = op.post(f"/cases/{cid}/dispatch", headers=HTML, follow_redirects=False, data={
        "csrf_token": csrf(op), "expected_version": case_row(demo_db, cid)["version"],
        "mode": "override", "matter_code": case_row(demo_db, cid)["matter"] or "",
        "main": "ZJJ", "co": ["CGJ", "ZJJ"]})
    if case_row(demo_db, cid)["matter"] is None:  # no category found: the form asks for one
        assert r.status_code == 422
        return
    assert r.status_code == 303, r.text[:2000]
    row = case_row(demo_db, cid)
    assert [(d, role) for d, role, *_ in row["assignments"]] == [("ZJJ", "main"), ("CGJ", "co")]
    with demo_db.session() as s:
        o = s.scalars(select(DispatchOverride).where(DispatchOverride.case_id == cid)).one()
        assert o.chosen_department == "ZJJ" and o.actor == "operator01"


def test_override_with_unknown_matter_is_422_and_nothing_changes(as_user, demo_db, places):
    op = as_user("operator01")
    cid = intake(op, LIGHTS.format(addr=places["own"][0]))
    before = case_row(demo_db, cid)
    r = op.post(f"/cases/{cid}/dispatch", headers=HTML, data={
        "csrf_token": csrf(op), "expected_version": before["version"], "mode": "override",
        "matter_code": "NOPE-1"})
    assert r.status_code == 422 and "NOPE-1" in r.text
    assert case_row(demo_db, cid) == before


# ---------------------------------------------------------------- inbox and actions


def test_full_loop_through_the_screens(as_user, demo_db, places):
    op = as_user("operator01")
    cid = intake(op, GARBAGE.format(addr=places["own"][0]))
    dispatch(op, demo_db, cid)
    dept = case_row(demo_db, cid)["main"]
    h = as_user(handler_for(dept))
    inbox = h.get("/cases/inbox", headers=HTML)
    assert inbox.status_code == 200 and f'data-case="{cid}"' in inbox.text
    assert "剩余" in inbox.text and "sla-countdown" in inbox.text
    act(h, demo_db, cid, "sign", seq=0, next="/cases/inbox?tab=doing")
    assert case_row(demo_db, cid)["state"] == "signed"
    act(h, demo_db, cid, "start", seq=0)
    act(h, demo_db, cid, "reply", seq=0, text="已安排环卫人员清运，现场已清理干净。")
    co = [i for i, a in enumerate(case_row(demo_db, cid)["assignments"]) if a[1] == "co"]
    for i in co:  # co-handlers answer too (co-handling closes only when every handler replied)
        ch = as_user(handler_for(case_row(demo_db, cid)["assignments"][i][0]))
        act(ch, demo_db, cid, "sign", seq=i)
        act(ch, demo_db, cid, "reply", seq=i, text="已配合处理。")
    assert case_row(demo_db, cid)["state"] == "replied"
    assert f'data-case="{cid}"' in op.get("/cases/workbench?queue=replied", headers=HTML).text
    act(op, demo_db, cid, "close")
    act(op, demo_db, cid, "follow_up", satisfaction="满意", comment="清理得很及时")
    row = case_row(demo_db, cid)
    assert row["state"] == "followed_up"
    page = op.get(f"/cases/{cid}", headers=HTML).text
    for label in ("研判", "派单", "签收", "开始办理", "答复", "办结", "回访"):
        assert f'<b class="tl-action">{label}</b>' in page, label
    assert "清理得很及时" in page and 'id="followups"' in page


def test_return_needs_reason_then_goes_back_to_operator(as_user, demo_db, places):
    op = as_user("operator01")
    cid = intake(op, GARBAGE.format(addr=places["own"][0]))
    dispatch(op, demo_db, cid)
    dept = case_row(demo_db, cid)["main"]
    h = as_user(handler_for(dept))
    before = case_row(demo_db, cid)
    r = act(h, demo_db, cid, "return", expect=422, seq=0, reason="  ")
    assert "退单必须填写原因" in r.text
    assert case_row(demo_db, cid) == before
    act(h, demo_db, cid, "return", seq=0, reason="不属于本部门职责")
    assert case_row(demo_db, cid)["state"] == "returned"
    assert f'data-case="{cid}"' in op.get("/cases/workbench?queue=returned", headers=HTML).text
    tri = op.get(f"/cases/{cid}/triage", headers=HTML).text
    assert "不属于本部门职责" in tri and 'id="return-reason"' in tri


def test_handler_cannot_act_on_another_departments_assignment(as_user, demo_db, places):
    op = as_user("operator01")
    cid = intake(op, LIGHTS.format(addr=places["own"][0]))
    matter = case_row(demo_db, cid)["matter"] or "X"
    from jiedao.cases.models import Case

    if matter == "X":
        with demo_db.session() as s:
            matter = s.scalars(select(Case.matter_code).where(Case.matter_code.is_not(None))).first()
    r = op.post(f"/cases/{cid}/dispatch", headers=HTML, follow_redirects=False, data={
        "csrf_token": csrf(op), "expected_version": case_row(demo_db, cid)["version"],
        "mode": "override", "matter_code": matter, "main": "CGJ", "co": ["ZJJ"]})
    assert r.status_code == 303, r.text[:1000]
    before = case_row(demo_db, cid)
    zjj = as_user("handler.zjj")  # co-handler: sees the case, may not touch the main's share
    assert zjj.get(f"/cases/{cid}", headers=HTML).status_code == 200
    r = act(zjj, demo_db, cid, "sign", expect=403, seq=0)
    assert "不是您所在部门的派单" in r.text
    other = as_user("handler.scjg")  # no share at all: cannot even see it
    assert other.get(f"/cases/{cid}", headers=HTML).status_code == 403
    act(other, demo_db, cid, "sign", expect=403, seq=0)
    assert case_row(demo_db, cid) == before


def test_stale_version_is_a_conflict_and_changes_nothing(as_user, demo_db, dispatched):
    h = as_user(handler_for(case_row(demo_db, dispatched)["main"]))
    stale = case_row(demo_db, dispatched)["version"]
    act(h, demo_db, dispatched, "sign", seq=0)  # somebody (here: the same desk) acted first
    after = case_row(demo_db, dispatched)
    token = csrf(h, f"/cases/{dispatched}")
    r = h.post(f"/cases/{dispatched}/act", headers=HTML, data={
        "csrf_token": token, "action": "return", "seq": 0, "expected_version": stale,
        "reason": "不是我们的"})
    assert r.status_code == 409
    assert "已被他人处理" in r.text and 'id="action-error"' in r.text
    assert case_row(demo_db, dispatched) == after
    # an action the state no longer allows is refused with the workflow's reason
    r = act(h, demo_db, dispatched, "sign", expect=409, seq=0)
    assert "不能签收" in r.text
    assert case_row(demo_db, dispatched) == after


def test_extension_request_and_approval(as_user, demo_db, places):
    op = as_user("operator01")
    cid = intake(op, GARBAGE.format(addr=places["own"][0]))
    dispatch(op, demo_db, cid)
    h = as_user(handler_for(case_row(demo_db, cid)["main"]))
    act(h, demo_db, cid, "sign", seq=0)
    old = case_row(demo_db, cid)["assignments"][0][3]
    new = old.replace(year=old.year + 1)
    r = act(h, demo_db, cid, "request_extension", expect=422, seq=0, reason="需要协调",
            new_deadline="明天")
    assert "格式不正确" in r.text
    act(h, demo_db, cid, "request_extension", seq=0, reason="需协调物业和环卫公司",
        new_deadline=new.strftime("%Y-%m-%dT%H:%M"))
    listing = op.get("/cases/extensions", headers=HTML).text
    assert f'data-case="{cid}"' in listing and "需协调物业和环卫公司" in listing
    assert h.get("/cases/extensions", headers=HTML).status_code == 403
    act(h, demo_db, cid, "approve_extension", expect=403, seq=0)
    act(op, demo_db, cid, "approve_extension", seq=0, next="/cases/extensions")
    assert case_row(demo_db, cid)["assignments"][0][3] == new.replace(second=0, microsecond=0)


def test_unsatisfied_follow_up_reopens(as_user, demo_db, places):
    op = as_user("operator01")
    cid = intake(op, GARBAGE.format(addr=places["own"][0]))
    dispatch(op, demo_db, cid)
    for i, (dept, *_rest) in enumerate(case_row(demo_db, cid)["assignments"]):
        h = as_user(handler_for(dept))
        act(h, demo_db, cid, "sign", seq=i)
        act(h, demo_db, cid, "reply", seq=i, text="已处理")
    act(op, demo_db, cid, "close")
    act(op, demo_db, cid, "follow_up", expect=422, satisfaction="还行")
    act(op, demo_db, cid, "follow_up", satisfaction="不满意", comment="垃圾又堆起来了")
    row = case_row(demo_db, cid)
    assert row["state"] == "dispatched" and row["transitions"][-1] == "reopen"
    assert "第 2 轮" in op.get(f"/cases/{cid}", headers=HTML).text


# ---------------------------------------------------------------- case page, scope, street view


def test_case_page_scope_and_phone_reveal(as_user, demo_db, places):
    from jiedao.auth.models import AuditLog

    op = as_user("operator01")
    cid = intake(op, GARBAGE.format(addr=places["other"][0]))
    assert case_row(demo_db, cid)["street"] == places["other"][1]
    assert as_user("street.001").get(f"/cases/{cid}", headers=HTML).status_code == 403
    assert as_user("street.001").get(f"/cases/{cid}/map.json").status_code == 403
    own = as_user("street." + places["other"][1][-3:]).get(f"/cases/{cid}", headers=HTML)
    assert own.status_code == 200 and "139****5678" in own.text and "张**" in own.text
    assert 'id="reveal-phone"' not in own.text
    assert op.get("/cases/999999999", headers=HTML).status_code == 404
    page = op.get(f"/cases/{cid}", headers=HTML)
    assert 'id="reveal-phone"' in page.text and "13912345678" not in page.text
    token = csrf(op, f"/cases/{cid}")
    r = op.post(f"/cases/{cid}/reveal-phone", data={"csrf_token": token},
                headers={"hx-request": "true"})
    assert r.status_code == 200 and "13912345678" in r.text
    r = as_user("street.001").post(f"/cases/{cid}/reveal-phone", headers=HTML,
                                   data={"csrf_token": csrf(as_user("street.001"), "/")})
    assert r.status_code == 403
    with demo_db.session() as s:
        rows = s.scalars(select(AuditLog).where(AuditLog.action == "reveal_phone",
                                                AuditLog.actor == "operator01")).all()
        assert rows
    m = op.get(f"/cases/{cid}/map.json").json()
    assert m["features"][0]["properties"]["code"] == places["other"][2] and m["point"]


def test_street_view(as_user, demo_db, dispatched, places):
    street = places["own"][1]
    st = as_user("street.001").get("/cases/area", headers=HTML)
    assert st.status_code == 200
    assert 'id="area-map"' in st.text and f"parent={street}" in st.text
    assert f'data-case="{dispatched}"' in st.text
    # a case of another street is not listed for street.001
    from jiedao.cases.models import Case

    with demo_db.session() as s:
        foreign = s.scalars(select(Case.id).where(Case.street_code == places["other"][1])).all()
    for fid in foreign:
        assert f'data-case="{fid}"' not in st.text
    lead = as_user("leader01").get(f"/cases/area?street={places['other'][1]}", headers=HTML)
    assert lead.status_code == 200 and 'id="street-chooser"' in lead.text
    assert as_user("leader01").get("/cases/area", headers=HTML).status_code == 200
    assert as_user("street.001").get(
        f"/cases/area?grid={places['other'][2]}", headers=HTML).status_code == 403
    filt = as_user("street.001").get("/cases/area?state=dispatched&kw=垃圾", headers=HTML)
    assert filt.status_code == 200
    sq = as_user("sq." + places["own"][2][:12])
    assert sq.get("/cases/area", headers=HTML).status_code == 200
