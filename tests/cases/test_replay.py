"""The demo year replayed through the real engine (small scale, inside the demo build):
transition logs re-apply cleanly through the workflow, closed cases are fully replied,
unsatisfied follow-ups reopen, SLA flags follow the rules, counts match."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from jiedao.cases import workflow as wf
from jiedao.cases.dispatch import Dispatcher
from jiedao.cases.models import (
    Assignment,
    Case,
    DispatchOverride,
    Event,
    ExtensionRequest,
    FollowUp,
    TransitionLog,
)
from jiedao.cases.replay import SYSTEM, FastCalendar, rates_from_db
from jiedao.cases.sla import DEFAULT_WARN_FRACTION, used_fraction
from jiedao.catalog.calendar import get_calendar
from jiedao.catalog.loader import load_catalog

UNTIL = datetime(2026, 1, 1)


@pytest.fixture(scope="module")
def replayed(demo_db):
    """The small demo (built with its year of appeals by ``build_demo``)."""
    with demo_db.session() as s:
        n = s.scalar(sa.select(sa.func.count()).select_from(Case))
    assert n > 1000, "build_demo replays the small year of appeals"
    return demo_db


@pytest.fixture(scope="module")
def rows(replayed):
    """Every replayed case with its children, grouped by case id.

    Other tests share the demo database and add cases of their own (received now, not in
    the demo year), so only the replay's cases are taken."""
    with replayed.session() as s:
        cases = {c.id: c for c in s.scalars(sa.select(Case).where(
            Case.created_by == SYSTEM, Case.received_at < UNTIL))}
        by = defaultdict(lambda: defaultdict(list))
        for model, key in ((Assignment, "assignments"), (TransitionLog, "transitions"),
                           (FollowUp, "followups")):
            for r in s.scalars(sa.select(model)):
                by[r.case_id][key].append(r)
        ext = defaultdict(list)
        for e in s.scalars(sa.select(ExtensionRequest).order_by(ExtensionRequest.id)):
            ext[e.assignment_id].append(e)
        overrides = defaultdict(list)
        for o in s.scalars(sa.select(DispatchOverride)):
            overrides[o.case_id].append(o)
        events = {e.id: e for e in s.scalars(sa.select(Event))}
        s.expunge_all()
    for d in by.values():
        d["assignments"].sort(key=lambda a: a.seq)
        d["transitions"].sort(key=lambda t: t.seq)
        d["followups"].sort(key=lambda f: f.at)
    return cases, by, ext, overrides, events


def test_counts_match(replayed, rows):
    from jiedao.demo.appeals import Places, generate_appeals

    cases, by, ext, _, events = rows
    with replayed.session() as s:
        appeals = list(generate_appeals(Places.from_session(s), load_catalog(), scale="small"))
        callers = len({c.caller_id for c in cases.values()})
        meta = json.loads(s.scalar(sa.text("SELECT value FROM jiedao_meta WHERE key = 'demo_appeals'")))
    assert len(cases) == len(appeals) == meta["appeals"]
    assert callers == len({a.phone for a in appeals})
    assert Counter(c.channel for c in cases.values()) == Counter(a.channel for a in appeals)
    assert sum(c.kind == "enterprise" for c in cases.values()) == sum(a.kind == "enterprise" for a in appeals)
    actions = Counter(t.action for cid in cases for t in by[cid]["transitions"])
    assert actions["analyse"] == len(cases)
    assert actions["follow_up"] == sum(len(by[cid]["followups"]) for cid in cases)
    assert actions["request_extension"] == sum(
        len(ext[a.id]) for cid in cases for a in by[cid]["assignments"])
    for cid, c in cases.items():
        d = by[cid]
        assert [a.seq for a in d["assignments"]] == list(range(len(d["assignments"])))
        assert [t.seq for t in d["transitions"]] == list(range(len(d["transitions"])))
        # one version per workflow action (a reopen is logged by the same follow-up action)
        assert c.version == len(d["transitions"]) - sum(t.action == "reopen" for t in d["transitions"])
    in_event = Counter(c.event_id for c in cases.values() if c.event_id is not None)
    assert set(in_event) <= set(events)
    assert all(events[e].case_count == n for e, n in in_event.items())
    assert max(in_event.values()) >= 3  # bursts became events with many callers


