"""Record linkage: which hub records are the same enterprise (or building, place).

Pipeline (configured in ``hub/data/linkage.yaml``):

1. **Deterministic.** Records sharing a valid unified social credit code (or a valid old
   15-digit registration number) are one entity; two records with different valid values of
   the same key are never put together.
2. **Probabilistic.** A Fellegi–Sunter model in Splink (DuckDB backend, or Spark through
   Splink's SparkAPI) scores candidate pairs from the blocking rules — among uncoded records
   and between a coded and an uncoded record. u is estimated on a random sample of records
   drawn in Python with a fixed seed, m by expectation maximisation, the prior from
   deterministic rules. Text similarity uses q-gram sets computed here and compared with
   array SQL, so both backends compute exactly the same numbers and no Spark jar is needed.
3. **Clustering with constraints.** Steward decisions first (accepted pairs merge, rejected
   pairs never end up together), then deterministic keys, then scored pairs from the most
   probable down; a merge that would join a rejected pair or two different valid codes is
   skipped. Pairs scored between ``p_lo`` and ``p_hi`` that stay apart go to review.

:func:`link_frame` does all this on a pandas DataFrame (no database). :func:`run_linkage`
reads ``hub_record``, applies ``hub_review`` decisions, keeps entity ids stable across runs,
writes ``hub_link`` / ``hub_entity`` / ``hub_review`` and saves the model in ``hub_model``.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import time
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from jiedao.errors import NotFound, Problem, ValidationError

CONFIG_PATH = Path(__file__).parent / "data" / "linkage.yaml"

FRAME_COLUMNS = ("record_id", "source_code", "name_norm", "name_core", "credit_code", "reg_no",
                 "legal_rep", "phone", "address_norm", "building_code", "street_code",
                 "industry_code", "established")
TEXT_COLUMNS = FRAME_COLUMNS[2:]
LEVEL_KINDS = ("exact", "jaccard", "overlap", "prefix")
CHECKS = ("uscc", "reg_no", "none")
DERIVED_KEYS = ("org_code",)
BACKENDS = ("duckdb", "spark")
MODEL_VERSION = 1
TOUCHED_LIST_MAX = 50_000  # entities listed per linkage run for incremental golden records

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- configuration


def load_linkage_config(entity_type: str = "enterprise", path: str | Path | None = None) -> dict:
    """The linkage configuration of ``entity_type`` from linkage.yaml, checked.

    Raises ValidationError naming the file and the field when something is wrong."""
    path = Path(path) if path else CONFIG_PATH
    src = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ValidationError([Problem(f"无法读取关联配置：{e}", source=src)]) from e
    types = (data or {}).get("entity_types") or {}
    if entity_type not in types:
        raise ValidationError([Problem(f"关联配置中没有实体类型 {entity_type}", source=src,
                                       field="entity_types")])
    cfg = dict(types[entity_type])
    validate_config(cfg, source=src)
    return cfg


def validate_config(cfg: dict, source: str = "linkage.yaml") -> None:
    """Raise ValidationError listing every problem of one entity type's configuration."""
    problems: list[Problem] = []

    def bad(msg: str, fld: str) -> None:
        problems.append(Problem(msg, source=source, field=fld))

    def col_ok(c: Any, fld: str) -> None:
        if c not in TEXT_COLUMNS:
            bad(f"未知的列 {c!r}（可用：{', '.join(TEXT_COLUMNS)}）", fld)

    for i, d in enumerate(cfg.get("deterministic") or []):
        if d.get("derive") is not None:
            if d["derive"] not in DERIVED_KEYS:
                bad(f"未知的派生键 {d['derive']!r}（可用：{', '.join(DERIVED_KEYS)}）",
                    f"deterministic[{i}].derive")
            continue
        col_ok(d.get("column"), f"deterministic[{i}].column")
        if d.get("check", "none") not in CHECKS:
            bad(f"未知的校验 {d.get('check')!r}", f"deterministic[{i}].check")
    for col, spec in (cfg.get("prepare") or {}).items():
        col_ok(col, f"prepare.{col}")
        if spec.get("fallback") is not None:
            col_ok(spec["fallback"], f"prepare.{col}.fallback")
    rules = cfg.get("blocking_rules") or []
    if not rules:
        bad("至少需要一条分块规则", "blocking_rules")
    for name in ("blocking_rules", "training.em_blocking_rules", "training.prior_rules"):
        seq = cfg.get(name) if "." not in name else (cfg.get("training") or {}).get(
            name.split(".")[1]) or []
        for i, rule in enumerate(seq or []):
            if not isinstance(rule, list) or not rule:
                bad("分块规则应为非空的列列表", f"{name}[{i}]")
                continue
            for key in rule:
                col, _, n = str(key).partition(":")
                col_ok(col, f"{name}[{i}]")
                if n and not n.isdigit():
                    bad(f"前缀长度应为整数：{key}", f"{name}[{i}]")
    comps = cfg.get("comparisons") or []
    if not comps:
        bad("至少需要一个比较", "comparisons")
    names = set()
    for i, c in enumerate(comps):
        fld = f"comparisons[{i}]"
        if not c.get("name") or c["name"] in names:
            bad("比较需要唯一的 name", fld + ".name")
        names.add(c.get("name"))
        for col in c.get("columns") or []:
            col_ok(col, fld + ".columns")
        if not c.get("columns"):
            bad("比较需要 columns", fld + ".columns")
        if not c.get("levels"):
            bad("比较需要至少一个层级", fld + ".levels")
        for j, lv in enumerate(c.get("levels") or []):
            lf = f"{fld}.levels[{j}]"
            if lv.get("kind") not in LEVEL_KINDS:
                bad(f"未知的层级类型 {lv.get('kind')!r}", lf + ".kind")
            col_ok(lv.get("column"), lf + ".column")
            if lv.get("kind") in ("jaccard", "overlap"):
                if lv.get("q", 1) not in (1, 2, 3):
                    bad("q 应为 1、2 或 3", lf + ".q")
                m = lv.get("min")
                if not isinstance(m, int | float) or not 0 < m <= 1:
                    bad("min 应在 (0, 1] 之间", lf + ".min")
            if lv.get("kind") == "prefix" and not isinstance(lv.get("n"), int):
                bad("prefix 需要整数 n", lf + ".n")
    th = cfg.get("thresholds") or {}
    p_hi, p_lo = th.get("p_hi"), th.get("p_lo")
    if not (isinstance(p_hi, int | float) and isinstance(p_lo, int | float)
            and 0 < p_lo <= p_hi < 1):
        bad("阈值应满足 0 < p_lo <= p_hi < 1", "thresholds")
    if problems:
        raise ValidationError(problems)


# --------------------------------------------------------------------------- preparation


def _qgrams(s: str, q: int) -> list[str]:
    if len(s) <= q:
        return [s]
    return sorted({s[i:i + q] for i in range(len(s) - q + 1)})


def _qgram_columns(values: list, q: int) -> tuple[list, list]:
    """q-gram sets and their signatures for a column (memoised: values repeat across
    ledgers, q-grams across values)."""
    memo: dict[str, tuple] = {}
    bits: dict[str, int] = {}
    grams_out, sigs_out = [], []
    for v in values:
        if not isinstance(v, str) or not v:
            grams_out.append(None)
            sigs_out.append(None)
            continue
        hit = memo.get(v)
        if hit is None:
            grams = _qgrams(v, q)
            sig = 0
            for g in grams:
                b = bits.get(g)
                if b is None:
                    b = bits[g] = 1 << (zlib.crc32(g.encode("utf-8")) % 63)
                sig |= b
            hit = memo[v] = (grams, sig)
        grams_out.append(hit[0])
        sigs_out.append(hit[1])
    return grams_out, sigs_out


