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


def entity_records(session, entity_type: str = "enterprise", entities=None):
    """DataFrame of linked, current records of live entities with lineage columns
    (entity_id, record_id, source_code, priority, run_id, run_at, standard fields); only of
    ``entities`` (entity ids) when given."""
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
    if entities is None:
        return pd.DataFrame.from_records(session.execute(stmt).all(), columns=cols)
    ids = sorted(entities)
    rows = []
    for i in range(0, len(ids), 5000):
        rows += session.execute(stmt.where(Link.entity_id.in_(ids[i:i + 5000]))).all()
    rows.sort(key=lambda r: (r[0], r[1]))
    return pd.DataFrame.from_records(rows, columns=cols)


GOLDEN_COLUMNS = ["entity_id", "field", "value", "source_code", "record_id", "run_id", "at",
                  "conflict", "alternatives"]


def survive_frame(records, fields: dict):
    """Pick the golden value of every field for every entity of ``records`` (a frame like
    :func:`entity_records`). Returns a DataFrame with GOLDEN_COLUMNS (one row per entity and
    field that has a value). Pure: no database."""
    import pandas as pd

    if len(records) == 0:
        return pd.DataFrame(columns=GOLDEN_COLUMNS)
    cols = ["entity_id", "record_id", "source_code", "priority", "run_id", "run_at",
            "updated_at"]
    df = records[cols].copy()
    used = set()
    for spec in fields.values():
        used.add(spec["column"])
        used.add(spec.get("compare", spec["column"]))
        for r in spec.get("rules") or []:
            base, _, pcol = str(r).partition(":")
            if base == "prefer":
                used.add(pcol)
    present = [f for f in RECORD_FIELDS if f in records.columns]
    for f in present:
        if f in used:
            df[f] = pd.Series([(v or None) if type(v) is str else _text(v)
                               for v in records[f].tolist()], index=records.index, dtype=object)
    ts = pd.to_datetime(df["updated_at"].where(df["updated_at"].notna(), df["run_at"]),
                        errors="coerce")
    df["_recent"] = -ts.fillna(pd.Timestamp(0)).astype("int64")
    df["_recent"] = df["_recent"] - df["run_id"].fillna(0).astype("int64")  # later run first
    df["_prio"] = -df["priority"].fillna(0).astype("int64")
    df["_complete"] = -records[present].notna().sum(axis=1).values
    out = []
    winners = {}
    for name, spec in fields.items():
        if spec.get("follow"):
            continue
        col = spec["column"]
        cmp_col = spec.get("compare", col)
        need = ["entity_id", "record_id", "source_code", "run_id", "run_at", "_recent", "_prio",
                "_complete", col]
        for extra in [cmp_col] + [str(r).partition(":")[2] for r in spec.get("rules") or []
                                  if str(r).startswith("prefer:")]:
            if extra not in need:
                need.append(extra)
        cand = df.loc[df[col].notna().to_numpy(), need]  # only the columns this field uses
        if spec.get("valid", "nonblank") != "nonblank" and len(cand):
            ok = _validator(spec["valid"])
            vals = cand[col].tolist()
            verdict = {v: bool(ok(v)) for v in set(vals)}
            cand = cand[[verdict[v] for v in vals]]
        if len(cand) == 0:
            continue
        cand = cand.copy()
        keys = ["entity_id"]
        for i, rule in enumerate(spec.get("rules") or []):
            base, _, pcol = str(rule).partition(":")
            k = f"_r{i}"
            if base == "source_priority":
                order = spec.get("sources")
                if order:
                    rank = {src: j for j, src in enumerate(order)}
                    cand[k] = [rank.get(src, len(rank)) for src in cand["source_code"].tolist()]
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
        keys.append("record_id")
        cand = cand.sort_values(keys, kind="mergesort")
        win = cand.drop_duplicates("entity_id", keep="first")
        winners[name] = win
        # alternatives: the best record of every other distinct (compare) value
        firsts = cand.drop_duplicates(["entity_id", cmp_col], keep="first")
        win_cmp = dict(zip(win["entity_id"].tolist(), win[cmp_col].tolist(), strict=True))
        alts: dict[int, list] = {}
        for ent, cv, v, src, rid in zip(firsts["entity_id"].tolist(), firsts[cmp_col].tolist(),
                                        firsts[col].tolist(), firsts["source_code"].tolist(),
                                        firsts["record_id"].tolist(), strict=True):
            if cv != win_cmp[ent]:
                alts.setdefault(ent, []).append(
                    {"value": v, "source_code": src, "record_id": int(rid)})
        frame = pd.DataFrame({
            "entity_id": win["entity_id"].values, "field": name, "value": win[col].values,
            "source_code": win["source_code"].values, "record_id": win["record_id"].values,
            "run_id": win["run_id"].values, "at": win["run_at"].values})
        frame["alternatives"] = [alts.get(e, []) for e in frame["entity_id"].tolist()]
        frame["conflict"] = frame["alternatives"].map(bool)
        out.append(frame)
    for name, spec in fields.items():
        lead = spec.get("follow")
        if not lead or lead not in winners:
            continue
        win = winners[lead]
        col = spec["column"]
        if col not in win.columns:
            win = win.assign(**{col: df.loc[win.index, col].tolist() if col in df.columns else
                                [_text(v) for v in records.loc[win.index, col].tolist()]})
        win = win[win[col].notna()]
        frame = pd.DataFrame({
            "entity_id": win["entity_id"].values, "field": name, "value": win[col].values,
            "source_code": win["source_code"].values, "record_id": win["record_id"].values,
            "run_id": win["run_id"].values, "at": win["run_at"].values})
        frame["alternatives"] = [[] for _ in range(len(frame))]
        frame["conflict"] = False
        out.append(frame)
    if not out:
        return pd.DataFrame(columns=GOLDEN_COLUMNS)
    return pd.concat(out, ignore_index=True)[GOLDEN_COLUMNS]