def _reapply(case, d, ext, overrides, dispatcher) -> wf.CaseState:
    """Re-apply a case's stored transition log through the (copying) workflow."""
    state = wf.CaseState()
    chosen = {o.at: o.chosen_matter for o in overrides}
    card_matter = (case.analysis or {}).get("matter_code")
    asg = d["assignments"]
    followups = {f.at: f for f in d["followups"]}
    ext_iter = {a.seq: iter(ext.get(a.id, [])) for a in asg}
    for t in d["transitions"]:
        w = wf.Workflow(state)
        i = t.assignment_seq
        if t.action == "analyse":
            state = w.analyse(t.at, t.actor)
        elif t.action == "dispatch":
            made = [a for a in asg if a.seq >= len(state.assignments) and a.dispatched_at == t.at]
            matter = chosen.get(t.at, card_matter)
            deadline = dispatcher.deadline(matter, case.urgency, t.at)
            main = next(a for a in made if a.role == "main")
            state = w.dispatch(t.at, t.actor, (main.department_code, deadline),
                               [(a.department_code, deadline) for a in made if a.role == "co"])
        elif t.action in ("sign", "start"):
            state = getattr(w, t.action)(t.at, t.actor, i)
        elif t.action == "return":
            state = w.return_(t.at, t.actor, i, t.reason)
        elif t.action == "reply":
            state = w.reply(t.at, t.actor, i, asg[i].reply)
        elif t.action == "request_extension":
            e = next(ext_iter[i])
            state = w.request_extension(t.at, t.actor, i, e.new_deadline, e.reason)
        elif t.action in ("approve_extension", "reject_extension"):
            state = w.decide_extension(t.at, t.actor, i, t.action == "approve_extension", t.reason)
        elif t.action == "supervise":
            state = w.supervise(t.at, t.actor, True, t.reason)
        elif t.action == "close":
            state = w.close(t.at, t.actor)
        elif t.action == "follow_up":
            f = followups[t.at]
            deadline = dispatcher.deadline(case.matter_code, case.urgency, t.at)
            state = w.follow_up(t.at, t.actor, f.satisfaction, deadline=deadline, comment=t.reason)
        elif t.action == "reopen":
            continue  # logged by follow_up itself
        else:  # pragma: no cover
            raise AssertionError(f"unexpected action {t.action}")
    return state


def test_transition_logs_replay_cleanly_through_the_workflow(rows):
    cases, by, ext, overrides, _ = rows
    dispatcher = Dispatcher(load_catalog(), get_calendar())
    for cid, case in cases.items():
        d = by[cid]
        state = _reapply(case, d, ext, overrides[cid], dispatcher)
        log = [(t.at, t.actor, t.action, t.from_state, t.to_state, t.reason, t.assignment_seq)
               for t in d["transitions"]]
        again = [(t.at, t.actor, t.action, t.from_state, t.to_state, t.reason, t.assignment)
                 for t in state.transitions]
        assert again == log, cid
        assert (state.state, state.version, state.reopen_count, state.satisfaction, state.supervised) == \
            (case.state, case.version, case.reopen_count, case.satisfaction, case.supervised), cid
        stored = [(a.department_code, a.role, a.state, a.round, a.deadline, a.signed_at, a.replied_at, a.reply)
                  for a in d["assignments"]]
        assert [(a.department, a.role, a.state, a.round, a.deadline, a.signed_at, a.replied_at, a.reply)
                for a in state.assignments] == stored, cid
        main = state.main()
        if main is not None:
            assert case.main_department_code == main.department


