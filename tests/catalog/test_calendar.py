"""Concrete working-calendar cases: official holidays, 调休 make-up days, overrides, SLAs."""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta

import pytest

from jiedao.catalog.calendar import (
    PACKAGED_CALENDAR,
    Sla,
    WorkCalendar,
    get_calendar,
    load_calendar,
    parse_calendar,
    parse_sla,
)
from jiedao.errors import ValidationError


@pytest.fixture(scope="module")
def cal() -> WorkCalendar:
    return load_calendar(PACKAGED_CALENDAR)


def test_national_day_2025(cal):
    assert cal.is_workday(date(2025, 9, 28))  # Sunday, make-up workday
    assert cal.is_workday(date(2025, 10, 11))  # Saturday, make-up workday
    for d in range(1, 9):
        assert not cal.is_workday(date(2025, 10, d)), d
    assert cal.is_workday(date(2025, 10, 9))
    # 16:00 on 30 Sep + 5 working days of 7 office hours: 1.5h that day, then 9, 10, 11 (Sat),
    # 13 Oct full days, and 5.5h on 14 Oct -> 16:00.
    assert cal.deadline(datetime(2025, 9, 30, 16, 0), "5wd") == datetime(2025, 10, 14, 16, 0)
    assert cal.deadline(datetime(2025, 9, 30, 16, 0), "2wh") == datetime(2025, 10, 9, 9, 0)
    # Natural hours run through the holiday.
    assert cal.deadline(datetime(2025, 10, 1, 23, 0), "2h") == datetime(2025, 10, 2, 1, 0)
    assert cal.deadline(datetime(2025, 10, 1, 9, 0), "3d") == datetime(2025, 10, 4, 9, 0)


def test_spring_festival_2026(cal):
    assert cal.is_workday(date(2026, 2, 14))  # Saturday make-up day
    assert cal.is_workday(date(2026, 2, 28))  # Saturday make-up day
    for d in range(15, 24):
        assert not cal.is_workday(date(2026, 2, d)), d
    # Friday 13 Feb 17:00: 0.5h, then Sat 14 Feb is a workday (7h), then the holiday, then
    # 24 Feb onwards. 1wd = 7h -> 0.5h + 6.5h = Sat 14 Feb 17:00; 2wd -> Tue 24 Feb 17:00.
    assert cal.deadline(datetime(2026, 2, 13, 17, 0), "1wd") == datetime(2026, 2, 14, 17, 0)
    assert cal.deadline(datetime(2026, 2, 13, 17, 0), "2wd") == datetime(2026, 2, 24, 17, 0)
    assert cal.working_seconds_between(datetime(2026, 2, 14, 17, 30), datetime(2026, 2, 24, 8, 30)) == 0


def test_sept_30_2026_example_from_readme(cal):
    assert cal.deadline(datetime(2026, 9, 30, 16, 0), "5wd") == datetime(2026, 10, 13, 16, 0)


def test_office_hours_walk(cal):
    mon = datetime(2025, 3, 3)  # an ordinary Monday
    # Start in the lunch break: counting begins at 14:00.
    assert cal.deadline(mon.replace(hour=12, minute=30), "1wh") == mon.replace(hour=15)
    # Ending exactly when the morning interval closes gives 12:00, not 14:00.
    assert cal.deadline(mon.replace(hour=11), "1wh") == mon.replace(hour=12)
    # Start before opening, at night, and on a weekend.
    assert cal.deadline(mon.replace(hour=6), "1wd") == mon.replace(hour=17, minute=30)
    assert cal.deadline(mon.replace(hour=20), "1wh") == datetime(2025, 3, 4, 9, 30)
    assert cal.deadline(datetime(2025, 3, 1, 10), "1wd") == mon.replace(hour=17, minute=30)
    assert cal.next_work_start(mon.replace(hour=9)) == mon.replace(hour=9)
    assert cal.next_work_start(mon.replace(hour=12)) == mon.replace(hour=14)
    assert cal.next_work_start(datetime(2025, 3, 1, 10)) == mon.replace(hour=8, minute=30)
    assert cal.working_seconds_between(mon, mon + timedelta(days=7)) == 5 * 7 * 3600
    assert cal.working_seconds_between(mon + timedelta(days=1), mon) == 0
    assert cal.day_seconds == 7 * 3600


def test_parse_sla():
    assert parse_sla("2h") == Sla("h", 2)
    assert parse_sla(" 5wd ") == Sla("wd", 5)
    assert parse_sla("4wh") == Sla("wh", 4)
    assert parse_sla("3d") == Sla("d", 3)
    assert str(parse_sla("5wd")) == "5wd"
    assert parse_sla("5wd").label() == "5个工作日"
    for bad in ["", "5", "wd", "0wd", "-1h", "1.5wd", "5 days", "5WD", 5, None]:
        with pytest.raises(ValidationError) as e:
            parse_sla(bad)
        assert e.value.problems[0].field == "sla"


def test_override_holiday_changes_deadline(tmp_path, cal):
    start = datetime(2026, 3, 4, 9, 0)  # Wednesday
    assert cal.deadline(start, "1wd") == datetime(2026, 3, 5, 9, 0)
    p = tmp_path / "calendar.yaml"
    p.write_text(
        'office_hours: ["08:30-12:00", "14:00-17:30"]\n'
        "overrides:\n  2026:\n    holidays: [2026-03-05]\n    workdays: []\n",
        encoding="utf-8")
    custom = load_calendar(p)
    assert not custom.is_workday(date(2026, 3, 5))
    assert custom.is_workday(date(2026, 3, 6))
    assert custom.deadline(start, "1wd") == datetime(2026, 3, 6, 9, 0)
    # Chinese calendar data still applies to the rest of the overridden year.
    assert not custom.is_workday(date(2026, 10, 1))


