"""The case state machine (接诉即办 closed loop), as plain data and functions.

A case moves through::

    received → analysed → dispatched → signed → in_progress → replied → closed → followed_up
                              ▲  │                                          │
                   returned ◄─┘  └── (reassign)                             └── unsatisfied → dispatched (重办)

Each case has assignments: one main handler (主办) and any co-handlers (协办), each with its
own state and deadline. The case's own state follows its main assignment, except that a case
is *replied* only when every active assignment has replied — co-handling closes only when all
handlers are done. Every change appends a :class:`Transition` (actor, time, from, to, reason).

The functions here never touch the database: the service layer loads a :class:`CaseState`,
applies an action, and writes the result back under optimistic locking (``version``).
Illegal actions raise :class:`IllegalTransition` and leave the state unchanged.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime

from jiedao.errors import Conflict

CASE_STATES = {
    "received": "已受理",
    "analysed": "已研判",
    "dispatched": "已派单",
    "returned": "已退单",
    "signed": "已签收",
    "in_progress": "办理中",
    "replied": "已答复",
    "closed": "已办结",
    "followed_up": "已回访",
}
ASSIGNMENT_STATES = {
    "pending": "待签收",
    "signed": "已签收",
    "in_progress": "办理中",
    "replied": "已答复",
    "returned": "已退回",
    "cancelled": "已改派",
}
SATISFACTION = ("满意", "基本满意", "不满意")
ACTIVE = ("pending", "signed", "in_progress", "replied")


class IllegalTransition(Conflict):
    """The action is not allowed in the case's (or assignment's) current state."""


@dataclass
class Transition:
    at: datetime
    actor: str
    action: str
    from_state: str
    to_state: str
    reason: str | None = None
    assignment: int | None = None  # index into CaseState.assignments


@dataclass
class Extension:
    requested_at: datetime
    requested_by: str
    new_deadline: datetime
    reason: str
    status: str = "pending"  # pending / approved / rejected
    decided_by: str | None = None


@dataclass
class Assignment:
    department: str
    role: str  # "main" or "co"
    deadline: datetime
    state: str = "pending"
    round: int = 1  # 1 for the first handling, +1 for each reopen (重办)
    reply: str | None = None
    signed_at: datetime | None = None
    replied_at: datetime | None = None
    extensions: list[Extension] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


@dataclass
class CaseState:
    state: str = "received"
    version: int = 0
    assignments: list[Assignment] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    supervised: bool = False
    reopen_count: int = 0
    satisfaction: str | None = None

    @property
    def round(self) -> int:
        """Handling round: 1, then +1 for each reopen (重办). Older rounds are history."""
        return self.reopen_count + 1

    def main(self) -> Assignment | None:
        """The active main assignment of the current round, if any."""
        for a in reversed(self.active_assignments()):
            if a.role == "main":
                return a
        return None

    def active_assignments(self) -> list[Assignment]:
        """Assignments of the current round that are not returned or cancelled."""
        return [a for a in self.assignments if a.active and a.round == self.round]


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise IllegalTransition(message)


def _reason(reason: str | None, what: str) -> str:
    _require(bool(reason and reason.strip()), f"{what}必须填写原因")
    return reason.strip()


class Workflow:
    """Applies actions to a copy of a case state; the original is never half-changed."""

    def __init__(self, case: CaseState):
        self.before = case
        self.case = copy.deepcopy(case)

    def _log(self, at, actor, action, to_state, reason=None, assignment=None, from_state=None):
        self.case.transitions.append(
            Transition(at, actor, action, from_state or self.case.state, to_state, reason, assignment)
        )
        self.case.state = to_state

    def _assignment(self, index: int) -> Assignment:
        _require(0 <= index < len(self.case.assignments), f"派单记录 {index} 不存在")
        return self.case.assignments[index]

    def _current(self, index: int) -> Assignment:
        """An assignment of the current round: earlier rounds are history and cannot act."""
        a = self._assignment(index)
        _require(a.round == self.case.round, "该派单属于已结束的办理轮次")
        return a

    def done(self) -> CaseState:
        self.case.version = self.before.version + 1
        return self.case

    # --- intake and dispatch -------------------------------------------------------------
    def analyse(self, at, actor) -> CaseState:
        _require(self.case.state == "received", f"当前状态“{CASE_STATES[self.case.state]}”不能研判")
        self._log(at, actor, "analyse", "analysed")
        return self.done()

    def dispatch(self, at, actor, main: tuple[str, datetime], co=()) -> CaseState:
        """Create the main assignment (department, deadline) and co-handler assignments."""
        _require(self.case.state in ("analysed", "returned"),
                 f"当前状态“{CASE_STATES[self.case.state]}”不能派单")
        depts = [main[0], *[d for d, _ in co]]
        _require(len(set(depts)) == len(depts), "主办和协办部门不能重复")
        rnd = self.case.round
        active = {a.department: a for a in self.case.active_assignments()}
        main_index = None
        for role, (dept, deadline) in [("main", main), *(("co", c) for c in co)]:
            held = active.get(dept)
            if held is not None and held.role == role == "co":
                continue  # a co-handler still on the case after a return keeps its work
            if held is not None:
                held.state = "cancelled"  # superseded by the new role
            self.case.assignments.append(Assignment(dept, role, deadline, round=rnd))
            if role == "main":
                main_index = len(self.case.assignments) - 1
        self._log(at, actor, "dispatch", "dispatched", assignment=main_index)
        return self.done()

    def reassign(self, at, actor, index: int, department: str, deadline: datetime, reason: str) -> CaseState:
        """改派: cancel an active assignment and give its role to another department."""
        reason = _reason(reason, "改派")
        old = self._current(index)
        _require(old.state in ("pending", "signed", "in_progress"), "只能改派尚未答复的派单")
        _require(department not in {a.department for a in self.case.active_assignments()},
                 f"部门 {department} 已在办理此件")
        old.state = "cancelled"
        self.case.assignments.append(Assignment(department, old.role, deadline, round=old.round))
        new_state = "dispatched" if old.role == "main" else self.case.state
        self._log(at, actor, "reassign", new_state, reason, len(self.case.assignments) - 1)
        return self.done()

    # --- handling ------------------------------------------------------------------------
    def sign(self, at, actor, index: int) -> CaseState:
        a = self._current(index)
        _require(a.state == "pending", f"派单状态“{ASSIGNMENT_STATES[a.state]}”不能签收")
        a.state, a.signed_at = "signed", at
        to = "signed" if a.role == "main" and self.case.state == "dispatched" else self.case.state
        self._log(at, actor, "sign", to, assignment=index)
        return self.done()

    def start(self, at, actor, index: int) -> CaseState:
        a = self._current(index)
        _require(a.state == "signed", f"派单状态“{ASSIGNMENT_STATES[a.state]}”不能开始办理")
        a.state = "in_progress"
        to = "in_progress" if a.role == "main" else self.case.state
        self._log(at, actor, "start", to, assignment=index)
        return self.done()

    def return_(self, at, actor, index: int, reason: str) -> CaseState:
        """退单: the department says the case is not theirs; it goes back to the dispatcher."""
        reason = _reason(reason, "退单")
        a = self._current(index)
        _require(a.state in ("pending", "signed"), "已开始办理或已答复的派单不能退单")
        a.state = "returned"
        if a.role == "main":
            # the co-handlers' work waits for the new main department; cancel theirs too
            for other in self.case.active_assignments():
                if other.state in ("pending", "signed"):
                    other.state = "cancelled"
            to = "returned"
        else:
            to = self.case.state
        self._log(at, actor, "return", to, reason, index)
        return self.done()

    def reply(self, at, actor, index: int, text: str) -> CaseState:
        """答复. The case is replied once every active assignment has replied."""
        text = _reason(text, "答复")
        a = self._current(index)
        _require(a.state in ("signed", "in_progress"), f"派单状态“{ASSIGNMENT_STATES[a.state]}”不能答复")
        a.state, a.reply, a.replied_at = "replied", text, at
        all_done = all(x.state == "replied" for x in self.case.active_assignments())
        main = self.case.main()
        if all_done and main is not None:
            to = "replied"
        elif a.role == "main":
            to = "in_progress"  # main has answered; waiting for co-handlers
        else:
            to = self.case.state
        self._log(at, actor, "reply", to, assignment=index)
        return self.done()

    # --- extension and supervision -------------------------------------------------------
    def request_extension(self, at, actor, index: int, new_deadline: datetime, reason: str) -> CaseState:
        reason = _reason(reason, "延期申请")
        a = self._current(index)
        _require(a.state in ("pending", "signed", "in_progress"), "只有办理中的派单可以申请延期")
        _require(new_deadline > a.deadline, "延期后的时限必须晚于原时限")
        _require(not any(e.status == "pending" for e in a.extensions), "已有待审批的延期申请")
        a.extensions.append(Extension(at, actor, new_deadline, reason))
        self._log(at, actor, "request_extension", self.case.state, reason, index)
        return self.done()

    def decide_extension(self, at, actor, index: int, approve: bool, reason: str | None = None) -> CaseState:
        """Approve (the deadline moves) or reject (it does not) the pending extension."""
        a = self._current(index)
        pending = [e for e in a.extensions if e.status == "pending"]
        _require(bool(pending), "没有待审批的延期申请")
        ext = pending[-1]
        if not approve:
            reason = _reason(reason, "驳回延期")
        ext.status, ext.decided_by = ("approved" if approve else "rejected"), actor
        if approve:
            a.deadline = ext.new_deadline
        self._log(at, actor, "approve_extension" if approve else "reject_extension",
                  self.case.state, reason, index)
        return self.done()

    def supervise(self, at, actor, on: bool, reason: str) -> CaseState:
        """督办 flag: raised or lowered with a reason, in any open state."""
        reason = _reason(reason, "督办")
        _require(self.case.state not in ("closed", "followed_up") or not on, "已办结的工单不能督办")
        self.case.supervised = on
        self._log(at, actor, "supervise" if on else "unsupervise", self.case.state, reason)
        return self.done()

    # --- closing and follow-up -----------------------------------------------------------
    def close(self, at, actor) -> CaseState:
        _require(self.case.state == "replied", f"当前状态“{CASE_STATES[self.case.state]}”不能办结")
        _require(all(a.state == "replied" for a in self.case.active_assignments()),
                 "还有部门未答复，不能办结")
        self.case.supervised = False
        self._log(at, actor, "close", "closed")
        return self.done()

    def follow_up(self, at, actor, satisfaction: str, deadline: datetime | None = None,
                  comment: str | None = None) -> CaseState:
        """回访. 不满意 reopens the case (重办) to the same main department with a new deadline."""
        _require(self.case.state == "closed", f"当前状态“{CASE_STATES[self.case.state]}”不能回访")
        _require(satisfaction in SATISFACTION, f"满意度必须是 {'/'.join(SATISFACTION)} 之一")
        self.case.satisfaction = satisfaction
        self._log(at, actor, "follow_up", "followed_up", comment)
        if satisfaction != "不满意":
            return self.done()
        _require(deadline is not None, "重办需要新的办理时限")
        last_main = self.case.main()
        self.case.reopen_count += 1
        self.case.assignments.append(
            Assignment(last_main.department, "main", deadline, round=self.case.round))
        self._log(at, actor, "reopen", "dispatched", comment or "回访不满意，重办",
                  len(self.case.assignments) - 1)
        return self.done()


def check_version(case: CaseState, expected: int) -> None:
    """Optimistic locking at the domain level: refuse to act on a stale snapshot."""
    if case.version != expected:
        raise Conflict(f"工单已被他人更新（版本 {case.version}，您提交的是 {expected}），请刷新后重试")