def test_closed_cases_are_fully_replied_and_unsatisfied_ones_reopen(rows):
    cases, by, _, _, _ = rows
    closed = reopened = 0
    for cid, case in cases.items():
        d = by[cid]
        rnd = case.reopen_count + 1
        if case.state in ("closed", "followed_up"):
            closed += 1
            current = [a for a in d["assignments"] if a.round == rnd and a.state in wf.ACTIVE]
            assert current and all(a.state == "replied" for a in current), cid
            assert case.closed_at is not None
        for f in d["followups"]:
            if f.satisfaction == "不满意" and f.round <= 2:
                reopened += 1
                assert any(a.round == f.round + 1 and a.role == "main" for a in d["assignments"]), cid
                assert any(t.action == "reopen" and t.at == f.at for t in d["transitions"]), cid
    assert closed > 0.9 * len(cases)
    assert reopened > 0


def test_sla_flags_follow_the_rules(rows):
    cases, by, _, _, _ = rows
    cal = get_calendar()
    for cid in cases:
        for a in by[cid]["assignments"]:
            if a.replied_at is not None:
                assert a.overdue == (a.replied_at > a.deadline)
                warned = a.overdue or used_fraction(cal, a.dispatched_at, a.deadline, a.replied_at) \
                    >= DEFAULT_WARN_FRACTION
                assert a.warned == warned
            elif a.state in ("pending", "signed", "in_progress"):  # swept at the end of the year
                assert a.overdue == (a.deadline <= UNTIL)


def test_rates_come_out_of_the_engine(replayed):
    with replayed.session() as s:
        r = rates_from_db(s)
        stats = s.execute(sa.text("SELECT COUNT(*) FILTER (WHERE action = 'return'), "
                                  "COUNT(*) FILTER (WHERE action = 'approve_extension') "
                                  "FROM cases_transition")).one()
    assert 0.9 < r["on_time_rate"] <= 1.0
    assert 0.9 < r["satisfaction_rate"] < 1.0
    assert r["satisfied"] > r["basically_satisfied"] > r["unsatisfied"] > 0
    assert stats[0] > 0 and stats[1] >= 0


def test_handlers_and_departments_exist(replayed):
    """Every actor of the log is a demo user or the system; every department exists."""
    with replayed.session() as s:
        users = set(s.scalars(sa.text("SELECT username FROM auth_user")))
        actors = set(s.scalars(sa.text("SELECT DISTINCT actor FROM cases_transition")))
        depts = set(s.scalars(sa.text("SELECT code FROM catalog_department")))
        used = set(s.scalars(sa.text("SELECT DISTINCT department_code FROM cases_assignment")))
    assert actors - {"system"} <= users
    assert used <= depts


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2025, 12, 31, 23, 59)),
       st.sampled_from(["2h", "4h", "1d", "4wh", "1wd", "2wd", "3wd", "5wd", "10wd", "15wd"]),
       st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=40)))
def test_fast_calendar_gives_the_calendars_answers(start, spec, later):
    cal = get_calendar()
    fast = FastCalendar(cal, date(2024, 12, 1), date(2026, 6, 30))
    assert fast.deadline(start, spec) == cal.deadline(start, spec)
    assert fast.in_office_hours(start) == cal.in_office_hours(start)
    assert fast.next_work_start(start) == cal.next_work_start(start)
    assert fast.working_seconds_between(start, start + later) == \
        pytest.approx(cal.working_seconds_between(start, start + later), abs=1e-6)


