"""Record linkage on small hand-made frames and a small hub database (DuckDB backend)."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).parent))
from link_toy import toy_records, uscc  # noqa: E402

from jiedao.errors import NotFound, ValidationError  # noqa: E402
from jiedao.hub.link import (  # noqa: E402
    add_decision,
    assign_entity_ids,
    config_hash,
    decide_review,
    link_frame,
    list_reviews,
    load_linkage_config,
    pairwise_scores,
    run_linkage,
    validate_config,
)


@pytest.fixture(scope="module")
def cfg():
    return load_linkage_config()


@pytest.fixture(scope="module")
def toy():
    return toy_records()


@pytest.fixture(scope="module")
def trained(cfg, toy):
    df, _ = toy
    return link_frame(df, cfg)


def _together(clusters, a, b):
    return clusters[a] == clusters[b]


def test_toy_precision_recall(trained, toy):
    """Pairwise precision/recall on the labelled toy set (typos, abbreviations, old names,
    mistyped codes, moved addresses, look-alike neighbours)."""
    _, truth = toy
    s = pairwise_scores(trained.clusters, truth)
    print("toy pairwise", s)
    assert s["precision"] >= 0.95
    assert s["recall"] >= 0.9
    clusters, review, model = trained  # unpacks as a triple
    assert model["comparisons"]["name"] and 0 < model["prior"] < 1
    assert set(clusters) == set(truth)


def test_deterministic_and_kinds(trained, toy):
    df, truth = toy
    d = df.set_index("record_id")
    by_entity: dict[int, list[int]] = {}
    for r, e in truth.items():
        by_entity.setdefault(e, []).append(r)
    # entity 4: two records with the same valid code → credit_code links
    a, b = by_entity[4][:2]
    assert d.loc[a, "credit_code"] == d.loc[b, "credit_code"]
    assert trained.links[a][0] == "credit_code" and _together(trained.clusters, a, b)
    # entity 2: the second record's code has a wrong check character: linked, not by code
    a, b = by_entity[2]
    assert trained.links[b][0] == "probabilistic" and _together(trained.clusters, a, b)
    # typo (0), abbreviation (1), old name (3)
    for e in (0, 1, 3):
        a, b = by_entity[e]
        assert _together(trained.clusters, a, b), (e, d.loc[a, "name_core"], d.loc[b, "name_core"])
    # look-alike neighbours stay apart
    for e, k in ((0, 100), (1, 101)):
        assert not _together(trained.clusters, by_entity[e][0], by_entity[k][0])
    # single records are singletons
    assert trained.links[by_entity[5][0]] == ("singleton", None)


def test_different_valid_codes_never_merge(cfg, trained, toy):
    df, _ = toy
    twin = df.iloc[[0]].copy()
    twin["record_id"] = 9001
    twin["credit_code"] = uscc(777)  # everything identical but another valid code
    twin2 = twin.copy()
    twin2["record_id"] = 9002
    twin2["credit_code"] = None  # and an uncoded copy that could chain them
    out = link_frame(pd.concat([df, twin, twin2]), cfg, model=trained.model)
    first = int(df.iloc[0]["record_id"])
    assert not _together(out.clusters, first, 9001)
    assert _together(out.clusters, first, 9002) != _together(out.clusters, 9001, 9002)
    assert out.stats["blocked_by_constraints"] >= 1


def test_cannot_and_must_link(cfg, trained, toy):
    df, truth = toy
    by_entity: dict[int, list[int]] = {}
    for r, e in truth.items():
        by_entity.setdefault(e, []).append(r)
    a, b, c = by_entity[10]  # kind 4: two coded records and an uncoded one
    x, y = by_entity[7][0], by_entity[8][0]  # two different enterprises
    out = link_frame(df, cfg, model=trained.model, cannot_link=[(a, c), (b, c)],
                     must_link=[(x, y)])
    assert not _together(out.clusters, a, c) and not _together(out.clusters, b, c)
    assert _together(out.clusters, a, b)
    assert _together(out.clusters, x, y) and out.links[x][0] == "steward"
    # a rejected pair is split even when both carry the same valid code
    out = link_frame(df, cfg, model=trained.model, cannot_link=[(a, b)])
    assert not _together(out.clusters, a, b)


def test_review_band(cfg, trained, toy):
    df, _ = toy
    strict = dict(cfg, thresholds=dict(cfg["thresholds"], p_hi=0.999999999, p_lo=0.01))
    out = link_frame(df, strict, model=trained.model)
    assert out.review, "pairs between p_lo and p_hi must be offered for review"
    for r in out.review:
        assert 0.01 <= r["probability"] < 0.999999999
        assert r["record_a"] < r["record_b"]
        assert out.clusters[r["record_a"]] != out.clusters[r["record_b"]]
    decided = [(r["record_a"], r["record_b"]) for r in out.review]
    again = link_frame(df, strict, model=trained.model, decided=decided)
    assert not again.review


def test_bad_input(cfg, toy):
    df, _ = toy
    with pytest.raises(ValidationError) as e:
        link_frame(df.drop(columns=["phone"]), cfg)
    assert "phone" in str(e.value)
    bad = dict(cfg, comparisons=[{"name": "x", "columns": ["nope"],
                                  "levels": [{"kind": "fuzzy", "column": "nope"}]}],
               thresholds={"p_hi": 0.2, "p_lo": 0.9})
    with pytest.raises(ValidationError) as e:
        validate_config(bad)
    msg = str(e.value)
    assert "nope" in msg and "fuzzy" in msg and "p_lo" in msg
    dup = pd.concat([df.head(2), df.head(1)])
    with pytest.raises(ValidationError):
        link_frame(dup, cfg)
    with pytest.raises(ValidationError):
        link_frame(df, cfg, backend="oracle")


def test_pairwise_scores_and_assignment():
    s = pairwise_scores({1: "a", 2: "a", 3: "a", 4: "b"}, {1: 1, 2: 1, 3: 2, 4: 2})
    assert s["predicted_pairs"] == 3 and s["true_positive_pairs"] == 1
    assert s["precision"] == pytest.approx(1 / 3) and s["recall"] == pytest.approx(1 / 2)
    # clusters: {1,2,3} and {4,5}; last run: entity 10 = {1,2}, 11 = {3,4}, 12 = {5}
    assigned, spread = assign_entity_ids({1: 1, 2: 1, 3: 1, 4: 4, 5: 4},
                                         {1: 10, 2: 10, 3: 11, 4: 11, 5: 12})
    assert assigned == {1: 10, 4: 11}
    assert spread[11] == [1, 4]


# --------------------------------------------------------------------------- database


def _seed(session, df):
    from jiedao.catalog.models import Department
    from jiedao.hub.models import Source

    session.add(Department(code="HUBT", name="测试部门", kind="district"))
    for i, code in enumerate(("SCJG", "SW", "SB", "LY")):
        session.add(Source(code=code, name=f"台账{code}", department_code="HUBT",
                           entity_type="enterprise", connector="csv", location=f"{code}.csv",
                           mapping=f"{code}.yaml", priority=90 - 10 * i))
    session.flush()
    _add_records(session, df)


def _add_records(session, df):
    from jiedao.hub.models import Record

    for row in df.to_dict("records"):
        session.add(Record(
            id=int(row["record_id"]), source_code=row["source_code"],
            source_key=str(row["record_id"]), content_hash="x" * 40,
            name=row["name_norm"], name_norm=row["name_norm"], name_core=row["name_core"],
            credit_code=row["credit_code"], reg_no=row["reg_no"], legal_rep=row["legal_rep"],
            phone=row["phone"], address_norm=row["address_norm"],
            building_code=row["building_code"], street_code=row["street_code"],
            industry_code=row["industry_code"], established=row["established"]))
    session.flush()


def _save_model(session, params, cfg):
    from jiedao.hub.models import LinkModel

    session.add(LinkModel(entity_type="enterprise", backend="duckdb",
                          params=dict(params, config_hash=config_hash(cfg))))
    session.flush()


def _entity_of(session):
    from jiedao.hub.models import Link

    return dict(session.execute(select(Link.record_id, Link.entity_id)).all())


def test_run_linkage_stable_ids(fresh_db, toy, trained, cfg):
    from jiedao.hub.models import Entity, LinkModel, Record

    df, truth = toy
    with fresh_db.session() as s:
        _seed(s, df)
        _save_model(s, trained.model, cfg)
        first = run_linkage(s, retrain=False)
        assert first["records"] == len(df) and first["new_entities"] == first["entities"]
        assert first["retrained"] is False
        ent1 = _entity_of(s)
        assert s.scalar(select(func.count()).select_from(LinkModel)) == 2
    # new data: a new enterprise, a new record of entity 5, and one record removed
    by_entity: dict[int, list[int]] = {}
    for r, e in truth.items():
        by_entity.setdefault(e, []).append(r)
    removed = by_entity[10][2]
    base5 = df[df.record_id == by_entity[5][0]].iloc[0].to_dict()
    extra = pd.DataFrame([
        dict(base5, record_id=5001, source_code="SW"),
        dict(base5, record_id=5002, source_code="SCJG", name_core="全新独角兽网络",
             name_norm="江城全新独角兽网络有限公司", credit_code=uscc(9999),
             legal_rep="欧阳修", phone="02799999999", address_norm="江城市临江区新路1号",
             building_code="420199009009009009", street_code="420199009",
             established=date(2025, 1, 2)),
    ])
    with fresh_db.session() as s:
        _add_records(s, extra)
        s.get(Record, removed).vanished = True
        second = run_linkage(s, retrain=False)
        ent2 = _entity_of(s)
        assert removed not in ent2 and second["links_removed"] == 1
        for rec, ent in ent1.items():
            if rec != removed:
                assert ent2[rec] == ent, "an entity that still exists keeps its id"
        assert ent2[5001] == ent1[by_entity[5][0]]
        assert ent2[5002] not in set(ent1.values())
        assert second["new_entities"] == 1 and second["retired_entities"] == 0
        assert not second["merges"] and not second["splits"]
        # nothing changed: third run moves nothing
        third = run_linkage(s, retrain=False)
        assert third["links_moved"] == 0 and third["new_entities"] == 0
        # all records of one entity vanish → that entity is retired, never renumbered
        gone_ent = ent2[5002]
        s.get(Record, 5002).vanished = True
        fourth = run_linkage(s, retrain=False)
        assert {"entity": gone_ent, "into": None} in fourth["retired"]
        assert s.get(Entity, gone_ent).retired
        assert max(_entity_of(s).values()) <= max(ent2.values())


def test_steward_decisions_hold_and_queue_not_duplicated(fresh_db, toy, trained, cfg):
    from jiedao.hub.models import Review

    df, truth = toy
    strict = dict(cfg, thresholds=dict(cfg["thresholds"], p_hi=0.999999999, p_lo=0.01))
    with fresh_db.session() as s:
        _seed(s, df)
        _save_model(s, trained.model, strict)
        out = run_linkage(s, config=strict, retrain=False)
        n = out["review_enqueued"]
        assert n > 0
        assert s.scalar(select(func.count()).select_from(Review)) == n
        again = run_linkage(s, config=strict, retrain=False)
        assert again["review_enqueued"] == 0
        assert s.scalar(select(func.count()).select_from(Review)) == n
        pending = list_reviews(s)
        assert len(pending) == n and all(r.status == "pending" for r in pending)
        acc, rej = pending[0], pending[-1]
        decide_review(s, acc.id, True, "steward01")
        decide_review(s, rej.id, False, "steward01")
        with pytest.raises(NotFound):
            decide_review(s, 999999, True, "x")
    for _ in range(2):  # decisions hold on every later run
        with fresh_db.session() as s:
            run_linkage(s, config=strict, retrain=False)
            ent = _entity_of(s)
            acc_r, rej_r = s.get(Review, acc.id), s.get(Review, rej.id)
            assert ent[acc_r.record_a] == ent[acc_r.record_b]
            assert ent[rej_r.record_a] != ent[rej_r.record_b]
            assert s.scalar(select(func.count()).select_from(Review)) == n


def test_cannot_link_splits_an_auto_link_on_rerun(fresh_db, toy, trained, cfg):
    from jiedao.hub.models import Entity, Link

    df, truth = toy
    by_entity: dict[int, list[int]] = {}
    for r, e in truth.items():
        by_entity.setdefault(e, []).append(r)
    a, b = by_entity[0]  # typo pair linked probabilistically
    with fresh_db.session() as s:
        _seed(s, df)
        _save_model(s, trained.model, cfg)
        run_linkage(s, retrain=False)
        ent = _entity_of(s)
        assert ent[a] == ent[b]
        assert s.get(Link, b).method == "probabilistic"
        add_decision(s, a, b, False, "steward01")
        out = run_linkage(s, retrain=False)
        ent2 = _entity_of(s)
        assert ent2[a] != ent2[b] and ent2[a] == ent[a]
        assert out["splits"] == [{"entity": ent[a], "into": [ent2[b]]}]
        assert s.get(Entity, ent[a]).history[-1]["event"] == "split"
        # and it stays split, accepted again → merged back into the old id
        run_linkage(s, retrain=False)
        assert _entity_of(s)[b] == ent2[b]
        add_decision(s, a, b, True, "steward01")
        out = run_linkage(s, retrain=False)
        ent3 = _entity_of(s)
        assert ent3[a] == ent3[b] == ent[a]
        assert out["merges"] == [{"entity": ent[a], "absorbed": [ent2[b]]}]
        assert s.get(Entity, ent2[b]).retired and s.get(Entity, ent2[b]).merged_into == ent[a]


def test_cli_link_and_review(fresh_db, toy, trained, cfg, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from jiedao.db import get_database, set_database
    from jiedao.hub.cli import hub_app, register

    df, _ = toy
    with fresh_db.session() as s:
        _seed(s, df)
        _save_model(s, trained.model, cfg)
    prev = get_database()
    set_database(fresh_db)
    try:
        app = typer.Typer()
        register(app)
        runner = CliRunner()
        r = runner.invoke(app, ["hub", "link", "--reuse-model"])
        assert r.exit_code == 0, r.output
        assert "实体" in r.output
        r = runner.invoke(app, ["hub", "review", "list", "--status", "all"])
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, ["hub", "review", "accept", "424242"])
        assert r.exit_code != 0
        assert hub_app is not None
    finally:
        set_database(prev)
