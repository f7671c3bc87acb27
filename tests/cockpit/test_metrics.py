"""The metrics layer against an independent count on the demo database (plain SQL rows,
counted in Python), drill-downs, scope, ranking and the incremental mirror."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

import pytest
import sqlalchemy as sa

from jiedao.auth.scope import Principal
from jiedao.catalog.calendar import get_calendar
from jiedao.cockpit.metrics import DIMENSIONS, METRICS, Metrics, ranking_config
from jiedao.cockpit.periods import Period

YEAR = Period.parse("2025")
MONTH = Period.parse("2025-06")


def _rows(db, model, *order):
    """All rows of a table as dicts, typed by the ORM table (datetimes on SQLite too)."""
    t = model.__table__
    with db.engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(sa.select(t).order_by(*(t.c[o] for o in order)))]


class Truth:
    """Each metric's denominator / numerator case sets, computed row by row in Python from
    the operational tables (the definitions of METRICS, written out independently)."""

    def __init__(self, db):
        cal = get_calendar()
        from jiedao.cases.models import Assignment, Case, FollowUp, TransitionLog

        self.cases = {r["id"]: r for r in _rows(db, Case)}
        self.asg = defaultdict(list)
        for a in _rows(db, Assignment, "case_id", "seq"):
            self.asg[a["case_id"]].append(a)
        self.tr = defaultdict(list)
        for t in _rows(db, TransitionLog, "case_id", "seq"):
            self.tr[t["case_id"]].append(t)
        self.fu = defaultdict(list)
        for f in _rows(db, FollowUp, "at", "id"):
            self.fu[f["case_id"]].append(f)
        self.as_of = max(c["updated_at"] for c in self.cases.values())
        self.cal = cal
        events = defaultdict(list)
        for c in self.cases.values():
            if c["event_id"] is not None:
                events[c["event_id"]].append((c["received_at"], c["id"]))
        self.first_of_event = {e: min(v)[1] for e, v in events.items()}

    def _sign(self, c, asgs):
        ok = late = 0
        open_due = False
        for a in asgs:
            ret = [t["at"] for t in self.tr[c] if t["action"] == "return" and t["assignment_seq"] == a["seq"]]
            resp = a["signed_at"] or (min(ret) if ret else None)
            sdl = a["sign_deadline"] or self.cal.add_working_time(a["dispatched_at"], timedelta(hours=2))
            if resp is None:
                if a["state"] == "pending" and sdl <= self.as_of:
                    open_due = True
                continue
            if resp <= sdl:
                ok += 1
            else:
                late += 1
        return (ok + late > 0 or open_due), (ok + late > 0 or open_due) and late == 0 and not open_due

    def _close(self, asgs):
        ok = late = 0
        open_due = False
        for a in asgs:
            if a["state"] in ("returned", "cancelled"):
                continue
            if a["replied_at"] is None:
                open_due = open_due or a["deadline"] <= self.as_of
            elif a["replied_at"] <= a["deadline"]:
                ok += 1
            else:
                late += 1
        den = ok + late > 0 or open_due
        return den, den and late == 0 and not open_due

    def sets(self, period, dept=None, where=lambda c: True):
        """{metric: (denominator ids, numerator ids)} for cases received in ``period``;
        with ``dept``, over that department's assignments."""
        out = {m: (set(), set()) for m in METRICS}
        hours = []
        for cid, c in self.cases.items():
            if not (period.start_dt <= c["received_at"] < period.end_dt) or not where(c):
                continue
            asgs = self.asg[cid]
            if dept is not None:
                asgs = [a for a in asgs if a["department_code"] == dept]
                if not asgs:
                    continue
                sign_set, close_set = asgs, asgs
            else:
                sign_set = close_set = [a for a in asgs if a["role"] == "main"]

            def put(m, den, num, cid=cid):
                if den:
                    out[m][0].add(cid)
                if num:
                    out[m][1].add(cid)

            put("received", True, True)
            put("sign_ontime", *self._sign(cid, sign_set))
            put("close_ontime", *self._close(close_set))
            fus = self.fu[cid]
            rated = bool(fus)
            if dept is not None:
                rated = rated and any(a["role"] == "main" and a["replied_at"] for a in asgs)
            put("resolved", rated, rated and fus[-1]["satisfaction"] != "不满意")
            put("satisfied", rated, rated and fus[0]["satisfaction"] in ("满意", "基本满意"))
            put("repeat", True, c["event_id"] is not None and self.first_of_event[c["event_id"]] != cid)
            acts = {t["action"] for t in self.tr[cid]}
            if dept is None:
                disp, bad = "dispatch" in acts, bool(acts & {"return", "reassign"})
            else:
                mains = [a for a in asgs if a["role"] == "main"]
                disp, bad = bool(mains), any(a["state"] in ("returned", "cancelled") for a in mains)
            put("first_dispatch", disp, disp and not bad)
            if dept is None:
                replies = [a["replied_at"] for a in asgs if a["role"] == "main" and a["replied_at"]]
                end = min(replies) if replies else c["closed_at"]
                start = c["received_at"]
            else:
                replies = [a["replied_at"] for a in asgs if a["replied_at"]]
                end = min(replies) if replies else None
                start = min(a["dispatched_at"] for a in asgs)
            if end is not None:
                put("handling_hours", True, True)
                hours.append((end - start).total_seconds() / 3600)
        return out, (sum(hours) / len(hours) if hours else None)


