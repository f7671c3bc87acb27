"""Scope restriction: everyone sees only their street / community / department."""

from __future__ import annotations

import importlib.util

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst
from sqlalchemy import select

from jiedao.auth import service
from jiedao.auth.scope import Principal, check_visible, is_visible, restrict
from jiedao.errors import PermissionDenied
from jiedao.geo.models import Address, Building, Community, Grid, Street

from .conftest import C11, C12, C21, S1, S2


def principals(db) -> dict[str, Principal]:
    with db.session() as s:
        return {n: service.principal_for(service.get_user(s, n))
                for n in ("admin", "street.001", "street.002", "sq." + C11, "handler.cgj",
                          "leader.001")}


def codes(db, stmt) -> set[str]:
    with db.session() as s:
        return set(s.scalars(stmt))


def grids(db, p):
    return codes(db, restrict(select(Grid.code), p, street=Grid.street_code, community=Grid.community_code))


def communities(db, p):
    return codes(db, restrict(select(Community.code), p, street=Community.street_code,
                              community=Community.code))


def buildings(db, p):
    return codes(db, restrict(select(Building.code), p, street=Building.street_code,
                              community=Building.community_code))


def test_district_roles_see_everything(shared_geo_db):
    p = principals(shared_geo_db)["admin"]
    assert p.is_district_wide and p.role_label == "系统管理员"
    assert grids(shared_geo_db, p) == {C11 + "001", C12 + "001", C21 + "001"}
    assert communities(shared_geo_db, p) == {C11, C12, C21}
    assert codes(shared_geo_db, restrict(select(Street.code), p, street=Street.code)) == {S1, S2}


def test_street_staff_cannot_read_another_street(shared_geo_db):
    ps = principals(shared_geo_db)
    for name, street, own in (("street.001", S1, {C11, C12}), ("street.002", S2, {C21}),
                              ("leader.001", S1, {C11, C12})):
        p = ps[name]
        assert communities(shared_geo_db, p) == own
        assert grids(shared_geo_db, p) == {c + "001" for c in own}
        assert buildings(shared_geo_db, p) == {c + "001001" for c in own}
        assert codes(shared_geo_db, restrict(select(Street.code), p, street=Street.code)) == {street}
        # an entity carrying only community codes is matched by street-code prefix
        assert codes(shared_geo_db, restrict(select(Grid.code), p, community=Grid.community_code)) == {
            c + "001" for c in own}


def test_community_user_sees_only_its_community(shared_geo_db):
    p = principals(shared_geo_db)["sq." + C11]
    assert communities(shared_geo_db, p) == {C11}
    assert grids(shared_geo_db, p) == {C11 + "001"}
    assert buildings(shared_geo_db, p) == {C11 + "001001"}
    # a street-level entity cannot be narrowed to one community: deny by default
    assert codes(shared_geo_db, restrict(select(Street.code), p, street=Street.code)) == set()


def test_handler_sees_no_geo_rows_without_department_column(shared_geo_db):
    p = principals(shared_geo_db)["handler.cgj"]
    assert grids(shared_geo_db, p) == set()
    assert communities(shared_geo_db, p) == set()
    assert buildings(shared_geo_db, p) == set()


def test_department_column_and_unknown_principals(shared_geo_db):
    from jiedao.catalog.models import Department

    handler = Principal(1, "h", "h", "handler", "department", "CGJ")
    assert codes(shared_geo_db, restrict(select(Department.code), handler, department=Department.code)) \
        == {"CGJ"}
    # no principal, an unknown scope level or an empty code: nothing
    for p in (None, Principal(2, "x", "x", "leader", "planet", S1),
              Principal(3, "y", "y", "street_staff", "street", "")):
        assert grids(shared_geo_db, p) == set()


