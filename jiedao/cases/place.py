"""Confirming where a case is (核实地点): the operator asks the caller back and types the place.

When the analysis cannot place a case with confidence (“我家楼下”, a road without a number, a
name two compounds share) it asks rather than guesses: the card lists ``location`` among the
things to confirm. The operator asks the caller where exactly, types the answer (a standard
address, a compound and building, a landmark) and :func:`confirm_place` resolves it with the
same locator, puts the place on the case, redoes the card for that place (the dispatch
suggestion may change with the street) and — because a case without a place could not be
matched to anything — runs the duplicate check again: a case alone in its event joins the
event of an earlier case at the confirmed place (同一事件, one event with many callers).

The replay of the demo year does the same for its simulated operator
(:mod:`jiedao.cases.replay`), with the answer a caller gives when asked
(``Appeal.asked_place``).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from jiedao import clock
from jiedao.cases.analysis.classifier import CategoryResult
from jiedao.cases.models import Case
from jiedao.cases.workflow import IllegalTransition, check_version
from jiedao.errors import Conflict, Problem, ValidationError

MAX_PLACE = 300
# before dispatch (or after a return, when the operator dispatches again)
LOCATABLE_STATES = ("received", "analysed", "returned")
# the card's notes that do not depend on the place (duplicate and repeat-caller findings)
_KEPT_NOTES = ("与工单", "该来电人")


def _category(card: dict) -> CategoryResult:
    """The stored card's category as the classifier gave it."""
    return CategoryResult(card.get("matter_code"), float(card.get("confidence") or 0.0),
                          tuple(tuple(c) for c in card.get("candidates") or ()), card.get("method") or "model")


def confirm_place(session: Session, analyzer, case: Case, answer: str | None, *,
                  expected_version: int | None = None, at: datetime | None = None,
                  principal=None, ip: str | None = None) -> Case:
    """Put the place the operator confirmed on ``case`` (before dispatch) and re-check duplicates.

    With ``principal`` the change is audited (``case_locate``: the answer, the grid and the
    event). Raises ValidationError (field ``place``) when the answer is empty, too long or
    does not resolve to one grid with confidence; IllegalTransition when the case is already
    dispatched; Conflict on a stale ``expected_version``. Nothing is written then.
    """
    from jiedao.cases.service import to_state

    at = at or clock.now()
    answer = (answer or "").strip()
    if not answer:
        raise ValidationError(Problem("请填写核实后的地点（标准地址、小区楼栋或地标）", field="place"))
    if len(answer) > MAX_PLACE:
        raise ValidationError(Problem(f"地点不能超过 {MAX_PLACE} 字", field="place"))
    if case.state not in LOCATABLE_STATES:
        raise IllegalTransition(f"工单当前状态为 {case.state}，派单后不能再核实地点")
    if expected_version is not None:
        check_version(to_state(case), expected_version)
    card = dict(case.analysis or {})
    an = analyzer.confirm_place(_category(card), case.text or "", answer,
                                repeat=bool(card.get("repeat_caller")),
                                notes=tuple(n for n in card.get("notes") or () if n.startswith(_KEPT_NOTES)))
    if an is None:
        raise ValidationError(Problem(f"未能把“{answer[:40]}”确定到唯一的标准地址或网格，"
                                      "请补充路名门牌、小区楼栋或地标全称", field="place"))
    loc = an.location
    matter = case.matter_code or an.matter_code
    old_event = case.event_id
    moved = analyzer.duplicates.rejoin(session, case_id=case.id, event_id=old_event, matter=matter, loc=loc,
                                       text=case.text or "", at=case.received_at or at)
    if moved is not None:
        event_id, dups, why = moved
        an = replace(an, event_id=event_id, duplicates=tuple(dups), notes=(*an.notes, why))
    else:
        an = replace(an, event_id=old_event, duplicates=tuple(card.get("duplicates") or ()))
    case.location_text = answer
    case.address_code, case.grid_code = loc.address_code, loc.grid_code
    case.community_code, case.street_code = loc.community_code, loc.street_code
    if loc.lon is not None:
        case.lon, case.lat = loc.lon, loc.lat
    case.event_id = an.event_id
    card_new = an.to_card()
    if case.matter_code and card_new.get("matter_code") != case.matter_code:
        card_new["matter_code"] = case.matter_code  # an operator's earlier choice stays
    case.analysis = card_new
    case.version = (case.version or 0) + 1
    case.updated_at = at
    try:
        session.flush()
        if moved is not None and old_event is not None:
            analyzer.duplicates.drop_event(session, old_event)
    except (StaleDataError, IntegrityError):
        raise Conflict("工单已被他人同时更新，请刷新后重试") from None
    if principal is not None:
        from jiedao.auth import audit

        audit.record(session, principal=principal, action="case_locate", object_type="case",
                     object_id=case.code, detail={"place": answer, "grid": case.grid_code, "event": case.event_id},
                     ip=ip)
    return case


__all__ = ["LOCATABLE_STATES", "confirm_place"]
