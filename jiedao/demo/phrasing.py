"""Colloquial Chinese phrasing of synthetic appeals (示例数据): a small grammar per matter.

The grammar is seeded from the catalogue (``jiedao.catalog.loader.load_catalog()``): each
matter's examples are cut into clauses and its keywords are set into generic frames, so a
matter is described in many ways (a whole example, two clauses of different examples, a
keyword frame, the matter's name) and then dressed with an opening (你好 / 我要反映 /
麻烦管一下…), a place mention made by the caller of :mod:`jiedao.demo.appeals`, a duration
(好几天了 / 一个多月了), a consequence, an urgency cue and a request (希望尽快处理).
A low rate of colloquial variants and typos (的/得, 在/再, 反映/反应…) is mixed in.

Everything here is pure: functions take a ``random.Random`` and return text.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

OPENINGS = (
    "", "", "", "你好，", "您好，", "你好，我要反映，", "我要反映一个问题，", "麻烦管一下，",
    "我想投诉，", "喂，你好，", "你好我是附近居民，", "反映个情况：", "我想咨询一下，",
    "师傅你好，", "你们好，", "我再反映一次，", "不好意思打扰一下，", "我是这里的住户，",
    "我要投诉，", "请问一下，", "打12345反映一下，", "我是业主，",
)
WEB_OPENINGS = ("", "", "", "标题：", "反映问题：", "【投诉】", "【求助】", "诉求：", "建议：")
ENTERPRISE_OPENINGS = (
    "我们是{company}，", "您好，我是{company}的负责人，", "我司{company}反映，",
    "{company}诉求：", "我们企业（{company}）想反映，", "你好，{company}这边咨询，",
)
DURATIONS = (
    "好几天了", "一个多月了", "已经半年多了", "从上周开始就这样", "最近一段时间一直这样",
    "天天如此", "都三四天了", "反映过好几次了", "这个问题存在很久了", "今天早上开始的",
    "两个礼拜了", "去年就有这个问题", "这几天特别明显", "断断续续一年多了", "昨天晚上开始的",
)
REQUESTS = (
    "希望尽快处理", "请相关部门管一管", "麻烦派人来看看", "希望给个说法", "请尽快解决，谢谢",
    "能不能来查一下", "希望有关部门重视", "请督促处理", "希望早点解决", "麻烦尽快安排人处理",
    "请给我回个电话", "希望能彻底解决", "请帮忙协调一下", "谢谢", "请核实处理",
    "希望不要再拖了", "请职能部门来现场看一下", "盼复",
)
ENTERPRISE_REQUESTS = (
    "希望政府帮忙协调", "请相关部门给予指导", "希望尽快答复", "请告知办理流程和所需材料",
    "希望给企业一个明确答复", "麻烦帮忙对接一下", "请尽快落实",
)
CONSEQUENCES = {
    "城乡建设与管理": ("严重影响出行", "周边居民意见很大", "影响市容", "晚上根本睡不着",
                "老人小孩走路很不安全", "味道大得很"),
    "住房与物业": ("业主意见很大", "住得很不安心", "家里都没法住了", "大家都很气愤",
              "影响正常生活"),
    "生态环境": ("熏得头疼", "窗户都不敢开", "担心影响身体健康", "晚上睡不着觉", "周边居民都受不了"),
    "市场监管": ("消费者权益得不到保障", "感觉被坑了", "商家态度很差", "担心吃出问题"),
    "劳动和社会保障": ("一家人生活都成问题", "跑了好几趟都没办成", "权益受到侵害"),
    "民政与社会服务": ("老人生活很困难", "家里实在困难", "跑了好几次没结果"),
    "卫生健康": ("孩子一直生病", "群众看病很不方便", "担心有安全隐患"),
    "教育": ("家长都很着急", "孩子上学受影响", "家长意见很大"),
    "交通出行": ("每天上下班堵得要命", "很容易出事故", "车子开不出来", "行人过马路很危险"),
    "公安政法": ("晚上根本没法休息", "老人小孩都害怕", "严重影响休息", "心里不踏实"),
    "水务": ("出门只能蹚水", "家里都进水了", "臭气熏天", "车子都熄火了"),
    "园林绿化": ("家里白天都要开灯", "很危险", "影响通行", "影响环境"),
    "安全生产与应急": ("随时可能出事", "存在很大安全隐患", "大家都很担心"),
    "消防安全": ("万一着火后果不堪设想", "存在火灾隐患", "消防车根本进不来"),
    "文化旅游体育": ("体验很差", "钱花了还受气", "附近居民没地方活动"),
    "商务": ("钱退不回来", "买菜很不方便", "感觉被骗了"),
    "企业服务": ("企业经营压力很大", "影响企业正常生产", "项目进度受影响"),
    "自然资源和规划": ("影响采光", "居民很有意见", "担心权益受损"),
    "医疗保障": ("看病负担很重", "报不了销很着急", "跑了几趟都没办好"),
    "退役军人事务": ("待遇一直没落实", "希望得到应有的照顾"),
    "政务服务": ("跑了好几趟都没办成", "浪费了很多时间", "办事太难了"),
    "税务": ("影响企业经营", "一直办不下来", "不知道该怎么办"),
    "公用事业": ("生活受到很大影响", "家里老人受不了", "做饭洗澡都成问题", "很不方便"),
    "基层治理": ("邻里关系闹得很僵", "影响正常生活", "找了社区也没解决", "大家意见很大"),
}
GENERIC_CONSEQUENCES = ("严重影响生活", "大家意见很大", "很不方便", "影响很大")
URGENT_CUES = {
    "紧急": ("情况很危险，请马上派人来", "有人已经受伤了，请立即处理", "随时可能出事，十万火急",
           "现在情况紧急，请马上处理", "非常危险，请立刻来人"),
    "较急": ("比较急，今天能不能来处理", "请尽快安排，比较着急", "情况比较急", "希望今天就能来人看看"),
}
FRAMES = (
    "{kw}的问题", "有{kw}的情况", "反映{kw}的问题", "{kw}，一直没人管", "{kw}问题反复出现",
    "关于{kw}", "{kw}，{kw2}", "{kw}，希望管一管", "{kw}这个事", "说一下{kw}的事",
)
CONSULT_FRAMES = ("咨询{kw}的问题", "想问一下{kw}", "关于{kw}", "{kw}这个事", "{kw}，{kw2}",
                  "了解一下{kw}相关政策")
CONSULT_DURATIONS = ("问了好几个地方都说不清楚", "打了好几次电话都没人答复", "跑了两趟了",
                     "等了一个多月了", "网上也查不到", "之前咨询过一次")
CONSULT_CONSEQUENCES = ("不知道该找哪个部门", "跑了好几趟都没办成", "很着急", "耽误了不少事")
NAME_FRAMES = ("反映{name}的问题", "关于{name}", "我要反映{name}", "{name}问题")
SYNONYMS = (
    ("很", ("特别", "非常", "超级", "好", "很")),
    ("没人管", ("没人处理", "也没人来管", "一直没人管", "无人过问")),
    ("晚上", ("晚上", "夜里", "每天晚上")),
    ("天天", ("每天", "天天", "成天")),
    ("根本", ("根本", "完全", "压根")),
    ("一直", ("一直", "总是", "老是")),
    ("我们", ("我们", "咱们", "俺们")),
    ("好几", ("好几", "几", "十几")),
)
TYPOS = (
    ("的", "得"), ("在", "再"), ("已经", "以经"), ("反映", "反应"), ("那", "哪"),
    ("做", "作"), ("账", "帐"), ("座", "坐"), ("再", "在"), ("得", "的"),
)
TYPO_RATE = 0.03
SYNONYM_RATE = 0.35

_CLAUSE_SPLIT = re.compile(r"[，,。；;！!？?]")


@dataclass(frozen=True)
class MatterPhrases:
    """What the grammar knows of one matter (from the catalogue)."""

    code: str
    name: str
    level1: str
    keywords: tuple[str, ...]
    examples: tuple[str, ...]
    clauses: tuple[str, ...]


def phrasebook(catalog) -> dict[str, MatterPhrases]:
    """One :class:`MatterPhrases` per matter of ``catalog`` (a loaded Catalog)."""
    out = {}
    for m in catalog.matters:
        clauses = []
        for ex in m.examples:
            clauses += [c.strip() for c in _CLAUSE_SPLIT.split(ex) if len(c.strip()) >= 4]
        out[m.code] = MatterPhrases(m.code, m.name, m.level1, tuple(m.keywords), tuple(m.examples),
                                    tuple(dict.fromkeys(clauses)))
    return out


def _pick(rng: random.Random, seq):
    return seq[int(rng.random() * len(seq))]


def problem(rng: random.Random, mp: MatterPhrases, consult: bool = False) -> str:
    """The core description of the problem, in one of several shapes."""
    r = rng.random()
    if r < 0.30 and mp.examples:
        return _pick(rng, mp.examples)
    if r < 0.62 and len(mp.clauses) >= 2:
        a = _pick(rng, mp.clauses)
        b = _pick(rng, mp.clauses)
        return a if a == b else f"{a}，{b}"
    if r < 0.90:
        kw, kw2 = _pick(rng, mp.keywords), _pick(rng, mp.keywords)
        frame = _pick(rng, CONSULT_FRAMES if consult else FRAMES)
        if kw == kw2 and "{kw2}" in frame:
            frame = "{kw}的问题"
        text = frame.format(kw=kw, kw2=kw2)
        if mp.clauses and rng.random() < 0.6:
            text += "，" + _pick(rng, mp.clauses)
        return text
    text = _pick(rng, NAME_FRAMES).format(name=mp.name)
    if mp.clauses:
        text += "，" + _pick(rng, mp.clauses)
    return text


def colloquial(rng: random.Random, text: str) -> str:
    """Swap a few words for colloquial variants and, rarely, make a typo."""
    if rng.random() < SYNONYM_RATE:
        word, choices = _pick(rng, SYNONYMS)
        if word in text:
            text = text.replace(word, _pick(rng, choices), 1)
    if rng.random() < TYPO_RATE:
        right, wrong = _pick(rng, TYPOS)
        if right in text:
            text = text.replace(right, wrong, 1)
    return text


def compose(rng: random.Random, mp: MatterPhrases, *, place: str | None, urgency: str,
            channel: str, company: str | None = None, follow_up: bool = False,
            consult: bool = False) -> str:
    """A whole appeal text: opening, place, problem, details, duration, consequence, request.

    ``consult`` marks matters that are questions about policies or services rather than a
    problem at a place: they get durations and consequences that fit a question.
    """
    core = problem(rng, mp, consult)
    if company:
        opening = _pick(rng, ENTERPRISE_OPENINGS).format(company=company)
    elif channel in ("web", "app"):
        opening = _pick(rng, WEB_OPENINGS)
    else:
        opening = _pick(rng, OPENINGS)
    parts: list[str] = []
    if follow_up:
        parts.append(_pick(rng, ("上次反映的问题还没解决，", "之前打过电话了，", "再次反映，",
                                 "第二次反映了，", "上周反映过一次，")))
    if place:
        shape = rng.random()
        if company:
            parts.append(f"公司位于{place}，{core}")
        elif shape < 0.40:
            parts.append(f"{place}{_pick(rng, ('', '这边', '这里', '那里', ''))}，{core}")
        elif shape < 0.60:
            parts.append(f"{_pick(rng, ('我住在', '我家在', '我们在', '地址是', '位置在'))}{place}，{core}")
        elif shape < 0.85:
            parts.append(f"{core}，地点在{place}")
        else:
            parts.append(f"{core}。具体位置：{place}")
    else:
        parts.append(core)
    r = rng.random()
    if r < 0.45:
        parts.append(_pick(rng, CONSULT_DURATIONS if consult else DURATIONS))
    if rng.random() < 0.45:
        parts.append(_pick(rng, CONSULT_CONSEQUENCES if consult
                           else CONSEQUENCES.get(mp.level1, GENERIC_CONSEQUENCES)))
    if urgency in URGENT_CUES and rng.random() < 0.85:
        parts.append(_pick(rng, URGENT_CUES[urgency]))
    if rng.random() < 0.75:
        parts.append(_pick(rng, ENTERPRISE_REQUESTS if company else REQUESTS))
    text = opening + "，".join(p.rstrip("，") for p in parts)
    text = colloquial(rng, text)
    if rng.random() < 0.6:
        text += _pick(rng, ("。", "。", "！", "", "。谢谢！"))
    return text