def test_worker_and_ordered_parts_give_the_analyzers_card(replayed):
    """The replay's split analysis — the worker's part (category, place, urgency, suggestion,
    what to confirm) and the ordered part (event, duplicates, repeat caller) — yields what
    Analyzer.analyse yields, and the stored card JSON is Analysis.to_card()'s."""
    import dataclasses

    from jiedao.cases.replay import (
        Ordered,
        _CaseRow,
        build_pipeline,
        card_head,
        card_json,
    )
    from jiedao.demo.appeals import Places, generate_appeals

    catalog = load_catalog()
    with replayed.session() as s:
        appeals = list(generate_appeals(Places.from_session(s), catalog, scale="small"))
        pipe = build_pipeline(s, [(a.text, a.matter_code) for a in appeals[:300]], catalog, get_calendar())
        sample = appeals[300:360]
        # what _prepare computes per chunk in a worker: one batch prediction, then the places
        cats = pipe.analyzer.classify_many([a.text for a in sample])
        wheres = [pipe.analyzer.locator.locate(a.text, location_text=a.location_text) for a in sample]
        ordered = Ordered(pipe.analyzer)
        for i, (a, cat, where) in enumerate(zip(sample, cats, wheres, strict=True)):
            row = dict(id=10_000_000 + i, text=a.text, location_text=a.location_text, lon=None, lat=None,
                       received_at=a.received_at, caller_id=None)
            mine = pipe.analyzer._card(cat, a.text, where)
            event_id, dups, repeat, notes = ordered.decide(row["id"], None, mine.matter_code, mine.location,
                                                           a.text, a.received_at)
            theirs = pipe.analyzer.analyse(s, _CaseRow(**row))
            for f in ("matter_code", "confidence", "candidates", "method", "urgency", "location",
                      "suggestion", "needs_confirmation"):
                assert getattr(mine, f) == getattr(theirs, f), f
            full = dataclasses.replace(mine, event_id=7, duplicates=dups, repeat_caller=repeat,
                                       notes=mine.notes + notes)
            want = json.loads(json.dumps(full.to_card(), ensure_ascii=False))
            assert json.loads(card_json(card_head(mine), 7, dups, repeat, mine.notes + notes)) == want
        s.rollback()


def test_worker_processes_change_nothing(replayed):
    """The same year replayed in this process and with forked workers (and places located
    ahead during training) writes the same rows, id for id."""
    from dbkit import clone_database

    from jiedao.cases.replay import TABLE_COLUMNS, _next_id, replay_year

    db = clone_database(replayed, "replay_workers")
    results = []
    for workers in (0, 2):
        with db.session() as s:
            bases = {t: _next_id(s.connection(), t) for t in TABLE_COLUMNS}
            r = replay_year(s, seed=11, scale="small", total=600, workers=workers)
            s.flush()
            results.append((r.appeals, r.evaluation, r.rates, _rows_in(s, bases)))
            s.rollback()
    assert results[0][0] > 500
    assert results[0] == results[1]


def test_deferred_indexes_write_the_same_rows_and_restore_the_schema(replayed):
    """PostgreSQL's large-replay mode (the case tables' secondary indexes and foreign keys dropped
    for the load and recreated after it, rows written by the writer thread) writes the same rows
    as the default and leaves the same indexes and constraints, all validated."""
    from dbkit import clone_database

    from jiedao.cases.replay import TABLE_COLUMNS, _next_id, replay_year

    if sa.make_url(replayed.url).get_backend_name() != "postgresql":
        pytest.skip("PostgreSQL only: SQLite keeps its indexes")
    db = clone_database(replayed, "replay_deferred")
    results = []
    for defer in (False, True):
        with db.session() as s:
            before = _schema(s)
            bases = {t: _next_id(s.connection(), t) for t in TABLE_COLUMNS}
            r = replay_year(s, seed=11, scale="small", total=600, workers=0, defer_indexes=defer)
            s.flush()
            assert ("replay.deferred_indexes" in r.timings) is defer
            assert _schema(s) == before
            results.append((r.appeals, r.evaluation, r.rates, _rows_in(s, bases)))
            s.rollback()
    assert results[0][0] > 500
    assert results[0] == results[1]
    indexes, keys = before
    assert sum(t == "cases_transition" for t, *_ in indexes) >= 3  # pkey, case_id, at
    assert sum(t == "cases_assignment" for t, *_ in keys) >= 2


