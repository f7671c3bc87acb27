"""Urgency (紧急 / 较急 / 一般) from cue words in the text, with the reasons shown to the operator.

紧急: danger to life or property right now (gas leak, fire, smoke, electric shock, collapse,
people trapped, someone collapsed, a burst main…). 较急: a basic service is out or a hazard
is growing (no water, no power, a lift broken, a missing manhole cover…). Otherwise 一般.
A cue preceded by a negation ("没有冒烟", "不是着火") does not count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

URGENT_CUES = (
    "燃气泄漏", "煤气泄漏", "天然气泄漏", "煤气味", "燃气味", "天然气味", "漏气", "燃气报警",
    "着火", "起火", "失火", "火灾", "火苗", "烧起来", "冒烟", "浓烟", "爆炸", "炸了",
    "触电", "漏电", "电线掉", "电线垂落", "高压线断", "电线起火", "打火花", "冒火花",
    "坍塌", "塌了", "倒塌", "塌陷", "塌方", "要塌", "掉下来砸", "摇摇欲坠",
    "被困", "困在电梯", "困人", "关在电梯", "出不来",
    "晕倒", "昏倒", "昏迷", "倒地不起", "没有呼吸", "抽搐", "受伤流血", "生命危险", "救命",
    "水管爆裂", "爆管", "管道爆裂", "水管爆", "大面积淹", "淹到", "漫进屋",
    "井盖丢失", "掉进井", "掉下去", "有人落水", "溺水",
    "持刀", "砍人", "打架流血", "危化品泄漏", "化学品泄漏", "有毒气体",
)
FAIRLY_URGENT_CUES = (
    "停水", "没水", "断水", "停电", "没电", "断电", "停气", "没气",
    "电梯坏", "电梯故障", "电梯停运", "井盖", "漏水", "渗水", "冒水", "污水外溢", "返水",
    "积水", "内涝", "倒树", "树倒", "断枝", "红绿灯坏", "信号灯不亮", "堵死", "进不来",
    "没法住", "影响出行", "很危险",
    "很急", "着急", "急需", "尽快", "马上", "赶紧", "一直在响",
)
_NEG = ("没有", "没", "不是", "并未", "未", "无", "不")
_LEVELS = ("紧急", "较急", "一般")


@dataclass(frozen=True)
class Urgency:
    level: str
    reasons: tuple[str, ...] = ()


def _build(cues: tuple[str, ...]) -> re.Pattern:
    return re.compile("|".join(re.escape(c) for c in sorted(set(cues), key=len, reverse=True)))


_URGENT_RE = _build(URGENT_CUES)
_FAIRLY_RE = _build(FAIRLY_URGENT_CUES)


def _negated(text: str, start: int) -> bool:
    before = text[max(0, start - 3):start]
    return any(before.endswith(n) for n in _NEG)


def _found(pattern: re.Pattern, text: str) -> list[str]:
    return list(dict.fromkeys(m.group(0) for m in pattern.finditer(text) if not _negated(text, m.start())))


def assess(text: str) -> Urgency:
    """Urgency of a text and the cue words that decided it (default 一般)."""
    s = text or ""
    if hits := _found(_URGENT_RE, s):
        return Urgency("紧急", tuple(f"含紧急线索“{h}”" for h in hits[:4]))
    if hits := [h for h in _found(_FAIRLY_RE, s) if h not in URGENT_CUES]:
        return Urgency("较急", tuple(f"含较急线索“{h}”" for h in hits[:4]))
    return Urgency("一般", ())


def max_level(a: str, b: str) -> str:
    """The more urgent of two levels."""
    return _LEVELS[min(_LEVELS.index(a), _LEVELS.index(b))]
