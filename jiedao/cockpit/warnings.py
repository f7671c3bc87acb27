"""Hot spots and early warnings (热点与预警, 未诉先办) computed from the cases.

Four detectors, each a plain function over rows (testable without a database), run by
:func:`scan` as of a point in time (default: the latest case time in the data — the demo's
year is 2025, not "now"). Windows end at ``as_of`` (inclusive). Thresholds and windows come
from ``jiedao/cockpit/data/warnings.yaml`` (or ``$JIEDAO_WARNINGS_CONFIG``), not from code.

* **spike (类别激增)** — for every grid × matter cell (and street × matter, for sparse data)
  the count ``x`` of the last ``window_days`` is compared with the cell's own baseline, its
  weekly counts over the previous ``baseline_weeks`` weeks. Test: one-sided exact Poisson
  test, ``p = P(X ≥ x)`` for ``X ~ Poisson(λ0)`` with the smoothed baseline rate
  ``λ0 = (baseline cases + prior_cases) / (baseline_weeks + prior_weeks)`` (the prior keeps
  an empty baseline from making any single case "infinitely" surprising). The p-values of all
  cells of one level with at least one case in the period form one family, corrected with
  Benjamini–Hochberg (q-values); a warning needs ``q ≤ fdr``, ``x ≥ min_count`` and
  ``x ≥ min_ratio · λ0``.
* **recurring (同址反复)** — the same matter at the same standard address (or, without an
  address, in the same event cluster) with at least ``min_cases`` cases spread over at least
  ``min_weeks`` different weeks of the window, or at least ``reopen_min_cases`` cases of which
  one was reopened (不满意重办). One burst of many callers within a day is not recurrence.
* **repeat_caller (重复来电)** — a caller with at least ``min_cases`` cases in the window.
* **new_term (新词上升)** — candidates are the jieba words of the last window's appeal
  texts (stopwords, numbers and place names dropped). The unit is the problem (a duplicate
  cluster counts once) and both windows count problems whose text contains the word (so the
  baseline needs only substring look-ups): ``a`` of the ``n1`` problems of the last window, ``b`` of the ``n0`` problems of the previous ``baseline_windows`` windows. Under "no
  change" ``a | a+b ~ Binomial(a+b, n1/(n1+n0))`` (exact conditional test of two rates);
  one-sided p-value, BH over every word with ``a ≥ min_count``, and the rise ratio
  ``(a/n1) / ((b+0.5)/n0) ≥ min_ratio``. Dunning's log-likelihood ratio G² is reported too.

Each warning is stored as a :class:`~jiedao.cockpit.models.CockpitWarning` under a key
(kind, subject, period) so that a re-scan updates it in place and keeps its status.
:func:`to_task` turns one into a proactive-governance case (channel 主动治理) that goes
through the normal intake pipeline (analysis + dispatch).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jiedao import clock
from jiedao.cases.models import Case
from jiedao.cockpit.models import WARNING_KINDS, WARNING_STATUSES, CockpitWarning
from jiedao.errors import NotFound, Problem, ValidationError

__all__ = [
    "WARNING_KINDS", "WARNING_STATUSES", "CockpitWarning", "Finding", "load_config", "scan",
    "list_warnings", "get_warning", "warning_cases", "to_task", "latest_case_time",
    "benjamini_hochberg", "detect_spikes", "detect_recurring", "detect_repeat_callers",
    "detect_new_terms", "tokens", "explain",
]

CONFIG_PATH = Path(__file__).resolve().parent / "data" / "warnings.yaml"
EXCLUDED_CHANNELS = ("proactive",)  # our own tasks are not appeals
WEEK = timedelta(days=7)
MAX_CASE_IDS = 500


# ---------------------------------------------------------------- configuration


def load_config(path: str | Path | None = None) -> dict:
    """The detector parameters: ``path``, else ``$JIEDAO_WARNINGS_CONFIG``, else the packaged
    ``data/warnings.yaml``. Missing or invalid values are a ValidationError naming them."""
    import yaml

    p = Path(path or os.environ.get("JIEDAO_WARNINGS_CONFIG") or CONFIG_PATH)
    try:
        cfg = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValidationError(Problem(f"无法读取预警配置：{e}", source=str(p))) from None
    problems = []
    need = {"spike": ("window_days", "baseline_weeks", "min_count", "min_ratio", "fdr"),
            "recurring": ("window_days", "min_cases", "min_weeks"),
            "repeat_caller": ("window_days", "min_cases"),
            "new_term": ("window_days", "baseline_windows", "min_count", "min_ratio", "fdr")}
    for kind, keys in need.items():
        sec = cfg.get(kind)
        if not isinstance(sec, dict):
            problems.append(Problem(f"预警配置缺少 {kind} 一节", source=str(p), field=kind))
            continue
        for k in keys:
            v = sec.get(k)
            if not isinstance(v, int | float) or isinstance(v, bool) or v <= 0:
                problems.append(Problem(f"{kind}.{k} 必须是正数", source=str(p), field=f"{kind}.{k}"))
    exp = cfg.get("expire_after_days")
    if exp is not None and (not isinstance(exp, int | float) or isinstance(exp, bool) or exp <= 0):
        problems.append(Problem("expire_after_days 必须是正数（或删去这一项：不自动过期）", source=str(p),
                                field="expire_after_days"))
    if problems:
        raise ValidationError(problems)
    return cfg


# ---------------------------------------------------------------- statistics


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values (q-values), in the input order."""
    m = len(pvalues)
    if m == 0:
        return []
    order = sorted(range(m), key=lambda i: pvalues[i])
    q = [1.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, pvalues[i] * m / rank)
        q[i] = min(1.0, running)
    return q


