"""The demo's "hub" stage: write the six department ledgers, run them through the data hub
(register sources, load, link, golden records) and measure the result against the truth.

:func:`db_stage` is the ``build_demo`` DB stage; :func:`fuse` is the same pipeline for any
database and folder (used by ``bench/hub_fuse.py``); :func:`evaluate` compares the hub's
links and golden fields with ``truth_records.csv`` / ``truth_entities.csv``.
"""

from __future__ import annotations

import csv
import json
import time
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy import select

from jiedao.demo.ledgers import (
    SOURCE_FILES,
    TRUTH_ENTITIES,
    TRUTH_RECORDS,
    default_dir,
    write_ledgers,
)

LOAD_ORDER = ("scjg_registry", "sw_taxpayers", "tj_sishang", "rsj_employers", "kjj_tech",
              "jd_buildings", "jd_tenants")


def fuse(session, data_dir: str | Path, *, progress=None, timings: dict | None = None,
         guard: bool = False, retrain: bool = True) -> dict[str, Any]:
    """Register the sources, load every demo ledger from ``data_dir``, link and build golden
    records. Returns counts per step; ``timings`` (if given) receives seconds per step.

    Loads are incremental (unchanged rows are only hashed); golden records are recomputed
    only for entities touched since the last build. ``retrain=False`` reuses the saved
    linkage model when the configuration is unchanged (a refresh after small changes).

    With ``guard`` a failing linkage / golden step is rolled back to a savepoint and reported
    under ``hub_errors`` instead of failing the caller (benchmarks report what they can)."""
    from jiedao.hub.golden import build_golden
    from jiedao.hub.link import run_linkage
    from jiedao.hub.loads import load_source
    from jiedao.hub.sources import sync_sources

    timings = timings if timings is not None else {}
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    sync_sources(session)
    timings["sync"] = round(time.perf_counter() - t0, 3)
    registered = set(_registered(session))
    for code in LOAD_ORDER:
        if code not in registered:
            continue
        t0 = time.perf_counter()
        run = load_source(session, code, data_dir=data_dir)
        session.flush()
        out[f"hub_load.{code}"] = int(run.n_read)
        timings[f"load.{code}"] = round(time.perf_counter() - t0, 3)
        if progress:
            progress(code)
    errors: list[str] = []

    def step(name: str, func, entity_type: str):
        t0 = time.perf_counter()
        try:
            if not guard:
                return func(session, entity_type)
            with session.begin_nested():
                return func(session, entity_type)
        except Exception as e:  # only with guard: keep the demo, report the failure
            if not guard:
                raise
            errors.append(f"{name}({entity_type}): {type(e).__name__}: {e}"[:300])
            return None
        finally:
            timings[f"{name}.{entity_type}"] = round(time.perf_counter() - t0, 3)
            if progress:
                progress(f"{name}.{entity_type}")

    def link(ses, entity_type):
        return run_linkage(ses, entity_type, retrain=retrain)

    for entity_type in ("enterprise", "building"):
        summary = step("link", link, entity_type)
        if isinstance(summary, dict):
            out[f"hub_entities.{entity_type}"] = int(summary.get("entities", 0) or 0)
        step("golden", build_golden, entity_type)
    out["hub_errors"] = errors
    return out


def _registered(session) -> list[str]:
    from jiedao.hub.models import Source

    return list(session.scalars(select(Source.code)))


def db_stage(session, world, rng, tables) -> dict[str, int]:
    """``build_demo`` stage "hub": ledgers into ``$JIEDAO_HOME/demo-ledgers/<scale>`` (or
    ``world.ctx["hub_ledgers_dir"]``), then :func:`fuse`; keeps counts, timings and the
    evaluation against the truth in the ``demo_hub`` meta entry."""
    from jiedao.db import set_meta

    bar = world.ctx.get("progress")
    out_dir = Path(world.ctx.get("hub_ledgers_dir") or default_dir(world.scale.name))
    t0 = time.perf_counter()
    summary = write_ledgers(world, out_dir, rng)
    timings = {"ledgers": round(time.perf_counter() - t0, 3)}
    steps = list(LOAD_ORDER) + ["link.enterprise", "golden.enterprise", "link.building",
                                "golden.building"]
    task = bar.add("台账载入与融合", len(steps)) if bar is not None else None

    def progress(_step: str) -> None:
        if bar is not None:
            bar.advance(task, 1)

    counts = fuse(session, out_dir, progress=progress, timings=timings)
    if bar is not None:
        bar.finish(task)
    counts.pop("hub_errors", None)
    evaluation = evaluate(session, out_dir)
    set_meta(session, "demo_hub", json.dumps(
        {"dir": str(out_dir), "rows": summary.rows, "entities_true": summary.entities,
         "timings": timings, "evaluation": evaluation},
        ensure_ascii=False, sort_keys=True))
    return {"hub_records": summary.total, **{k: v for k, v in counts.items() if isinstance(v, int)}}


