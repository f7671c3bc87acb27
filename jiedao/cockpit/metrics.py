"""The one metrics layer of the cockpit: every number a page, export or briefing shows.

Definitions (口径) live in :data:`METRICS` (Chinese, shown as tooltips and in docs/cockpit.md);
they are computed here through DuckDB over the mirror of the operational database
(:mod:`jiedao.cockpit.mirror`).

Conventions
* A case belongs to a period by its **受理时间** (received_at); every metric of a period is
  about the cases received in it. ``as_of`` (统计截止时间) is the latest business action in the
  data: an assignment still open counts as late once its deadline is before ``as_of``.
* Rates are returned as **percentages** (0–100, ``unit == "%"``); ``change_prev`` /
  ``change_yoy`` of a rate are differences in percentage points. ``handling_hours`` is in hours.
* Case dimensions (street, community, grid, category, channel) count cases. The department
  dimension — and every query of a department principal, and any ``filters["department"]`` —
  counts (case, department) pairs over **that department's assignments** (主办 and 协办).
* ``principal=None`` means the system (CLI, briefing): the whole district.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import yaml

from jiedao.cockpit.mirror import Mirror
from jiedao.cockpit.periods import Period
from jiedao.db import Database
from jiedao.errors import Problem, ValidationError

DATA_DIR = Path(__file__).resolve().parent / "data"
REFRESH_SECONDS = float(os.environ.get("JIEDAO_COCKPIT_REFRESH_SECONDS", "30"))
NULL_LABEL = "（未指定）"


@dataclass(frozen=True)
class MetricDef:
    key: str
    label: str
    unit: str
    kind: str  # count | rate | mean
    higher_is_better: bool
    definition: str
    short: str = ""  # short Chinese hint


@dataclass(frozen=True)
class DimensionDef:
    key: str
    label: str
    column: str = ""


METRICS: dict[str, MetricDef] = {m.key: m for m in (
    MetricDef("received", "受理量", "件", "count", True,
              "统计期内受理（按受理时间）的工单件数。按部门统计时为该部门承办（主办或协办，含已退回、已改派）的工单件数。"),
    MetricDef("sign_ontime", "按时签收率", "%", "rate", True,
              "分母：统计期内受理的工单中，主办派单已签收或已退单、或签收时限已过仍未签收的工单；"
              "分子：其中每一次主办派单都在签收时限内签收（或退单）的工单。签收时限取派单记录的签收时限，"
              "未设置时为派单后2个工作小时（按工作日历）。改派前未签收的派单不计。"
              "按部门统计时以该部门的全部派单（主办和协办）计。"),
    MetricDef("close_ontime", "按时办结率", "%", "rate", True,
              "分母：统计期内受理的工单中，有效主办派单（未退回、未改派）已答复或办理时限已到的工单；"
              "分子：其中每一次有效主办派单都在办理时限（含批准的延期）内答复、且没有超期未答复派单的工单。"
              "重办轮次的主办派单一并考核。按部门统计时以该部门的全部有效派单计。"),
    MetricDef("resolved", "解决率", "%", "rate", True,
              "分母：统计期内受理且已回访的工单；分子：其中最近一次回访评价不是“不满意”的工单"
              "（不满意后重办、再回访满意或基本满意的视为已解决）。按部门统计时只计该部门主办并已答复的工单。"),
    MetricDef("satisfied", "满意率", "%", "rate", True,
              "分母：统计期内受理且已回访的工单；分子：其中首次回访评价为“满意”或“基本满意”的工单。"
              "按部门统计时只计该部门主办并已答复的工单。"),
    MetricDef("repeat", "重复诉求率", "%", "rate", False,
              "分母：统计期内受理的工单；分子：其中归入已有事件（同一地点同一问题，且不是该事件最早受理的一件）的工单。"
              "越低越好。"),
    MetricDef("first_dispatch", "一次派单准确率", "%", "rate", True,
              "分母：统计期内受理并已派单的工单；分子：其中流转记录中没有退单、也没有改派的工单。"
              "按部门统计时，分母为派给该部门主办的工单，分子为该部门主办派单既未退回也未被改派的工单。"),
    MetricDef("handling_hours", "平均办理时长(小时)", "小时", "mean", False,
              "统计期内受理且主办部门已答复（无答复的以办结时间计）的工单，从受理到主办部门首次答复的平均小时数"
              "（自然时间）。按部门统计时为该部门从派单到首次答复的平均小时数。越低越好。"),
)}

DIMENSIONS: dict[str, DimensionDef] = {d.key: d for d in (
    DimensionDef("department", "部门", "department"),
    DimensionDef("street", "街道", "street"),
    DimensionDef("community", "社区", "community"),
    DimensionDef("grid", "网格", "grid"),
    DimensionDef("category", "事项", "category"),
    DimensionDef("channel", "渠道", "channel"),
)}


@dataclass
class MetricValue:
    key: str
    value: float | None
    numerator: int | None
    denominator: int | None
    previous: float | None = None
    last_year: float | None = None

    @property
    def change_prev(self) -> float | None:
        """Absolute change against the previous period (percentage points for rates)."""
        if self.value is None or self.previous is None:
            return None
        return self.value - self.previous

    @property
    def change_yoy(self) -> float | None:
        """Absolute change against the same period last year."""
        if self.value is None or self.last_year is None:
            return None
        return self.value - self.last_year

    @property
    def metric(self) -> MetricDef:
        return METRICS[self.key]


@dataclass
class BreakdownRow:
    code: str
    label: str
    values: dict[str, MetricValue] = field(default_factory=dict)


@dataclass
class RankRow:
    rank: int
    code: str
    label: str
    score: float | None
    values: dict[str, MetricValue] = field(default_factory=dict)


@lru_cache(maxsize=1)
def ranking_config() -> dict:
    """Weights and threshold of the monthly ranking (jiedao/cockpit/data/ranking.yaml)."""
    data = yaml.safe_load((DATA_DIR / "ranking.yaml").read_text(encoding="utf-8")) or {}
    weights = {k: float(v) for k, v in (data.get("weights") or {}).items()}
    unknown = [k for k in weights if k not in METRICS or METRICS[k].kind != "rate"]
    if unknown:
        raise ValidationError(Problem(f"排名权重中的指标无效：{', '.join(unknown)}", source="ranking.yaml"))
    return {"weights": weights, "min_cases": int(data.get("min_cases", 1))}


# ---- SQL pieces ------------------------------------------------------------------------
def _ts(d) -> str:
    if isinstance(d, datetime):
        return f"TIMESTAMP '{d.isoformat(' ')}'"
    return f"TIMESTAMP '{d.isoformat()} 00:00:00'"


def _in(p: Period) -> str:
    return f"(received_at >= {_ts(p.start)} AND received_at < {_ts(p.end)})"


def _parts(metric: str) -> tuple[str, str]:
    """(denominator, numerator) boolean expressions of a metric over a fact row (the flag
    columns the mirror materialises from the definitions in ``jiedao.cockpit.mirror.FLAGS``)."""
    cols = {"received": ("TRUE", "TRUE"), "sign_ontime": ("s_d", "s_n"), "close_ontime": ("c_d", "c_n"),
            "resolved": ("r_d", "r_n"), "satisfied": ("f_d", "f_n"), "repeat": ("TRUE", "is_repeat"),
            "first_dispatch": ("fd_d", "fd_n"), "handling_hours": ("hours IS NOT NULL", "hours IS NOT NULL")}
    if metric not in cols:
        raise ValidationError(Problem(f"未知指标“{metric}”", field="metric"))
    return cols[metric]


def _aggs(metrics: list[str]) -> list[str]:
    """Denominator/numerator aggregates of each metric (``<m>_d``, ``<m>_n``)."""
    out = []
    for m in metrics:
        den, num = _parts(m)
        out.append(f"COUNT_IF({den}) AS {m}_d")
        out.append(f"SUM(hours) FILTER (WHERE {den}) AS {m}_n" if METRICS[m].kind == "mean"
                   else f"COUNT_IF({num}) AS {m}_n")
    return out


def _value(metric: str, num, den) -> float | None:
    kind = METRICS[metric].kind
    if kind == "count":
        return float(den or 0)
    if not den:
        return None
    if kind == "mean":
        return float(num) / den
    return 100.0 * num / den


def _mv(metric: str, cur: dict | None, prev: dict | None = None, ly: dict | None = None,
        compare: bool = True) -> MetricValue:
    cur = cur or {}
    num, den = cur.get(f"{metric}_n"), cur.get(f"{metric}_d")
    kind = METRICS[metric].kind
    mv = MetricValue(metric, _value(metric, num, den),
                     None if kind == "mean" else int(num or 0), int(den or 0))
    if compare:
        prev, ly = prev or {}, ly or {}
        mv.previous = _value(metric, prev.get(f"{metric}_n"), prev.get(f"{metric}_d"))
        mv.last_year = _value(metric, ly.get(f"{metric}_n"), ly.get(f"{metric}_d"))
    return mv


class Metrics:
    """Metric queries over the DuckDB mirror of ``db``.

    Queries refresh the mirror first when it is older than ``refresh_seconds``
    (env JIEDAO_COCKPIT_REFRESH_SECONDS, default 30; the check itself is one cheap probe of
    cases_case); :meth:`refresh` with ``force=True`` syncs now.
    """

    _instances: dict[str, Metrics] = {}
    _instances_lock = threading.Lock()

    def __init__(self, db: Database, *, path: Path | None = None, refresh_seconds: float | None = None):
        self.db = db
        self.mirror = Mirror(db, path)
        self.refresh_seconds = REFRESH_SECONDS if refresh_seconds is None else refresh_seconds

    @classmethod
    def for_database(cls, db: Database) -> Metrics:
        """The process-wide instance for ``db``'s URL (created on first use)."""
        with cls._instances_lock:
            m = cls._instances.get(db.url)
            if m is None:
                m = cls(db)
                cls._instances[db.url] = m
            return m

    def close(self) -> None:
        self.mirror.close()

    # ---- freshness --------------------------------------------------------------------
    def refresh(self, force: bool = False) -> int:
        """Sync the DuckDB mirror from the operational DB; returns the cases changed.
        Without ``force`` it does nothing when synced less than ``refresh_seconds`` ago."""
        m = self.mirror
        if force or m.synced_at is None:
            return m.sync(force=force)
        if time.monotonic() - m.synced_at < self.refresh_seconds:
            return 0
        # a page does not wait for another thread's sync: it reads the current snapshot
        if not m.lock.acquire(blocking=False):
            return 0
        try:
            return m.sync()
        finally:
            m.lock.release()

    @property
    def as_of(self) -> datetime | None:
        """统计截止时间: the latest business action in the mirrored data."""
        self.refresh()
        return self.mirror.as_of

    def latest_period(self, grain: str = "month") -> Period | None:
        """The latest period of ``grain`` holding received cases (pages default to it)."""
        self.refresh()
        with self.mirror.cursor() as cur:
            last = cur.execute("SELECT MAX(received_at) FROM cf").fetchall()[0][0]
        return None if last is None else Period.of(grain, last)

    def first_period(self, grain: str = "month") -> Period | None:
        self.refresh()
        with self.mirror.cursor() as cur:
            first = cur.execute("SELECT MIN(received_at) FROM cf").fetchall()[0][0]
        return None if first is None else Period.of(grain, first)

    def label(self, dimension: str, code: str | None) -> str:
        """The display name of a dimension code (department name, street name…)."""
        if code is None or code == "":
            return NULL_LABEL
        return self.mirror.labels.get(dimension, {}).get(code, code)

    # ---- query building ---------------------------------------------------------------
    def _where(self, principal, filters: dict | None, by: str | None = None) -> tuple[str, str, list]:
        """(fact table, WHERE conditions, params) for a scope and filters."""
        filters = {k: v for k, v in (filters or {}).items() if v is not None}
        for k in filters:
            if k not in DIMENSIONS:
                raise ValidationError(Problem(f"未知的筛选维度“{k}”", field=k))
        dept_scope = principal is not None and principal.scope_level == "department"
        table = "df" if (by == "department" or "department" in filters or dept_scope) else "cf"
        conds, params = [], []
        if principal is not None and principal.scope_level != "district":
            level, code = principal.scope_level, principal.scope_code
            col = {"street": "street", "community": "community", "department": "department"}.get(level)
            if col and code:
                conds.append(f"{col} = ?")
                params.append(code)
            else:
                conds.append("FALSE")
        for k, v in filters.items():
            col = DIMENSIONS[k].column
            if v == "":
                conds.append(f"{col} IS NULL")
            else:
                conds.append(f"{col} = ?")
                params.append(str(v))
        return table, " AND ".join(conds) or "TRUE", params

    def _metrics(self, metrics: list[str] | None) -> list[str]:
        ms = list(metrics) if metrics else list(METRICS)
        bad = [m for m in ms if m not in METRICS]
        if bad:
            raise ValidationError(Problem(f"未知指标：{', '.join(bad)}", field="metrics"))
        return ms

    def _fetch(self, sql: str, params: list) -> list[dict]:
        with self.mirror.cursor() as cur:
            res = cur.execute(sql, params)
            cols = [d[0] for d in res.description]
            return [dict(zip(cols, r, strict=True)) for r in res.fetchall()]

    def _no_history(self, period: Period, values) -> None:
        """Comparisons with a period before the first case in the data are unknown (None), not 0."""
        first = self.mirror.first_at
        if first is None:
            return
        prev_gone = period.previous().end_dt <= first
        ly_gone = period.last_year().end_dt <= first
        for v in values:
            if prev_gone:
                v.previous = None
            if ly_gone:
                v.last_year = None

    def _grouped(self, ms: list[str], table: str, where: str, params: list, periods: list[Period],
                 group: str | None) -> dict[tuple, dict]:
        """One scan: aggregates per (group value, period index). Identical periods (a year's
        previous period is also its last year) are computed once and shared."""
        distinct = list(dict.fromkeys(periods))
        tag = "CASE " + " ".join(f"WHEN {_in(p)} THEN {i}" for i, p in enumerate(distinct)) + " END"
        sql = (f"SELECT {group or 'NULL'} AS g, {tag} AS t, {', '.join(_aggs(ms))} "
               f"FROM {table} WHERE {where} AND {_in(Period('day', min(p.start for p in distinct), max(p.end for p in distinct)))} "
               f"AND ({' OR '.join(_in(p) for p in distinct)}) GROUP BY ALL")
        rows = {(r["g"], r["t"]): r for r in self._fetch(sql, params)}
        out = {}
        for (g, t), r in rows.items():
            for i, p in enumerate(periods):
                if distinct.index(p) == t:
                    out[(g, i)] = r
        return out

    # ---- queries ----------------------------------------------------------------------
    def summary(self, period, *, principal=None, filters: dict[str, str] | None = None,
                metrics: list[str] | None = None) -> dict[str, MetricValue]:
        """Each metric for ``period`` with the previous period (环比) and last year (同比)."""
        period = Period.parse(period)
        self.refresh()
        ms = self._metrics(metrics)
        table, where, params = self._where(principal, filters)
        got = self._grouped(ms, table, where, params, [period, period.previous(), period.last_year()], None)
        out = {m: _mv(m, got.get((None, 0)), got.get((None, 1)), got.get((None, 2))) for m in ms}
        self._no_history(period, out.values())
        return out

    def breakdown(self, period, by: str, *, principal=None, filters=None, metrics=None,
                  compare: bool = True) -> list[BreakdownRow]:
        """Metrics per code of dimension ``by`` (rows with any case in the period or, with
        ``compare``, its comparison periods), sorted by code; cases without a code come last
        as code "" (label 未指定; filter with "" to select them)."""
        period = Period.parse(period)
        if by not in DIMENSIONS:
            raise ValidationError(Problem(f"未知的维度“{by}”", field="by"))
        self.refresh()
        ms = self._metrics(metrics)
        table, where, params = self._where(principal, filters, by=by)
        col = DIMENSIONS[by].column
        periods = [period] + ([period.previous(), period.last_year()] if compare else [])
        got = self._grouped(ms, table, where, params, periods, col)
        codes = sorted({g for g, _ in got}, key=lambda c: (c is None, c or ""))
        out = []
        for code in codes:
            vals = {m: _mv(m, got.get((code, 0)), got.get((code, 1)), got.get((code, 2)), compare=compare)
                    for m in ms}
            self._no_history(period, vals.values())
            out.append(BreakdownRow(code or "", self.label(by, code), vals))
        return out

    def ranking(self, period, by: str = "department", *, principal=None) -> list[RankRow]:
        """排名: units of ``by`` (department or street) by a composite score — the weighted
        mean of the rates in ranking.yaml (weights renormalised over the rates that have data),
        rounded to 2 decimals; equal scores share a rank (1, 2, 2, 4). Units below
        ``min_cases`` received and units without a code are left out."""
        if by not in ("department", "street"):
            raise ValidationError(Problem("排名只支持部门或街道", field="by"))
        cfg = ranking_config()
        rows = self.breakdown(period, by, principal=principal, compare=False)
        ranked = []
        for r in rows:
            if not r.code or r.values["received"].denominator < cfg["min_cases"]:
                continue
            total = wsum = 0.0
            for m, w in cfg["weights"].items():
                v = r.values[m].value
                if v is not None and w:
                    total += w * v
                    wsum += w
            score = round(total / wsum, 2) if wsum else None
            ranked.append(RankRow(0, r.code, r.label, score, r.values))
        ranked.sort(key=lambda x: (x.score is None, -(x.score or 0), x.code))
        prev_score, rank = object(), 0
        for i, r in enumerate(ranked, 1):
            if r.score != prev_score:
                rank, prev_score = i, r.score
            r.rank = rank
        return ranked

    def trend(self, period, grain: str, *, principal=None, filters=None,
              metrics=None) -> list[tuple[Period, dict[str, MetricValue]]]:
        """``period`` split by ``grain`` (e.g. a year into 12 months), each point's metrics
        (no comparisons: previous/last_year are None)."""
        period = Period.parse(period)
        points = period.split(grain)
        self.refresh()
        ms = self._metrics(metrics)
        table, where, params = self._where(principal, filters)
        span = Period(grain, points[0].start, points[-1].end)
        got = self._grouped(ms, table, where, params, [span],
                            f"CAST(DATE_TRUNC('{grain}', received_at) AS DATE)")
        return [(p, {m: _mv(m, got.get((p.start, 0)), compare=False) for m in ms}) for p in points]

    def case_ids(self, period, metric: str, *, part: str = "denominator", principal=None,
                 filters=None, limit: int | None = None) -> list[int]:
        """The drill-down: ids of the cases behind a number, ascending. ``part`` is
        "denominator", "numerator" or "miss" (denominator but not numerator)."""
        period = Period.parse(period)
        if part not in ("denominator", "numerator", "miss"):
            raise ValidationError(Problem(f"未知的部分“{part}”", field="part"))
        self.refresh()
        table, where, params = self._where(principal, filters)
        den, num = _parts(metric)
        cond = {"denominator": den, "numerator": num, "miss": f"({den}) AND NOT ({num})"}[part]
        sql = (f"SELECT DISTINCT id FROM {table} WHERE {where} AND {_in(period)} AND {cond} ORDER BY id"
               + (f" LIMIT {int(limit)}" if limit else ""))
        with self.mirror.cursor() as cur:
            return [int(i) for i in cur.execute(sql, params).fetchnumpy()["id"]]