def _g2(a: int, n1: int, b: int, n0: int) -> float:
    """Dunning's log-likelihood ratio G² of a/n1 against b/n0 (2×2 table)."""
    def xlogy(x, y):
        return x * math.log(y) if x > 0 else 0.0

    cells = [(a, n1), (n1 - a, n1), (b, n0), (n0 - b, n0)]
    total = n1 + n0
    cols = [a + b, total - a - b]
    g = 0.0
    for (o, row), col in zip(cells, [cols[0], cols[1], cols[0], cols[1]], strict=True):
        e = row * col / total if total else 0
        if o > 0 and e > 0:
            g += xlogy(o, o / e)
    return 2 * g


def _severity(q: float) -> float:
    return round(min(100.0, 10 * -math.log10(max(q, 1e-30))), 3)


# ---------------------------------------------------------------- findings


@dataclass
class Finding:
    """What a detector found; :func:`scan` stores it as a CockpitWarning under ``key``."""

    key: str
    kind: str
    title: str
    detail: dict
    window_start: datetime
    window_end: datetime
    score: float
    case_ids: list[int]
    matter_code: str | None = None
    grid_code: str | None = None
    street_code: str | None = None
    community_code: str | None = None


@dataclass
class CaseRow:
    """The columns of a case the detectors read."""

    id: int
    at: datetime
    matter_code: str | None = None
    grid_code: str | None = None
    community_code: str | None = None
    street_code: str | None = None
    address_code: str | None = None
    event_id: int | None = None
    caller_id: int | None = None
    reopen_count: int = 0
    text: str = ""
    lon: float | None = None
    lat: float | None = None


@dataclass
class Names:
    """Display names for titles (code → name); a missing code shows as itself."""

    matters: dict[str, str] = field(default_factory=dict)
    grids: dict[str, str] = field(default_factory=dict)
    streets: dict[str, str] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)
    callers: dict[int, str] = field(default_factory=dict)

    def matter(self, c):
        return self.matters.get(c, c or "未分类")

    def grid(self, c):
        return self.grids.get(c, c or "未定位")

    def street(self, c):
        return self.streets.get(c, c or "未定位")


def _week_index(end: datetime, at: datetime, days: int = 7) -> int:
    """0 for the window (end - days, end], 1 for the one before, …"""
    return int((end - at) / timedelta(days=days)) if at < end else 0


def _mode(values: Iterable):
    c = Counter(v for v in values if v is not None)
    return c.most_common(1)[0][0] if c else None


def _iso_week(d: datetime) -> str:
    y, w, _ = d.isocalendar()
    return f"{y}-W{w:02d}"


def _ids(rows: Iterable[CaseRow]) -> list[int]:
    return sorted((r.id for r in rows), reverse=True)[:MAX_CASE_IDS]


# ---------------------------------------------------------------- detectors


def detect_spikes(rows: Sequence[CaseRow], as_of: datetime, cfg: dict, names: Names | None = None,
                  ) -> list[Finding]:
    """Spikes of a matter in a grid (and a street) against the cell's own weekly baseline."""
    from scipy.stats import poisson

    names = names or Names()
    days = int(cfg.get("window_days", 7))
    n_weeks = int(cfg["baseline_weeks"])
    prior_w, prior_c = float(cfg.get("prior_weeks", 1.0)), float(cfg.get("prior_cases", 0.5))
    by_case = cfg.get("unit", "problem") == "case"
    start = as_of - timedelta(days=days)
    out: list[Finding] = []
    flagged_streets: set[tuple[str, str]] = set()
    for level in cfg.get("levels", ["grid", "street"]):
        col = "grid_code" if level == "grid" else "street_code"
        counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * (n_weeks + 1))
        current: dict[tuple[str, str], list[CaseRow]] = defaultdict(list)
        seen: dict[tuple[str, str], list[set]] = defaultdict(lambda: [set() for _ in range(n_weeks + 1)])
        for r in rows:
            place = getattr(r, col)
            if place is None or r.matter_code is None or r.at > as_of:
                continue
            w = _week_index(as_of, r.at, days)
            if w > n_weeks:
                continue
            cell = (place, r.matter_code)
            unit = ("c", r.id) if by_case or r.event_id is None else r.event_id
            if unit not in seen[cell][w]:
                seen[cell][w].add(unit)
                counts[cell][w] += 1
            if w == 0:
                current[cell].append(r)
        cells = list(counts)
        tests = []
        for cell in cells:
            x, base = counts[cell][0], counts[cell][1:]
            lam = (sum(base) + prior_c) / (n_weeks + prior_w)
            p = float(poisson.sf(x - 1, lam)) if x > 0 else 1.0
            tests.append((cell, x, base, lam, p))
        qs = benjamini_hochberg([t[4] for t in tests])
        for (cell, x, base, lam, p), q in zip(tests, qs, strict=True):
            if x < cfg["min_count"] or x < cfg["min_ratio"] * lam or q > cfg["fdr"]:
                continue
            place, matter = cell
            cases = current[cell]
            street = _mode(r.street_code for r in cases)
            if level == "street" and (street, matter) in flagged_streets:
                continue  # the grid-level warning already says it
            if level == "grid":
                flagged_streets.add((street, matter))
            label = names.grid(place) if level == "grid" else names.street(place)
            ratio = x / lam if lam else None
            out.append(Finding(
                key=f"spike:{level}:{place}:{matter}:{_iso_week(as_of)}", kind="spike",
                title=f"{label}「{names.matter(matter)}」近{days}天{x}{'件' if by_case else '起'}，"
                      f"为基线周均{lam:.1f}的"
                      f"{ratio:.1f}倍",
                detail={"test": "poisson_upper", "level": level, "place": place,
                        "place_name": label, "matter_name": names.matter(matter),
                        "unit": "case" if by_case else "problem", "cases": len(cases),
                        "observed": x, "expected": round(lam, 4), "ratio": round(ratio, 2),
                        "baseline_weeks": n_weeks, "baseline_counts": list(reversed(base)),
                        "baseline_total": sum(base), "prior_weeks": prior_w, "prior_cases": prior_c,
                        "statistic": x, "p": p, "q": q, "family_size": len(tests),
                        "fdr": cfg["fdr"], "min_count": cfg["min_count"],
                        "min_ratio": cfg["min_ratio"], "window_days": days},
                window_start=start, window_end=as_of, score=_severity(q), case_ids=_ids(cases),
                matter_code=matter, grid_code=place if level == "grid" else None,
                street_code=street,
                community_code=_mode(r.community_code for r in cases) if level == "grid" else None,
            ))
    return out


