"""The case state machine: concrete paths and a hypothesis state-machine test of invariants."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from jiedao.cases.workflow import (
    CASE_STATES,
    CaseState,
    IllegalTransition,
    Workflow,
    check_version,
)
from jiedao.errors import Conflict

T0 = datetime(2026, 3, 2, 9, 0)
DL = T0 + timedelta(days=7)


def go(case, action, *args, **kw):
    return getattr(Workflow(case), action)(T0, "tester", *args, **kw)


def dispatched(co=("ZJJ",)):
    c = go(CaseState(), "analyse")
    return go(c, "dispatch", ("CGJ", DL), [(d, DL) for d in co])


def test_happy_path_with_co_handler_closes_only_when_all_replied():
    c = dispatched()
    c = go(c, "sign", 0)
    assert c.state == "signed"
    c = go(c, "start", 0)
    c = go(c, "reply", 0, "已清理占道摊点")
    assert c.state == "in_progress", "co-handler has not replied yet"
    with pytest.raises(IllegalTransition):
        go(c, "close")
    c = go(c, "sign", 1)
    c = go(c, "reply", 1, "已督促物业整改")
    assert c.state == "replied"
    c = go(c, "close")
    c = go(c, "follow_up", "满意")
    assert c.state == "followed_up" and c.satisfaction == "满意"
    assert [t.action for t in c.transitions][-2:] == ["close", "follow_up"]


def test_return_needs_reason_and_goes_back_to_dispatcher():
    c = dispatched(co=())
    with pytest.raises(IllegalTransition, match="原因"):
        go(c, "return_", 0, "  ")
    c = go(c, "return_", 0, "不属于本部门职责")
    assert c.state == "returned"
    assert c.transitions[-1].reason == "不属于本部门职责"
    c = go(c, "dispatch", ("ZJJ", DL))
    assert c.state == "dispatched" and c.main().department == "ZJJ"


def test_unsatisfied_follow_up_reopens_to_same_department():
    c = dispatched(co=())
    for action, args in [("sign", (0,)), ("reply", (0, "已处理")), ("close", ())]:
        c = go(c, action, *args)
    c = go(c, "follow_up", "不满意", deadline=DL + timedelta(days=5), comment="问题依旧")
    assert c.state == "dispatched" and c.reopen_count == 1
    assert c.main().department == "CGJ" and c.main().round == 2
    assert len(c.assignments) == 2, "history of the first round is kept"


def test_extension_moves_deadline_only_when_approved():
    c = go(dispatched(co=()), "sign", 0)
    later = DL + timedelta(days=3)
    c = go(c, "request_extension", 0, later, "需协调产权单位")
    assert c.assignments[0].deadline == DL
    rejected = go(c, "decide_extension", 0, False, "理由不充分")
    assert rejected.assignments[0].deadline == DL
    approved = go(c, "decide_extension", 0, True)
    assert approved.assignments[0].deadline == later


def test_illegal_transition_leaves_state_untouched():
    c = CaseState()
    before = copy.deepcopy(c)
    with pytest.raises(IllegalTransition):
        go(c, "close")
    assert c == before


def test_stale_version_is_a_conflict():
    c = dispatched()
    check_version(c, c.version)
    with pytest.raises(Conflict):
        check_version(c, c.version - 1)


SEEN: set[str] = set()
DEPTS = ("CGJ", "ZJJ", "SCJG", "JD420199001")


class CaseMachine(RuleBasedStateMachine):
    """Random sequences of actions, legal or not; invariants must hold after each step."""

    def __init__(self):
        super().__init__()
        self.case = CaseState()
        self.seen = set()

    def pick(self, i):
        return i % max(1, len(self.case.assignments))

    def apply(self, action, *args, **kw):
        before = copy.deepcopy(self.case)
        try:
            after = getattr(Workflow(self.case), action)(T0, "u", *args, **kw)
        except IllegalTransition:
            assert self.case == before, "a refused action must not change the case"
            return
        assert self.case == before, "actions work on a copy"
        assert after.version == before.version + 1
        self.case = after

    @rule(s=st.sampled_from(["满意", "基本满意", "不满意"]))
    def advance(self, s):
        """The natural next step, so that random walks reach the deep states too."""
        c = self.case
        pending = [i for i, a in enumerate(c.assignments)
                   if a in c.active_assignments() and a.state != "replied"]
        if c.state == "received":
            self.apply("analyse")
        elif c.state in ("analysed", "returned"):
            self.apply("dispatch", ("CGJ", DL), [("ZJJ", DL)])
        elif pending:
            i = pending[0]
            a = c.assignments[i]
            self.apply({"pending": "sign", "signed": "start"}.get(a.state, "reply"), i,
                       *(["已办理"] if a.state == "in_progress" else []))
        elif c.state == "replied":
            self.apply("close")
        elif c.state == "closed":
            self.apply("follow_up", s, deadline=DL)

    @rule()
    def analyse(self):
        self.apply("analyse")

    @rule(main=st.sampled_from(DEPTS), co=st.lists(st.sampled_from(DEPTS), max_size=2, unique=True))
    def dispatch(self, main, co):
        self.apply("dispatch", (main, DL), [(d, DL) for d in co if d != main])

    @rule(i=st.integers(0, 5), action=st.sampled_from(["sign", "start"]))
    def handle(self, i, action):
        self.apply(action, self.pick(i))

    @rule(i=st.integers(0, 5), reason=st.sampled_from(["", "不属于本部门"]))
    def return_(self, i, reason):
        self.apply("return_", self.pick(i), reason)

    @rule(i=st.integers(0, 5))
    def reply(self, i):
        self.apply("reply", self.pick(i), "已办理")

    @rule(i=st.integers(0, 5), dept=st.sampled_from(DEPTS))
    def reassign(self, i, dept):
        self.apply("reassign", self.pick(i), dept, DL, "派错部门")

    @rule(i=st.integers(0, 5), days=st.integers(-1, 3), approve=st.booleans())
    def extend(self, i, days, approve):
        self.apply("request_extension", self.pick(i), DL + timedelta(days=days), "需要协调")
        self.apply("decide_extension", self.pick(i), approve, None if approve else "不同意")

    @rule()
    def close(self):
        self.apply("close")

    @rule(s=st.sampled_from(["满意", "基本满意", "不满意", "还行"]))
    def follow_up(self, s):
        self.apply("follow_up", s, deadline=DL)

    @invariant()
    def consistent(self):
        c = self.case
        assert c.state in CASE_STATES
        active = c.active_assignments()
        mains = [a for a in active if a.role == "main"]
        assert len(mains) <= 1, "at most one active main handler"
        assert len({a.department for a in active}) == len(active), "no department twice"
        if c.state in ("dispatched", "signed", "in_progress", "replied"):
            assert mains, f"state {c.state} needs a main handler"
        if c.state in ("replied", "closed"):
            assert all(a.state == "replied" for a in active), "closes only when all replied"
        for prev, nxt in zip(c.transitions, c.transitions[1:], strict=False):
            assert nxt.from_state == prev.to_state, "the log is a chain"
        if c.transitions:
            assert c.transitions[-1].to_state == c.state
        assert len(c.transitions) >= c.version
        self.seen.add(c.state)

    def teardown(self):
        SEEN.update(self.seen)


TestCaseMachine = CaseMachine.TestCase
TestCaseMachine.settings = settings(max_examples=120, stateful_step_count=40, deadline=None)


def test_state_machine_explores_every_state():
    """Guard against a vacuous property test: the random walks must reach every state."""
    TestCaseMachine().runTest()
    assert set(CASE_STATES) == SEEN, f"never reached: {set(CASE_STATES) - SEEN}"
