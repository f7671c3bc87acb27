"""Case service: intake validation, idempotency, actions written back, optimistic locking."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from jiedao.cases import service
from jiedao.cases.models import Case, FollowUp, TransitionLog
from jiedao.catalog.models import Department
from jiedao.errors import Conflict, ValidationError

T0 = datetime(2026, 3, 2, 9, 0)
DL = T0 + timedelta(days=7)


@pytest.fixture
def db(fresh_db):
    with fresh_db.session() as s:
        s.add_all([Department(code="CGJ", name="区城市管理执法局", kind="district"),
                   Department(code="ZJJ", name="区住房和城市更新局", kind="district")])
    return fresh_db


def new_case(db, **kw):
    args = dict(text="楼下烧烤摊占道经营，油烟很大", channel="hotline", actor="op", phone="13812345678", at=T0)
    args.update(kw)
    with db.session() as s:
        case, created = service.create_case(s, **args)
        return case.id, created


def count(db, model):
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(model))


@pytest.mark.parametrize("kw,field", [
    ({"text": "   "}, "text"),
    ({"text": "长" * 100_000}, "text"),
    ({"channel": "pigeon"}, "channel"),
    ({"urgency": "特急"}, "urgency"),
    ({"lon": 114.2, "lat": None}, "lat"),
    ({"lon": 514.2, "lat": 30.5}, "lon"),
    ({"lon": "abc", "lat": "30"}, "lon"),
    ({"phone": "12345"}, "phone"),
])
def test_bad_intake_is_refused_and_changes_nothing(db, kw, field):
    with pytest.raises(ValidationError) as e:
        new_case(db, **kw)
    assert field in {p.field for p in e.value.problems}
    assert count(db, Case) == 0


def test_idempotency_key_makes_retries_safe_and_callers_are_recognised(db):
    a, created_a = new_case(db, idempotency_key="req-1")
    b, created_b = new_case(db, idempotency_key="req-1")
    assert (a, created_a, created_b) == (b, True, False)
    c, _ = new_case(db, phone="+86 138-1234-5678", idempotency_key="req-2")
    with db.session() as s:
        ca, cc = s.get(Case, a), s.get(Case, c)
        assert ca.caller_id == cc.caller_id, "same phone, same caller"
        assert cc.repeat_caller and not ca.repeat_caller
    assert count(db, Case) == 2


def run(db, case_id, action, **kw):
    with db.session() as s:
        case = service.act(s, case_id, action, actor="u", at=T0, **kw)
        return case.state, case.version


def test_full_loop_is_recorded(db):
    cid, _ = new_case(db)
    run(db, cid, "analyse")
    run(db, cid, "dispatch", main=("CGJ", DL), co=[("ZJJ", DL)])
    run(db, cid, "sign", index=0)
    run(db, cid, "reply", index=0, text="已取缔")
    run(db, cid, "sign", index=1)
    assert run(db, cid, "reply", index=1, text="已配合")[0] == "replied"
    run(db, cid, "close")
    state, version = run(db, cid, "follow_up", satisfaction="不满意", deadline=DL, comment="又来了")
    assert state == "dispatched"
    with db.session() as s:
        case = service.load_case(s, cid)
        assert [a.department_code for a in case.assignments] == ["CGJ", "ZJJ", "CGJ"]
        assert case.main_department_code == "CGJ" and case.reopen_count == 1
        assert [t.seq for t in case.transitions] == list(range(len(case.transitions)))
        assert case.transitions[-1].action == "reopen"
        assert s.scalar(select(FollowUp.satisfaction).where(FollowUp.case_id == cid)) == "不满意"
        assert version == case.version


def test_refused_action_writes_nothing(db):
    cid, _ = new_case(db)
    before = count(db, TransitionLog)
    with pytest.raises(Conflict):
        run(db, cid, "close")
    assert count(db, TransitionLog) == before
    with db.session() as s:
        assert s.get(Case, cid).state == "received"


def test_stale_snapshot_loses(db):
    cid, _ = new_case(db)
    run(db, cid, "analyse")
    run(db, cid, "dispatch", main=("CGJ", DL))
    s1, s2 = db.Session(), db.Session()
    try:
        # both requests have loaded the case (kept referenced, as a request handler would)
        seen = [service.load_case(s1, cid), service.load_case(s2, cid)]
        assert seen[0].version == seen[1].version
        service.act(s1, cid, "sign", actor="a", index=0, at=T0)
        s1.commit()
        with pytest.raises(Conflict):
            service.act(s2, cid, "return_", actor="b", index=0, reason="不归我管", at=T0)
        s2.rollback()
    finally:
        s1.close()
        s2.close()
    with db.session() as s:
        case = service.load_case(s, cid)
        assert case.state == "signed"
        assert [t.action for t in case.transitions] == ["analyse", "dispatch", "sign"]


def test_expected_version_is_checked(db):
    cid, _ = new_case(db)
    _, v = run(db, cid, "analyse")
    with pytest.raises(Conflict):
        run(db, cid, "dispatch", main=("CGJ", DL), expected_version=v - 1)
    assert run(db, cid, "dispatch", main=("CGJ", DL), expected_version=v)[0] == "dispatched"


def test_concurrent_handlers_one_wins(db):
    cid, _ = new_case(db)
    run(db, cid, "analyse")
    run(db, cid, "dispatch", main=("CGJ", DL))
    results = []
    barrier = threading.Barrier(4)

    def worker(n):
        barrier.wait()
        try:
            with db.session() as s:
                service.act(s, cid, "sign", actor=f"h{n}", index=0, at=T0)
            results.append("ok")
        except Conflict:
            results.append("conflict")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict"] * 3 + ["ok"]
    with db.session() as s:
        case = service.load_case(s, cid)
        assert [t.action for t in case.transitions].count("sign") == 1