def _py(v):
    """Plain Python value for a database parameter (no numpy / pandas scalars)."""
    import pandas as pd

    if v is None or v is pd.NaT:
        return None
    if isinstance(v, float) and v != v:
        return None
    if hasattr(v, "to_pydatetime"):
        return v.to_pydatetime()
    if hasattr(v, "item"):
        v = v.item()
        if isinstance(v, int) and not isinstance(v, bool) and v > 10**15:  # datetime64 ns
            return pd.Timestamp(v).to_pydatetime()
    return v


def _rows(frame) -> list[dict]:
    out = []
    for t in frame[GOLDEN_COLUMNS].itertuples(index=False, name=None):
        out.append({"entity_id": int(t[0]), "field": t[1], "value": t[2],
                    "source_code": t[3], "record_id": int(t[4]),
                    "run_id": None if t[5] is None or t[5] != t[5] else int(t[5]),
                    "at": _py(t[6]), "conflict": bool(t[7]), "alternatives": t[8]})
    return out


def survive(records, fields: dict) -> dict[tuple[int, str], dict]:
    """:func:`survive_frame` as {(entity_id, field): {value, source_code, record_id, run_id,
    at, conflict, alternatives}} (convenient on small data)."""
    return {(r["entity_id"], r["field"]): {k: v for k, v in r.items()
                                            if k not in ("entity_id", "field")}
            for r in _rows(survive_frame(records, fields))}


STATE_KEY = "hub_golden_state.{}"


def _state_fingerprint(session, entity_type: str, fields: dict) -> str:
    """What, besides the records and links, decides golden values: the rules and the
    sources' priorities."""
    import hashlib
    import json

    from sqlalchemy import select

    from jiedao.hub.models import Source

    prios = sorted(session.execute(select(Source.code, Source.priority)).all())
    body = json.dumps([entity_type, fields, [list(p) for p in prios]], sort_keys=True,
                      default=str)
    return hashlib.sha1(body.encode()).hexdigest()[:16]