@pytest.fixture(scope="module")
def metrics(demo_db):
    m = Metrics(demo_db, path=None, refresh_seconds=3600)
    m.refresh(force=True)
    yield m
    m.close()


@pytest.fixture(scope="module")
def truth(demo_db, metrics):
    return Truth(demo_db)


def _check(m, truth_sets, mean, values, ids=None):
    for key, (den, num) in truth_sets.items():
        v = values[key]
        assert v.denominator == len(den), key
        if METRICS[key].kind == "mean":
            assert v.value == pytest.approx(mean), key
        else:
            assert v.numerator == len(num), key
        if ids is not None:
            assert ids(key, "denominator") == sorted(den), key
            assert ids(key, "numerator") == sorted(num), key
            assert ids(key, "miss") == sorted(den - num), key


def test_every_metric_matches_an_independent_count(metrics, truth):
    assert metrics.as_of == truth.as_of
    for period in (YEAR, MONTH):
        sets, mean = truth.sets(period)
        _check(metrics, sets, mean, metrics.summary(period),
               ids=lambda k, part, p=period: metrics.case_ids(p, k, part=part))
    summary = metrics.summary(YEAR)
    assert summary["received"].value == len(truth.cases) > 1000
    for key in ("sign_ontime", "close_ontime", "satisfied", "first_dispatch"):
        assert 50 < summary[key].value <= 100, key  # realistic demo rates, not degenerate
    assert 0 < summary["repeat"].value < 50


def test_department_metrics_over_its_assignments(metrics, truth):
    rows = {r.code: r for r in metrics.breakdown(MONTH, "department")}
    depts = {a["department_code"] for v in truth.asg.values() for a in v}
    assert set(rows) <= depts and len(rows) > 5
    for code in sorted(rows)[:6]:
        sets, mean = truth.sets(MONTH, dept=code)
        _check(metrics, sets, mean, rows[code].values)
        assert rows[code].label != code  # resolved to the department's name
    dept = sorted(rows)[0]
    sets, mean = truth.sets(MONTH, dept=dept)
    principal = Principal(1, "d", "部门用户", "handler", "department", dept)
    _check(metrics, sets, mean, metrics.summary(MONTH, principal=principal),
           ids=lambda k, part: metrics.case_ids(MONTH, k, part=part, principal=principal))
    _check(metrics, sets, mean, metrics.summary(MONTH, filters={"department": dept}))


