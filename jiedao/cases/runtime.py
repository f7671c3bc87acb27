"""One case pipeline per process (or per app): catalogue, calendar, dispatcher and analyzer.

Building it loads the responsibility list, the working calendar, the classifier
(``$JIEDAO_HOME/models/current``, or a catalogue-only model when no history was trained), the
standard addresses and landmarks, and the grid polygons — a second or two, so it is done once
and shared. ``reload()`` rebuilds it after ``jiedao train`` or a change of the geography.

    pipeline = get_pipeline(request.app)          # web
    pipeline = get_pipeline()                     # CLI, jobs, tests (process default database)
    case, created = pipeline.submit(session, text=..., channel="hotline", actor="operator01")
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from jiedao.cases.analysis.analyzer import AnalysisConfig, Analyzer
from jiedao.cases.analysis.classifier import Thresholds
from jiedao.cases.dispatch import Dispatcher
from jiedao.catalog.calendar import WorkCalendar
from jiedao.catalog.loader import Catalog


@dataclass
class CasePipeline:
    """The shared objects every intake channel uses."""

    analyzer: Analyzer
    dispatcher: Dispatcher
    catalog: Catalog
    calendar: WorkCalendar
    database: object | None = None  # the jiedao.db.Database it was built from
    # (table, code) → name of departments/matters the catalogue does not hold (street
    # offices), as read from the database once; rebuilt with the pipeline
    names: dict = field(default_factory=dict)

    def submit(self, session, **kwargs):
        """:func:`jiedao.cases.intake.submit` with this pipeline's analyzer and dispatcher."""
        from jiedao.cases.intake import submit

        return submit(session, self.analyzer, self.dispatcher, **kwargs)

    def dispatch(self, session, case, **kwargs):
        """:func:`jiedao.cases.intake.dispatch` with this pipeline's dispatcher."""
        from jiedao.cases.intake import dispatch

        return dispatch(session, self.dispatcher, case, **kwargs)

    def reload(self) -> CasePipeline:
        """Rebuild everything from the same database (new model, new geography) in place."""
        fresh = build_pipeline(self.database)
        self.analyzer, self.dispatcher = fresh.analyzer, fresh.dispatcher
        self.catalog, self.calendar = fresh.catalog, fresh.calendar
        self.names = {}
        return self


def build_pipeline(database=None, *, thresholds: Thresholds | None = None,
                   config: AnalysisConfig | None = None, in_memory_duplicates: bool = False,
                   classifier=None) -> CasePipeline:
    """A new pipeline over ``database`` (default: the process database). Never downloads."""
    import jiedao.auth.models  # noqa: F401  (every table the case rows refer to)
    import jiedao.catalog.models  # noqa: F401
    from jiedao.cases.analysis.training import load_or_train
    from jiedao.catalog.calendar import get_calendar
    from jiedao.catalog.loader import load_catalog
    from jiedao.db import get_database
    from jiedao.geo.locate import AddressResolver, GridIndex

    db = database or get_database()
    catalog = load_catalog()
    calendar = get_calendar()
    dispatcher = Dispatcher(catalog, calendar)
    clf = classifier or load_or_train(catalog, thresholds=thresholds)
    if thresholds is not None:
        clf.thresholds = thresholds
    clf.classify("预热分词器")  # load jieba's dictionary now, not on the first appeal
    with db.session() as s:
        resolver = AddressResolver(s)
        grid_index = GridIndex.from_session(s)
        analyzer = Analyzer(catalog, clf, resolver, grid_index, dispatcher, session=s, config=config,
                            in_memory_duplicates=in_memory_duplicates)
    return CasePipeline(analyzer, dispatcher, catalog, calendar, db)


_lock = threading.Lock()
_process: dict[str, CasePipeline] = {}


def get_pipeline(app=None) -> CasePipeline:
    """The pipeline of ``app`` (cached on ``app.state.case_pipeline``) or of the process."""
    if app is not None:
        p = getattr(app.state, "case_pipeline", None)
        if p is None:
            with _lock:
                p = getattr(app.state, "case_pipeline", None)
                if p is None:
                    p = build_pipeline(getattr(app.state, "db", None))
                    app.state.case_pipeline = p
        return p
    from jiedao.db import get_database

    db = get_database()
    key = db.url
    p = _process.get(key)
    if p is None:
        with _lock:
            p = _process.get(key)
            if p is None:
                p = _process[key] = build_pipeline(db)
    return p


def reload(app=None) -> CasePipeline | None:
    """Rebuild the cached pipeline (after training); None when none was built yet."""
    if app is not None:
        p = getattr(app.state, "case_pipeline", None)
        return p.reload() if p is not None else None
    with _lock:
        ps = list(_process.values())
    for p in ps:
        p.reload()
    return ps[0] if ps else None


def reset() -> None:
    """Forget the process pipelines (tests that rebuild the database)."""
    with _lock:
        _process.clear()