def _high_water(session) -> tuple[int, int]:
    from sqlalchemy import func, select

    from jiedao.hub.models import ImportRun, LinkModel

    return (int(session.scalar(select(func.max(ImportRun.id))) or 0),
            int(session.scalar(select(func.max(LinkModel.id))) or 0))


def affected_entities(session, entity_type: str, fields: dict) -> set[int] | None:
    """Entities whose golden record may have changed since the last build: linked to a
    record loaded, changed or vanished by a later import run, or touched by a later linkage
    run (new, moved or removed links, merges, retirements). None when everything must be
    rebuilt (no earlier build, other rules or priorities, or a linkage run that touched too
    many entities to list)."""
    import json

    from sqlalchemy import or_, select

    from jiedao.db import get_meta
    from jiedao.hub.models import Entity, Link, LinkModel, Record

    raw = get_meta(session, STATE_KEY.format(entity_type))
    if not raw:
        return None
    try:
        state = json.loads(raw)
    except ValueError:
        return None
    if state.get("fingerprint") != _state_fingerprint(session, entity_type, fields):
        return None
    imp, lrun = int(state.get("import_run", 0)), int(state.get("link_run", 0))
    out: set[int] = set()
    for lm_metrics, lm_type in session.execute(
            select(LinkModel.metrics, LinkModel.entity_type).where(LinkModel.id > lrun)):
        if lm_type != entity_type:
            continue
        touched = (lm_metrics or {}).get("touched_entities")
        if touched is None:
            return None
        out.update(int(e) for e in touched)
    out.update(session.scalars(
        select(Link.entity_id).join(Record, Record.id == Link.record_id)
        .join(Entity, Entity.id == Link.entity_id)
        .where(Entity.entity_type == entity_type,
               or_(Record.last_run_id > imp, Record.vanished_run_id > imp))))
    return out


def _save_state(session, entity_type: str, fields: dict, high_water: tuple[int, int]) -> None:
    import json

    from jiedao.db import set_meta

    set_meta(session, STATE_KEY.format(entity_type), json.dumps({
        "import_run": high_water[0], "link_run": high_water[1],
        "fingerprint": _state_fingerprint(session, entity_type, fields)}))


