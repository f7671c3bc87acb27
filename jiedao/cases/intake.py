"""Intake pipeline: record → analyse → (maybe) dispatch, in the caller's transaction.

Every channel (operator form, public form, REST, Open311, batch import, patrol, sensors) calls
:func:`submit`, so analysis and dispatch happen in one place. The case is committed by the
caller before it acknowledges; with an idempotency key a retry returns the first case.

The new case is built in memory — caller counted (one upsert), analysis applied, the
*analyse* and *dispatch* transitions and the assignments added — and written once at the end
(:func:`jiedao.cases.service.write_new_case`: one statement on PostgreSQL), instead of an
insert followed by an update per step. The workflow decides every step exactly
as for a stored case; the version column ends where step-by-step writes would leave it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session

from jiedao import clock
from jiedao.cases import service
from jiedao.cases.analysis.card import Analysis
from jiedao.cases.dispatch import Dispatcher
from jiedao.cases.models import Case, DispatchOverride
from jiedao.errors import Problem, ValidationError


class Analyzer(Protocol):
    """What intake needs from the analysis (implemented in jiedao.cases.analysis)."""

    def analyse(self, session: Session, case: Case) -> Analysis: ...


def apply_analysis(case: Case, analysis: Analysis, *, keep_urgency: bool) -> None:
    """Copy what the analysis found onto the case row (place, category, cluster…)."""
    loc = analysis.location
    case.matter_code = analysis.matter_code
    case.category_confidence = analysis.confidence
    if not keep_urgency:
        case.urgency = analysis.urgency
    if loc.grid_code or loc.street_code:
        case.address_code, case.grid_code = loc.address_code, loc.grid_code
        case.community_code, case.street_code = loc.community_code, loc.street_code
        if case.lon is None and loc.lon is not None:
            case.lon, case.lat = loc.lon, loc.lat
    if loc.text and not case.location_text:
        case.location_text = loc.text
    case.event_id = analysis.event_id
    case.repeat_caller = case.repeat_caller or analysis.repeat_caller
    case.analysis = analysis.to_card()


def submit(session: Session, analyzer: Analyzer, dispatcher: Dispatcher, *, text: str, channel: str,
           actor: str, auto_dispatch: bool = True, urgency: str | None = None,
           at: datetime | None = None, **fields) -> tuple[Case, bool]:
    """Take in one case and run it through analysis and, when nothing is in doubt, dispatch.

    ``fields`` are passed to :func:`jiedao.cases.service.create_case` (phone, name,
    location_text, lon, lat, kind, idempotency_key, check_key…). Returns (case, created).
    """
    at = at or clock.now()
    case, created = service.create_case(session, text=text, channel=channel, actor=actor,
                                        urgency=urgency or "一般", at=at, flush=False, **fields)
    if not created:
        return case, False
    if getattr(analyzer, "needs_case_id", False):
        session.add(case)  # an in-memory duplicate index keys the recent cases by id
        session.flush()
    analysis = analyzer.analyse(session, case)
    apply_analysis(case, analysis, keep_urgency=urgency is not None)
    steps = [("analyse", {})]
    if auto_dispatch and analysis.auto_dispatchable:
        s = analysis.suggestion
        steps.append(("dispatch", dispatch_plan(session, dispatcher, case, actor=actor, at=at,
                                                main=s.main, co=s.co, auto=True)))
    service.apply_actions(case, steps, actor=actor, at=at)  # the rows change once, in memory
    # one write: a twin request with the same idempotency key fails here (IntegrityError,
    # the caller retries and finds the winner's case), or at commit
    service.write_new_case(session, case)
    return case, True


def dispatch_plan(session: Session, dispatcher: Dispatcher, case: Case, *, actor: str,
                  matter_code: str | None = None, main: str | None = None, co=None,
                  at: datetime | None = None, auto: bool = False) -> dict:
    """Check a dispatch and return the workflow's ``dispatch`` arguments (main and co with
    their deadlines from the matter's SLA); ``case.matter_code`` is set to the matter chosen.

    The operator may override the category and/or departments; any difference from the
    analysis's suggestion is stored as a :class:`DispatchOverride` (training signal).
    """
    at = at or clock.now()
    matter_code = matter_code or case.matter_code
    if not matter_code:
        raise ValidationError(Problem("派单前必须确定事项分类", field="matter_code"))
    dispatcher.catalog.matter(matter_code)  # NotFound for an unknown matter
    suggestion = dispatcher.suggest(matter_code, case.street_code)
    main = main or suggestion.main
    if not main:
        raise ValidationError(Problem("无法确定主办部门：请选择主办部门或补充地点", field="main"))
    co = tuple(suggestion.co if co is None else co)
    card = case.analysis or {}
    suggested = (card.get("suggestion") or {}) if not auto else None
    if suggested is not None and (
        matter_code != card.get("matter_code") or main != suggested.get("main")
        or tuple(co) != tuple(suggested.get("co") or ())
    ):
        session.add(DispatchOverride(
            case_id=case.id, at=at, actor=actor, text=case.text,
            suggested_matter=card.get("matter_code"), chosen_matter=matter_code,
            suggested_department=suggested.get("main"), chosen_department=main,
            detail={"suggested_co": list(suggested.get("co") or ()), "chosen_co": list(co)},
        ))
    case.matter_code = matter_code
    deadline = dispatcher.deadline(matter_code, case.urgency, at)
    return dict(main=(main, deadline), co=[(c, deadline) for c in co])


def dispatch(session: Session, dispatcher: Dispatcher, case: Case, *, actor: str,
             matter_code: str | None = None, main: str | None = None, co=None,
             at: datetime | None = None, auto: bool = False, flush: bool = True) -> Case:
    """Dispatch (or re-dispatch after a return) with deadlines from the matter's SLA
    (checked by :func:`dispatch_plan`). ``flush=False`` changes the case in memory only."""
    at = at or clock.now()
    kw = dispatch_plan(session, dispatcher, case, actor=actor, matter_code=matter_code, main=main,
                       co=co, at=at, auto=auto)
    if not flush:
        service.apply_action(case, "dispatch", actor=actor, at=at, **kw)
        return case
    return service.act(session, case, "dispatch", actor=actor, at=at, **kw)
