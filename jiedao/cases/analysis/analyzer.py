"""The analyzer: category, urgency, place, duplicates, repeat caller and the dispatch
suggestion of one case, as an :class:`~jiedao.cases.analysis.card.Analysis` card.

``needs_confirmation`` lists what a person must confirm before dispatch: ``category`` when
the classifier is not sure enough, ``location`` when a place was named but not resolved
with confidence (or a place is needed and none was named), ``department`` when the
responsibility list cannot name a main department without more information.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from jiedao import clock
from jiedao.cases.analysis.card import Analysis, Location
from jiedao.cases.analysis.classifier import CategoryResult, TextClassifier
from jiedao.cases.analysis.duplicates import Compounds, DuplicateConfig, DuplicateFinder, Venues
from jiedao.cases.analysis.location import LocationResult, Locator
from jiedao.cases.analysis.urgency import assess
from jiedao.cases.dispatch import Dispatcher
from jiedao.catalog.loader import STREET_OFFICE_GENERIC, Catalog
from jiedao.geo.locate import AddressResolver, GridIndex


@dataclass
class AnalysisConfig:
    """Tunable thresholds of the analysis (category thresholds live on the classifier)."""

    location_accept: float = 0.6
    # matters of these first-level categories are about a physical place: without one the
    # operator is asked (street-level matters always need the place for dispatch)
    place_bound_level1: tuple[str, ...] = ("城乡建设与管理", "公用事业", "生态环境", "交通出行", "水务",
                                           "园林绿化", "安全生产与应急", "消防安全")
    far_apart_m: float = 600.0
    duplicates: DuplicateConfig = field(default_factory=DuplicateConfig)


class Analyzer:
    """Implements the intake ``Analyzer`` protocol: ``analyse(session, case) -> Analysis``."""

    def __init__(self, catalog: Catalog, classifier: TextClassifier, resolver: AddressResolver,
                 grid_index: GridIndex, dispatcher: Dispatcher, *, session: Session | None = None,
                 locator: Locator | None = None, config: AnalysisConfig | None = None,
                 in_memory_duplicates: bool = False):
        self.catalog = catalog
        self.classifier = classifier
        self.dispatcher = dispatcher
        self.config = config or AnalysisConfig()
        if locator is None:
            if session is None:
                raise ValueError("Analyzer needs a session (to build its place gazetteer) or a locator")
            locator = Locator(session, resolver, grid_index, accept=self.config.location_accept,
                              far_apart_m=self.config.far_apart_m)
        self.locator = locator
        # public venues (landmarks other than compounds): duplicates there only close in time
        places = getattr(locator, "resolver", None) or resolver
        marks = getattr(places, "landmarks", None) or {}
        self.duplicates = DuplicateFinder(self.config.duplicates, in_memory=in_memory_duplicates,
                                          venues=Venues.from_landmarks(marks.values()),
                                          compounds=Compounds.from_resolver(places))

    @property
    def needs_case_id(self) -> bool:
        """Whether ``analyse`` needs the case's id (the in-memory duplicate index keeps recent
        cases by id); live intake otherwise analyses a case before its single write."""
        return self.duplicates.recent is not None

    # -- pieces

    def classify(self, text: str) -> CategoryResult:
        return self.classifier.classify(text)

    def classify_many(self, texts: Sequence[str]) -> list[CategoryResult]:
        """Categories of many texts at once (one vectorised prediction)."""
        return self.classifier.classify_many(list(texts))

    def _needs_place(self, matter_code: str | None) -> bool:
        m = self.catalog.by_code.get(matter_code or "")
        return m is not None and (m.level == "street" or m.main == STREET_OFFICE_GENERIC
                                  or m.level1 in self.config.place_bound_level1)

    def _card(self, cat: CategoryResult, text: str, where: LocationResult, *, event_id=None,
              duplicates=(), repeat=False, notes=()) -> Analysis:
        urg = assess(text)
        loc = where.location
        matter = cat.matter_code if cat.matter_code in self.catalog.by_code else None
        suggestion = self.dispatcher.suggest(matter, loc.street_code, loc.street_name) if matter else None
        needs = []
        if matter is None or cat.confidence < self.classifier.thresholds.confirm_below:
            needs.append("category")
        if where.unsure or (not loc.grid_code and self._needs_place(matter)):
            needs.append("location")
        if suggestion is None or not suggestion.complete:
            needs.append("department")
        return Analysis(
            matter_code=matter, confidence=round(float(cat.confidence), 4),
            candidates=tuple(cat.candidates), method=cat.method, urgency=urg.level,
            urgency_reasons=urg.reasons, location=loc, event_id=event_id,
            duplicates=tuple(duplicates), repeat_caller=repeat, suggestion=suggestion,
            needs_confirmation=tuple(needs), notes=tuple(where.reasons) + tuple(n for n in notes if n),
        )

    # -- entry points

    def analyse(self, session: Session, case, *, category: CategoryResult | None = None) -> Analysis:
        """Analyse a recorded case (writes its event: joins a duplicate's or starts one)."""
        text = case.text or ""
        cat = category or self.classifier.classify(text)
        where = self.locator.locate(text, location_text=getattr(case, "location_text", None),
                                    lon=getattr(case, "lon", None), lat=getattr(case, "lat", None))
        at = getattr(case, "received_at", None) or clock.now()
        matter = cat.matter_code if cat.matter_code in self.catalog.by_code else None
        case_id = getattr(case, "id", None)
        repeat, rwhy, caller_event = self.duplicates.repeat_caller(
            session, case_id=case_id, caller_id=getattr(case, "caller_id", None), matter=matter,
            loc=where.location, at=at)
        event_id, dups, why = self.duplicates.assign_event(
            session, case_id=case_id, matter=matter, loc=where.location, text=text, at=at,
            caller_event=caller_event)
        return self._card(cat, text, where, event_id=event_id, duplicates=dups, repeat=repeat,
                          notes=(why, rwhy))

    def analyse_many(self, session: Session, cases: Sequence) -> list[Analysis]:
        """Analyse many recorded cases in order; their categories come from one batch prediction."""
        cats = self.classify_many([c.text or "" for c in cases])
        return [self.analyse(session, c, category=cat) for c, cat in zip(cases, cats, strict=True)]

    def analyse_texts(self, texts: Sequence[str], *, location_texts: Sequence[str | None] | None = None,
                      ) -> list[Analysis]:
        """Analyse texts without a database (no event, no caller): category, urgency, place,
        suggestion — for previews and evaluation of a whole file."""
        cats = self.classify_many(texts)
        locs = location_texts or [None] * len(texts)
        return [self._card(cat, t, self.locator.locate(t, location_text=lt))
                for t, lt, cat in zip(texts, locs, cats, strict=True)]

    def confirm_place(self, cat: CategoryResult, text: str, answer: str, *, event_id=None, duplicates=(),
                      repeat=False, notes=()) -> Analysis | None:
        """The card once an operator has asked the caller back where the problem is and typed
        the answer (an address, a compound and building, a landmark): the analysis redone with
        that place — no doubt about the place left, the suggestion for its street — or None
        when the answer does not resolve to one grid with confidence (ask again; never guess)."""
        where = self.locator.locate(text, location_text=answer)
        if where.unsure or not where.location.grid_code:
            return None
        return self._card(cat, text, where, event_id=event_id, duplicates=duplicates, repeat=repeat,
                          notes=(f"地点经回访来电人核实：{answer}", *notes))

    def preview(self, text: str, *, location_text: str | None = None, lon=None, lat=None) -> Analysis:
        """One text analysed without touching the database (for the intake form's live card)."""
        return self._card(self.classifier.classify(text), text,
                          self.locator.locate(text, location_text=location_text, lon=lon, lat=lat))


__all__ = ["AnalysisConfig", "Analyzer", "Location"]