def detect_recurring(rows: Sequence[CaseRow], as_of: datetime, cfg: dict, names: Names | None = None,
                     ) -> list[Finding]:
    """The same matter at the same standard address (or event cluster) across several weeks."""
    names = names or Names()
    days = int(cfg["window_days"])
    start = as_of - timedelta(days=days)
    groups: dict[tuple[str, str, str], list[CaseRow]] = defaultdict(list)
    for r in rows:
        if r.matter_code is None or not (start < r.at <= as_of):
            continue
        if r.address_code:
            groups[("addr", r.address_code, r.matter_code)].append(r)
        elif r.event_id is not None:
            groups[("event", str(r.event_id), r.matter_code)].append(r)
    out = []
    for (how, place, matter), cases in groups.items():
        n = len(cases)
        weeks = {_week_index(as_of, r.at) for r in cases}
        reopened = sum(1 for r in cases if r.reopen_count > 0)
        events = {r.event_id if r.event_id is not None else -r.id for r in cases}
        spread = n >= cfg["min_cases"] and len(weeks) >= cfg["min_weeks"]
        unsolved = reopened > 0 and n >= cfg.get("reopen_min_cases", 2)
        if not (spread or unsolved):
            continue
        where = names.addresses.get(place, place) if how == "addr" else \
            f"{names.grid(_mode(r.grid_code for r in cases))}（同一事件）"
        first, last = min(r.at for r in cases), max(r.at for r in cases)
        out.append(Finding(
            key=f"recurring:{how}:{place}:{matter}:{as_of:%Y-%m}", kind="recurring",
            title=f"{where}「{names.matter(matter)}」{days}天内反复出现{n}件（{len(weeks)}个周）",
            detail={"place_kind": how, "place": place, "place_name": where,
                    "matter_name": names.matter(matter), "cases": n, "weeks": len(weeks),
                    "events": len(events), "reopened": reopened,
                    "first_at": first.isoformat(sep=" ", timespec="minutes"),
                    "last_at": last.isoformat(sep=" ", timespec="minutes"),
                    "rule": "spread" if spread else "reopened", "window_days": days,
                    "min_cases": cfg["min_cases"], "min_weeks": cfg["min_weeks"],
                    "reopen_min_cases": cfg.get("reopen_min_cases", 2)},
            window_start=start, window_end=as_of,
            score=round(min(100.0, 8 * n + 6 * len(weeks) + 10 * reopened), 3), case_ids=_ids(cases),
            matter_code=matter, grid_code=_mode(r.grid_code for r in cases),
            street_code=_mode(r.street_code for r in cases),
            community_code=_mode(r.community_code for r in cases),
        ))
    out.sort(key=lambda f: -f.score)
    return out[: int(cfg.get("top", 200))]


def detect_repeat_callers(rows: Sequence[CaseRow], as_of: datetime, cfg: dict,
                          names: Names | None = None) -> list[Finding]:
    """Callers with at least ``min_cases`` cases in the window."""
    names = names or Names()
    days = int(cfg["window_days"])
    start = as_of - timedelta(days=days)
    by_caller: dict[int, list[CaseRow]] = defaultdict(list)
    for r in rows:
        if r.caller_id is not None and start < r.at <= as_of:
            by_caller[r.caller_id].append(r)
    out = []
    for caller, cases in by_caller.items():
        n = len(cases)
        if n < cfg["min_cases"]:
            continue
        matters = Counter(r.matter_code for r in cases if r.matter_code)
        events = {r.event_id if r.event_id is not None else -r.id for r in cases}
        who = names.callers.get(caller, f"来电人#{caller}")
        out.append(Finding(
            key=f"repeat_caller:{caller}:{as_of:%Y-%m}", kind="repeat_caller",
            title=f"{who} 近{days}天来电{n}次（{len(events)}个问题）",
            detail={"caller_id": caller, "caller": who, "cases": n, "problems": len(events),
                    "matters": {names.matter(m): c for m, c in matters.most_common(5)},
                    "streets": sorted({r.street_code for r in cases if r.street_code}),
                    "window_days": days, "min_cases": cfg["min_cases"]},
            window_start=start, window_end=as_of, score=round(min(100.0, 5.0 * n), 3),
            case_ids=_ids(cases), matter_code=matters.most_common(1)[0][0] if matters else None,
            grid_code=_mode(r.grid_code for r in cases), street_code=_mode(r.street_code for r in cases),
            community_code=_mode(r.community_code for r in cases),
        ))
    out.sort(key=lambda f: -f.score)
    return out[: int(cfg.get("top", 200))]