def _org_code(credit_code: Any, reg_no: Any) -> str | None:
    """GB 11714 organisation code: characters 9–17 of a valid credit code, or the last nine
    characters of an old 15-character tax id (6-digit division + organisation code)."""
    from jiedao.hub.standardise import org_code_valid, uscc_valid

    if isinstance(credit_code, str) and uscc_valid(credit_code):
        return credit_code[8:17]
    for v in (reg_no, credit_code):
        if isinstance(v, str) and len(v) == 15 and v[:6].isdigit() and org_code_valid(v[6:]):
            return v[6:]
    return None


def _key_validator(check: str):
    from jiedao.hub.standardise import reg_no_valid, uscc_valid

    return {"uscc": uscc_valid, "reg_no": reg_no_valid}.get(check, lambda v: bool(v))


def _blank_to_none(series):
    import pandas as pd

    s = series.astype(object).where(series.notna(), None)

    def clean(v):
        if v is None or (isinstance(v, float) and v != v) or v is pd.NaT:
            return None
        if hasattr(v, "isoformat"):
            return v.isoformat()[:10]
        v = str(v).strip()
        return v or None

    import pyarrow as pa

    return pd.Series(pd.arrays.ArrowExtensionArray(
        pa.array([clean(v) for v in s.tolist()], type=pa.string())), index=s.index)


def _key_name(key: str) -> str:
    col, _, n = key.partition(":")
    return f"{col}_p{n}" if n else col


def _rule_keys(rule: list) -> list[str]:
    return [str(k) for k in rule]


def prepare_frame(df, cfg: dict, *, qgrams: bool = True, capped: dict | None = None,
                  capped_out: dict | None = None):
    """A copy of ``df`` ready for Splink: text columns cleaned, q-gram arrays, valid
    deterministic keys (``k_<column>``) and capped blocking keys (``bk_<i>``).

    A blocking key value held by more than ``max_block_size`` records is dropped; ``capped``
    ({"bk_<i>": values}) gives the dropped values instead of counting them in ``df`` (an
    incremental re-link counts on all records, links a part); ``capped_out`` receives the
    values dropped. ``qgrams=False`` leaves out the q-gram columns (keys only)."""
    import pandas as pd
    import pyarrow as pa

    missing = [c for c in FRAME_COLUMNS if c not in df.columns]
    if missing:
        raise ValidationError([Problem(f"记录表缺少列：{', '.join(missing)}", field=missing[0])])
    out = pd.DataFrame({"record_id": pd.to_numeric(df["record_id"]).astype("int64").values})
    if out["record_id"].duplicated().any():
        dup = int(out.loc[out["record_id"].duplicated(), "record_id"].iloc[0])
        raise ValidationError([Problem(f"record_id 重复：{dup}", field="record_id")])
    for c in TEXT_COLUMNS:
        out[c] = _blank_to_none(df[c].reset_index(drop=True))
    out["source_code"] = _blank_to_none(df["source_code"].reset_index(drop=True))
    for col, spec in (cfg.get("prepare") or {}).items():
        fb = spec.get("fallback")
        if fb:
            out[col] = out[col].where(out[col].notna(), out[fb])
    # valid deterministic keys
    for d in cfg.get("deterministic") or []:
        if d.get("derive") == "org_code":
            out["k_org_code"] = pd.Series(
                [_org_code(c, r) for c, r in zip(out["credit_code"].tolist(),
                                                 out["reg_no"].tolist(), strict=True)],
                dtype=object)
            continue
        ok = _key_validator(d.get("check", "none"))
        out["k_" + d["column"]] = pd.Series(
            [v if isinstance(v, str) and v and ok(v) else None for v in out[d["column"]].tolist()],
            dtype=object)
    # q-gram arrays used by the comparison levels
    for comp in cfg["comparisons"]:
        for lv in comp["levels"]:
            if lv["kind"] in ("jaccard", "overlap") and qgrams:
                name = f"q{lv.get('q', 1)}_{lv['column']}"
                if name not in out.columns:
                    q = lv.get("q", 1)
                    grams, sigs = _qgram_columns(out[lv["column"]].tolist(), q)
                    # arrow-backed list column: no Python object per q-gram is kept
                    out[name] = pd.Series(pd.arrays.ArrowExtensionArray(
                        pa.array(grams, type=pa.list_(pa.string()))))
                    del grams
                    out["s" + name[1:]] = pd.Series(sigs, dtype="Int64")
            if lv["kind"] == "prefix":
                name = f"{lv['column']}_p{lv['n']}"
                if name not in out.columns:
                    out[name] = _prefix(out[lv["column"]], lv["n"])
    # derived prefix columns used in blocking rules
    tr = cfg.get("training") or {}
    all_rules = (list(cfg["blocking_rules"]) + list(tr.get("em_blocking_rules") or [])
                 + list(tr.get("prior_rules") or []))
    for rule in all_rules:
        for key in _rule_keys(rule):
            col, _, n = key.partition(":")
            if n and _key_name(key) not in out.columns:
                out[_key_name(key)] = _prefix(out[col], int(n))
    caps = {"bk": int(cfg.get("max_block_size") or 0),
            "ek": int(tr.get("em_max_block_size") or cfg.get("max_block_size") or 0)}
    for prefix, rules in (("bk", cfg["blocking_rules"]), ("ek", tr.get("em_blocking_rules") or [])):
        cap = caps[prefix]
        for i, rule in enumerate(rules):
            name = f"{prefix}_{i}"
            given = None if capped is None or prefix != "bk" else capped.get(name, ())
            dropped: set = set()
            out[name] = _block_key(out, [_key_name(k) for k in _rule_keys(rule)], cap,
                                   given, dropped)
            if capped_out is not None and prefix == "bk":
                capped_out[name] = sorted(dropped)
    for c in out.columns:  # text as compact arrow strings; missing is NULL on every backend
        if c != "record_id" and out[c].dtype == object:
            vals = [v if isinstance(v, str) else None for v in out[c].tolist()]
            out[c] = pd.Series(pd.arrays.ArrowExtensionArray(pa.array(vals, type=pa.string())))
    return out


def _prefix(series, n: int):
    import pandas as pd

    return pd.Series([v[:n] if isinstance(v, str) and v else None for v in series.tolist()],
                     index=series.index, dtype=object)


def _block_key(out, cols: list[str], cap: int, capped=None, dropped: set | None = None):
    """One string per record joining ``cols`` (None when any is missing or the block holds
    more than ``cap`` records — or, when ``capped`` is given, when the value is in it).
    ``dropped`` receives the values left out."""
    key = None
    for c in cols:
        part = out[c]
        key = part if key is None else key.where(key.isna() | part.isna(), key + "\x1f" + part)
        key = key.where(part.notna(), None)
    if capped is not None:
        if len(capped):
            drop = key.isin(list(capped))
            if dropped is not None:
                dropped.update(key[drop].unique().tolist())
            key = key.where(~drop, None)
    elif cap:
        counts = key.value_counts()
        big = counts[counts > cap]
        if len(big):
            if dropped is not None:
                dropped.update(str(v) for v in big.index.tolist())
            key = key.where(~key.isin(big.index.tolist()), None)
    return key.astype(object).where(key.notna(), None)


# --------------------------------------------------------------------------- Splink settings


def _frac(x: float) -> tuple[int, int]:
    f = Fraction(str(x)).limit_denominator(1000)
    return f.numerator, f.denominator


