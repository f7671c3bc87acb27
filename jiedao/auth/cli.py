"""`jiedao users …` commands: create, import, list, passwd, token."""

from __future__ import annotations

from pathlib import Path

import typer

users_app = typer.Typer(help="用户管理（创建、导入、列表、API 令牌）", no_args_is_help=True)


def _db():
    from jiedao.db import get_database

    return get_database()


@users_app.command("create", help="创建一个用户（不给 --password 时交互输入密码）")
def create(
    username: str = typer.Option(..., "--username", help="用户名"),
    role: str = typer.Option(..., "--role", help="角色：operator/handler/street_staff/steward/leader/admin"),
    scope_level: str = typer.Option(..., "--scope-level", help="范围层级：district/department/street/community"),
    scope_code: str = typer.Option(..., "--scope-code", help="范围编码（区县、部门、街道或社区编码）"),
    display_name: str = typer.Option(None, "--display-name", help="姓名（默认同用户名）"),
    phone: str = typer.Option(None, "--phone", help="电话"),
    password: str = typer.Option(
        None, "--password", help="密码（不给则交互输入）", prompt="密码", hide_input=True,
        confirmation_prompt=True,
    ),
) -> None:
    """Create one user (the password is asked for when not given)."""
    from jiedao.auth import service

    with _db().session() as s:
        user = service.create_user(
            s, username=username, password=password, display_name=display_name or username,
            role=role, scope_level=scope_level, scope_code=scope_code, phone=phone,
        )
        typer.echo(f"已创建用户 {user.username}（{user.role}，{user.scope_level} {user.scope_code}）")


@users_app.command("import", help="从 YAML 或 CSV 导入用户：先校验全部行，有任何错误则一个也不创建")
def import_(
    file: Path = typer.Argument(..., help="用户文件（.yaml/.yml 或 .csv）"),
    update: bool = typer.Option(False, "--update", help="已存在的用户名改为更新，而不是报错"),
) -> None:
    """Import users from YAML or CSV: all rows are validated first; nothing is created on error."""
    from jiedao.auth.users_file import import_users

    with _db().session() as s:
        summary = import_users(s, file, update=update)
    typer.echo(f"导入完成：新建 {summary['created']} 个，更新 {summary['updated']} 个")


@users_app.command("list", help="列出用户及其角色和数据范围")
def list_() -> None:
    """List users with role and scope."""
    from sqlalchemy import select

    from jiedao.auth.models import ROLES, User

    with _db().session() as s:
        users = list(s.scalars(select(User).order_by(User.username)))
        typer.echo(f"{'用户名':<24}{'姓名':<12}{'角色':<14}{'范围':<28}状态")
        for u in users:
            scope = f"{u.scope_level}:{u.scope_code}"
            state = "启用" if u.active else "停用"
            typer.echo(f"{u.username:<24}{u.display_name:<12}{ROLES.get(u.role, u.role):<14}{scope:<28}{state}")
        typer.echo(f"共 {len(users)} 个用户")


@users_app.command("passwd", help="为用户设置新密码（不给 --password 时交互输入）；该用户的所有登录会话随即失效")
def passwd(
    username: str = typer.Argument(..., help="用户名"),
    password: str = typer.Option(
        None, "--password", help="新密码（不给则交互输入）", prompt="新密码", hide_input=True,
        confirmation_prompt=True,
    ),
) -> None:
    """Set a new password for USERNAME (asked for when not given); their sessions end."""
    from jiedao.auth import service
    from jiedao.errors import NotFound

    with _db().session() as s:
        user = service.get_user(s, username)
        if user is None:
            raise NotFound(f"用户不存在：{username}")
        service.set_password(s, user, password)
    typer.echo(f"已为 {username} 设置新密码，其已登录的会话均已失效")


@users_app.command("token", help="为用户创建 API 令牌并只显示这一次（库中只存哈希）")
def token(
    username: str = typer.Argument(..., help="令牌所属用户"),
    name: str = typer.Option(..., "--name", help="令牌名称（用途）"),
) -> None:
    """Create an API token for USERNAME and print it once (only its hash is stored)."""
    from jiedao.auth import service
    from jiedao.errors import NotFound

    with _db().session() as s:
        user = service.get_user(s, username)
        if user is None:
            raise NotFound(f"用户不存在：{username}")
        raw, tok = service.create_api_token(s, user, name)
        typer.echo(f"已为 {username} 创建令牌「{tok.name}」（编号 {tok.id}）。请立即保存，它不会再次显示：")
        typer.echo(raw)


def register(app: typer.Typer) -> None:
    """Mount `jiedao users …` on the main CLI."""
    app.add_typer(users_app, name="users")
