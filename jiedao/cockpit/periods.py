"""Reporting periods: day, ISO week, month, quarter, year.

A :class:`Period` is a half-open date range ``[start, end)`` with a grain. Its ``key`` is the
form :meth:`Period.parse` reads back ("2025-06-03", "2025-W23", "2025-06", "2025-Q2", "2025"),
so it goes into URLs unchanged; its ``label`` is the Chinese name shown on pages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from jiedao.errors import Problem, ValidationError

GRAINS = ("day", "week", "month", "quarter", "year")
GRAIN_LABELS = {"day": "日", "week": "周", "month": "月", "quarter": "季度", "year": "年"}

_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_WEEK = re.compile(r"^(\d{4})-W(\d{1,2})$", re.I)
_MONTH = re.compile(r"^(\d{4})-(\d{1,2})$")
_QUARTER = re.compile(r"^(\d{4})-Q([1-4])$", re.I)
_YEAR = re.compile(r"^(\d{4})$")


def _add_months(d: date, n: int) -> date:
    m = d.year * 12 + (d.month - 1) + n
    return date(m // 12, m % 12 + 1, 1)


def _iso_weeks(year: int) -> int:
    """Number of ISO weeks in ``year`` (52 or 53)."""
    return date(year, 12, 28).isocalendar()[1]


@dataclass(frozen=True, order=True)
class Period:
    """A half-open range of dates ``[start, end)`` at one grain."""

    grain: str
    start: date
    end: date

    # ---- construction ----------------------------------------------------------------
    @classmethod
    def parse(cls, text: str | Period) -> Period:
        """Read "2025-06-03" (day), "2025-W23" (ISO week), "2025-06" (month), "2025-Q2"
        (quarter) or "2025" (year). Raises ValidationError on anything else."""
        if isinstance(text, Period):
            return text
        s = str(text or "").strip()
        try:
            if m := _DAY.match(s):
                return cls.of("day", date(int(m[1]), int(m[2]), int(m[3])))
            if m := _WEEK.match(s):
                y, w = int(m[1]), int(m[2])
                if not 1 <= w <= _iso_weeks(y):
                    raise ValueError(w)
                return cls.of("week", date.fromisocalendar(y, w, 1))
            if m := _MONTH.match(s):
                return cls.of("month", date(int(m[1]), int(m[2]), 1))
            if m := _QUARTER.match(s):
                return cls.of("quarter", date(int(m[1]), 3 * int(m[2]) - 2, 1))
            if m := _YEAR.match(s):
                return cls.of("year", date(int(m[1]), 1, 1))
        except ValueError:
            pass
        raise ValidationError(Problem(
            f"无法识别的统计期“{s}”，应为 2025、2025-Q2、2025-06、2025-W23 或 2025-06-03",
            field="period"))

    @classmethod
    def of(cls, grain: str, day: date | datetime) -> Period:
        """The period of ``grain`` that contains ``day``."""
        if isinstance(day, datetime):
            day = day.date()
        if grain == "day":
            return cls("day", day, day + timedelta(days=1))
        if grain == "week":
            start = day - timedelta(days=day.weekday())
            return cls("week", start, start + timedelta(days=7))
        if grain == "month":
            start = day.replace(day=1)
            return cls("month", start, _add_months(start, 1))
        if grain == "quarter":
            start = date(day.year, (day.month - 1) // 3 * 3 + 1, 1)
            return cls("quarter", start, _add_months(start, 3))
        if grain == "year":
            return cls("year", date(day.year, 1, 1), date(day.year + 1, 1, 1))
        raise ValidationError(Problem(f"未知的统计粒度“{grain}”", field="grain"))

    # ---- names -----------------------------------------------------------------------
    @property
    def key(self) -> str:
        """The :meth:`parse` form, e.g. "2025-06"."""
        s = self.start
        if self.grain == "day":
            return s.isoformat()
        if self.grain == "week":
            y, w, _ = s.isocalendar()
            return f"{y}-W{w:02d}"
        if self.grain == "month":
            return f"{s.year}-{s.month:02d}"
        if self.grain == "quarter":
            return f"{s.year}-Q{(s.month - 1) // 3 + 1}"
        return f"{s.year}"

    @property
    def label(self) -> str:
        """Chinese name, e.g. "2025年6月", "2025年第23周", "2025年第2季度"."""
        s = self.start
        if self.grain == "day":
            return f"{s.year}年{s.month}月{s.day}日"
        if self.grain == "week":
            y, w, _ = s.isocalendar()
            return f"{y}年第{w}周"
        if self.grain == "month":
            return f"{s.year}年{s.month}月"
        if self.grain == "quarter":
            return f"{s.year}年第{(s.month - 1) // 3 + 1}季度"
        return f"{s.year}年"

    @property
    def short_label(self) -> str:
        """A compact label for chart axes: "6月", "第23周", "Q2", "6/3", "2025"."""
        s = self.start
        return {"day": f"{s.month}/{s.day}", "week": f"第{s.isocalendar()[1]}周",
                "month": f"{s.month}月", "quarter": f"Q{(s.month - 1) // 3 + 1}",
                "year": f"{s.year}"}[self.grain]

    def __str__(self) -> str:
        return self.key

    # ---- arithmetic ------------------------------------------------------------------
    @property
    def start_dt(self) -> datetime:
        return datetime.combine(self.start, datetime.min.time())

    @property
    def end_dt(self) -> datetime:
        return datetime.combine(self.end, datetime.min.time())

    def contains(self, when: date | datetime) -> bool:
        d = when.date() if isinstance(when, datetime) else when
        return self.start <= d < self.end

    def previous(self) -> Period:
        """The period just before (环比)."""
        return Period.of(self.grain, self.start - timedelta(days=1))

    def next(self) -> Period:
        """The period just after."""
        return Period.of(self.grain, self.end)

    def last_year(self) -> Period:
        """The same period one year earlier (同比): same month/quarter/ISO week number/day.
        29 February maps to 28 February; ISO week 53 maps to week 52 of a 52-week year."""
        s = self.start
        if self.grain == "week":
            y, w, _ = s.isocalendar()
            return Period.of("week", date.fromisocalendar(y - 1, min(w, _iso_weeks(y - 1)), 1))
        if self.grain == "day":
            try:
                return Period.of("day", s.replace(year=s.year - 1))
            except ValueError:  # 29 February
                return Period.of("day", date(s.year - 1, 2, 28))
        return Period.of(self.grain, s.replace(year=s.year - 1))

    def split(self, grain: str) -> list[Period]:
        """The periods of ``grain`` that overlap this one, in order (a year → 12 months;
        weeks at the edges may start before or end after this period)."""
        if grain not in GRAINS:
            raise ValidationError(Problem(f"未知的统计粒度“{grain}”", field="grain"))
        out = []
        p = Period.of(grain, self.start)
        while p.start < self.end:
            out.append(p)
            p = p.next()
        return out