def _level_sql(lv: dict, dialect: str) -> tuple[str, str]:
    """(sql condition on col_l/col_r, label) of one configured level."""
    kind, col = lv["kind"], lv["column"]
    if kind == "exact":
        return f"{col}_l = {col}_r", f"{col} 相同"
    if kind == "prefix":
        c = f"{col}_p{lv['n']}"
        return f"{c}_l = {c}_r", f"{col} 前{lv['n']}位相同"
    q = lv.get("q", 1)
    a, b = f"q{q}_{col}_l", f"q{q}_{col}_r"
    if dialect == "duckdb":
        inter, la, lb = f"len(list_intersect({a}, {b}))", f"len({a})", f"len({b})"
    else:
        inter, la, lb = f"size(array_intersect({a}, {b}))", f"size({a})", f"size({b})"
    p, d = _frac(lv["min"])
    # exact pre-test: sets sharing nothing have disjoint signatures
    pre = f"(s{q}_{col}_l & s{q}_{col}_r) <> 0"
    if kind == "jaccard":
        # |A∩B| / (|A|+|B|-|A∩B|) >= p/d, in integers; needs min(|A|,|B|) >= p/d max(|A|,|B|)
        return (f"{pre} AND least({la}, {lb}) * {d} >= {p} * greatest({la}, {lb}) AND "
                f"{inter} * {d + p} >= {p} * ({la} + {lb})",
                f"{col} {q}-gram Jaccard ≥ {lv['min']}")
    # overlap coefficient |A∩B| / min(|A|,|B|) >= p/d
    return (f"{pre} AND {inter} * {d} >= {p} * least({la}, {lb})",
            f"{col} {q}-gram 包含度 ≥ {lv['min']}")


def _null_sql(cols: list[str]) -> str:
    return " AND ".join(f"({c}_l IS NULL OR {c}_r IS NULL)" for c in cols)


def level_labels(cfg: dict) -> dict[str, list[str]]:
    """Labels of the non-null levels of every comparison (model parameters are keyed by them)."""
    return {c["name"]: [_level_sql(lv, "duckdb")[1] for lv in c["levels"]] + ["其他"]
            for c in cfg["comparisons"]}


def _key_of(d: dict) -> str:
    return d.get("column") or d["derive"]


def _exclusion_sql(cfg: dict) -> str:
    """Pairs that both hold a key whose differing values mean different entities are never
    scored (equal values are linked already)."""
    parts = [f"(l.k_{_key_of(d)} IS NULL OR r.k_{_key_of(d)} IS NULL)"
             for d in cfg.get("deterministic") or [] if d.get("conflict", True)]
    return " AND ".join(parts)


def splink_settings(cfg: dict, dialect: str, params: dict | None = None) -> dict:
    """A Splink settings dictionary for ``dialect`` ("duckdb" or "spark"), with m/u/prior
    from ``params`` when given."""
    excl = _exclusion_sql(cfg)
    rules = []
    for i in range(len(cfg["blocking_rules"])):
        rules.append(f"l.bk_{i} = r.bk_{i}" + (f" AND {excl}" if excl else ""))
    comparisons = []
    pcomp = (params or {}).get("comparisons") or {}
    for c in cfg["comparisons"]:
        levels: list[dict] = [{"sql_condition": _null_sql(c["columns"]), "is_null_level": True,
                               "label_for_charts": "缺失"}]
        plev = pcomp.get(c["name"]) or {}
        for lv in c["levels"]:
            sql, label = _level_sql(lv, dialect)
            levels.append({"sql_condition": sql, "label_for_charts": label})
        levels.append({"sql_condition": "ELSE", "label_for_charts": "其他"})
        for lv in levels[1:]:
            mu = plev.get(lv["label_for_charts"])
            if mu:
                if mu.get("m") is not None:
                    lv["m_probability"] = mu["m"]
                if mu.get("u") is not None:
                    lv["u_probability"] = mu["u"]
        comparisons.append({"output_column_name": c["name"], "comparison_levels": levels,
                            "comparison_description": c["name"]})
    tr = cfg.get("training") or {}
    out = {
        "link_type": "dedupe_only",
        "unique_id_column_name": "record_id",
        "blocking_rules_to_generate_predictions": rules,
        "comparisons": comparisons,
        "retain_matching_columns": False,
        "retain_intermediate_calculation_columns": True,  # gamma_* for the review detail
        "max_iterations": int(tr.get("em_max_iterations", 25)),
        "em_convergence": float(tr.get("em_convergence", 0.0001)),
    }
    if params and params.get("prior"):
        out["probability_two_random_records_match"] = params["prior"]
    return out


def _em_rule_sql(cfg: dict, i: int, rule: list) -> str:
    """EM blocking rule: the raw columns (so Splink leaves their comparisons out of that
    session) plus the capped key."""
    parts = []
    for key in _rule_keys(rule):
        col, _, n = key.partition(":")
        parts.append(f"l.{col} = r.{col}" if not n else f"l.{_key_name(key)} = r.{_key_name(key)}"
                     f" AND substr(l.{col}, 1, {n}) = substr(r.{col}, 1, {n})")
    return " AND ".join(parts) + f" AND l.ek_{i} = r.ek_{i}"


# --------------------------------------------------------------------------- backends


def spark_session():
    """A local Spark session for Splink (local[1] unless JIEDAO_SPARK_MASTER is set, UI off,
    bound to 127.0.0.1, few shuffle partitions). Uses only what pyspark ships."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", os.environ.get("PYSPARK_PYTHON") or _python())
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    return (SparkSession.builder
            .master(os.environ.get("JIEDAO_SPARK_MASTER", "local[1]"))
            .appName("jiedao-hub-link")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.sql.shuffle.partitions", "2")
            .config("spark.default.parallelism", "2")
            .config("spark.sql.adaptive.enabled", "false")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .getOrCreate())


def _python() -> str:
    import sys

    return sys.executable


def _arrow_table(prepared):
    import pyarrow as pa

    return pa.Table.from_pandas(prepared, preserve_index=False)


def _spark_frame(spark, prepared):
    """Spark DataFrame with an explicit schema (lists → array<string>)."""
    from pyspark.sql import types as T

    fields = []
    for c in prepared.columns:
        if c == "record_id":
            fields.append(T.StructField(c, T.LongType(), False))
        elif c.startswith("q") and c[1:2].isdigit():
            fields.append(T.StructField(c, T.ArrayType(T.StringType()), True))
        elif c.startswith("s") and c[1:2].isdigit():
            fields.append(T.StructField(c, T.LongType(), True))
        else:
            fields.append(T.StructField(c, T.StringType(), True))
    cols = _arrow_table(prepared).to_pydict()
    rows = list(zip(*(cols[c] for c in prepared.columns), strict=True))
    return spark.createDataFrame(rows, schema=T.StructType(fields))


class _Backend:
    """Creates Splink linkers on one backend."""

    def __init__(self, backend: str, spark=None):
        if backend not in BACKENDS:
            raise ValidationError([Problem(f"未知的关联后端 {backend!r}（可用：duckdb、spark）",
                                           field="backend")])
        self.name = backend
        self.dialect = backend
        self.spark = spark
        if backend == "spark" and self.spark is None:
            self.spark = spark_session()

    def api(self):
        if self.name == "duckdb":
            import duckdb
            from splink import DuckDBAPI

            # bounded memory: DuckDB spills to disk rather than growing past the limit
            con = duckdb.connect(config={
                "memory_limit": os.environ.get("JIEDAO_LINK_DUCKDB_MEMORY", "1500MB"),
                "preserve_insertion_order": False})
            con.execute("SET enable_progress_bar = false")
            return DuckDBAPI(connection=con)
        from splink import SparkAPI

        return SparkAPI(spark_session=self.spark, register_udfs_automatically=False,
                        break_lineage_method="persist")

    def table(self, prepared):
        """The input in the backend's own form (converted once, registered by each linker)."""
        if self.name == "spark":
            return _spark_frame(self.spark, prepared)
        return _arrow_table(prepared)

    def linker(self, table, settings: dict):
        from splink import Linker

        api = self.api()
        sdf = api.register(table)
        return Linker(sdf, settings, log_level=logging.ERROR, validate_settings=False)


