"""Golden records: survivorship rules, field lineage and conflicts."""

from __future__ import annotations

import sys
from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).parent))
from link_toy import toy_records, uscc, wrong_check  # noqa: E402

from jiedao.errors import ValidationError  # noqa: E402
from jiedao.hub.golden import (  # noqa: E402
    RECORD_FIELDS,
    build_golden,
    golden_record,
    load_survivorship,
    survive,
)


def _frame(rows):
    base = dict.fromkeys(RECORD_FIELDS)
    out = []
    for r in rows:
        out.append({**base, "updated_at": None, **r})
    return pd.DataFrame(out)


def test_survive_rules_lineage_conflicts():
    fields = load_survivorship("enterprise")
    good, bad = uscc(42), wrong_check(uscc(42))
    t1, t2 = datetime(2026, 1, 5, 9), datetime(2026, 3, 1, 9)
    df = _frame([
        # registry: highest priority, but its credit code has a wrong check character
        {"entity_id": 1, "record_id": 11, "source_code": "SCJG", "priority": 90, "run_id": 3,
         "run_at": t1, "name": "江城锦绣科技有限公司", "name_norm": "江城锦绣科技有限公司",
         "credit_code": bad, "legal_rep": "王伟", "phone": "02784000000",
         "address_norm": "江城市临江区琴台大道10号", "building_code": None,
         "street_code": "420199001", "established": date(2010, 1, 2)},
        # tax list: valid code, newer phone, address resolved to a building
        {"entity_id": 1, "record_id": 12, "source_code": "SW", "priority": 80, "run_id": 7,
         "run_at": t2, "name": "锦绣科技", "name_norm": "锦绣科技", "credit_code": good,
         "legal_rep": "王伟", "phone": "13900000000",
         "address_norm": "江城市临江区琴台大道10号锦绣大厦", "building_code": "420199001001001001",
         "grid_code": "420199001001001", "street_code": "420199001"},
        # a second entity with a single record
        {"entity_id": 2, "record_id": 21, "source_code": "LY", "priority": 60, "run_id": 5,
         "run_at": t1, "name": "楚天物流", "name_norm": "楚天物流", "phone": "12"},
    ])
    cells = survive(df, fields)
    name = cells[(1, "name")]
    assert name["value"] == "江城锦绣科技有限公司" and name["source_code"] == "SCJG"
    assert name["record_id"] == 11 and name["run_id"] == 3 and name["at"] == t1
    assert name["conflict"] is True
    assert name["alternatives"] == [{"value": "锦绣科技", "source_code": "SW", "record_id": 12}]
    cc = cells[(1, "credit_code")]
    assert cc["value"] == good and cc["source_code"] == "SW" and cc["conflict"] is False
    assert cells[(1, "phone")]["value"] == "13900000000"  # most recent
    assert cells[(1, "phone")]["conflict"] is True
    addr = cells[(1, "address")]
    assert addr["record_id"] == 12  # resolved to a building wins over priority
    assert cells[(1, "building_code")]["record_id"] == 12
    assert cells[(1, "grid_code")]["value"] == "420199001001001"
    assert cells[(1, "legal_rep")] | {} and cells[(1, "legal_rep")]["conflict"] is False
    assert cells[(1, "established")]["value"] == "2010-01-02"
    assert (2, "phone") not in cells  # "12" is not a valid phone
    assert (2, "credit_code") not in cells
    assert cells[(2, "name")]["conflict"] is False


def test_bad_survivorship_file(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"entity_types": {"enterprise": {"fields": {
        "name": {"column": "nom", "rules": ["loudest"]},
        "phone": {"column": "phone", "valid": "maybe"},
        "grid": {"column": "grid_code", "follow": "nowhere"}}}}}), encoding="utf-8")
    with pytest.raises(ValidationError) as e:
        load_survivorship("enterprise", p)
    msg = str(e.value)
    assert "nom" in msg and "loudest" in msg and "maybe" in msg and "nowhere" in msg
    with pytest.raises(ValidationError):
        load_survivorship("nothing", p)