_PLACE_RE = re.compile(r"(路|街|巷|大道|号|号线|栋|单元|室|小区|社区)$")
_PLACE_NEXT = frozenset({"路", "街", "巷", "大道", "号", "号线", "栋", "单元", "小区", "社区", "站",
                         "公馆", "花园", "大厦", "广场", "家园", "苑", "村", "里"})
_CJK_RE = re.compile(r"[\u4e00-\u9fff]")
_DIGIT_RE = re.compile(r"\d")


def tokens(text: str, stopwords: frozenset[str] = frozenset(), min_length: int = 2,
           place_words: frozenset[str] = frozenset()) -> set[str]:
    """The distinct jieba words of ``text`` that can be a topic: Chinese, ``min_length``+
    characters, no digits, not a stopword, not part of a place name (a word ending in 路/号/
    小区…, a word followed by 路/号/公馆…, or one of ``place_words``, e.g. road names)."""
    from jiedao.cases.analysis.classifier import _tokenizer

    words = _tokenizer().lcut(text or "", HMM=True)
    keep = _memo.get((stopwords, place_words, min_length))
    if keep is None:
        keep = _memo[(stopwords, place_words, min_length)] = {}
        if len(_memo) > 8:
            _memo.pop(next(iter(_memo)))
    out = set()
    last = len(words) - 1
    for i, w in enumerate(words):
        ok = keep.get(w)
        if ok is None:
            s = w.strip()
            ok = keep[w] = not (len(s) < min_length or s in stopwords or s in place_words
                                or not _CJK_RE.search(s) or _DIGIT_RE.search(s) or _PLACE_RE.search(s))
        if ok and not (i < last and words[i + 1] in _PLACE_NEXT):
            out.add(w.strip())
    return out


_memo: dict[tuple, dict[str, bool]] = {}  # per configuration: word → kept


def _unit(r: CaseRow):
    """One problem: the duplicate cluster (event) of the case, or the case itself."""
    return r.event_id if r.event_id is not None else ("c", r.id)


def _unit_hash(u) -> int:
    import zlib

    return zlib.crc32(repr(u).encode())


def detect_new_terms(rows: Sequence[CaseRow], as_of: datetime, cfg: dict, names: Names | None = None,
                     token_cache: dict[int, set[str]] | None = None,
                     place_words: frozenset[str] = frozenset()) -> list[Finding]:
    """Words whose share of problems in the last window is significantly above the baseline."""
    from scipy.stats import binom

    names = names or Names()
    days = int(cfg["window_days"])
    k = int(cfg["baseline_windows"])
    stop = frozenset(cfg.get("stopwords") or ())
    min_len = int(cfg.get("min_length", 2))
    start = as_of - timedelta(days=days)
    cache = token_cache if token_cache is not None else {}
    cap = int(cfg.get("max_baseline_units", 0)) or None
    window = [r for r in rows if r.at <= as_of and _week_index(as_of, r.at, days) <= k]
    units: list[dict[object, list[CaseRow]]] = [defaultdict(list), defaultdict(list)]  # current, baseline
    for r in window:
        units[0 if _week_index(as_of, r.at, days) == 0 else 1][_unit(r)].append(r)
    if cap and len(units[1]) > cap:
        # a large baseline is represented by a deterministic random sample of its problems
        keep = sorted(units[1], key=_unit_hash)[:cap]
        units[1] = {u: units[1][u] for u in keep}
    n1, n0 = len(units[0]), len(units[1])
    if n1 == 0 or n0 == 0:
        return []
    # candidates: the jieba words of the recent window found in at least min_count problems
    token_df: Counter = Counter()
    for rs in units[0].values():
        toks: set[str] = set()
        for r in rs:
            t = cache.get(r.id)
            if t is None:
                t = cache[r.id] = tokens(r.text, stop, min_len, place_words)
            toks |= t
        token_df.update(toks)
    cand_set = {t for t, c in token_df.items() if c >= cfg["min_count"]}
    if not cand_set:
        return []
    # both windows are counted the same way: problems whose text contains the word (so the
    # baseline needs no segmentation, only substring look-ups)
    lengths = sorted({len(t) for t in cand_set})

    def present(rs: list[CaseRow]) -> set[str]:
        found_here: set[str] = set()
        for r in rs:
            text = r.text or ""
            n = len(text)
            found_here.update(g for ln in lengths for i in range(n - ln + 1)
                              if (g := text[i:i + ln]) in cand_set)
        return found_here

    current_has = {u: present(rs) for u, rs in units[0].items()}
    df1: Counter = Counter(t for ts in current_has.values() for t in ts)
    df0: Counter = Counter(t for rs in units[1].values() for t in present(rs))
    share = n1 / (n1 + n0)
    cands = [(t, df1[t], df0.get(t, 0)) for t in sorted(cand_set)]
    ps = [float(binom.sf(a - 1, a + b, share)) for t, a, b in cands]
    qs = benjamini_hochberg(ps)
    found = []
    for (t, a, b), p, q in zip(cands, ps, qs, strict=True):
        ratio = (a / n1) / ((b + 0.5) / n0)
        if q > cfg["fdr"] or ratio < cfg["min_ratio"]:
            continue
        found.append((q, -ratio, t, a, b, p, ratio))
    found.sort()
    out = []
    for q, _, t, a, b, p, ratio in found[: int(cfg.get("max_terms", 30))]:
        cases = [r for u, ts in current_has.items() if t in ts for r in units[0][u]]
        streets = Counter(r.street_code for r in cases if r.street_code)
        top_street, top_n = streets.most_common(1)[0] if streets else (None, 0)
        local = top_street is not None and top_n >= 0.6 * len(cases)
        matters = Counter(r.matter_code for r in cases if r.matter_code)
        out.append(Finding(
            key=f"new_term:{t}:{_iso_week(as_of)}", kind="new_term",
            title=f"新词「{t}」近{days}天出现在{a}个问题中（之前{k}个周期{b}个），上升{ratio:.1f}倍",
            detail={"test": "binomial_conditional", "term": t, "observed": a, "units_current": n1,
                    "baseline": b, "units_baseline": n0, "expected": round((a + b) * share, 3),
                    "ratio": round(ratio, 2), "g2": round(_g2(a, n1, b, n0), 3), "statistic": a,
                    "measure": "contains", "p": p, "q": q, "family_size": len(cands), "fdr": cfg["fdr"],
                    "min_count": cfg["min_count"], "min_ratio": cfg["min_ratio"],
                    "window_days": days, "baseline_windows": k,
                    "matters": {names.matter(m): c for m, c in matters.most_common(5)},
                    "streets": {names.street(s): c for s, c in streets.most_common(5)}},
            window_start=start, window_end=as_of, score=_severity(q), case_ids=_ids(cases),
            matter_code=matters.most_common(1)[0][0] if matters else None,
            street_code=top_street if local else None,
            grid_code=_mode(r.grid_code for r in cases) if local else None,
            community_code=None,
        ))
    return out