def _quiet_splink() -> None:
    for name in ("splink", "py4j"):
        logging.getLogger(name).setLevel(logging.ERROR)


# --------------------------------------------------------------------------- training


def _extract_params(linker, cfg: dict) -> dict:
    settings = linker.misc.save_model_to_json()
    comps: dict[str, dict] = {}
    for c in settings["comparisons"]:
        levels = {}
        for lv in c["comparison_levels"]:
            if lv.get("is_null_level"):
                continue
            levels[lv.get("label_for_charts")] = {"m": lv.get("m_probability"),
                                                   "u": lv.get("u_probability")}
        comps[c["output_column_name"]] = levels
    return {"comparisons": comps, "prior": settings.get("probability_two_random_records_match")}


def train_model(prepared, cfg: dict, backend: _Backend, table=None) -> dict:
    """Train m/u/prior on ``prepared`` (output of :func:`prepare_frame`); backend-neutral
    sampling so DuckDB and Spark estimate from the same pairs."""
    import numpy as np

    tr = cfg.get("training") or {}
    seed = int(tr.get("seed", 1))
    t0 = time.perf_counter()
    # u: all pairs of a random sample of records (sample drawn here, with the fixed seed)
    n = len(prepared)
    # records known to match (same valid deterministic key) are not non-matches: keep one
    # record per key so that they do not inflate u
    pool = prepared
    for d in cfg.get("deterministic") or []:
        col = "k_" + _key_of(d)
        pool = pool[pool[col].isna() | ~pool[col].duplicated()]
    m_pool = len(pool)
    k = min(m_pool, int(tr.get("u_sample_records", 1000)))
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(m_pool, size=k, replace=False)) if k < m_pool else np.arange(m_pool)
    sample = pool.iloc[idx].reset_index(drop=True)
    settings = splink_settings(cfg, backend.dialect)
    settings["probability_two_random_records_match"] = 0.0001
    lk = backend.linker(backend.table(sample), settings)
    max_pairs = k * (k - 1) / 2 + 10
    lk.training.estimate_u_using_random_sampling(max_pairs=max_pairs, seed=seed,
                                                 min_count_per_level=None, num_chunks=1)
    u_params = _extract_params(lk, cfg)
    # fill levels never seen among non-matches with a tiny u (Splink leaves them unset)
    for comp in u_params["comparisons"].values():
        for mu in comp.values():
            if mu["u"] is None:
                mu["u"] = 1.0 / (max_pairs + 1)
    # prior from deterministic rules with an assumed recall
    prior = float(tr.get("prior_default", 0.0001))
    rules = tr.get("prior_rules") or []
    total_pairs = n * (n - 1) / 2
    if rules and total_pairs > 0:
        counts = 0
        for rule in rules:
            cols = [_key_name(k_) for k_ in _rule_keys(rule)]
            sizes = _block_key(prepared, cols, 0).dropna().value_counts()
            counts = max(counts, int((sizes * (sizes - 1) // 2).sum()))
        recall = float(tr.get("prior_recall", 0.6))
        if counts:
            prior = min(0.5, counts / recall / total_pairs)
    # m: EM on each training rule with u fixed
    params = {"comparisons": u_params["comparisons"], "prior": prior}
    settings = splink_settings(cfg, backend.dialect, params)
    lk = backend.linker(table if table is not None else backend.table(prepared), settings)
    em_sessions = 0
    for i, rule in enumerate(tr.get("em_blocking_rules") or []):
        try:
            lk.training.estimate_parameters_using_expectation_maximisation(
                _em_rule_sql(cfg, i, rule), fix_u_probabilities=True)
            em_sessions += 1
        except Exception as e:  # noqa: BLE001 - a rule giving no pairs must not stop linkage
            log.warning("EM on rule %s skipped: %s", rule, e)
    trained = _extract_params(lk, cfg)
    del lk  # frees the backend's working tables before prediction
    for cname, levels in trained["comparisons"].items():
        for label, mu in levels.items():
            if mu["u"] is None:
                mu["u"] = params["comparisons"].get(cname, {}).get(label, {}).get("u")
            if mu["m"] is None:  # never estimated: a neutral default
                mu["m"] = mu["u"]
    # keep every weight finite: EM on a small or clean block can drive an m to ~0
    m_floor = float(tr.get("m_floor", 0.01))
    u_floor = float(tr.get("u_floor", 1e-6))
    for levels in trained["comparisons"].values():
        for mu in levels.values():
            mu["m"] = min(max(mu["m"], m_floor), 1.0)
            mu["u"] = min(max(mu["u"], u_floor), 1.0)
    trained["prior"] = prior
    trained["version"] = MODEL_VERSION
    trained["config_hash"] = config_hash(cfg)
    trained["training"] = {"records": n, "u_sample_records": int(k), "em_sessions": em_sessions,
                           "seed": seed, "seconds": round(time.perf_counter() - t0, 2)}
    return _round_params(trained)


def _round_params(params: dict) -> dict:
    """Round m/u to 8 significant digits: sums in a different order on another backend must
    not change the model."""
    def r(x):
        return None if x is None else float(f"{x:.8g}")

    for levels in params["comparisons"].values():
        for mu in levels.values():
            mu["m"], mu["u"] = r(mu["m"]), r(mu["u"])
    params["prior"] = r(params["prior"])
    return params


def config_hash(cfg: dict) -> str:
    return hashlib.sha1(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- clustering


class _Clusters:
    """Union-find whose merges respect cannot-link pairs and conflicting valid keys."""

    def __init__(self, ids: list[int], keys: dict[str, dict[int, str]],
                 cannot: Iterable[tuple[int, int]]):
        self.parent = {i: i for i in ids}
        self.size = dict.fromkeys(ids, 1)
        self.keys: dict[int, dict[str, set]] = {i: {} for i in ids}
        for kname, vals in keys.items():
            for rid, v in vals.items():
                self.keys[rid][kname] = {v}
        self.cannot: dict[int, set[int]] = defaultdict(set)
        for a, b in cannot:
            if a in self.parent and b in self.parent and a != b:
                self.cannot[a].add(b)
                self.cannot[b].add(a)

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def blocked(self, ra: int, rb: int, check_keys: bool = True) -> bool:
        ca, cb = self.cannot.get(ra, ()), self.cannot.get(rb, ())
        small, other = (ca, rb) if len(ca) <= len(cb) else (cb, ra)
        if any(self.find(x) == other for x in small):
            return True
        if check_keys:
            ka, kb = self.keys[ra], self.keys[rb]
            for k, va in ka.items():
                vb = kb.get(k)
                if vb and va and va.isdisjoint(vb):
                    return True
        return False

    def union(self, a: int, b: int, check_keys: bool = True) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        if self.blocked(ra, rb, check_keys):
            return False
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        for k, vb in self.keys.pop(rb).items():
            self.keys[ra].setdefault(k, set()).update(vb)
        cb = self.cannot.pop(rb, None)
        if cb:
            self.cannot[ra].update(cb)
        return True


# --------------------------------------------------------------------------- link_frame


@dataclass
class LinkResult:
    """Outcome of :func:`link_frame`. Unpacks as ``clusters, review, model``."""

    clusters: dict[int, int]  # record_id -> cluster key (smallest record_id of the cluster)
    review: list[dict]  # {record_a, record_b, probability, detail}
    model: dict  # trained parameters (see train_model)
    links: dict[int, tuple[str, float | None]] = field(default_factory=dict)  # method, prob
    stats: dict = field(default_factory=dict)
    # record_id -> smallest record_id connected to it by a shared valid key, a steward's
    # accepted pair or a scored pair (p >= p_lo): clustering and review never cross these
    components: dict[int, int] = field(default_factory=dict)
    capped: dict[str, list] = field(default_factory=dict)  # blocking key values left out

    def __iter__(self) -> Iterator:
        return iter((self.clusters, self.review, self.model))


def _rss_mb() -> int:
    """Peak resident memory of this process so far (MB)."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _pair(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a <= b else (b, a)


def link_frame(df, config: dict | None = None, backend: str = "duckdb", must_link=(),
               cannot_link=(), model: dict | None = None, *, spark=None,
               decided=(), capped: dict | None = None) -> LinkResult:
    """Cluster the records of ``df`` (records_frame columns) into entities.

    ``must_link`` / ``cannot_link``: iterables of (record_id, record_id) from steward
    decisions. ``model``: parameters from an earlier run (skip training). ``decided``: pairs
    already decided (never returned for review). ``capped``: blocking key values to leave
    out (see :func:`prepare_frame`; default: counted in ``df``). Returns a :class:`LinkResult`."""
    cfg = config if config is not None else load_linkage_config()
    if config is not None:
        validate_config(cfg)
    _quiet_splink()
    t0 = time.perf_counter()
    capped_out: dict = {}
    prepared = prepare_frame(df, cfg, capped=capped, capped_out=capped_out)
    timings = {"prepare": round(time.perf_counter() - t0, 2), "rss_mb.prepare": _rss_mb()}
    ids = prepared["record_id"].tolist()
    idset = set(ids)
    th = cfg["thresholds"]
    p_hi, p_lo = float(th["p_hi"]), float(th["p_lo"])
    stats: dict[str, Any] = {"records": len(ids), "backend": backend}

    keys = {}
    for d in cfg.get("deterministic") or []:
        col = "k_" + _key_of(d)
        s = prepared[["record_id", col]].dropna()
        keys[_key_of(d)] = dict(zip(s["record_id"].tolist(), s[col].tolist(), strict=True))
    conflict_keys = {_key_of(d): keys[_key_of(d)] for d in cfg.get("deterministic") or []
                     if d.get("conflict", True)}
    must = [_pair(int(a), int(b)) for a, b in must_link if a in idset and b in idset and a != b]
    cannot = [_pair(int(a), int(b)) for a, b in cannot_link if a in idset and b in idset]
    uf = _Clusters(ids, conflict_keys, cannot)
    method: dict[int, str] = {}
    prob: dict[int, float] = {}

    for a, b in sorted(must):
        if uf.union(a, b, check_keys=False):
            method[a] = method[b] = "steward"
            prob[a] = prob[b] = 1.0
    n_det = 0
    for vals in keys.values():
        groups: dict[str, list[int]] = defaultdict(list)
        for rid, v in vals.items():
            groups[v].append(rid)
        for members in groups.values():
            members.sort()
            for other in members[1:]:
                if uf.find(members[0]) != uf.find(other) and uf.union(members[0], other):
                    n_det += 1
                    for r in (members[0], other):
                        method.setdefault(r, "credit_code")
                        prob.setdefault(r, 1.0)
    stats["deterministic_links"] = n_det
    stats["steward_must_links"] = len(must)

    edges: list[tuple[float, int, int, dict]] = []
    if len(ids) >= 2:
        be = _Backend(backend, spark)
        table = be.table(prepared)
        if model is None:
            t1 = time.perf_counter()
            model = train_model(prepared, cfg, be, table)
            gc.collect()
            timings["train"] = round(time.perf_counter() - t1, 2)
            timings["rss_mb.train"] = _rss_mb()
        t1 = time.perf_counter()
        settings = splink_settings(cfg, be.dialect, model)
        linker = be.linker(table, settings)
        pred = linker.inference.predict(threshold_match_probability=p_lo)
        pdf = pred.as_pandas_dataframe()
        del pred, linker, table
        timings["predict"] = round(time.perf_counter() - t1, 2)
        timings["rss_mb.predict"] = _rss_mb()
        gcols = [c for c in pdf.columns if c.startswith("gamma_")]
        for row in pdf[["record_id_l", "record_id_r", "match_probability", *gcols]].itertuples(
                index=False, name=None):
            a, b, p = int(row[0]), int(row[1]), round(float(row[2]), 6)
            edges.append((p, *_pair(a, b), {g[6:]: int(v) for g, v in zip(gcols, row[3:],
                                                                             strict=True)}))
        stats["scored_pairs"] = len(edges)
    else:
        model = model or {}
    edges.sort(key=lambda e: (-e[0], e[1], e[2]))
    n_prob = n_blocked = 0
    for p, a, b, _ in edges:
        if p < p_hi:
            break
        if uf.find(a) == uf.find(b):
            continue
        if uf.union(a, b):
            n_prob += 1
            for r in (a, b):
                if r not in method:
                    method[r] = "probabilistic"
                    prob[r] = p
                elif method[r] == "probabilistic":
                    prob[r] = max(prob[r], p)
        else:
            n_blocked += 1
    stats["probabilistic_links"] = n_prob
    stats["blocked_by_constraints"] = n_blocked

    decided_set = {_pair(int(a), int(b)) for a, b in decided} | set(must) | set(cannot)
    review = []
    seen_review: set[tuple[int, int]] = set()
    for p, a, b, detail in edges:
        if p >= p_hi or (a, b) in decided_set or (a, b) in seen_review:
            continue
        ra, rb = uf.find(a), uf.find(b)
        if ra == rb or uf.blocked(ra, rb):
            continue
        seen_review.add((a, b))
        review.append({"record_a": a, "record_b": b, "probability": p, "detail": detail})
    limit = int(th.get("max_review_per_run") or 0)
    if limit and len(review) > limit:
        review = review[:limit]
    stats["review_pairs"] = len(review)

    members: dict[int, int] = {}
    for r in ids:
        root = uf.find(r)
        members[root] = min(members.get(root, r), r)
    clusters = {r: members[uf.find(r)] for r in ids}
    sizes: dict[int, int] = defaultdict(int)
    for c in clusters.values():
        sizes[c] += 1
    links = {}
    for r in ids:
        if sizes[clusters[r]] == 1:
            links[r] = ("singleton", None)
        else:
            links[r] = (method.get(r, "probabilistic"), prob.get(r))
    stats["clusters"] = len(sizes)
    components = _components(ids, [*must, *((a, b) for _, a, b, _ in edges)],
                             list(keys.values()))
    stats["components"] = len(set(components.values()))
    stats["seconds"] = round(time.perf_counter() - t0, 2)
    stats["timings"] = timings
    return LinkResult(clusters=clusters, review=review, model=model, links=links, stats=stats,
                      components=components, capped=capped_out)


def _components(ids: list[int], pairs: Iterable[tuple[int, int]],
                keys: Iterable[dict[int, str]]) -> dict[int, int]:
    """record_id -> smallest record_id of its connected component (plain union-find over
    ``pairs`` and records sharing a value of any of ``keys``)."""
    parent = {i: i for i in ids}

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    def join(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            if rb < ra:
                ra, rb = rb, ra
            parent[rb] = ra  # the root is always the smallest id of the set

    for a, b in pairs:
        join(a, b)
    for vals in keys:
        first: dict[str, int] = {}
        for rid, v in vals.items():
            f = first.setdefault(v, rid)
            if f != rid:
                join(f, rid)
    return {i: find(i) for i in ids}


# --------------------------------------------------------------------------- database


def _decisions(session, ids: set[int]):
    from sqlalchemy import select

    from jiedao.hub.models import Review

    must, cannot, known = [], [], []
    for a, b, status in session.execute(select(Review.record_a, Review.record_b, Review.status)):
        known.append((a, b))
        if a in ids and b in ids:
            if status == "accepted":
                must.append((a, b))
            elif status == "rejected":
                cannot.append((a, b))
    return must, cannot, known


def latest_model(session, entity_type: str = "enterprise"):
    """The most recently saved linkage model of ``entity_type`` (LinkModel row) or None."""
    from sqlalchemy import select

    from jiedao.hub.models import LinkModel

    return session.scalars(select(LinkModel).where(LinkModel.entity_type == entity_type)
                           .order_by(LinkModel.id.desc()).limit(1)).first()


def assign_entity_ids(clusters: dict[int, int], existing: dict[int, int]) -> tuple[
        dict[int, int | None], dict[int, list[int]]]:
    """Map each new cluster to the existing entity holding most of its records.

    ``clusters``: record → cluster key; ``existing``: record → entity id of the last run.
    Returns (cluster key → entity id or None for a new entity, entity id → cluster keys
    holding its records). Each entity goes to at most one cluster; ties go to the lower
    entity id, then the lower cluster key, so the outcome does not depend on input order."""
    overlap: dict[tuple[int, int], int] = defaultdict(int)
    spread: dict[int, set[int]] = defaultdict(set)
    for rec, key in clusters.items():
        ent = existing.get(rec)
        if ent is not None:
            overlap[(key, ent)] += 1
            spread[ent].add(key)
    assigned: dict[int, int | None] = dict.fromkeys(set(clusters.values()))
    taken: set[int] = set()
    for (key, ent), _n in sorted(overlap.items(), key=lambda kv: (-kv[1], kv[0][1], kv[0][0])):
        if assigned[key] is None and ent not in taken:
            assigned[key] = ent
            taken.add(ent)
    return assigned, {e: sorted(k) for e, k in spread.items()}


INCREMENTAL_MAX_SHARE = 0.5  # re-link in full when a change reaches more of the records


def record_fingerprints(df) -> dict[int, str]:
    """record_id -> 16-hex digest of the record's linkage fields (FRAME_COLUMNS): a record
    whose digest differs from the one stored with its link changed since that linkage.
    pandas' stable row hash (fixed key; values of other types hashed as their text), so a
    pandas upgrade that changed it would at worst make one re-link a full one."""
    import pandas as pd

    cols = list(FRAME_COLUMNS[1:])
    if len(df) == 0:
        return {}
    part = {}
    for c in cols:
        col = df[c].astype(object).where(df[c].notna(), None)
        if pd.api.types.infer_dtype(col, skipna=True) not in ("string", "empty"):
            col = col.map(lambda v: v if v is None or isinstance(v, str) else str(v))
        part[c] = col
    part = pd.DataFrame(part)
    h = pd.util.hash_pandas_object(part, index=False).to_numpy()
    return dict(zip(df["record_id"].astype("int64").tolist(),
                    (f"{v:016x}" for v in h.tolist()), strict=True))


def _incremental_scope(session, df, cfg: dict, prev, old: dict, fps: dict[int, str],
                       must) -> tuple[set[int], dict, dict] | None:
    """The records an incremental re-link must re-cluster, or None (link everything).

    Changed records D: new, changed (fingerprint), vanished since the last linkage, both
    records of every steward decision made since, and every record in a block whose capping
    (``max_block_size``) flipped. Candidates S: D and every record sharing a blocking key, a
    deterministic key or an accepted pair with a record of D. The scope is S plus every
    record of the stored component of any record of S or of a vanished record: it is closed
    under the graph's edges (an edge between two unchanged records existed last time, so
    both ends share a stored component), hence clustering it alone gives what a full
    re-link would give for it, and everything outside keeps its links. Returns
    (scope, capped values counted on all records, counts)."""
    from sqlalchemy import select

    from jiedao.hub.models import Review

    metrics = prev.metrics or {}
    prev_capped = metrics.get("capped_blocks")
    if prev_capped is None or not metrics.get("components"):
        return None
    ids = df["record_id"].tolist()
    if any(old[r][3] is None for r in old):
        return None
    # blocking and deterministic keys of every current record (no q-grams), uncapped
    rules = cfg["blocking_rules"]
    keys = prepare_frame(df, cfg, qgrams=False, capped={f"bk_{i}": () for i in range(len(rules))})
    cap = int(cfg.get("max_block_size") or 0)
    capped: dict[str, list] = {}
    for i in range(len(rules)):
        name = f"bk_{i}"
        if cap:
            counts = keys[name].value_counts()
            capped[name] = sorted(str(v) for v in counts[counts > cap].index.tolist())
        else:
            capped[name] = []
    idset = set(ids)
    changed = {r for r in ids if r not in old or old[r][4] != fps[r]}
    vanished = [r for r in old if r not in idset]
    since = prev.trained_at
    for a, b in session.execute(select(Review.record_a, Review.record_b).where(
            Review.status.in_(("accepted", "rejected")), Review.decided_at >= since)):
        changed.update(x for x in (a, b) if x in idset)
    n_decided = len(changed)
    rid = keys["record_id"]
    flipped = 0
    mask = rid.isin(list(changed))
    for i in range(len(rules)):
        name = f"bk_{i}"
        flip = set(capped[name]) ^ set(prev_capped.get(name) or ())
        if flip:
            hit = keys[name].isin(list(flip))
            flipped += int(hit.sum())
            mask |= hit
    d_mask = mask.copy()
    s_mask = d_mask.copy()
    key_cols = [f"bk_{i}" for i in range(len(rules))] + [
        "k_" + _key_of(d) for d in cfg.get("deterministic") or []]
    for col in key_cols:
        col_vals = keys[col]
        if col.startswith("bk_") and capped[col]:
            col_vals = col_vals.where(~col_vals.isin(capped[col]), None)
        vals = col_vals[d_mask].dropna().unique().tolist()
        if vals:
            s_mask |= col_vals.isin(vals)
    s = set(rid[s_mask].tolist())
    d = set(rid[d_mask].tolist())
    for a, b in must:
        if a in d or b in d:
            s.update(x for x in (a, b) if x in idset)
    comps = {old[r][3] for r in s if r in old} | {old[r][3] for r in vanished}
    scope = s | {r for r in ids if r in old and old[r][3] in comps}
    del keys
    counts = {"changed": len(d), "decided_or_new": n_decided, "flipped_block_records": flipped,
              "vanished": len(vanished), "candidates": len(s), "scope": len(scope)}
    return scope, capped, counts


def run_linkage(session, entity_type: str = "enterprise", backend: str = "duckdb", *,
                config: dict | None = None, retrain: bool = True, spark=None,
                incremental: bool | None = None) -> dict:
    """Link the current records of ``entity_type`` and write entities, links and the review
    queue (stable entity ids; steward decisions enforced). Returns a summary dict.

    With the saved model reused (``retrain=False``, configuration unchanged) and
    ``incremental`` not False, only the part of the record graph that changes since the last
    linkage can reach is re-clustered (see :func:`_incremental_scope`; docs/hub.md)."""
    from sqlalchemy import delete, func, insert, select, update

    from jiedao.clock import now
    from jiedao.hub.loads import records_frame
    from jiedao.hub.models import Entity, Link, LinkModel, Review

    t0 = time.perf_counter()
    cfg = config if config is not None else load_linkage_config(entity_type)
    df = records_frame(session, entity_type)
    ids = set(df["record_id"].tolist())
    must, cannot, known = _decisions(session, ids)
    model = None
    prev = latest_model(session, entity_type)
    if not retrain and prev is not None and prev.params.get("config_hash") == config_hash(cfg):
        model = prev.params

    # existing links of this entity type
    rows = session.execute(select(Link.record_id, Link.entity_id, Link.method, Link.probability,
                                  Link.component, Link.fingerprint)
                           .join(Entity, Entity.id == Link.entity_id)
                           .where(Entity.entity_type == entity_type)).all()
    old_full = {r: (e, m, p, c, f) for r, e, m, p, c, f in rows}
    del rows
    fps = record_fingerprints(df)
    scope = None
    inc_counts: dict = {}
    capped = None
    if incremental is not False and model is not None and prev is not None \
            and prev.backend == backend and len(df):
        t1 = time.perf_counter()
        plan = _incremental_scope(session, df, cfg, prev, old_full, fps, must)
        if plan is not None:
            scope, capped, inc_counts = plan
            inc_counts["seconds"] = round(time.perf_counter() - t1, 2)
            if len(scope) > INCREMENTAL_MAX_SHARE * len(ids):
                scope, capped = None, None
    if scope is not None:
        df_link = df[df["record_id"].isin(list(scope))].reset_index(drop=True)
        old = {r: v for r, v in old_full.items() if r in scope or r not in ids}
    else:
        df_link = df
        old = old_full
    if len(df_link):
        res = link_frame(df_link, cfg, backend, must_link=must, cannot_link=cannot,
                         model=model, spark=spark, decided=known, capped=capped)
    else:  # nothing changed since the last linkage
        res = LinkResult(clusters={}, review=[], model=model, stats={"records": 0})
    link_ids = set(res.clusters)
    at = now()
    lm = LinkModel(entity_type=entity_type, backend=backend, params=res.model, trained_at=at,
                   metrics={"stats": res.stats, "retrained": model is None})
    session.add(lm)
    session.flush()
    run_id = lm.id

    existing = {r: v[0] for r, v in old.items() if r in link_ids}
    assigned, spread = assign_entity_ids(res.clusters, existing)
    if scope is None:
        live = set(session.scalars(select(Entity.id).where(Entity.entity_type == entity_type,
                                                           Entity.retired.is_(False))))
    else:  # only entities holding records of the scope (or vanished ones) can change
        mine = sorted({v[0] for v in old.values()})
        live = set()
        for i in range(0, len(mine), 5000):
            live.update(session.scalars(select(Entity.id).where(
                Entity.id.in_(mine[i:i + 5000]), Entity.retired.is_(False))))

    # new entities, in cluster-key order
    new_keys = sorted(k for k, e in assigned.items() if e is None)
    if new_keys:
        event = [{"run": run_id, "event": "created", "at": at.isoformat(timespec="seconds")}]
        rows_new = [{"entity_type": entity_type, "created_run_id": run_id, "retired": False,
                     "history": event, "created_at": at} for _ in new_keys]
        new_ids = session.scalars(insert(Entity).returning(Entity.id, sort_by_parameter_order=True),
                                  rows_new).all()
        for key, ent_id in zip(new_keys, new_ids, strict=True):
            assigned[key] = ent_id

    # merges, splits, retirements
    members: dict[int, list[int]] = defaultdict(list)
    for rec, key in res.clusters.items():
        members[key].append(rec)
    merges, splits, retired = [], [], []
    stamp = at.isoformat(timespec="seconds")
    kept = {e for e in assigned.values()}
    for ent_id, keys in sorted(spread.items()):
        targets = sorted({assigned[k] for k in keys})
        if ent_id in kept and len(targets) > 1:
            others = [t for t in targets if t != ent_id]
            splits.append({"entity": ent_id, "into": others})
            _history(session.get(Entity, ent_id), {"run": run_id, "event": "split",
                                                   "into": others, "at": stamp})
    for key, ent_id in sorted(assigned.items()):
        absorbed = sorted({existing[r] for r in members[key] if r in existing} - {ent_id})
        absorbed = [a for a in absorbed if a not in kept]
        if absorbed:
            merges.append({"entity": ent_id, "absorbed": absorbed})
            _history(session.get(Entity, ent_id), {"run": run_id, "event": "merge",
                                                   "absorbed": absorbed, "at": stamp})
    for ent_id in sorted(live - kept):
        ent = session.get(Entity, ent_id)
        counts: dict[int, int] = defaultdict(int)
        for key in spread.get(ent_id, []):
            counts[assigned[key]] += sum(1 for r in members[key] if existing.get(r) == ent_id)
        into = min(counts, key=lambda t: (-counts[t], t)) if counts else None
        ent.retired, ent.retired_run_id, ent.merged_into = True, run_id, into
        _history(ent, {"run": run_id, "event": "merged_into" if into else "retired",
                       "into": into, "at": stamp})
        retired.append({"entity": ent_id, "into": into})

    # links: insert / update / delete only what changed
    new_links = {}
    for rec, key in res.clusters.items():
        m, p = res.links[rec]
        new_links[rec] = (assigned[key], m, None if p is None else float(p),
                          res.components[rec], fps[rec])
    ins, upd = [], []
    for rec, (e, m, p, c, f) in new_links.items():
        cur = old.get(rec)
        row = {"record_id": rec, "entity_id": e, "method": m, "probability": p,
               "component": c, "fingerprint": f}
        if cur is None:
            ins.append(dict(row, run_id=run_id, at=at))
        elif cur[:3] != (e, m, p):
            upd.append(dict(row, run_id=run_id, at=at))
        elif cur[3:] != (c, f):  # same link, other bookkeeping: keeps its run and time
            upd.append(row)
    gone = [r for r in old if r not in new_links]
    moved = sum(1 for u in upd if old[u["record_id"]][0] != u["entity_id"])
    # entities whose set of records changed (golden records are rebuilt only for these)
    touched = {r["entity_id"] for r in ins}
    for u in upd:
        if old[u["record_id"]][0] != u["entity_id"]:
            touched.update((u["entity_id"], old[u["record_id"]][0]))
    touched.update(old[r][0] for r in gone)
    touched.update(r["entity"] for r in retired)
    for i in range(0, len(gone), 5000):
        session.execute(delete(Link).where(Link.record_id.in_(gone[i:i + 5000])))
    for group in (
            [u for u in upd if "run_id" in u], [u for u in upd if "run_id" not in u]):
        for i in range(0, len(group), 20000):
            session.execute(update(Link), group[i:i + 20000])
    if ins:
        from jiedao.hub.bulk import insert_rows

        cols = ("record_id", "entity_id", "method", "probability", "component", "fingerprint",
                "run_id", "at")
        insert_rows(session, Link.__table__, cols, [tuple(r[c] for c in cols) for r in ins])

    # review queue: new borderline pairs only (decided or queued pairs are never re-queued)
    if res.review:
        session.execute(insert(Review), [
            {"record_a": r["record_a"], "record_b": r["record_b"],
             "probability": r["probability"], "status": "pending",
             "detail": {"levels": r["detail"], "run": run_id}, "created_at": at}
            for r in res.review])
    session.flush()
    if scope is None:
        n_entities = len(set(assigned.values()))
    else:
        n_entities = int(session.scalar(select(func.count(func.distinct(Link.entity_id)))
                                        .join(Entity, Entity.id == Link.entity_id)
                                        .where(Entity.entity_type == entity_type)) or 0)
    summary = {
        "run": run_id, "entity_type": entity_type, "backend": backend,
        "records": len(ids), "entities": n_entities,
        "new_entities": len(new_keys), "retired_entities": len(retired),
        "links_new": len(ins), "links_changed": len(upd), "links_moved": moved,
        "links_removed": len(gone), "merges": merges, "splits": splits, "retired": retired,
        "review_enqueued": len(res.review), "steward_must_links": len(must),
        "steward_cannot_links": len(cannot), "retrained": model is None,
        "incremental": scope is not None, "relinked_records": len(link_ids),
        "incremental_scope": inc_counts or None,
        "link_stats": res.stats, "seconds": round(time.perf_counter() - t0, 2),
    }
    lm.metrics = {k: v for k, v in summary.items() if k not in ("merges", "splits", "retired")}
    # what the next incremental run needs: the capped blocking values of all records
    lm.metrics["capped_blocks"] = capped if capped is not None else res.capped
    lm.metrics["components"] = True
    # listed when few (an incremental run); None means "too many to list: rebuild all"
    lm.metrics["touched_entities"] = (sorted(int(e) for e in touched)
                                      if len(touched) <= TOUCHED_LIST_MAX else None)
    summary["touched_entities"] = len(touched)
    return summary


def _history(ent, event: dict) -> None:
    if ent is not None:
        ent.history = [*(ent.history or []), event]


def list_reviews(session, status: str | None = "pending", limit: int = 50,
                 offset: int = 0) -> list:
    """Review queue entries (newest probability first), with ``status`` unless None."""
    from sqlalchemy import select

    from jiedao.hub.models import Review

    stmt = select(Review).order_by(Review.probability.desc(), Review.id).limit(limit).offset(
        offset)
    if status:
        stmt = stmt.where(Review.status == status)
    return list(session.scalars(stmt))


def decide_review(session, review_id: int, accept: bool, by: str) -> Any:
    """Accept (same entity) or reject (different entities) one review pair; the decision is
    enforced on every later linkage run. Raises NotFound."""
    from jiedao.clock import now
    from jiedao.hub.models import Review

    rv = session.get(Review, review_id)
    if rv is None:
        raise NotFound(f"没有编号为 {review_id} 的待审核记录对")
    rv.status = "accepted" if accept else "rejected"
    rv.decided_by = by
    rv.decided_at = now()
    session.flush()
    return rv


def add_decision(session, record_a: int, record_b: int, accept: bool, by: str) -> Any:
    """Record a steward decision on any pair of records (creating the review row if needed)."""
    from sqlalchemy import select

    from jiedao.clock import now
    from jiedao.hub.models import Record, Review

    a, b = _pair(int(record_a), int(record_b))
    if a == b or session.get(Record, a) is None or session.get(Record, b) is None:
        raise NotFound(f"记录 {record_a} 或 {record_b} 不存在")
    rv = session.scalars(select(Review).where(Review.record_a == a, Review.record_b == b)).first()
    if rv is None:
        rv = Review(record_a=a, record_b=b, probability=None, detail={"manual": True})
        session.add(rv)
    rv.status = "accepted" if accept else "rejected"
    rv.decided_by, rv.decided_at = by, now()
    session.flush()
    return rv


# --------------------------------------------------------------------------- CLI


def register_cli(hub_app) -> None:
    """Add ``jiedao hub link`` and ``jiedao hub review list|accept|reject``."""
    import typer

    @hub_app.command("link")
    def link_cmd(
        entity_type: str = typer.Option("enterprise", "--entity-type", help="实体类型"),
        backend: str = typer.Option("duckdb", "--backend", help="duckdb 或 spark"),
        reuse_model: bool = typer.Option(False, "--reuse-model",
                                         help="沿用上次训练的模型（配置未变时）"),
        full: bool = typer.Option(False, "--full",
                                  help="沿用模型时也重新关联全部记录（默认只重新关联变化波及的部分）"),
    ) -> None:
        """关联记录：信用代码确定性关联 + 概率关联，实体编号跨批次稳定。"""
        from jiedao.db import get_database

        with get_database().session() as s:
            out = run_linkage(s, entity_type, backend, retrain=not reuse_model,
                              incremental=False if full else None)
        typer.echo(f"关联第{out['run']}次（{out['backend']}）：记录 {out['records']:,} → 实体 "
                   f"{out['entities']:,}；新建 {out['new_entities']:,}，注销 "
                   f"{out['retired_entities']:,}，合并 {len(out['merges']):,}，拆分 "
                   f"{len(out['splits']):,}，改动关联 {out['links_changed']:,}，"
                   f"新增待审核 {out['review_enqueued']:,}，重新关联记录 "
                   f"{out['relinked_records']:,}，用时 {out['seconds']:.1f}s")

    review_app = typer.Typer(help="关联审核队列", no_args_is_help=True)
    hub_app.add_typer(review_app, name="review")

    @review_app.command("list")
    def review_list(
        status: str = typer.Option("pending", "--status", help="pending|accepted|rejected|all"),
        limit: int = typer.Option(20, "--limit"),
    ) -> None:
        """列出待审核（或已决定）的记录对。"""
        from jiedao.db import get_database
        from jiedao.hub.models import Record

        with get_database().session() as s:
            rows = list_reviews(s, None if status == "all" else status, limit)
            if not rows:
                typer.echo("没有符合条件的记录对")
            for rv in rows:
                a, b = s.get(Record, rv.record_a), s.get(Record, rv.record_b)
                p = "—" if rv.probability is None else f"{rv.probability:.3f}"
                typer.echo(f"#{rv.id} [{rv.status}] p={p}  {rv.record_a} {a.source_code}:"
                           f"{a.name or ''}  ⇄  {rv.record_b} {b.source_code}:{b.name or ''}")

    def _decide(review_id: int, accept: bool, by: str) -> None:
        from jiedao.db import get_database

        with get_database().session() as s:
            rv = decide_review(s, review_id, accept, by)
            typer.echo(f"#{rv.id} 已{'确认为同一实体' if accept else '确认为不同实体'}"
                       f"（{by}），下次关联生效")

    @review_app.command("accept")
    def review_accept(review_id: int, by: str = typer.Option("steward", "--by")) -> None:
        """确认为同一实体（此后每次关联都合并这两条记录）。"""
        _decide(review_id, True, by)

    @review_app.command("reject")
    def review_reject(review_id: int, by: str = typer.Option("steward", "--by")) -> None:
        """确认为不同实体（此后每次关联都不会把它们放在一起）。"""
        _decide(review_id, False, by)


# --------------------------------------------------------------------------- evaluation


def pairwise_scores(clusters: dict, truth: dict) -> dict:
    """Pairwise precision / recall / F1 of ``clusters`` against ``truth`` (both record →
    cluster label), over the records present in both."""
    common = [r for r in clusters if r in truth]
    by_pred: dict[Any, list] = defaultdict(list)
    for r in common:
        by_pred[clusters[r]].append(r)
    tp = pred_pairs = 0
    for members in by_pred.values():
        n = len(members)
        pred_pairs += n * (n - 1) // 2
        cnt: dict[Any, int] = defaultdict(int)
        for r in members:
            cnt[truth[r]] += 1
        tp += sum(c * (c - 1) // 2 for c in cnt.values())
    tcount: dict[Any, int] = defaultdict(int)
    for r in common:
        tcount[truth[r]] += 1
    true_pairs = sum(c * (c - 1) // 2 for c in tcount.values())
    precision = tp / pred_pairs if pred_pairs else 1.0
    recall = tp / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "true_pairs": true_pairs,
            "predicted_pairs": pred_pairs, "true_positive_pairs": tp}


__all__ = ["CONFIG_PATH", "FRAME_COLUMNS", "LinkResult", "config_hash", "level_labels",
           "link_frame", "load_linkage_config", "pairwise_scores", "prepare_frame",
           "splink_settings", "spark_session", "train_model", "validate_config",
           "add_decision", "assign_entity_ids", "decide_review", "latest_model",
           "list_reviews", "register_cli", "run_linkage"]
