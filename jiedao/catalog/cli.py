"""``jiedao catalog …``: check the catalogue files, load them into the database, compute deadlines."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer

from jiedao.errors import ValidationError

catalog_app = typer.Typer(help="部门与职责清单、工作日历", no_args_is_help=True)


def _print_problems(e: ValidationError) -> None:
    typer.echo(f"发现 {len(e.problems)} 处问题：", err=True)
    for p in e.problems:
        typer.echo(f"  - {p}", err=True)


@catalog_app.command("check")
def check(
    dir: Path | None = typer.Option(None, "--dir", help="清单目录（默认 JIEDAO_CATALOG_DIR 或内置清单）"),
) -> None:
    """校验 departments.csv、matters.yaml 和 calendar.yaml，打印统计；有问题时列出全部并以代码 2 退出。"""
    from jiedao.catalog.calendar import load_calendar
    from jiedao.catalog.loader import catalog_dir_or_default, load_catalog

    d = catalog_dir_or_default(dir)
    problems = []
    cat = cal = None
    try:
        cat = load_catalog(d)
    except ValidationError as e:
        problems += e.problems
    cal_path = d / "calendar.yaml"
    if cal_path.exists():
        try:
            cal = load_calendar(cal_path)
        except ValidationError as e:
            problems += e.problems
    if problems:
        _print_problems(ValidationError(problems))
        raise typer.Exit(2)
    assert cat is not None
    counts = cat.counts()
    typer.echo(f"清单目录：{d}")
    typer.echo(f"部门 {counts['departments']} 个，事项 {counts['matters']} 项")
    typer.echo("按一级分类：")
    for name, n in counts["level1"].items():
        typer.echo(f"  {name}: {n}")
    typer.echo("按部门（主办 / 协办）：")
    for dep in cat.departments:
        typer.echo(f"  {dep.code:6} {dep.name}: {counts['main'][dep.code]} / {counts['co'][dep.code]}")
    unused = [c for c in counts["main"] if counts["main"][c] == 0 and counts["co"][c] == 0]
    if unused:
        typer.echo(f"提示：以下部门未承担任何事项：{', '.join(unused)}")
    if cal is None:
        typer.echo("工作日历：目录中没有 calendar.yaml，将使用内置日历")
    else:
        hours = ", ".join(f"{s:%H:%M}-{e:%H:%M}" for s, e in cal.office_hours)
        years = ", ".join(str(y) for y in sorted(cal.overrides)) or "无"
        typer.echo(f"工作日历：办公时间 {hours}；覆盖年份 {years}")
        nxt = datetime.now().year + 1
        if not cal.known_year(nxt):
            typer.echo(f"提示：尚未知道 {nxt} 年的节假日安排，国务院公布后请补充到 calendar.yaml")


@catalog_app.command("load")
def load(
    dir: Path | None = typer.Option(None, "--dir", help="清单目录（默认 JIEDAO_CATALOG_DIR 或内置清单）"),
) -> None:
    """把清单同步进数据库（部门、各街道办事处、事项、协办关系），全部成功或全部不变。"""
    from jiedao.catalog.loader import sync_catalog
    from jiedao.db import get_database

    db = get_database()
    try:
        with db.session() as s:
            summary = sync_catalog(s, dir)
    except ValidationError as e:
        _print_problems(e)
        typer.echo("数据库未做任何修改。", err=True)
        raise typer.Exit(2) from None
    typer.echo("已同步：" + "，".join(f"{k}={v}" for k, v in summary.items()))


def _parse_start(text: str) -> datetime:
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M",
                "%Y-%m-%d"):
        try:
            return datetime.strptime(text.strip(), fmt)
        except ValueError:
            continue
    raise ValidationError(f"开始时间 {text!r} 格式不对，应为 YYYY-MM-DD HH:MM", source="--start")


@catalog_app.command("deadline")
def deadline(
    start: str = typer.Option(..., "--start", help='开始时间，如 "2026-09-30 16:00"'),
    sla: str = typer.Option(..., "--sla", help="时限，如 2h、3d、4wh、5wd"),
    calendar: Path | None = typer.Option(None, "--calendar", help="calendar.yaml 路径"),
) -> None:
    """按工作日历计算办理期限。"""
    from jiedao.catalog.calendar import get_calendar, load_calendar, parse_sla

    cal = load_calendar(calendar) if calendar else get_calendar()
    t0 = _parse_start(start)
    s = parse_sla(sla)
    due = cal.deadline(t0, s)
    typer.echo(f"开始 {t0:%Y-%m-%d %H:%M}，时限 {s.label()}，截止 {due:%Y-%m-%d %H:%M}")
    if s.working:
        hours = cal.working_seconds_between(t0, due) / 3600
        typer.echo(f"（工作时间 {hours:g} 小时；每个工作日按 {cal.day_seconds / 3600:g} 小时办公时间计）")


def register(app: typer.Typer) -> None:
    """Mount ``jiedao catalog`` on the main CLI."""
    app.add_typer(catalog_app, name="catalog")
