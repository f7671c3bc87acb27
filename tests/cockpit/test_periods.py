"""Periods: parsing, keys, labels, previous / last year, split."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jiedao.cockpit.periods import GRAINS, Period
from jiedao.errors import ValidationError

days = st.dates(min_value=date(1990, 1, 1), max_value=date(2090, 12, 31))
grains = st.sampled_from(GRAINS)
# never depend on wall-clock speed: the machine may be busy
relaxed = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_parse_forms_and_labels():
    assert Period.parse("2025-06") == Period("month", date(2025, 6, 1), date(2025, 7, 1))
    assert Period.parse("2025-06").label == "2025年6月"
    assert Period.parse("2025").label == "2025年"
    assert Period.parse("2025").end == date(2026, 1, 1)
    assert Period.parse("2025-Q2") == Period("quarter", date(2025, 4, 1), date(2025, 7, 1))
    assert Period.parse("2025-Q2").label == "2025年第2季度"
    w = Period.parse("2025-W23")
    assert (w.start, w.end, w.label) == (date(2025, 6, 2), date(2025, 6, 9), "2025年第23周")
    d = Period.parse("2025-06-03")
    assert (d.start, d.end, d.label, d.key) == (date(2025, 6, 3), date(2025, 6, 4), "2025年6月3日", "2025-06-03")
    # ISO week 1 of 2026 starts in 2025
    assert Period.parse("2026-W01").start == date(2025, 12, 29)


@pytest.mark.parametrize("bad", ["", "2025-13", "2025-W54", "2025-Q5", "25-06", "2025/06", "2025-02-30",
                                 "2025-W53"])
def test_parse_rejects(bad):
    with pytest.raises(ValidationError):
        Period.parse(bad)


def test_previous_last_year_split_examples():
    p = Period.parse("2025-01")
    assert p.previous().key == "2024-12"
    assert p.last_year().key == "2024-01"
    assert Period.parse("2025-Q1").previous().key == "2024-Q4"
    assert Period.parse("2024-02-29").last_year().key == "2023-02-28"
    assert Period.parse("2020-W53").last_year().key == "2019-W52"
    assert [x.key for x in Period.parse("2025").split("month")][:3] == ["2025-01", "2025-02", "2025-03"]
    assert len(Period.parse("2025").split("month")) == 12
    assert len(Period.parse("2025").split("quarter")) == 4
    assert len(Period.parse("2025-06").split("day")) == 30
    weeks = Period.parse("2025").split("week")
    assert weeks[0].key == "2025-W01" and weeks[-1].key == "2026-W01"  # overlapping edge weeks


@relaxed
@given(days, grains)
def test_key_round_trip(day, grain):
    p = Period.of(grain, day)
    assert p.contains(day)
    assert Period.parse(p.key) == p
    assert p.label.startswith(f"{p.start.isocalendar()[0] if grain == 'week' else p.start.year}年")


@relaxed
@given(days.filter(lambda d: d.year > 1990), grains)
def test_previous_and_last_year(day, grain):
    p = Period.of(grain, day)
    prev = p.previous()
    assert prev.grain == grain and prev.end == p.start
    assert prev.next() == p
    ly = p.last_year()
    assert ly.grain == grain
    if grain == "week":
        assert ly.start.isocalendar()[0] == p.start.isocalendar()[0] - 1
    else:
        assert ly.start.year == p.start.year - 1
        if grain != "day":
            assert (ly.start.month, ly.end - ly.start <= p.end - p.start + timedelta(days=1)) == \
                (p.start.month, True)


@relaxed
@given(days, st.sampled_from(["month", "quarter", "year"]), grains)
def test_split_covers(day, grain, sub):
    p = Period.of(grain, day)
    if GRAINS.index(sub) > GRAINS.index(grain):
        return
    parts = p.split(sub)
    assert parts[0].start <= p.start and parts[-1].end >= p.end
    for a, b in zip(parts, parts[1:], strict=False):
        assert a.end == b.start