def test_breakdowns_add_up_and_compare(metrics, truth):
    total = metrics.summary(MONTH)["received"].value
    for by in DIMENSIONS:
        rows = metrics.breakdown(MONTH, by)
        assert [r.code for r in rows if r.code] == sorted(r.code for r in rows if r.code)
        if by != "department":  # case dimensions partition the cases
            assert sum(r.values["received"].value for r in rows) == total, by
    streets = metrics.breakdown(MONTH, "street")
    s = next(r for r in streets if r.code)
    sets, _ = truth.sets(MONTH.previous(), where=lambda c: c["street_code"] == s.code)
    assert s.values["close_ontime"].previous == pytest.approx(
        100 * len(sets["close_ontime"][1]) / len(sets["close_ontime"][0]))
    assert s.values["received"].last_year is None  # no data a year earlier: unknown, not 0


def test_street_principal_sees_only_its_street(metrics, truth):
    street = next(r.code for r in metrics.breakdown(YEAR, "street") if r.code)
    p = Principal(2, "s", "街道领导", "leader", "street", street)
    sets, mean = truth.sets(YEAR, where=lambda c: c["street_code"] == street)
    _check(metrics, sets, mean, metrics.summary(YEAR, principal=p),
           ids=lambda k, part: metrics.case_ids(YEAR, k, part=part, principal=p))
    assert {r.code for r in metrics.breakdown(YEAR, "street", principal=p)} == {street}
    ids = metrics.case_ids(YEAR, "received", principal=p)
    assert ids and all(truth.cases[i]["street_code"] == street for i in ids)
    assert [r.code for r in metrics.ranking(MONTH, "street", principal=p)] == [street]
    community = Principal(3, "c", "社区", "staff", "community", "")
    assert metrics.summary(YEAR, principal=community)["received"].value == 0


def test_trend_points_sum_to_the_period(metrics):
    points = metrics.trend(YEAR, "month")
    assert [p.key for p, _ in points] == [f"2025-{m:02d}" for m in range(1, 13)]
    assert sum(v["received"].value for _, v in points) == metrics.summary(YEAR)["received"].value
    june = dict((p.key, v) for p, v in points)["2025-06"]
    s = metrics.summary(MONTH)
    for k in METRICS:
        assert june[k].value == pytest.approx(s[k].value) if s[k].value is not None else june[k].value is None
    weeks = metrics.trend(MONTH, "week", metrics=["received"])
    assert weeks[0][0].start <= MONTH.start


def test_ranking_composite_score_and_ties(metrics):
    cfg = ranking_config()
    rows = metrics.ranking(MONTH, "department")
    assert rows and rows[0].rank == 1
    for r in rows:
        avail = {k: w for k, w in cfg["weights"].items() if r.values[k].value is not None}
        expect = round(sum(w * r.values[k].value for k, w in avail.items()) / sum(avail.values()), 2)
        assert r.score == expect
    for a, b in zip(rows, rows[1:], strict=False):
        assert a.score >= b.score
        assert b.rank == (a.rank if a.score == b.score else rows.index(b) + 1)


def test_latest_period_and_labels(metrics):
    assert metrics.latest_period("month").key == "2025-12"
    assert metrics.latest_period("year").key == "2025"
    assert {m.label for m in METRICS.values()} >= {"受理量", "按时签收率", "一次派单准确率"}
    assert all(len(m.definition) > 20 for m in METRICS.values())
    ch = {r.code: r.label for r in metrics.breakdown(YEAR, "channel")}
    assert ch["hotline"] == "12345热线"