def link_by_truth(session, data_dir: str | Path) -> dict[str, int]:
    """Oracle linkage: entities and links straight from ``truth_records.csv`` (enterprise
    entity id = the true id; one building entity per building code). For tests and for
    comparing a linker with perfect linkage; replaces existing entities and links."""
    from sqlalchemy import delete, insert

    from jiedao.clock import now
    from jiedao.hub.models import Entity, Golden, Link, Record, Review, Source

    data_dir = Path(data_dir)
    truth: dict[tuple[str, str], str] = {}
    with (data_dir / TRUTH_RECORDS).open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            truth[(row["source"], row["source_key"])] = row["entity_id"]
    session.execute(delete(Review))
    session.execute(delete(Golden))
    session.execute(delete(Link))
    session.execute(delete(Entity))
    types = dict(session.execute(select(Source.code, Source.entity_type)).all())
    ids: dict[str, int] = {}
    ents, links = [], []
    at = now()
    for rid, src, key in session.execute(select(Record.id, Record.source_code, Record.source_key)
                                         .where(Record.vanished.is_(False))):
        t = truth.get((src, key))
        if t is None:
            continue
        etype = types.get(src, "enterprise")
        if t not in ids:
            ids[t] = int(t) if etype == "enterprise" else 10_000_000 + len(ids)
            ents.append({"id": ids[t], "entity_type": etype, "created_at": at, "history": []})
        links.append({"record_id": rid, "entity_id": ids[t], "method": "steward",
                      "probability": 1.0, "at": at})
    for i in range(0, len(ents), 5000):
        session.execute(insert(Entity), ents[i:i + 5000])
    for i in range(0, len(links), 5000):
        session.execute(insert(Link), links[i:i + 5000])
    session.flush()
    if session.get_bind().dialect.name == "postgresql":  # explicit ids: move the sequence on
        from sqlalchemy import text

        session.execute(text("SELECT setval(pg_get_serial_sequence('hub_entity', 'id'), "
                             "COALESCE((SELECT MAX(id) FROM hub_entity), 0) + 1, false)"))
    return {"entities": len(ents), "links": len(links)}


# ---------------------------------------------------------------- evaluation


def _pairs(sizes) -> int:
    return sum(n * (n - 1) // 2 for n in sizes)


def evaluate(session, data_dir: str | Path, entity_type: str = "enterprise") -> dict[str, Any]:
    """Pairwise precision / recall / F1 of the hub's links against the generator's truth, and
    the share of golden fields equal to the true value (name, credit_code, legal_rep,
    building_code, street_code, established)."""
    from jiedao.hub.models import Golden, Link, Record, Source

    data_dir = Path(data_dir)
    truth: dict[tuple[str, str], str] = {}
    with (data_dir / TRUTH_RECORDS).open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            truth[(row["source"], row["source_key"])] = row["entity_id"]
    rows = session.execute(
        select(Record.source_code, Record.source_key, Link.entity_id)
        .join(Link, Link.record_id == Record.id)
        .join(Source, Source.code == Record.source_code)
        .where(Source.entity_type == entity_type, Record.vanished.is_(False))).all()
    pred_sizes: Counter = Counter()
    true_sizes: Counter = Counter()
    both: Counter = Counter()
    hub_to_true: dict[int, Counter] = defaultdict(Counter)
    for src, key, ent in rows:
        t = truth.get((src, key))
        if t is None:
            continue
        pred_sizes[ent] += 1
        true_sizes[t] += 1
        both[(ent, t)] += 1
        hub_to_true[ent][t] += 1
    tp = _pairs(both.values())
    pp = _pairs(pred_sizes.values())
    tt = _pairs(true_sizes.values())
    precision = tp / pp if pp else 1.0
    recall = tp / tt if tt else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    out: dict[str, Any] = {"records": sum(pred_sizes.values()), "entities": len(pred_sizes),
                           "true_entities": len(true_sizes), "precision": round(precision, 5),
                           "recall": round(recall, 5), "f1": round(f1, 5)}
    if entity_type != "enterprise":
        return out
    # golden fields: entity → its majority true entity
    majority = {ent: c.most_common(1)[0][0] for ent, c in hub_to_true.items()}
    fields = ("name", "credit_code", "legal_rep", "building_code", "street_code", "established")
    true_vals: dict[str, dict] = {}
    with (data_dir / TRUTH_ENTITIES).open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            true_vals[row["entity_id"]] = row
    right: Counter = Counter()
    seen: Counter = Counter()
    for ent, field, value in session.execute(
            select(Golden.entity_id, Golden.field, Golden.value).where(Golden.field.in_(fields))):
        t = majority.get(ent)
        if t is None:
            continue
        seen[field] += 1
        expected = (true_vals.get(t) or {}).get(field) or None
        if field == "name" and value and expected:  # bracket width is not an error
            value, expected = unicodedata.normalize("NFKC", value), unicodedata.normalize("NFKC", expected)
        if (value or None) == expected:
            right[field] += 1
    total = sum(seen.values())
    out["golden_fields"] = {f: round(right[f] / seen[f], 4) for f in fields if seen[f]}
    out["golden_correct"] = round(sum(right.values()) / total, 4) if total else None
    return out


__all__ = ["LOAD_ORDER", "SOURCE_FILES", "db_stage", "evaluate", "fuse"]
