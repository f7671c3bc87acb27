"""Incremental re-link: re-clustering only the part of the record graph that changes can
reach gives exactly what a full re-link gives (links, entity ids, retirements, review
queue), on edits that split and merge entities."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).parent))
from link_toy import toy_records, uscc  # noqa: E402
from test_link import _add_records, _save_model, _seed  # noqa: E402

from jiedao.hub import link as link_mod  # noqa: E402
from jiedao.hub.link import add_decision, link_frame, load_linkage_config, run_linkage  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    cfg = load_linkage_config()
    df, truth = toy_records(n_entities=36)
    model = link_frame(df, cfg).model
    by_entity: dict[int, list[int]] = {}
    for r, e in sorted(truth.items()):
        by_entity.setdefault(e, []).append(r)
    return cfg, df, by_entity, model


def _state(session) -> dict:
    from jiedao.hub.models import Entity, Link, Review

    links = {r: (e, m, None if p is None else round(p, 6), c)
             for r, e, m, p, c in session.execute(
                 select(Link.record_id, Link.entity_id, Link.method, Link.probability,
                        Link.component))}
    ents = {i: (ret, into) for i, ret, into in session.execute(
        select(Entity.id, Entity.retired, Entity.merged_into))}
    reviews = sorted(session.execute(select(Review.record_a, Review.record_b, Review.status)).all())
    return {"links": links, "entities": ents, "reviews": [tuple(r) for r in reviews]}


def _partition(links: dict) -> dict[int, frozenset]:
    out: dict[int, set] = {}
    for r, v in links.items():
        out.setdefault(v[0], set()).add(r)
    return {e: frozenset(rs) for e, rs in out.items()}


def _edit_round1(s, df, by_entity):
    """Edits that split, merge and move: changed fields, a vanished connector, new records,
    a steward's cannot-link."""
    from jiedao.hub.models import Record

    # split: the uncoded typo record of entity 6 becomes another enterprise altogether
    r = s.get(Record, by_entity[6][1])
    r.name_core, r.name_norm = "完全不同星河物流", "江城完全不同星河物流有限公司"
    r.phone, r.legal_rep, r.address_norm = "02712345678", "诸葛亮", "江城市临江区远山路999号"
    r.building_code, r.street_code = None, None
    # merge: the single registry record of entity 11 now holds entity 10's credit code
    ten = s.get(Record, by_entity[10][0])
    s.get(Record, by_entity[11][0]).credit_code = ten.credit_code
    # a vanished record (the coded record of entity 4)
    s.get(Record, by_entity[4][0]).vanished = True
    # new records: another ledger's copy of entity 19 (no code), a brand-new enterprise
    base19 = df[df.record_id == by_entity[19][0]].iloc[0].to_dict()
    base20 = df[df.record_id == by_entity[20][0]].iloc[0].to_dict()
    _add_records(s, pd.DataFrame([
        dict(base19, record_id=7001, source_code="SB", credit_code=None),
        dict(base20, record_id=7002, source_code="SW", credit_code=uscc(8888),
             name_core="崭新未来网络", name_norm="江城崭新未来网络有限公司",
             phone="02700000001", legal_rep="欧阳询"),
    ]))
    # the steward separates the two records of entity 18
    a, b = by_entity[18][:2]
    add_decision(s, a, b, False, "steward01")


def _edit_round2(s, df, by_entity):
    """Undo part of round 1 and change more: the typo record comes back (merge), the new
    enterprise vanishes, entity 11 gets its own code back (split)."""
    from jiedao.hub.models import Record

    row = df[df.record_id == by_entity[6][1]].iloc[0]
    r = s.get(Record, by_entity[6][1])
    for c in ("name_core", "name_norm", "phone", "legal_rep", "address_norm", "building_code",
              "street_code"):
        setattr(r, c, row[c])
    s.get(Record, by_entity[11][0]).credit_code = df[
        df.record_id == by_entity[11][0]].iloc[0]["credit_code"]
    s.get(Record, 7002).vanished = True
    s.get(Record, by_entity[25][0]).phone = s.get(Record, by_entity[26][0]).phone


@pytest.mark.parametrize("rounds", [1, 2])
def test_incremental_equals_full(tmp_path_factory, monkeypatch, setup, rounds):
    from dbkit import new_database

    cfg, df, by_entity, model = setup
    # the toy set is small: let the scope be any share of it (real runs fall back to a full
    # re-link when more than half of the records would be re-linked)
    monkeypatch.setattr(link_mod, "INCREMENTAL_MAX_SHARE", 1.0)
    dbs = [new_database(tmp_path_factory) for _ in range(2)]
    try:
        before = None
        for db, _ in dbs:
            with db.session() as s:
                _seed(s, df)
                _save_model(s, model, cfg)
                first = run_linkage(s, retrain=False)
                assert first["incremental"] is False  # no components stored yet
                before = _state(s)
        outs = []
        for db, _ in dbs:
            with db.session() as s:
                _edit_round1(s, df, by_entity)
        for mode, (db, _) in zip((None, False), dbs, strict=True):
            with db.session() as s:
                outs.append(run_linkage(s, retrain=False, incremental=mode))
        if rounds == 2:
            for db, _ in dbs:
                with db.session() as s:
                    _edit_round2(s, df, by_entity)
            outs = []
            for mode, (db, _) in zip((None, False), dbs, strict=True):
                with db.session() as s:
                    outs.append(run_linkage(s, retrain=False, incremental=mode))
        inc, full = outs
        assert inc["incremental"] is True and full["incremental"] is False
        assert 0 < inc["relinked_records"] < inc["records"]
        states = []
        for db, _ in dbs:
            with db.session() as s:
                states.append(_state(s))
        assert states[0] == states[1]
        for k in ("entities", "new_entities", "retired_entities", "links_new", "links_moved",
                  "links_removed", "merges", "splits", "retired", "review_enqueued"):
            assert inc[k] == full[k], k
        if rounds == 1:  # the edits really split and merged entities
            old_p, new_p = _partition(before["links"]), _partition(states[0]["links"])
            split = [e for e, rs in old_p.items()
                     if len({states[0]["links"][r][0] for r in rs if r in states[0]["links"]}) > 1]
            merged = [e for e, rs in new_p.items()
                      if len({before["links"][r][0] for r in rs if r in before["links"]}) > 1]
            assert split and merged
            assert full["retired_entities"] >= 1
    finally:
        for _, drop in dbs:
            drop()


def test_no_change_relinks_nothing(fresh_db, setup):
    cfg, df, _, model = setup
    with fresh_db.session() as s:
        _seed(s, df)
        _save_model(s, model, cfg)
        run_linkage(s, retrain=False)
        again = run_linkage(s, retrain=False)
        assert again["incremental"] is True and again["relinked_records"] == 0
        assert again["links_new"] == again["links_changed"] == again["links_removed"] == 0
        assert again["entities"] > 0
        retrained = run_linkage(s, retrain=True)
        assert retrained["incremental"] is False