def test_incremental_refresh_sees_actions_new_and_deleted_cases(fresh_db, tmp_path):
    """A workflow action through the case service (version bump), a new case and a deleted
    case reach the mirror with refresh(); the file mirror is reused by a new instance."""
    from datetime import datetime

    from jiedao.cases import service
    from jiedao.cases.models import Case

    db = fresh_db
    from jiedao.catalog.loader import sync_catalog

    with db.session() as s:
        sync_catalog(s)
    at = datetime(2025, 3, 3, 9, 0)
    with db.session() as s:
        c1, _ = service.create_case(s, text="路灯不亮，晚上很黑", channel="hotline", actor="t", at=at)
        c2, _ = service.create_case(s, text="小区门口垃圾没人清运", channel="web", actor="t", at=at)
        ids = (c1.id, c2.id)
    path = tmp_path / "m.duckdb"
    m = Metrics(db, path=path, refresh_seconds=3600)
    assert m.refresh(force=True) == 2
    p = Period.parse("2025-03")
    assert m.summary(p)["received"].value == 2
    assert m.summary(p)["first_dispatch"].denominator == 0
    assert m.refresh(force=True) == 0
    dept = sa.select(sa.text("code FROM catalog_department LIMIT 1"))
    with db.session() as s:
        code = s.execute(dept).scalar_one()
        service.act(s, ids[0], "analyse", actor="op", at=at + timedelta(minutes=5))
        service.act(s, ids[0], "dispatch", actor="op", at=at + timedelta(minutes=10),
                    main=(code, at + timedelta(days=3)))
    assert m.refresh() == 0  # throttled
    assert m.refresh(force=True) == 1
    v = m.summary(p)
    assert v["first_dispatch"].denominator == 1 and v["first_dispatch"].numerator == 1
    assert m.summary(p, filters={"department": code})["received"].value == 1
    with db.session() as s:
        service.act(s, ids[0], "return_", actor="h", at=at + timedelta(hours=1), index=0, reason="不属于本部门")
        c3, _ = service.create_case(s, text="噪音扰民，施工到深夜", channel="app", actor="t", at=at)
        s.delete(s.get(Case, ids[1]))
    assert m.refresh(force=True) == 3
    v = m.summary(p)
    assert v["received"].value == 2
    assert v["first_dispatch"].numerator == 0 and v["sign_ontime"].numerator == 1
    assert ids[1] not in m.case_ids(p, "received") and c3.id in m.case_ids(p, "received")
    m.close()
    m2 = Metrics(db, path=path, refresh_seconds=3600)
    assert m2.mirror.path == path
    assert m2.refresh(force=True) == 0  # the file kept the mirror
    assert m2.summary(p)["received"].value == 2
    m2.close()
    m3 = Metrics(db, path=path, refresh_seconds=3600)  # a restarted server: no key diff needed
    assert m3.refresh() == 0 and m3.mirror.timings == {}
    assert m3.summary(p)["received"].value == 2 and m3.as_of is not None
    with db.session() as s:
        service.act(s, c3.id, "analyse", actor="op", at=at + timedelta(hours=2))
    m3.close()
    m4 = Metrics(db, path=path, refresh_seconds=3600)  # changed while no process watched
    assert m4.refresh() == 1
    m4.close()


def test_cli_refresh_prints_the_latest_month(demo_db):
    import typer
    from typer.testing import CliRunner

    from jiedao.cockpit.cli import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test root"""

    register(app)
    r = CliRunner().invoke(app, ["cockpit", "refresh"])
    assert r.exit_code == 0, r.output
    assert "镜像已同步" in r.output and "2025年12月" in r.output and "按时办结率" in r.output


def test_mirror_file_locked_by_another_process_falls_back_to_memory(fresh_db, tmp_path):
    import subprocess
    import sys

    path = tmp_path / "locked.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
         "c.execute('CREATE TABLE x (i INT)'); print('ready', flush=True); time.sleep(60)", str(path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        m = Metrics(fresh_db, path=path, refresh_seconds=3600)
        assert m.mirror.path is None  # in-memory for this process
        assert m.refresh(force=True) == 0
        assert m.latest_period() is None and m.summary("2025-06")["received"].value == 0
        m.close()
    finally:
        holder.kill()
        holder.wait()
