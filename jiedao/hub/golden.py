"""Golden records: one surviving value per field of every entity, chosen from its linked
source records by the rules in ``hub/data/survivorship.yaml``, with field-level lineage
(source, record, import run, time) and conflicts surfaced (distinct valid values → conflict
with the alternatives), written to ``hub_golden``."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import yaml

from jiedao.errors import Problem, ValidationError

CONFIG_PATH = Path(__file__).parent / "data" / "survivorship.yaml"
RECORD_FIELDS = ("name", "name_norm", "name_core", "credit_code", "reg_no", "legal_rep",
                 "phone", "address_raw", "address_norm", "address_code", "building_code",
                 "grid_code", "street_code", "industry_code", "established", "status")
RULES = ("source_priority", "most_recent", "most_complete", "most_frequent", "longest")
VALIDS = ("nonblank", "uscc", "reg_no", "phone")


def load_survivorship(entity_type: str = "enterprise", path: str | Path | None = None) -> dict:
    """Field rules of ``entity_type`` from survivorship.yaml, checked (ValidationError)."""
    path = Path(path) if path else CONFIG_PATH
    src = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ValidationError([Problem(f"无法读取存活规则：{e}", source=src)]) from e
    fields = (((data or {}).get("entity_types") or {}).get(entity_type) or {}).get("fields")
    if not fields:
        raise ValidationError([Problem(f"存活规则中没有实体类型 {entity_type}", source=src,
                                       field="entity_types")])
    problems = []
    for name, spec in fields.items():
        f = f"fields.{name}"
        if spec.get("column") not in RECORD_FIELDS:
            problems.append(Problem(f"未知的列 {spec.get('column')!r}", source=src, field=f))
        if spec.get("compare", spec.get("column")) not in RECORD_FIELDS:
            problems.append(Problem(f"未知的比较列 {spec.get('compare')!r}", source=src, field=f))
        if spec.get("valid", "nonblank") not in VALIDS:
            problems.append(Problem(f"未知的有效性规则 {spec.get('valid')!r}", source=src,
                                    field=f))
        if spec.get("follow"):
            if spec["follow"] not in fields or fields[spec["follow"]].get("follow"):
                problems.append(Problem(f"follow 应指向一个有自身规则的字段：{spec['follow']}",
                                        source=src, field=f))
            continue
        for r in spec.get("rules") or []:
            base, _, col = str(r).partition(":")
            if base == "prefer":
                if col not in RECORD_FIELDS:
                    problems.append(Problem(f"prefer 的列未知：{r}", source=src, field=f))
            elif base not in RULES:
                problems.append(Problem(f"未知的规则 {r!r}", source=src, field=f))
    if problems:
        raise ValidationError(problems)
    return fields


def _validator(kind: str):
    from jiedao.hub.standardise import reg_no_valid, uscc_valid

    if kind == "uscc":
        return uscc_valid
    if kind == "reg_no":
        return reg_no_valid
    if kind == "phone":
        return lambda v: len(re.sub(r"\D", "", str(v))) >= 7
    return lambda v: True


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, float) and v != v:
        return None
    if hasattr(v, "isoformat"):
        return v.isoformat()[:10]
    s = str(v).strip()
    return s or None


def entity_records(session, entity_type: str = "enterprise"):
    """DataFrame of linked, current records of live entities with lineage columns
    (entity_id, record_id, source_code, priority, run_id, run_at, standard fields)."""
    import pandas as pd
    from sqlalchemy import func, select

    from jiedao.hub.models import Entity, ImportRun, Link, Record, Source

    run_at = func.coalesce(ImportRun.finished_at, ImportRun.started_at)
    stmt = (select(Link.entity_id, Record.id.label("record_id"), Record.source_code,
                   Source.priority, Record.last_run_id.label("run_id"), run_at.label("run_at"),
                   Record.updated_at, *[getattr(Record, f) for f in RECORD_FIELDS])
            .join(Record, Record.id == Link.record_id)
            .join(Entity, Entity.id == Link.entity_id)
            .join(Source, Source.code == Record.source_code)
            .outerjoin(ImportRun, ImportRun.id == Record.last_run_id)
            .where(Entity.entity_type == entity_type, Entity.retired.is_(False),
                   Record.vanished.is_(False))
            .order_by(Link.entity_id, Record.id))
    cols = ["entity_id", "record_id", "source_code", "priority", "run_id", "run_at",
            "updated_at", *RECORD_FIELDS]
    return pd.DataFrame.from_records(session.execute(stmt).all(), columns=cols)


def survive(records, fields: dict) -> dict[tuple[int, str], dict]:
    """Pick the golden value of every field for every entity of ``records`` (a frame like
    :func:`entity_records`). Returns {(entity_id, field): {value, source_code, record_id,
    run_id, at, conflict, alternatives}}. Pure: no database."""
    import pandas as pd

    out: dict[tuple[int, str], dict] = {}
    if len(records) == 0:
        return out
    df = records.copy()
    for f in RECORD_FIELDS:
        if f in df.columns:
            df[f] = df[f].map(_text).astype(object)
    ts = pd.to_datetime(df["updated_at"].where(df["updated_at"].notna(), df["run_at"]),
                        errors="coerce")
    df["_recent"] = -ts.fillna(pd.Timestamp(0)).astype("int64")
    df["_recent"] = df["_recent"] - df["run_id"].fillna(0).astype("int64")  # later run first
    df["_prio"] = -df["priority"].fillna(0).astype("int64")
    present = [f for f in RECORD_FIELDS if f in df.columns]
    df["_complete"] = -df[present].notna().sum(axis=1)
    winners: dict[str, pd.DataFrame] = {}
    for name, spec in fields.items():
        if spec.get("follow"):
            continue
        col = spec["column"]
        ok = _validator(spec.get("valid", "nonblank"))
        cand = df[df[col].notna()]
        if spec.get("valid", "nonblank") != "nonblank" and len(cand):
            cand = cand[cand[col].map(ok).astype(bool)]
        if len(cand) == 0:
            winners[name] = cand
            continue
        cand = cand.copy()
        keys, asc = ["entity_id"], [True]
        for i, rule in enumerate(spec.get("rules") or []):
            base, _, pcol = str(rule).partition(":")
            k = f"_r{i}"
            if base == "source_priority":
                order = spec.get("sources")
                if order:
                    rank = {s: j for j, s in enumerate(order)}
                    cand[k] = cand["source_code"].map(lambda s, rank=rank: rank.get(s, len(rank)))
                else:
                    cand[k] = cand["_prio"]
            elif base == "most_recent":
                cand[k] = cand["_recent"]
            elif base == "most_complete":
                cand[k] = cand["_complete"]
            elif base == "most_frequent":
                cand[k] = -cand.groupby(["entity_id", col])[col].transform("size")
            elif base == "longest":
                cand[k] = -cand[col].str.len()
            elif base == "prefer":
                cand[k] = cand[pcol].isna().astype(int)
            keys.append(k)
            asc.append(True)
        keys.append("record_id")
        asc.append(True)
        cand = cand.sort_values(keys, ascending=asc, kind="mergesort")
        win = cand.drop_duplicates("entity_id", keep="first")
        winners[name] = win
        cmp_col = spec.get("compare", col)
        nun = cand.groupby("entity_id")[cmp_col].nunique()
        conflicted = set(nun[nun > 1].index.tolist())
        alts: dict[int, list] = {}
        if conflicted:
            sub = cand[cand["entity_id"].isin(conflicted)]
            for ent, grp in sub.groupby("entity_id", sort=False):
                first = grp.iloc[0][cmp_col]
                seen = {first}
                lst = []
                for v, cv, src, rid in zip(grp[col], grp[cmp_col], grp["source_code"],
                                           grp["record_id"], strict=True):
                    if cv in seen:
                        continue
                    seen.add(cv)
                    lst.append({"value": v, "source_code": src, "record_id": int(rid)})
                alts[int(ent)] = lst
        for row in win[["entity_id", col, "source_code", "record_id", "run_id",
                        "run_at"]].itertuples(index=False, name=None):
            ent = int(row[0])
            out[(ent, name)] = _cell(row[1], row[2], row[3], row[4], row[5],
                                     ent in conflicted, alts.get(ent, []))
    for name, spec in fields.items():
        lead = spec.get("follow")
        if not lead:
            continue
        win = winners.get(lead)
        if win is None or len(win) == 0:
            continue
        col = spec["column"]
        for row in win[["entity_id", col, "source_code", "record_id", "run_id",
                        "run_at"]].itertuples(index=False, name=None):
            if row[1] is None:
                continue
            out[(int(row[0]), name)] = _cell(row[1], row[2], row[3], row[4], row[5], False, [])
    return out


def _cell(value, source, record_id, run_id, at, conflict, alternatives) -> dict:
    import pandas as pd

    at = None if at is None or (not isinstance(at, str) and pd.isna(at)) else at
    if at is not None and hasattr(at, "to_pydatetime"):
        at = at.to_pydatetime()
    return {"value": value, "source_code": source, "record_id": int(record_id),
            "run_id": None if run_id is None or pd.isna(run_id) else int(run_id), "at": at,
            "conflict": bool(conflict), "alternatives": alternatives}


def build_golden(session, entity_type: str = "enterprise", *, config: dict | None = None
                 ) -> dict:
    """(Re)build the golden records of every live entity of ``entity_type``; only changed
    cells are written. Returns counts (entities, fields, conflicts, written, removed)."""
    from sqlalchemy import delete, insert, select, tuple_, update

    from jiedao.hub.models import Entity, Golden

    t0 = time.perf_counter()
    fields = config if config is not None else load_survivorship(entity_type)
    recs = entity_records(session, entity_type)
    cells = survive(recs, fields)
    ent_ids = select(Entity.id).where(Entity.entity_type == entity_type)
    old = {(e, f): (v, r, c, a) for e, f, v, r, c, a in session.execute(
        select(Golden.entity_id, Golden.field, Golden.value, Golden.record_id, Golden.conflict,
               Golden.alternatives).where(Golden.entity_id.in_(ent_ids)))}
    ins, upd = [], []
    for (ent, name), c in cells.items():
        row = {"entity_id": ent, "field": name, "value": c["value"],
               "source_code": c["source_code"], "record_id": c["record_id"],
               "run_id": c["run_id"], "at": c["at"], "conflict": c["conflict"],
               "alternatives": c["alternatives"]}
        cur = old.get((ent, name))
        if cur is None:
            ins.append(row)
        elif cur != (c["value"], c["record_id"], c["conflict"], c["alternatives"]):
            upd.append(row)
    gone = [k for k in old if k not in cells]
    for i in range(0, len(gone), 2000):
        session.execute(delete(Golden).where(
            tuple_(Golden.entity_id, Golden.field).in_(gone[i:i + 2000])))
    if upd:
        session.execute(update(Golden), upd)
    if ins:
        session.execute(insert(Golden), ins)
    session.flush()
    return {"entity_type": entity_type, "entities": len({e for e, _ in cells}),
            "fields": len(cells), "conflicts": sum(1 for c in cells.values() if c["conflict"]),
            "written": len(ins) + len(upd), "removed": len(gone),
            "seconds": round(time.perf_counter() - t0, 2)}


def golden_record(session, entity_id: int) -> dict[str, dict]:
    """{field: {value, source_code, record_id, run_id, at, conflict, alternatives}}."""
    from sqlalchemy import select

    from jiedao.hub.models import Golden

    return {g.field: {"value": g.value, "source_code": g.source_code, "record_id": g.record_id,
                      "run_id": g.run_id, "at": g.at, "conflict": g.conflict,
                      "alternatives": g.alternatives}
            for g in session.scalars(select(Golden).where(Golden.entity_id == entity_id))}


def register_cli(hub_app) -> None:
    """Add ``jiedao hub golden``."""
    import typer

    @hub_app.command("golden")
    def golden_cmd(entity_type: str = typer.Option("enterprise", "--entity-type")) -> None:
        """按存活规则生成黄金档案（字段级血缘，冲突单列）。"""
        from jiedao.db import get_database

        with get_database().session() as s:
            out = build_golden(s, entity_type)
        typer.echo(f"黄金档案：实体 {out['entities']:,}，字段 {out['fields']:,}，冲突 "
                   f"{out['conflicts']:,}，写入 {out['written']:,}，移除 {out['removed']:,}，"
                   f"用时 {out['seconds']:.1f}s")


__all__ = ["CONFIG_PATH", "build_golden", "entity_records", "golden_record",
           "load_survivorship", "register_cli", "survive"]
