"""The analysis card: what the analysis found about one case, and how sure it is.

It is produced by the analyzer, stored as JSON on the case (``cases_case.analysis``), shown to
the operator beside the dispatch suggestion, and decides whether a case may be dispatched
without a person looking at it (``auto_dispatchable``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass

from jiedao.cases.dispatch import Suggestion


@dataclass(frozen=True)
class Location:
    """Where the case is, as resolved from text or a point."""

    text: str | None = None  # the place phrase found in the appeal
    address_code: str | None = None
    building_code: str | None = None
    grid_code: str | None = None
    community_code: str | None = None
    street_code: str | None = None
    street_name: str | None = None
    lon: float | None = None
    lat: float | None = None
    confidence: float = 0.0
    matched_by: str | None = None  # address / compound / landmark / road / point
    candidates: tuple[dict, ...] = ()  # when unsure: what the operator may pick from


@dataclass(frozen=True)
class Analysis:
    matter_code: str | None
    confidence: float  # of the category, 0..1
    candidates: tuple[tuple[str, float], ...] = ()  # top categories with scores
    method: str = "model"  # model / keywords / operator
    urgency: str = "一般"
    urgency_reasons: tuple[str, ...] = ()
    location: Location = field(default_factory=Location)
    event_id: int | None = None  # duplicate cluster this case joined (or started)
    duplicates: tuple[int, ...] = ()  # earlier case ids of the same event
    repeat_caller: bool = False
    suggestion: Suggestion | None = None
    needs_confirmation: tuple[str, ...] = ()  # "category", "location", "department"
    notes: tuple[str, ...] = ()  # why: place doubts, duplicate and repeat-caller findings

    @property
    def asks_for_place(self) -> bool:
        """The place is in doubt: an operator asks the caller where (核实地点)."""
        return "location" in self.needs_confirmation

    @property
    def auto_dispatchable(self) -> bool:
        """Nothing needs a person: category and place are sure and a main department is known."""
        return not self.needs_confirmation and self.suggestion is not None and self.suggestion.complete

    def to_card(self) -> dict:
        """JSON-able form stored on the case and rendered on the analysis card (what
        ``dataclasses.asdict`` gives, without its deep copy of every leaf value)."""
        d = _plain(self)
        d["auto_dispatchable"] = self.auto_dispatchable
        return d


def _plain(v):
    """``dataclasses.asdict`` for the card's values: dataclasses become dicts, containers are
    rebuilt, leaves (str, numbers, None) are shared rather than deep-copied."""
    if is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name)) for f in fields(v)}
    if isinstance(v, tuple):
        items = [_plain(x) for x in v]
        return type(v)(*items) if hasattr(v, "_fields") else tuple(items)
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {_plain(k): _plain(x) for k, x in v.items()}
    return v