def test_override_year_unknown_to_chinese_calendar(tmp_path, caplog):
    p = tmp_path / "calendar.yaml"
    p.write_text(
        "overrides:\n  2031:\n    holidays: ['2031-01-01', '2031-01-20..2031-01-24']\n"
        "    workdays: [2031-01-18]\n", encoding="utf-8")
    c = load_calendar(p)
    with caplog.at_level(logging.WARNING, logger="jiedao.catalog.calendar"):
        assert not c.is_workday(date(2031, 1, 1))  # Wednesday, declared holiday
        assert not c.is_workday(date(2031, 1, 22))
        assert c.is_workday(date(2031, 1, 18))  # Saturday make-up
        assert c.is_workday(date(2031, 1, 27))
    assert not caplog.records  # the year is known through the override
    assert c.known_year(2031) and c.known_year(2025)
    assert c.special_days(2031) == {
        "holidays": [date(2031, 1, 1), date(2031, 1, 20), date(2031, 1, 21), date(2031, 1, 22),
                     date(2031, 1, 23), date(2031, 1, 24)],
        "workdays": [date(2031, 1, 18)]}


def test_unknown_year_falls_back_to_weekdays_and_warns_once(caplog):
    c = WorkCalendar()
    with caplog.at_level(logging.WARNING, logger="jiedao.catalog.calendar"):
        assert c.is_workday(date(2040, 10, 1))  # a Monday; no holiday data for 2040
        assert not c.is_workday(date(2040, 10, 6))  # Saturday
        c.deadline(datetime(2040, 1, 2, 9), "30wd")
    warnings = [r for r in caplog.records if "2040" in r.getMessage()]
    assert len(warnings) == 1
    assert not c.known_year(2040)


@pytest.mark.parametrize("text, field", [
    ("overrides:\n  2027:\n    holidays: [2027-02-30]\n", "overrides.2027.holidays[1]"),
    ("overrides:\n  2027:\n    holidays: ['2027-13-01']\n", "overrides.2027.holidays[1]"),
    ("overrides:\n  2027:\n    holidays: ['2027-02-10..2027-02-01']\n", "overrides.2027.holidays[1]"),
    ("overrides:\n  2027:\n    holidays: [2026-12-31]\n", "overrides.2027.holidays[1]"),
    ("overrides:\n  2027:\n    holidays: [2027-02-06]\n    workdays: [2027-02-06]\n", "overrides.2027"),
    ("overrides:\n  2027:\n    holiday: [2027-02-06]\n", "overrides.2027"),
    ("overrides:\n  twenty:\n    holidays: []\n", "overrides.twenty"),
    ("office_hours: ['08:30-12:00', '11:00-17:30']\n", "office_hours[2]"),
    ("office_hours: ['14:00-17:30', '08:30-12:00']\n", "office_hours[2]"),
    ("office_hours: ['12:00-08:30']\n", "office_hours[1]"),
    ("office_hours: ['8.30-12']\n", "office_hours[1]"),
    ("office_hours: ['08:30-25:00']\n", "office_hours[1]"),
    ("office_hours: []\n", "office_hours"),
    ("timezone: Mars/Olympus\n", "timezone"),
    ("officehours: ['08:30-12:00']\n", "officehours"),
])
def test_bad_calendar_file_is_rejected_naming_the_field(tmp_path, text, field):
    p = tmp_path / "calendar.yaml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ValidationError) as e:
        load_calendar(p)
    fields = [pr.field for pr in e.value.problems]
    assert field in fields, fields
    assert all(pr.source == "calendar.yaml" for pr in e.value.problems)


def test_calendar_yaml_syntax_error_names_line(tmp_path):
    p = tmp_path / "calendar.yaml"
    p.write_text("office_hours:\n  - '08:30-12:00\n", encoding="utf-8")
    with pytest.raises(ValidationError) as e:
        load_calendar(p)
    assert e.value.problems[0].row is not None


def test_workcalendar_constructor_validates():
    with pytest.raises(ValidationError):
        WorkCalendar([(time(9), time(12)), (time(11), time(13))])
    with pytest.raises(ValidationError):
        WorkCalendar(overrides={2030: {"holidays": {date(2030, 5, 1)}, "workdays": {date(2030, 5, 1)}}})


def test_parse_calendar_accepts_mapping_intervals():
    c = parse_calendar({"office_hours": [{"start": "09:00", "end": "12:00"},
                                         {"start": "13:30", "end": "18:00"}]})
    assert c.day_seconds == 7.5 * 3600


def test_get_calendar_uses_catalog_dir(tmp_path, monkeypatch):
    from jiedao.config import get_settings

    (tmp_path / "calendar.yaml").write_text("office_hours: ['09:00-17:00']\n", encoding="utf-8")
    monkeypatch.setenv("JIEDAO_CATALOG_DIR", str(tmp_path))
    get_settings.cache_clear()
    get_calendar.cache_clear()
    try:
        assert get_calendar().day_seconds == 8 * 3600
        assert get_calendar() is get_calendar()
    finally:
        monkeypatch.delenv("JIEDAO_CATALOG_DIR")
        get_settings.cache_clear()
        get_calendar.cache_clear()
    assert get_calendar().day_seconds == 7 * 3600