def test_check_visible_single_objects():
    street = Principal(1, "s", "s", "street_staff", "street", S1)
    comm = Principal(2, "c", "c", "street_staff", "community", C11)
    dept = Principal(3, "h", "h", "handler", "department", "CGJ")
    admin = Principal(4, "a", "a", "admin", "district", "420199")
    check_visible(street, street_code=S1, community_code=C11)
    check_visible(street, community_code=C12)
    check_visible(comm, street_code=S1, community_code=C11)
    check_visible(dept, department_code="CGJ", street_code=S2)
    check_visible(admin)
    for p, kw in ((street, {"street_code": S2}), (street, {"community_code": C21}),
                  (street, {"department_code": "CGJ"}), (comm, {"street_code": S1}),
                  (comm, {"community_code": C12}), (dept, {"street_code": S1}),
                  (dept, {"department_code": "JD" + S1}), (None, {"street_code": S1}),
                  (street, {})):
        with pytest.raises(PermissionDenied):
            check_visible(p, **kw)
        assert not is_visible(p, **kw)


# --------------------------------------------------------------- on the demo district

needs_demo = pytest.mark.skipif(importlib.util.find_spec("jiedao.demo.build") is None,
                                reason="jiedao.demo.build not built yet")


def _demo_principals(db):
    from jiedao.auth.models import User

    with db.session() as s:
        users = list(s.scalars(select(User)))
        by = {u.username: service.principal_for(u) for u in users}
    return by


@needs_demo
def test_demo_street_staff_sees_only_own_street(demo_db):
    ps = _demo_principals(demo_db)
    with demo_db.session() as s:
        streets = list(s.scalars(select(Street.code).order_by(Street.code)))
        all_grids = {g: st for g, st in s.execute(select(Grid.code, Grid.street_code))}
    assert len(streets) >= 2
    for st in streets[:2]:
        p = ps["street." + st[-3:]]
        assert p.scope_level == "street" and p.scope_code == st
        mine = grids(demo_db, p)
        assert mine and mine == {g for g, gs in all_grids.items() if gs == st}
        assert all(c.startswith(st) for c in communities(demo_db, p))
        assert all(b[:9] == st for b in buildings(demo_db, p))
        with demo_db.session() as s:
            addrs = set(s.scalars(restrict(select(Address.street_code).distinct(), p,
                                           street=Address.street_code,
                                           community=Address.community_code)))
        assert addrs <= {st}


@needs_demo
def test_demo_community_handler_and_district(demo_db):
    ps = _demo_principals(demo_db)
    sq = next(p for n, p in sorted(ps.items()) if n.startswith("sq."))
    assert communities(demo_db, sq) == {sq.scope_code}
    assert all(g.startswith(sq.scope_code) for g in grids(demo_db, sq))
    handler = ps["handler.cgj"]
    assert grids(demo_db, handler) == set() and buildings(demo_db, handler) == set()
    with demo_db.session() as s:
        n_grids = len(list(s.scalars(select(Grid.code))))
    for name in ("admin", "operator01", "steward01", "leader01"):
        assert len(grids(demo_db, ps[name])) == n_grids


# --------------------------------------------------------------- restrict == is_visible

_CODES = ["420199", S1, S2, C11, C12, C21, "CGJ", "JD" + S1, "", "4201990", "%", "_"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(level=hst.sampled_from(["district", "department", "street", "community", "other"]),
       code=hst.sampled_from(_CODES),
       cols=hst.sampled_from(["street+community", "street", "community", "none"]))
def test_restrict_agrees_with_is_visible(shared_geo_db, level, code, cols):
    """The SQL filter and the single-object check decide the same for every row."""
    p = Principal(9, "p", "p", "leader", level, code)
    kw_sql, use_street, use_comm = {}, "street" in cols, "community" in cols
    if use_street:
        kw_sql["street"] = Building.street_code
    if use_comm:
        kw_sql["community"] = Building.community_code
    with shared_geo_db.session() as s:
        rows = list(s.execute(select(Building.code, Building.street_code, Building.community_code)))
        got = set(s.scalars(restrict(select(Building.code), p, **kw_sql)))
    want = {b for b, sc, cc in rows
            if is_visible(p, street_code=sc if use_street else None,
                          community_code=cc if use_comm else None)}
    assert got == want
