"""Dispatch (派单): category + place → main department (主办) and co-handlers (协办).

The responsibility list decides. A matter handled at *district* level goes to its main
department; a matter handled at *street* level goes to the street office of the place, with the
professional department (when it is not the generic street office) as co-handler. The generic
code ``JD`` anywhere in the list means "the street office of the place". Deadlines come from the
matter's SLA for the case's urgency, counted in working time by the calendar.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from jiedao.catalog.calendar import WorkCalendar
from jiedao.catalog.loader import STREET_OFFICE_GENERIC, Catalog, street_office_code


@dataclass(frozen=True)
class Suggestion:
    """A dispatch suggestion with the reasons an operator sees on the analysis card."""

    matter_code: str
    main: str | None  # None when the place is needed but unknown: the operator must choose
    co: tuple[str, ...] = ()
    level: str = "district"
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def complete(self) -> bool:
        return self.main is not None


class Dispatcher:
    """Suggests who handles a case, from a validated :class:`Catalog`."""

    def __init__(self, catalog: Catalog, calendar: WorkCalendar):
        self.catalog = catalog
        self.calendar = calendar

    def _name(self, code: str) -> str:
        d = self.catalog.by_dept.get(code)
        return d.name if d else code

    def suggest(self, matter_code: str, street_code: str | None,
                street_name: str | None = None) -> Suggestion:
        """Who should handle matter ``matter_code`` at a place in ``street_code``."""
        m = self.catalog.matter(matter_code)
        office = street_office_code(street_code) if street_code else None
        office_label = f"{street_name}办事处" if street_name else "属地街道办事处"
        reasons = [f"事项“{m.level1}/{m.level2}/{m.name}”"]

        def resolve(code: str) -> str | None:
            return office if code == STREET_OFFICE_GENERIC else code

        if m.level == "street" or m.main == STREET_OFFICE_GENERIC:
            if office is None:
                reasons.append("按职责清单由属地街道办理，但未能定位到街道，请受理员选择街道")
                return Suggestion(m.code, None, (), "street", tuple(reasons))
            main = office
            reasons.append(f"职责清单规定属地办理 → 主办：{office_label}")
            co = [resolve(c) for c in m.co]
            if m.main != STREET_OFFICE_GENERIC:
                co.insert(0, m.main)
                reasons.append(f"专业部门 {self._name(m.main)} 协办")
        else:
            main = m.main
            reasons.append(f"职责清单规定区级部门办理 → 主办：{self._name(m.main)}")
            co = [resolve(c) for c in m.co]
        co = [c for c in dict.fromkeys(co) if c and c != main]
        if len(co) < len([c for c in m.co if c]) and office is None:
            reasons.append("协办中的属地街道未能定位，已略去")
        if co:
            reasons.append("协办：" + "、".join(
                office_label if c == office else self._name(c) for c in co))
        return Suggestion(m.code, main, tuple(co), m.level, tuple(reasons))

    def deadline(self, matter_code: str, urgency: str, start: datetime) -> datetime:
        """Handling deadline of an assignment dispatched at ``start``."""
        return self.calendar.deadline(start, self.catalog.sla_for(matter_code, urgency))
