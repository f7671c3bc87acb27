"""Importing users from YAML/CSV: all rows validated, every problem reported, all or nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from jiedao.auth import service
from jiedao.auth.models import AuditLog, User
from jiedao.auth.users_file import import_users
from jiedao.errors import ValidationError

from .conftest import C11, PASSWORD, S1, password_hash

HEADER = "username,display_name,role,scope_level,scope_code,password,password_hash,phone\n"


def n_users(db) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(User))


def problems_of(db, path, **kw):
    with pytest.raises(ValidationError) as e, db.session() as s:
        import_users(s, path, **kw)
    return e.value.problems


def test_csv_rejects_each_kind_of_bad_row_and_creates_nothing(geo_db, tmp_path):
    h = f'"{password_hash()}"'  # argon2 hashes contain commas: quoted
    rows = [
        f"op.good,好人,operator,district,420199,,{h},13812345678",       # line 2: fine
        f"op.nameless,,operator,district,420199,,{h},",                   # 3: missing display_name
        f"x.role,某人,boss,district,420199,,{h},",                        # 4: unknown role
        f"x.scope,某人,handler,street,{S1},,{h},",                        # 5: scope mismatch
        f"x.code,某人,street_staff,street,420199077,,{h},",               # 6: unknown street
        f"x.dept,某人,handler,department,NOPE,,{h},",                     # 7: unknown department
        "x.weak,某人,operator,district,420199,abc,,",                     # 8: weak password
        f"op.good,重名,operator,district,420199,,{h},",                   # 9: duplicate in file
        f"admin,重名,admin,district,420199,,{h},",                        # 10: exists in DB
        "x.nopw,某人,operator,district,420199,,,",                        # 11: no password
        "x.badhash,某人,operator,district,420199,,$2b$12$zzz,",           # 12: not argon2
        f"x.both,某人,operator,district,420199,{PASSWORD},{h},",          # 13: both given
        f"x.phone,某人,street_staff,community,{C11},,{h},打电话",          # 14: bad phone
    ]
    f = tmp_path / "users.csv"
    f.write_text(HEADER + "\n".join(rows) + "\n", encoding="utf-8")
    before = n_users(geo_db)
    got = {(p.row, p.field) for p in problems_of(geo_db, f)}
    assert got == {(3, "display_name"), (4, "role"), (5, "scope_level"), (6, "scope_code"),
                   (7, "scope_code"), (8, "password"), (9, "username"), (10, "username"),
                   (11, "password"), (12, "password_hash"), (13, "password"), (14, "phone")}
    assert all(p.source == "users.csv" for p in problems_of(geo_db, f))
    assert n_users(geo_db) == before
    with geo_db.session() as s:
        assert s.scalar(select(func.count()).select_from(AuditLog)
                        .where(AuditLog.action == "import")) == 0


def test_yaml_import_creates_all_in_one_go_and_audits(geo_db, tmp_path):
    f = tmp_path / "users.yaml"
    f.write_text(f"""
users:
  - {{username: op.a, display_name: 受理员甲, role: operator, scope_level: district,
      scope_code: "420199", password: "{PASSWORD}", phone: "13900001111"}}
  - {{username: sq.b, display_name: 社区乙, role: street_staff, scope_level: community,
      scope_code: "{C11}", password_hash: "{password_hash()}"}}
""", encoding="utf-8")
    with geo_db.session() as s:
        assert import_users(s, f) == {"created": 2, "updated": 0}
    with geo_db.session() as s:
        assert service.authenticate(s, "op.a", PASSWORD).phone == "13900001111"
        assert service.get_user(s, "sq.b").scope_code == C11
        acts = [(r.action, r.object_id) for r in s.scalars(
            select(AuditLog).where(AuditLog.object_type.in_(["user", "user_file"])
                                   ).order_by(AuditLog.id))][-3:]
    assert acts == [("create", "op.a"), ("create", "sq.b"), ("import", "users.yaml")]
    # importing again clashes, unless --update
    assert {p.row for p in problems_of(geo_db, f)} == {1, 2}
    f.write_text(f"""
- {{username: op.a, display_name: 受理员甲改, role: leader, scope_level: street, scope_code: "{S1}"}}
""", encoding="utf-8")
    with geo_db.session() as s:
        assert import_users(s, f, update=True) == {"created": 0, "updated": 1}
    with geo_db.session() as s:
        u = service.get_user(s, "op.a")
        assert (u.display_name, u.role, u.scope_code) == ("受理员甲改", "leader", S1)
        assert service.authenticate(s, "op.a", PASSWORD) is not None  # password kept


def test_malformed_files(geo_db, tmp_path):
    cases = {
        "h.csv": HEADER + f"op.x,某人,operator,district,420199,,{password_hash()},\n",
        "a.yaml": "users: [unclosed",
        "b.yaml": "just a string",
        "c.yaml": "- [1, 2]\n",
        "d.yaml": "- {username: x, colour: red}\n",
        "e.csv": "username,colour\nx,red\n",
        "f.csv": "",
        "g.txt": "whatever",
    }
    for name, text in cases.items():
        p = tmp_path / name
        p.write_text(text, encoding="utf-8")
        probs = problems_of(geo_db, p)
        assert probs and probs[0].source == name, name
    assert problems_of(geo_db, tmp_path / "missing.csv")[0].message == "文件不存在"
    assert problems_of(geo_db, tmp_path / "d.yaml")[0].row == 1