def test_build_golden_on_linked_records(fresh_db):
    from test_link import _save_model, _seed

    from jiedao.hub.link import link_frame, load_linkage_config, run_linkage
    from jiedao.hub.models import Golden, Link

    df, truth = toy_records()
    cfg = load_linkage_config()
    model = link_frame(df, cfg).model
    by_entity: dict[int, list[int]] = {}
    for r, e in truth.items():
        by_entity.setdefault(e, []).append(r)
    with fresh_db.session() as s:
        _seed(s, df)
        _save_model(s, model, cfg)
        run_linkage(s, retrain=False)
        out = build_golden(s, "enterprise")
        assert out["entities"] == len({e for e in truth.values()})
        assert out["conflicts"] > 0
        ent = dict(s.execute(select(Link.record_id, Link.entity_id)).all())
        # entity 2: registry code valid, social-insurance copy mistyped → the valid one, no conflict
        g = golden_record(s, ent[by_entity[2][0]])
        assert g["credit_code"]["value"] == df.set_index("record_id").loc[
            by_entity[2][0], "credit_code"]
        assert g["credit_code"]["conflict"] is False
        # entity 3: the old name in the building ledger is surfaced as a conflict
        g = golden_record(s, ent[by_entity[3][0]])
        assert g["name"]["source_code"] == "SCJG" and g["name"]["conflict"] is True
        assert g["name"]["alternatives"][0]["source_code"] == "LY"
        assert g["name"]["record_id"] == by_entity[3][0]
        n = s.scalar(select(func.count()).select_from(Golden))
        again = build_golden(s, "enterprise")
        assert again["written"] == 0 and again["removed"] == 0
        assert again["incremental"] is True and again["recomputed_entities"] == 0
        assert s.scalar(select(func.count()).select_from(Golden)) == n


def _cells(session):
    from jiedao.hub.models import Golden

    return sorted((g.entity_id, g.field, g.value, g.source_code, g.record_id, g.conflict,
                   str(g.alternatives)) for g in session.scalars(select(Golden)))


def test_golden_incremental_only_affected_entities(fresh_db):
    """After a load changes one record, and after a linkage run moves records, only the
    affected entities are recomputed — and the result equals a full rebuild."""
    from test_link import _save_model, _seed

    from jiedao.hub.link import add_decision, link_frame, load_linkage_config, run_linkage
    from jiedao.hub.models import ImportRun, Link, Record

    df, truth = toy_records()
    cfg = load_linkage_config()
    model = link_frame(df, cfg).model
    with fresh_db.session() as s:
        _seed(s, df)
        _save_model(s, model, cfg)
        run_linkage(s, retrain=False)
        first = build_golden(s, "enterprise")
        assert first["incremental"] is False
        build_golden(s, "building")  # no buildings here; records its state
        ent = dict(s.execute(select(Link.record_id, Link.entity_id)).all())
        # a load changes the phone of one registry record
        rid = int(df.loc[df["source_code"] == "SCJG", "record_id"].iloc[0])
        run = ImportRun(source_code="SCJG", status="ok")
        s.add(run)
        s.flush()
        rec = s.get(Record, rid)
        rec.phone, rec.last_run_id, rec.updated_at = "027-66660000", run.id, datetime(2030, 1, 1)
        s.flush()
        # another entity type's incremental build leaves the enterprise cells alone
        before = _cells(s)
        other = build_golden(s, "building")
        assert other["incremental"] is True and other["recomputed_entities"] == 0
        assert _cells(s) == before
        out = build_golden(s, "enterprise")
        assert out["incremental"] is True and out["recomputed_entities"] == 1
        assert golden_record(s, ent[rid])["phone"]["value"] == "027-66660000"
        inc = _cells(s)
        build_golden(s, "enterprise", full=True)
        assert _cells(s) == inc
        # a steward splits a pair: the linkage run lists the entities it touched
        pair = sorted(r for r, e in ent.items() if e == ent[rid])[:2]
        assert len(pair) == 2
        add_decision(s, pair[0], pair[1], accept=False, by="steward")
        summary = run_linkage(s, retrain=False)
        assert 1 <= summary["touched_entities"] <= 3
        out = build_golden(s, "enterprise")
        assert out["incremental"] is True and 1 <= out["recomputed_entities"] <= 3
        inc = _cells(s)
        build_golden(s, "enterprise", full=True)
        assert _cells(s) == inc
        ent2 = dict(s.execute(select(Link.record_id, Link.entity_id)).all())
        assert ent2[pair[0]] != ent2[pair[1]]
        assert golden_record(s, ent2[pair[1]])  # the split-off entity has its own golden record
