"""`jiedao users …` commands against a fresh database."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import jiedao.db
from jiedao.auth import service
from jiedao.auth.cli import users_app

from .conftest import PASSWORD, S1


@pytest.fixture
def cli_db(geo_db):
    prev = jiedao.db._default
    jiedao.db.set_database(geo_db)
    yield geo_db
    jiedao.db.set_database(prev)


def test_users_create_list_token_import(cli_db, tmp_path):
    run = CliRunner().invoke
    r = run(users_app, ["create", "--username", "op.cli", "--role", "operator", "--scope-level",
                        "district", "--scope-code", "420199", "--display-name", "命令行"],
            input=f"{PASSWORD}\n{PASSWORD}\n")
    assert r.exit_code == 0, r.output
    assert "已创建用户 op.cli" in r.output
    r = run(users_app, ["list"])
    assert r.exit_code == 0 and "op.cli" in r.output and "受理员" in r.output
    r = run(users_app, ["token", "op.cli", "--name", "测试"])
    assert r.exit_code == 0, r.output
    raw = r.output.strip().splitlines()[-1]
    with cli_db.session() as s:
        assert service.verify_api_token(s, raw).username == "op.cli"
    f = tmp_path / "u.csv"
    f.write_text("username,display_name,role,scope_level,scope_code,password\n"
                 f"st.cli,街道,street_staff,street,{S1},{PASSWORD}\n", encoding="utf-8")
    r = run(users_app, ["import", str(f)])
    assert r.exit_code == 0 and "新建 1 个" in r.output


def test_bad_input_raises_domain_error(cli_db):
    from jiedao.errors import NotFound, ValidationError

    r = CliRunner().invoke(users_app, ["create", "--username", "x.bad", "--role", "handler",
                                       "--scope-level", "street", "--scope-code", S1,
                                       "--password", PASSWORD])
    assert isinstance(r.exception, ValidationError)  # jiedao.cli.main prints it, exit code 2
    assert "handler" in str(r.exception) and "scope_level" in str(r.exception)
    r = CliRunner().invoke(users_app, ["token", "ghost", "--name", "x"])
    assert isinstance(r.exception, NotFound)
    with cli_db.session() as s:
        assert service.get_user(s, "x.bad") is None