# ---------------------------------------------------------------- scan


def latest_case_time(session: Session) -> datetime | None:
    """The newest ``received_at`` of the appeals (proactive tasks excluded)."""
    return session.scalar(select(func.max(Case.received_at)).where(
        Case.channel.not_in(EXCLUDED_CHANNELS)))


def parse_as_of(value: str | date | datetime | None) -> datetime | None:
    """``2025-06-30`` → the end of that day; ``2025-06-30T12:00`` → that time; None → None."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime.combine(value, datetime.max.time()).replace(microsecond=0)
    s = str(value).strip()
    try:
        if len(s) == 10:
            return parse_as_of(date.fromisoformat(s))
        return datetime.fromisoformat(s)
    except ValueError:
        raise ValidationError(Problem(f"时间格式不正确：{s!r}（应为 2025-06-30 或 2025-06-30T18:00）",
                                      field="as_of")) from None


def _load_rows(session: Session, since: datetime, as_of: datetime, text_since: datetime | None,
               ) -> list[CaseRow]:
    cols = [Case.id, Case.received_at, Case.matter_code, Case.grid_code, Case.community_code,
            Case.street_code, Case.address_code, Case.event_id, Case.caller_id, Case.reopen_count,
            Case.lon, Case.lat]
    stmt = (select(*cols).where(Case.received_at > since, Case.received_at <= as_of,
                                Case.channel.not_in(EXCLUDED_CHANNELS)))
    rows = [CaseRow(id=r[0], at=r[1], matter_code=r[2], grid_code=r[3], community_code=r[4],
                    street_code=r[5], address_code=r[6], event_id=r[7], caller_id=r[8],
                    reopen_count=r[9] or 0, lon=r[10], lat=r[11])
            for r in session.execute(stmt)]
    if text_since is not None:
        by_id = {r.id: r for r in rows}
        texts = session.execute(select(Case.id, Case.text).where(
            Case.received_at > text_since, Case.received_at <= as_of,
            Case.channel.not_in(EXCLUDED_CHANNELS)))
        for cid, text in texts:
            if cid in by_id:
                by_id[cid].text = text
    return rows


def _names(session: Session, rows: Sequence[CaseRow]) -> Names:
    from jiedao.auth.audit import mask_name, mask_phone
    from jiedao.cases.models import Caller
    from jiedao.catalog.models import Matter
    from jiedao.geo.models import Address, Grid, Street

    n = Names()
    n.matters = dict(session.execute(select(Matter.code, Matter.name)).all())
    n.grids = dict(session.execute(select(Grid.code, Grid.name)).all())
    n.streets = dict(session.execute(select(Street.code, Street.name)).all())
    addr = {r.address_code for r in rows if r.address_code}
    for chunk in _chunks(sorted(addr), 500):
        n.addresses.update(session.execute(select(Address.code, Address.full)
                                           .where(Address.code.in_(chunk))).all())
    callers = Counter(r.caller_id for r in rows if r.caller_id is not None)
    frequent = [c for c, k in callers.items() if k >= 2]
    for chunk in _chunks(sorted(frequent), 500):
        for cid, phone, name in session.execute(select(Caller.id, Caller.phone, Caller.name)
                                                .where(Caller.id.in_(chunk))):
            n.callers[cid] = f"{mask_name(name)} {mask_phone(phone)}" if name else mask_phone(phone)
    return n


def _place_words(session: Session) -> frozenset[str]:
    """Road and compound names and their jieba parts (汉江路 → 汉江): places, not topics."""
    from jiedao.cases.analysis.classifier import _tokenizer
    from jiedao.geo.models import Address, Road

    names = set(session.scalars(select(Road.name)))
    names |= {c for c in session.scalars(select(Address.compound).distinct()) if c}
    out = set(names)
    for n in names:
        out.update(w for w in _tokenizer().lcut(n, HMM=False) if len(w) >= 2)
    return frozenset(out)


def _chunks(seq: list, size: int):
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


def find(session: Session, *, as_of: datetime | None = None, config: dict | None = None,
         kinds: Iterable[str] | None = None, timings: dict | None = None,
         ) -> tuple[datetime | None, list[Finding]]:
    """Run the detectors as of ``as_of`` (default: the latest case time) without storing.
    ``timings``, when given, receives seconds per step (load, names, each detector)."""
    import time

    t = {} if timings is None else timings
    t0 = time.perf_counter()
    cfg = config or load_config()
    as_of = as_of or latest_case_time(session)
    if as_of is None:
        return None, []
    kinds = list(kinds or WARNING_KINDS)
    sp, rc, rp, nt = cfg["spike"], cfg["recurring"], cfg["repeat_caller"], cfg["new_term"]
    look = {"spike": timedelta(days=sp.get("window_days", 7)) * (sp["baseline_weeks"] + 1),
            "recurring": timedelta(days=rc["window_days"]),
            "repeat_caller": timedelta(days=rp["window_days"]),
            "new_term": timedelta(days=nt["window_days"]) * (nt["baseline_windows"] + 1)}
    since = as_of - max(look[k] for k in kinds)
    text_since = as_of - look["new_term"] if "new_term" in kinds else None
    rows = _load_rows(session, since, as_of, text_since)
    t["load"], t0 = time.perf_counter() - t0, time.perf_counter()
    t["rows"] = len(rows)
    names = _names(session, rows)
    t["names"], t0 = time.perf_counter() - t0, time.perf_counter()
    out: list[Finding] = []
    if "spike" in kinds:
        out += detect_spikes(rows, as_of, sp, names)
        t["spike"], t0 = time.perf_counter() - t0, time.perf_counter()
    if "recurring" in kinds:
        out += detect_recurring(rows, as_of, rc, names)
        t["recurring"], t0 = time.perf_counter() - t0, time.perf_counter()
    if "repeat_caller" in kinds:
        out += detect_repeat_callers(rows, as_of, rp, names)
        t["repeat_caller"], t0 = time.perf_counter() - t0, time.perf_counter()
    if "new_term" in kinds:
        out += detect_new_terms(rows, as_of, nt, names, place_words=_place_words(session))
        t["new_term"], t0 = time.perf_counter() - t0, time.perf_counter()
    return as_of, out


def store(session: Session, findings: Sequence[Finding], *, now: datetime | None = None) -> dict[str, int]:
    """Insert or update the warnings by key; status and task of existing ones are kept.
    Returns how many rows were created and updated."""
    now = now or clock.now()
    existing: dict[str, CockpitWarning] = {}
    keys = [f.key for f in findings]
    for chunk in _chunks(keys, 500):
        for w in session.scalars(select(CockpitWarning).where(CockpitWarning.key.in_(chunk))):
            existing[w.key] = w
    created = updated = 0
    for f in findings:
        w = existing.get(f.key)
        if w is None:
            w = CockpitWarning(key=f.key, kind=f.kind, status="open", created_at=now)
            session.add(w)
            existing[f.key] = w
            created += 1
        else:
            updated += 1
        w.title, w.detail, w.score, w.case_ids = f.title[:200], f.detail, f.score, list(f.case_ids)
        w.matter_code, w.grid_code = f.matter_code, f.grid_code
        w.street_code, w.community_code = f.street_code, f.community_code
        w.window_start, w.window_end, w.updated_at = f.window_start, f.window_end, now
    session.flush()
    return {"created": created, "updated": updated}


def expire_stale(session: Session, *, as_of: datetime, days: float, keep: Iterable[str] = (),
                 now: datetime | None = None) -> int:
    """Mark *expired* every open warning whose period ended more than ``days`` before
    ``as_of`` and that is not in ``keep`` (the keys the current scan found again): nobody acted
    on it while it was news, and an old week's spike should not sit on top of the list for
    ever. Tasked and dismissed warnings keep their status. Returns how many expired."""
    cutoff = as_of - timedelta(days=days)
    keep = set(keep)
    stale = [w for w in session.scalars(select(CockpitWarning).where(
        CockpitWarning.status == "open", CockpitWarning.window_end < cutoff)) if w.key not in keep]
    now = now or clock.now()
    for w in stale:
        w.status, w.updated_at = "expired", now
    session.flush()
    return len(stale)


def scan(session: Session, *, as_of: datetime | None = None, config: dict | None = None,
         kinds: Iterable[str] | None = None, report: dict | None = None) -> dict[str, int]:
    """Find every warning as of ``as_of`` and store it (idempotent: the same finding updates
    its row and keeps its status), then expire open warnings older than the configuration's
    ``expire_after_days``. Returns the number of warnings found per kind; ``report``, when
    given, receives ``created``, ``updated`` and ``expired``."""
    cfg = config or load_config()
    as_of, findings = find(session, as_of=as_of, config=cfg, kinds=kinds)
    counts = {k: 0 for k in WARNING_KINDS}
    for f in findings:
        counts[f.kind] += 1
    stored = store(session, findings)
    expired = 0
    if as_of is not None and cfg.get("expire_after_days"):
        expired = expire_stale(session, as_of=as_of, days=cfg["expire_after_days"],
                               keep=(f.key for f in findings))
    if report is not None:
        report.update(stored, expired=expired)
    return counts


# ---------------------------------------------------------------- reading


def _restrict(stmt, principal):
    from jiedao.auth.scope import restrict

    return restrict(stmt, principal, street=CockpitWarning.street_code,
                    community=CockpitWarning.community_code)


def list_warnings(session: Session, principal, *, status: str | Sequence[str] | None = "open",
                  kind: str | None = None, overlapping: tuple[datetime, datetime] | None = None,
                  limit: int = 50, offset: int = 0) -> list[CockpitWarning]:
    """Warnings ``principal`` may see (a street leader: its street's), newest period first,
    then by score. ``status`` is one status, several, or None for every status;
    ``overlapping=(start, end)`` keeps the warnings whose period meets [start, end)."""
    stmt = _restrict(select(CockpitWarning), principal)
    if isinstance(status, str):
        stmt = stmt.where(CockpitWarning.status == status)
    elif status:
        stmt = stmt.where(CockpitWarning.status.in_(list(status)))
    if overlapping is not None:
        stmt = stmt.where(CockpitWarning.window_end >= overlapping[0],
                          CockpitWarning.window_start < overlapping[1])
    if kind:
        stmt = stmt.where(CockpitWarning.kind == kind)
    stmt = stmt.order_by(CockpitWarning.window_end.desc(), CockpitWarning.score.desc(),
                         CockpitWarning.id.desc()).limit(limit).offset(offset)
    return list(session.scalars(stmt))


def count_warnings(session: Session, principal, *, status: str | None = "open") -> dict[str, int]:
    """Visible warnings per kind."""
    stmt = _restrict(select(CockpitWarning.kind, func.count()).group_by(CockpitWarning.kind), principal)
    if status:
        stmt = stmt.where(CockpitWarning.status == status)
    return {k: 0 for k in WARNING_KINDS} | dict(session.execute(stmt).all())


def get_warning(session: Session, warning_id: int, principal) -> CockpitWarning:
    """The warning, or NotFound / PermissionDenied when it is outside ``principal``'s scope."""
    from jiedao.auth.scope import check_visible

    w = session.get(CockpitWarning, warning_id)
    if w is None:
        raise NotFound(f"预警 {warning_id} 不存在")
    check_visible(principal, street_code=w.street_code, community_code=w.community_code)
    return w


def warning_cases(session: Session, warning: CockpitWarning, principal) -> list[Case]:
    """The warning's cases that ``principal`` may see, newest first."""
    from jiedao.cases.queries import restrict_cases

    ids = [int(i) for i in (warning.case_ids or [])]
    if not ids:
        return []
    out: list[Case] = []
    for chunk in _chunks(ids, 500):
        out += session.scalars(restrict_cases(select(Case).where(Case.id.in_(chunk)), principal))
    out.sort(key=lambda c: (c.received_at, c.id), reverse=True)
    return out


def explain(w: CockpitWarning) -> list[str]:
    """How the warning was found, in Chinese sentences (the test, its numbers, the rule)."""
    d = w.detail or {}
    if w.kind == "spike":
        lvl = "网格" if d.get("level") == "grid" else "街道"
        base = "、".join(str(x) for x in d.get("baseline_counts", []))
        u = "件" if d.get("unit") == "case" else "起"
        unit = ("计数单位为工单件数。" if d.get("unit") == "case" else
                f"计数单位为独立问题（同一事件的多次来电计为一起；本周 {d.get('observed')} 起问题共 "
                f"{d.get('cases')} 件工单）。")
        return [
            f"检验方法：单侧精确泊松检验。把{lvl}「{d.get('place_name')}」×事项「{d.get('matter_name')}」"
            f"作为一个格子，用它自己前 {d.get('baseline_weeks')} 周的周受理量作基线；{unit}",
            f"基线各周数量（由远及近）：{base or '无'}，合计 {d.get('baseline_total')} {u}；"
            f"平滑后的基线周均 λ₀ = (合计 + {d.get('prior_cases')}) / ({d.get('baseline_weeks')} + "
            f"{d.get('prior_weeks')}) = {d.get('expected')} {u}。",
            f"近 {d.get('window_days')} 天实际 {d.get('observed')} {u}，为基线的 {d.get('ratio')} 倍；"
            f"若没有变化，出现不少于这么多件的概率 p = P(X ≥ {d.get('observed')} | λ₀) = {_fmt_p(d.get('p'))}。",
            f"同一层级共检验 {d.get('family_size')} 个格子，经 Benjamini–Hochberg 多重比较校正后 "
            f"q = {_fmt_p(d.get('q'))}（阈值 {d.get('fdr')}）；另要求至少 {d.get('min_count')} {u}且不低于基线的 "
            f"{d.get('min_ratio')} 倍。",
        ]
    if w.kind == "recurring":
        rule = (f"规则：{d.get('window_days')} 天内同一地点同一事项至少 {d.get('min_cases')} 件、分布在至少 "
                f"{d.get('min_weeks')} 个不同的周；或至少 {d.get('reopen_min_cases')} 件且有不满意重办。")
        return [
            f"地点「{d.get('place_name')}」（{'标准地址' if d.get('place_kind') == 'addr' else '事件聚类'}）"
            f"的「{d.get('matter_name')}」问题在 {d.get('first_at')} 至 {d.get('last_at')} 之间共 "
            f"{d.get('cases')} 件，分布在 {d.get('weeks')} 个周、{d.get('events')} 个独立事件，其中重办 "
            f"{d.get('reopened')} 件。",
            rule,
            "同一问题在同一地点反复出现，说明前期处置未从根本上解决，建议主动治理。",
        ]
    if w.kind == "repeat_caller":
        matters = "、".join(f"{k}{v}件" for k, v in (d.get("matters") or {}).items())
        return [
            f"来电人 {d.get('caller')} 近 {d.get('window_days')} 天来电 {d.get('cases')} 次，涉及 "
            f"{d.get('problems')} 个不同问题（同一事件的多次来电计为一个问题）。",
            f"主要事项：{matters or '未分类'}。",
            f"规则：{d.get('window_days')} 天内至少 {d.get('min_cases')} 次。建议回访了解诉求是否未解决。",
        ]
    if w.kind == "new_term":
        return [
            "候选词取自近期诉求文本的 jieba 分词（去掉停用词、数字和地名）；两段时间都按“文本中含有该词”的问题数计。",
            f"检验方法：二项条件检验（比较两个比例）。近 {d.get('window_days')} 天的 {d.get('units_current')} 个问题中有 "
            f"{d.get('observed')} 个提到「{d.get('term')}」；之前 {d.get('baseline_windows')} 个同样长度周期的 "
            f"{d.get('units_baseline')} 个问题中有 {d.get('baseline')} 个（同一事件的多个来电计为一个问题）。",
            f"若该词出现的比例没有变化，期望为 {d.get('expected')} 个；出现不少于 {d.get('observed')} 个的概率 "
            f"p = {_fmt_p(d.get('p'))}，对数似然比 G² = {d.get('g2')}。",
            f"共检验 {d.get('family_size')} 个至少出现 {d.get('min_count')} 次的词，Benjamini–Hochberg 校正后 "
            f"q = {_fmt_p(d.get('q'))}（阈值 {d.get('fdr')}）；占比上升 {d.get('ratio')} 倍（要求至少 "
            f"{d.get('min_ratio')} 倍）。",
        ]
    return []


def _fmt_p(p) -> str:
    if p is None:
        return "—"
    p = float(p)
    return f"{p:.2e}" if p < 0.001 else f"{p:.4f}"


# ---------------------------------------------------------------- to task


def _task_text(w: CockpitWarning) -> str:
    d = w.detail or {}
    kind = WARNING_KINDS.get(w.kind, w.kind)
    why = {
        "spike": "请网格员到现场排查集中原因，主动治理，防止问题继续增多。",
        "recurring": "同一问题在同一地点反复发生，请现场核查根源，制定整治措施，避免再次发生。",
        "repeat_caller": "请主动联系来电人，了解其反复来电的原因，协调相关部门一并解决。",
        "new_term": "请研判该新出现问题的成因和范围，提前部署处置。",
    }.get(w.kind, "")
    place = d.get("place_name") if w.kind in ("spike", "recurring") else None
    text = f"【主动治理·{kind}】{w.title}。"
    if place:
        text += f"地点：{place}。"
    text += why + f"（驾驶舱预警 #{w.id}，涉及工单 {len(w.case_ids or [])} 件）"
    return text


def to_task(session: Session, warning_id: int, principal, *, actor: str, pipeline=None,
            at: datetime | None = None) -> Case:
    """Turn a warning into a proactive-governance case (channel 主动治理, kind 巡查上报),
    analysed and dispatched by the normal intake pipeline, and mark the warning *tasked*.
    Doing it again returns the same case (idempotency key ``cockpit-warning:<id>``)."""
    from jiedao.auth import audit
    from jiedao.cases import service

    w = get_warning(session, warning_id, principal)
    if w.task_case_id is not None:
        existing = session.get(Case, w.task_case_id)
        if existing is not None:
            return existing
    if pipeline is None:
        from jiedao.cases.runtime import get_pipeline

        pipeline = get_pipeline()
    at = at or clock.now()
    cases = [c for c in session.scalars(select(Case).where(Case.id.in_((w.case_ids or [])[:200])))]
    # the task's point: the average position of the warning's cases in its grid (none for a
    # district-wide warning, which would otherwise land on whatever grid is in the middle)
    here = [c for c in cases if c.lon is not None and w.grid_code and c.grid_code == w.grid_code]
    lon = sum(c.lon for c in here) / len(here) if here else None
    lat = sum(c.lat for c in here) / len(here) if here else None
    d = w.detail or {}
    location = d.get("place_name") if w.kind in ("spike", "recurring") else None
    case, created = pipeline.submit(
        session, text=_task_text(w), channel="proactive", kind="patrol", actor=actor,
        auto_dispatch=False, at=at, location_text=(location or None) and location[:300],
        lon=lon, lat=lat, idempotency_key=f"cockpit-warning:{w.id}")
    if created:
        if case.grid_code is None and case.street_code is None and (w.grid_code or w.street_code):
            case.grid_code, case.street_code = w.grid_code, w.street_code
            case.community_code = w.community_code
            if d.get("place_kind") == "addr":
                case.address_code = d.get("place")
        matter = w.matter_code or case.matter_code
        if matter and case.state in ("received", "analysed"):
            # no department found: the case waits in the operator's triage queue
            with contextlib.suppress(ValidationError, NotFound):
                pipeline.dispatch(session, case, actor=actor, matter_code=matter, at=at, auto=True)
        service.load_case(session, case.id)
    w.status, w.task_case_id, w.updated_at = "tasked", case.id, at
    audit.record(session, principal=principal, actor=actor, action="cockpit.warning.task",
                 object_type="cockpit_warning", object_id=w.id,
                 detail={"case_id": case.id, "case_code": case.code, "kind": w.kind})
    session.flush()
    return case


def dismiss(session: Session, warning_id: int, principal, *, actor: str) -> CockpitWarning:
    """Mark a warning *dismissed* (忽略); a re-scan keeps it dismissed."""
    from jiedao.auth import audit

    w = get_warning(session, warning_id, principal)
    if w.status == "open":
        w.status, w.updated_at = "dismissed", clock.now()
        audit.record(session, principal=principal, actor=actor, action="cockpit.warning.dismiss",
                     object_type="cockpit_warning", object_id=w.id)
    return w
