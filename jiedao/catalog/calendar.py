"""Working-day calendar: Chinese public holidays, 调休 make-up days, office hours, SLA deadlines.

Which days are workdays, in this order of precedence:

1. the override file (``calendar.yaml`` → ``overrides: {year: {holidays, workdays}}``);
2. the ``chinese_calendar`` package for the years it knows (2004–2026 in version 1.11);
3. otherwise Monday–Friday, with one warning per year in the log, because the official
   schedule of that year is unknown and deadlines may be off by the holidays. A year that
   has an entry under ``overrides`` counts as known (no warning).

All datetimes are naive local time (see :mod:`jiedao.clock`).

SLA specs (``parse_sla``): ``"<n>h"`` natural hours (round the clock), ``"<n>d"`` natural
days, ``"<n>wh"`` working hours (walked through office intervals on workdays) and
``"<n>wd"`` working days = n × the office time of one day, counted from the start (a start
outside office hours begins at the next office opening). A working-time deadline that ends
exactly when an interval closes is that closing time (e.g. 12:00), not the next opening.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from jiedao.errors import Problem, ValidationError

log = logging.getLogger(__name__)

SLA_UNITS = {"h": "自然小时", "d": "自然日", "wh": "工作小时", "wd": "工作日"}
_SLA_RE = re.compile(r"^\s*(\d+)\s*(wh|wd|h|d)\s*$")
_HHMM_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DEFAULT_OFFICE_HOURS = ((time(8, 30), time(12, 0)), (time(14, 0), time(17, 30)))
PACKAGED_CALENDAR = Path(__file__).resolve().parent / "data" / "calendar.yaml"


@dataclass(frozen=True)
class Sla:
    """A parsed SLA: ``amount`` of ``unit`` (one of h, d, wh, wd)."""

    unit: str
    amount: int

    @property
    def working(self) -> bool:
        """True for working hours/days, which only run during office hours on workdays."""
        return self.unit in ("wh", "wd")

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"

    def label(self) -> str:
        """Human text, e.g. ``5个工作日``."""
        names = {"h": "小时", "d": "天", "wh": "个工作小时", "wd": "个工作日"}
        return f"{self.amount}{names[self.unit]}"


def parse_sla(spec: str | Sla) -> Sla:
    """Parse ``"2h"``, ``"3d"``, ``"4wh"`` or ``"5wd"`` (positive whole numbers) into an Sla.

    Raises ValidationError (field ``sla``) for anything else.
    """
    if isinstance(spec, Sla):
        return spec
    if not isinstance(spec, str):
        raise ValidationError(Problem(
            f"时限 {spec!r} 格式不对：应为文本，如 2h、3d、4wh、5wd", field="sla"))
    m = _SLA_RE.match(spec)
    if not m:
        raise ValidationError(Problem(
            f"时限 {spec!r} 格式不对：应为 <数字><单位>，单位 h=自然小时、d=自然日、"
            f"wh=工作小时、wd=工作日，例如 2h、5wd", field="sla"))
    amount = int(m.group(1))
    if amount <= 0:
        raise ValidationError(Problem(f"时限 {spec!r} 必须大于 0", field="sla"))
    return Sla(unit=m.group(2), amount=amount)


def _parse_hhmm(text: str) -> time | None:
    m = _HHMM_RE.match(text)
    if not m:
        return None
    h, mi = int(m.group(1)), int(m.group(2))
    if h == 24 and mi == 0:
        return None  # intervals must end within the day; use 23:59 for "until midnight"
    if not (0 <= h <= 23 and 0 <= mi <= 59):
        return None
    return time(h, mi)


class WorkCalendar:
    """Workdays and office hours; computes SLA deadlines and working time between instants.

    ``office_hours``: sequence of (start, end) ``datetime.time`` pairs, sorted, not overlapping.
    ``overrides``: {year: {"holidays": set[date], "workdays": set[date]}}; overrides win over
    chinese_calendar; a year in ``overrides`` counts as known.
    """

    def __init__(self, office_hours=DEFAULT_OFFICE_HOURS, overrides: dict | None = None,
                 timezone: str = "Asia/Shanghai", source: str | None = None):
        problems = _check_office_hours(office_hours, source)
        if problems:
            raise ValidationError(problems)
        self.office_hours: tuple[tuple[time, time], ...] = tuple(
            (s, e) for s, e in office_hours)
        self.timezone = timezone
        self.source = source
        self.overrides: dict[int, dict[str, frozenset[date]]] = {}
        self._holidays: set[date] = set()
        self._workdays: set[date] = set()
        for year, ov in (overrides or {}).items():
            hol = frozenset(ov.get("holidays", ()))
            wor = frozenset(ov.get("workdays", ()))
            both = hol & wor
            if both:
                raise ValidationError([Problem(
                    f"{d.isoformat()} 同时列在 holidays 和 workdays 中", source=source,
                    field=f"overrides.{year}") for d in sorted(both)])
            self.overrides[int(year)] = {"holidays": hol, "workdays": wor}
            self._holidays |= hol
            self._workdays |= wor
        self.day_seconds = sum(
            (datetime.combine(date.min, e) - datetime.combine(date.min, s)).total_seconds()
            for s, e in self.office_hours)
        self._cache: dict[date, bool] = {}
        self._warned: set[int] = set()

    # ---- days -------------------------------------------------------------------------
    def is_workday(self, day: date | datetime) -> bool:
        """True when ``day`` is a working day (holidays off, 调休 make-up days on)."""
        if isinstance(day, datetime):
            day = day.date()
        hit = self._cache.get(day)
        if hit is None:
            hit = self._cache[day] = self._compute_workday(day)
        return hit

    def _compute_workday(self, day: date) -> bool:
        if day in self._holidays:
            return False
        if day in self._workdays:
            return True
        try:
            import chinese_calendar

            return bool(chinese_calendar.is_workday(day))
        except NotImplementedError:
            if day.year not in self.overrides and day.year not in self._warned:
                self._warned.add(day.year)
                log.warning(
                    "工作日历不知道 %s 年的法定节假日安排，按周一至周五计算；"
                    "请在 calendar.yaml 的 overrides 中补充该年安排", day.year)
        return day.weekday() < 5

    def is_holiday(self, day: date | datetime) -> bool:
        """The opposite of :meth:`is_workday` (weekends included)."""
        return not self.is_workday(day)

    def known_year(self, year: int) -> bool:
        """True when the holiday schedule of ``year`` is known (override or chinese_calendar)."""
        if year in self.overrides:
            return True
        try:
            import chinese_calendar

            chinese_calendar.is_workday(date(year, 6, 1))
            return True
        except NotImplementedError:
            return False

    def special_days(self, year: int) -> dict[str, list[date]]:
        """Holidays falling on Mon–Fri and make-up workdays on weekends, for display."""
        hol, wor = [], []
        d = date(year, 1, 1)
        while d.year == year:
            w = self.is_workday(d)
            if d.weekday() < 5 and not w:
                hol.append(d)
            elif d.weekday() >= 5 and w:
                wor.append(d)
            d += timedelta(days=1)
        return {"holidays": hol, "workdays": wor}

    # ---- office time ------------------------------------------------------------------
    def _intervals(self, day: date):
        """Office intervals of ``day`` as datetimes (none on non-workdays)."""
        if not self.is_workday(day):
            return
        for s, e in self.office_hours:
            yield datetime.combine(day, s), datetime.combine(day, e)

    def _intervals_from(self, dt: datetime, max_days: int = 3700):
        """Office intervals ending after ``dt``, in time order, clipped to start at ``dt``."""
        day = dt.date()
        for _ in range(max_days):
            for s, e in self._intervals(day):
                if e > dt:
                    yield max(s, dt), e
            day += timedelta(days=1)
        raise ValidationError("日历中找不到工作时间（连续十年没有工作日？请检查 calendar.yaml）")

    def in_office_hours(self, dt: datetime) -> bool:
        """True when ``dt`` is within an office interval of a workday (ends inclusive)."""
        return any(s <= dt <= e for s, e in self._intervals(dt.date()))

    def next_work_start(self, dt: datetime) -> datetime:
        """``dt`` itself when inside office hours (before the interval closes), else the next
        office opening on a workday."""
        for s, _e in self._intervals_from(dt):
            return s
        raise AssertionError("unreachable")

    def working_time_between(self, a: datetime, b: datetime) -> timedelta:
        """Office time on workdays between ``a`` and ``b`` (zero when ``b <= a``)."""
        total = timedelta(0)
        if b <= a:
            return total
        day = a.date()
        while day <= b.date():
            for s, e in self._intervals(day):
                lo, hi = max(s, a), min(e, b)
                if hi > lo:
                    total += hi - lo
            day += timedelta(days=1)
        return total

    def working_seconds_between(self, a: datetime, b: datetime) -> float:
        """Seconds of office time on workdays between ``a`` and ``b`` (0 when ``b <= a``)."""
        return self.working_time_between(a, b).total_seconds()

    def add_working_time(self, start: datetime, amount: timedelta) -> datetime:
        """The instant when ``amount`` of office time has passed since ``start``."""
        if amount <= timedelta(0):
            return start
        remaining = amount
        for s, e in self._intervals_from(start):
            avail = e - s
            if remaining <= avail:
                return s + remaining
            remaining -= avail
        raise AssertionError("unreachable")

    def deadline(self, start: datetime, sla: str | Sla) -> datetime:
        """Deadline of an SLA (spec string or :class:`Sla`) counted from ``start``."""
        s = parse_sla(sla)
        if s.unit == "h":
            return start + timedelta(hours=s.amount)
        if s.unit == "d":
            return start + timedelta(days=s.amount)
        if s.unit == "wh":
            return self.add_working_time(start, timedelta(hours=s.amount))
        return self.add_working_time(start, timedelta(seconds=self.day_seconds * s.amount))


# ---- loading ----------------------------------------------------------------------------
def _check_office_hours(intervals, source) -> list[Problem]:
    problems = []
    if not intervals:
        return [Problem("至少需要一个办公时间段", source=source, field="office_hours")]
    prev_end = None
    for i, pair in enumerate(intervals, 1):
        field = f"office_hours[{i}]"
        try:
            s, e = pair
        except (TypeError, ValueError):
            problems.append(Problem("应为 开始-结束 两个时间", source=source, field=field))
            continue
        if not isinstance(s, time) or not isinstance(e, time):
            problems.append(Problem("时间格式不对", source=source, field=field))
            continue
        if s >= e:
            problems.append(Problem(f"开始 {s:%H:%M} 不早于结束 {e:%H:%M}", source=source,
                                    field=field))
            continue
        if prev_end is not None and s < prev_end:
            problems.append(Problem(
                f"时间段 {s:%H:%M}-{e:%H:%M} 与上一段重叠或顺序颠倒（上一段到 {prev_end:%H:%M}）",
                source=source, field=field))
        prev_end = e
    return problems


def _parse_office_hours(raw, source, problems) -> list[tuple[time, time]]:
    if not isinstance(raw, list) or not raw:
        problems.append(Problem('应为时间段列表，如 ["08:30-12:00", "14:00-17:30"]',
                                source=source, field="office_hours"))
        return []
    out = []
    for i, item in enumerate(raw, 1):
        field = f"office_hours[{i}]"
        if isinstance(item, dict) and set(item) == {"start", "end"}:
            a, b = str(item["start"]), str(item["end"])
        elif isinstance(item, str) and item.count("-") == 1:
            a, b = item.split("-")
        else:
            problems.append(Problem(f'{item!r} 格式不对，应为 "HH:MM-HH:MM"', source=source,
                                    field=field))
            continue
        s, e = _parse_hhmm(a), _parse_hhmm(b)
        if s is None or e is None:
            problems.append(Problem(f'{item!r} 时间不合法，应为 "HH:MM-HH:MM"（00:00–23:59）',
                                    source=source, field=field))
            continue
        out.append((s, e))
    if len(out) == len(raw):
        problems.extend(_check_office_hours(out, source))
    return out


def _parse_day(text: str) -> date | None:
    text = text.strip()
    if not _DATE_RE.match(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _expand_dates(items, year: int, field: str, source, problems) -> set[date]:
    """Dates from a list of dates, "YYYY-MM-DD" strings and "YYYY-MM-DD..YYYY-MM-DD" ranges."""
    out: set[date] = set()
    if items is None:
        return out
    if not isinstance(items, list):
        problems.append(Problem("应为日期列表", source=source, field=field))
        return out
    for i, item in enumerate(items, 1):
        f = f"{field}[{i}]"
        if isinstance(item, datetime):
            item = item.date()
        if isinstance(item, date):
            days = [item]
        elif isinstance(item, str) and ".." in item:
            a, _, b = item.partition("..")
            da, db = _parse_day(a), _parse_day(b)
            if da is None or db is None:
                problems.append(Problem(f"日期范围 {item!r} 不合法，应为 YYYY-MM-DD..YYYY-MM-DD",
                                        source=source, field=f))
                continue
            if db < da:
                problems.append(Problem(f"日期范围 {item!r} 结束早于开始", source=source, field=f))
                continue
            days = [da + timedelta(days=k) for k in range((db - da).days + 1)]
        elif isinstance(item, str) and _parse_day(item) is not None:
            days = [_parse_day(item)]
        else:
            problems.append(Problem(f"日期 {item!r} 不合法，应为 YYYY-MM-DD 或 YYYY-MM-DD..YYYY-MM-DD",
                                    source=source, field=f))
            continue
        wrong = [d for d in days if d.year != year]
        if wrong:
            problems.append(Problem(f"日期 {wrong[0].isoformat()} 不属于 {year} 年", source=source,
                                    field=f))
            continue
        out.update(days)
    return out


def parse_calendar(data: Any, source: str | None = None) -> WorkCalendar:
    """Build a WorkCalendar from the parsed content of a calendar.yaml, collecting problems."""
    problems: list[Problem] = []
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValidationError(Problem("文件内容应为键值映射（office_hours / timezone / overrides）",
                                      source=source))
    unknown = set(data) - {"timezone", "office_hours", "overrides"}
    for key in sorted(unknown, key=str):
        problems.append(Problem(f"未知字段 {key!r}", source=source, field=str(key)))
    tz = data.get("timezone", "Asia/Shanghai")
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(str(tz))
    except Exception:
        problems.append(Problem(f"未知时区 {tz!r}", source=source, field="timezone"))
    office = (_parse_office_hours(data["office_hours"], source, problems)
              if "office_hours" in data else list(DEFAULT_OFFICE_HOURS))
    overrides: dict[int, dict[str, set[date]]] = {}
    raw_ov = data.get("overrides") or {}
    if not isinstance(raw_ov, dict):
        problems.append(Problem("应为 年份 → {holidays, workdays} 的映射", source=source,
                                field="overrides"))
        raw_ov = {}
    for year_key, spec in raw_ov.items():
        field = f"overrides.{year_key}"
        try:
            year = int(year_key)
            if not 1900 <= year <= 2200:
                raise ValueError
        except (TypeError, ValueError):
            problems.append(Problem(f"年份 {year_key!r} 不合法", source=source, field=field))
            continue
        if spec is None:
            spec = {}
        if not isinstance(spec, dict) or set(spec) - {"holidays", "workdays"}:
            problems.append(Problem("应只含 holidays 和 workdays 两个列表", source=source,
                                    field=field))
            continue
        hol = _expand_dates(spec.get("holidays"), year, f"{field}.holidays", source, problems)
        wor = _expand_dates(spec.get("workdays"), year, f"{field}.workdays", source, problems)
        for d in sorted(hol & wor):
            problems.append(Problem(f"{d.isoformat()} 同时列在 holidays 和 workdays 中",
                                    source=source, field=field))
        overrides[year] = {"holidays": hol, "workdays": wor}
    if problems:
        raise ValidationError(problems)
    return WorkCalendar(office, overrides, timezone=str(tz), source=source)


class _TextDateLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """SafeLoader that leaves dates as text, so an impossible date is reported with its field."""


_TextDateLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in _TextDateLoader.yaml_implicit_resolvers.items()
}


def load_calendar(path: str | Path | None = None) -> WorkCalendar:
    """Load ``calendar.yaml``: by default from the catalogue folder (JIEDAO_CATALOG_DIR),
    falling back to the packaged file when that folder has none."""
    if path is None:
        from jiedao.config import get_settings

        path = Path(get_settings().catalog_dir) / "calendar.yaml"
        if not path.exists():
            log.warning("%s 不存在，使用内置的工作日历 %s", path, PACKAGED_CALENDAR)
            path = PACKAGED_CALENDAR
    path = Path(path)
    source = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValidationError(Problem(f"无法读取文件：{e}", source=str(path))) from None
    try:
        data = yaml.load(text, Loader=_TextDateLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ValidationError(Problem(f"YAML 语法错误：{getattr(e, 'problem', e)}", source=source,
                                      row=mark.line + 1 if mark else None)) from None
    return parse_calendar(data, source=source)


@lru_cache(maxsize=1)
def get_calendar() -> WorkCalendar:
    """The process-wide calendar (cached; call ``get_calendar.cache_clear()`` after edits)."""
    return load_calendar()