def test_writer_thread_hands_the_servers_error_to_the_caller(replayed):
    """A COPY that the server refuses in the writer thread is raised in the caller at close."""
    import psycopg

    from jiedao.cases.replay import Writer

    if sa.make_url(replayed.url).get_backend_name() != "postgresql":
        pytest.skip("the writer thread runs on PostgreSQL only")
    with replayed.session() as s:
        conn = s.connection()
        taken = conn.execute(sa.text("SELECT id, first_seen FROM cases_caller ORDER BY id LIMIT 1")).one()
        with Writer(conn, background=True) as w:
            w.insert("cases_caller", [(taken.id, "x" * 64, "13800000000", None, None, taken.first_seen, 1)])
            with pytest.raises(psycopg.errors.UniqueViolation):
                w.close()
        s.rollback()


def test_copy_lines_read_back_whatever_their_text_holds(replayed):
    """Child rows sent as COPY text lines (as ``_child_rows`` formats them for PostgreSQL; ids
    prefixed by the writer) read back exactly, with tabs, newlines, backslashes and NULLs."""
    from jiedao.cases.replay import CopyLines, Writer, _cn, _ct, _cts

    if sa.make_url(replayed.url).get_backend_name() != "postgresql":
        pytest.skip("COPY lines are written on PostgreSQL only")
    reason = "地址\t不清\n请\\补充\r \\N"
    at = datetime(2025, 3, 4, 5, 6, 7, 890)
    with replayed.session() as s:
        conn = s.connection()
        cid = conn.execute(sa.text("SELECT MIN(id) FROM cases_case")).scalar_one()
        base = conn.execute(sa.text("SELECT COALESCE(MAX(id), 0) + 1000 FROM cases_transition")).scalar_one()
        lines = CopyLines(f"{cid}\t{seq}\t{_cts(at)}\t{_ct('operator01')}\t{_ct('return')}\t{_ct('dispatched')}\t"
                          f"{_ct('received')}\t{_ct(text)}\t{_cn(asg)}\n"
                          for seq, (text, asg) in enumerate(((reason, 3), (None, None)), 1000))  # seq past the case's own
        lines.base = base
        with Writer(conn, background=True) as w:
            w.insert("cases_transition", lines)
            w.close()
        got = conn.execute(sa.text("SELECT id, seq, at, reason, assignment_seq FROM cases_transition "
                                   "WHERE id >= :b ORDER BY id"), {"b": base}).all()
        s.rollback()
    assert [tuple(r) for r in got] == [(base, 1000, at, reason, 3), (base + 1, 1001, at, None, None)]


def _schema(session) -> tuple[list, list]:
    """Indexes and constraints (with their definitions and validity) of the replay's tables."""
    from jiedao.cases.replay import TABLE_COLUMNS

    t = {"t": list(TABLE_COLUMNS)}
    indexes = session.execute(sa.text(
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE tablename = ANY(:t) ORDER BY 1, 2"), t).all()
    keys = session.execute(sa.text(
        "SELECT cl.relname, c.conname, pg_get_constraintdef(c.oid), c.convalidated FROM pg_constraint c "
        "JOIN pg_class cl ON cl.oid = c.conrelid WHERE cl.relname = ANY(:t) ORDER BY 1, 2"), t).all()
    return [tuple(r) for r in indexes], [tuple(r) for r in keys]


def _rows_in(session, bases: dict[str, int]) -> dict[str, list]:
    from jiedao.cases.replay import TABLE_COLUMNS

    out = {}
    for t, cols in TABLE_COLUMNS.items():
        rows = session.execute(sa.text(f"SELECT {', '.join(cols)} FROM {t} WHERE id >= :b ORDER BY id"),
                               {"b": bases[t]}).all()
        out[t] = [tuple(json.dumps(v, sort_keys=True) if isinstance(v, dict) else v for v in r) for r in rows]
    return out
