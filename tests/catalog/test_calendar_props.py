"""Property tests of SLA deadlines over the real calendar (2024–2026 holidays and 调休)."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from jiedao.catalog.calendar import PACKAGED_CALENDAR, Sla, load_calendar

CAL = load_calendar(PACKAGED_CALENDAR)

starts = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2026, 10, 31))
working_slas = st.builds(Sla, unit=st.sampled_from(["wh", "wd"]), amount=st.integers(1, 40))
any_slas = st.builds(Sla, unit=st.sampled_from(["h", "d", "wh", "wd"]), amount=st.integers(1, 40))


@settings(max_examples=120, deadline=None)
@given(starts, working_slas)
def test_working_deadline_is_on_a_workday_inside_office_hours(start, sla):
    due = CAL.deadline(start, sla)
    assert CAL.is_workday(due.date()), (start, sla, due)
    assert CAL.in_office_hours(due), (start, sla, due)
    assert any(
        datetime.combine(due.date(), s) < due <= datetime.combine(due.date(), e)
        for s, e in CAL.office_hours), (start, sla, due)


@settings(max_examples=100, deadline=None)
@given(starts, any_slas, st.integers(0, 10))
def test_deadline_is_monotonic_in_the_amount(start, sla, extra):
    bigger = Sla(sla.unit, sla.amount + extra)
    assert CAL.deadline(start, sla) <= CAL.deadline(start, bigger)


@settings(max_examples=100, deadline=None)
@given(starts, st.integers(1, 40))
def test_working_day_deadline_never_before_start(start, n):
    due = CAL.deadline(start, f"{n}wd")
    assert due > start
    # n working days never end sooner than n natural days' worth of office time would allow.
    assert due - start >= timedelta(seconds=CAL.day_seconds * n)


@settings(max_examples=120, deadline=None)
@given(starts, st.integers(1, 80))
def test_working_hours_round_trip(start, n):
    due = CAL.deadline(start, f"{n}wh")
    assert CAL.working_seconds_between(start, due) == n * 3600
    assert CAL.working_time_between(start, due) == timedelta(hours=n)


@settings(max_examples=100, deadline=None)
@given(starts, st.integers(1, 20))
def test_working_days_equal_whole_office_days(start, n):
    due = CAL.deadline(start, f"{n}wd")
    assert CAL.working_seconds_between(start, due) == n * CAL.day_seconds
    assert CAL.deadline(CAL.next_work_start(start), f"{n}wd") == due


@settings(max_examples=100, deadline=None)
@given(starts)
def test_next_work_start_is_open_and_nothing_is_skipped(start):
    nxt = CAL.next_work_start(start)
    assert nxt >= start
    assert CAL.is_workday(nxt.date()) and CAL.in_office_hours(nxt)
    assert CAL.working_seconds_between(start, nxt) == 0