def build_golden(session, entity_type: str = "enterprise", *, config: dict | None = None,
                 chunk: int = 20000, full: bool = False) -> dict:
    """(Re)build the golden records of the live entities of ``entity_type``; only changed
    cells are written. Incremental: only entities affected since the last build (see
    :func:`affected_entities`) are recomputed, unless ``full`` or nothing is known.
    Returns counts (entities, fields, conflicts, written, removed, incremental)."""
    import numpy as np
    import pandas as pd
    from sqlalchemy import delete, select, tuple_, update

    from jiedao.hub.bulk import insert_rows
    from jiedao.hub.models import Entity, Golden

    t0 = time.perf_counter()
    fields = config if config is not None else load_survivorship(entity_type)
    high_water = _high_water(session)
    todo_ents = None if full else affected_entities(session, entity_type, fields)
    recs = entity_records(session, entity_type, todo_ents)
    cells = survive_frame(recs, fields)
    del recs
    if todo_ents is None:
        old_stmt = select(Golden.entity_id, Golden.field, Golden.value, Golden.record_id,
                          Golden.conflict, Golden.alternatives).where(
            Golden.entity_id.in_(select(Entity.id).where(Entity.entity_type == entity_type)))
        old_rows = session.execute(old_stmt).all()
    else:
        ids = sorted(todo_ents)
        old_rows = []
        for i in range(0, len(ids), 5000):
            old_rows += session.execute(
                select(Golden.entity_id, Golden.field, Golden.value, Golden.record_id,
                       Golden.conflict, Golden.alternatives)
                .where(Golden.entity_id.in_(ids[i:i + 5000]))).all()
    old = pd.DataFrame(old_rows, columns=["entity_id", "field", "value_old", "record_id_old",
                                          "conflict_old", "alternatives_old"])
    del old_rows
    written = 0
    if len(old) == 0:
        # nothing stored yet for these entities: every cell is new, one bulk insert
        written = insert_rows(session, Golden.__table__, GOLDEN_COLUMNS, _tuples(cells))
        gone: list = []
    else:
        merged = cells.merge(old, on=["entity_id", "field"], how="left", indicator=True)
        is_new = (merged["_merge"] == "left_only").to_numpy()
        changed = [bool(n) or v != vo or int(r) != int(ro) or bool(c) != bool(co) or a != ao
                   for n, v, vo, r, ro, c, co, a, ao in zip(
                       is_new, merged["value"].tolist(), merged["value_old"].tolist(),
                       merged["record_id"].tolist(), merged["record_id_old"].fillna(-1).tolist(),
                       merged["conflict"].tolist(), merged["conflict_old"].fillna(False).tolist(),
                       merged["alternatives"].tolist(), merged["alternatives_old"].tolist(),
                       strict=True)]
        changed = np.array(changed, dtype=bool)  # a boolean mask even when empty
        todo = merged[changed]
        todo_new = is_new[changed]
        ins = todo[todo_new]
        upd = todo[~todo_new]
        for i in range(0, len(upd), chunk):
            session.execute(update(Golden), _rows(upd.iloc[i:i + chunk]))
        written = len(upd) + insert_rows(session, Golden.__table__, GOLDEN_COLUMNS, _tuples(ins))
        keep = cells[["entity_id", "field"]].assign(_keep=True)
        left = old[["entity_id", "field"]].merge(keep, on=["entity_id", "field"], how="left")
        gone = [(int(e), f) for e, f, k in zip(left["entity_id"].tolist(),
                                               left["field"].tolist(),
                                               left["_keep"].tolist(), strict=True)
                if k is not True]
        for i in range(0, len(gone), 2000):
            session.execute(delete(Golden).where(
                tuple_(Golden.entity_id, Golden.field).in_(gone[i:i + 2000])))
    _save_state(session, entity_type, fields, high_water)
    session.flush()
    return {"entity_type": entity_type, "entities": int(cells["entity_id"].nunique()),
            "fields": len(cells), "conflicts": int(cells["conflict"].sum()),
            "written": written, "removed": len(gone), "incremental": todo_ents is not None,
            "recomputed_entities": None if todo_ents is None else len(todo_ents),
            "seconds": round(time.perf_counter() - t0, 2)}


def _tuples(frame):
    """Rows of ``frame`` as plain tuples in GOLDEN_COLUMNS order (for the bulk insert);
    converted column by column (import times repeat: each distinct one converted once)."""
    if len(frame) == 0:
        return iter(())
    ents = [int(v) for v in frame["entity_id"].tolist()]
    recs = [int(v) for v in frame["record_id"].tolist()]
    runs = [None if v is None or v != v else int(v) for v in frame["run_id"].tolist()]
    import pandas as pd

    codes, uniques = pd.factorize(frame["at"], use_na_sentinel=True)
    conv = [_py(v) for v in list(uniques)] + [None]  # code -1 (missing) → None
    ats = [conv[c] for c in codes.tolist()]
    return zip(ents, frame["field"].tolist(), frame["value"].tolist(),
               frame["source_code"].tolist(), recs, runs, ats,
               [bool(v) for v in frame["conflict"].tolist()], frame["alternatives"].tolist(),
               strict=True)


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


__all__ = ["CONFIG_PATH", "GOLDEN_COLUMNS", "affected_entities", "build_golden", "entity_records", "golden_record",
           "load_survivorship", "register_cli", "survive", "survive_frame"]
