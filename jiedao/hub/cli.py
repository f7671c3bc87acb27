"""`jiedao hub …`: source registry, loads and import runs.

Other hub modules add their commands to the same sub-app: a module listed in
``HUB_CLI_MODULES`` that defines ``register_cli(hub_app: typer.Typer)`` gets called when
the CLI starts (e.g. ``jiedao.hub.link`` adds ``jiedao hub link`` and ``jiedao hub golden``)::

    def register_cli(hub_app):
        @hub_app.command("link")
        def link_cmd(...): ...

A module that does not exist (yet) is skipped.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import typer

hub_app = typer.Typer(help="数据归集：数据源、导入、关联与档案 (hub)", no_args_is_help=True)

HUB_CLI_MODULES = ("jiedao.hub.link", "jiedao.hub.golden", "jiedao.hub.quality",
                   "jiedao.hub.cli_extra")


@hub_app.command("sources")
def sources_cmd(
    sync: bool = typer.Option(False, "--sync", help="校验并同步数据源登记文件到数据库"),
    file: Path = typer.Option(None, "--file", help="数据源登记文件（默认 hub/data/sources.yaml）"),
) -> None:
    """列出已登记的数据源（--sync 先校验并同步登记文件，有错误则不写入）。"""
    from sqlalchemy import func, select

    from jiedao.db import get_database
    from jiedao.hub.models import ImportRun, Record, Source
    from jiedao.hub.sources import sync_sources

    db = get_database()
    with db.session() as s:
        if sync:
            out = sync_sources(s, file)
            typer.echo(f"数据源已同步：新增 {out['created']}，更新 {out['updated']}，"
                       f"未变 {out['unchanged']}"
                       + (f"；登记文件中已无：{', '.join(out['not_in_file'])}" if out["not_in_file"] else ""))
    with db.session() as s:
        counts = dict(s.execute(select(Record.source_code, func.count()).where(
            Record.vanished.is_(False)).group_by(Record.source_code)).all())
        last = dict(s.execute(select(ImportRun.source_code, func.max(ImportRun.started_at))
                              .group_by(ImportRun.source_code)).all())
        rows = list(s.scalars(select(Source).order_by(Source.priority.desc(), Source.code)))
    if not rows:
        typer.echo("尚无登记的数据源（运行 jiedao hub sources --sync）")
        return
    for src in rows:
        when = last.get(src.code)
        seen = f"最近导入 {when:%Y-%m-%d %H:%M}" if when else "未导入"
        typer.echo(f"{src.code:<16} {src.name}  [{src.department_code}] {src.entity_type} "
                   f"{src.rhythm} {src.connector}:{src.location}  优先级 {src.priority}  "
                   f"记录 {counts.get(src.code, 0):,}  {seen}")


def _echo_run(r: dict) -> None:
    if r["status"] != "ok":
        typer.echo(f"{r['source']}: 失败 — {r.get('error')}", err=True)
        return
    typer.echo(f"{r['source']}: 第{r['run']}次导入 读取 {r['read']:,} 新增 {r['new']:,} "
               f"变更 {r['changed']:,} 未变 {r['unchanged']:,} 消失 {r['vanished']:,} "
               f"问题行 {r['rejected']:,}  用时 {r['seconds']:.1f}s"
               + (f"\n  问题清单：{r['rejects']}" if r.get("rejects") else ""))


@hub_app.command("load")
def load_cmd(
    source: str = typer.Argument(..., help="数据源代码"),
    file: Path = typer.Option(None, "--file", help="从该文件导入（默认用登记的位置）"),
    data_dir: Path = typer.Option(None, "--data-dir", help="台账目录（默认 JIEDAO_HUB_DATA_DIR）"),
) -> None:
    """导入一个数据源（增量：按内容哈希识别新增、变更、消失；失败则不改变任何内容）。"""
    from jiedao.db import get_database
    from jiedao.hub.loads import load_source, run_summary

    with get_database().session() as s:
        run = load_source(s, source, file, data_dir)
        summary = run_summary(run)
    _echo_run(summary)


@hub_app.command("load-all")
def load_all_cmd(
    data_dir: Path = typer.Option(None, "--data-dir", help="台账目录（默认 JIEDAO_HUB_DATA_DIR）"),
) -> None:
    """依次导入全部数据源（每个数据源单独一个事务；某个失败不影响其他）。"""
    from jiedao.db import get_database
    from jiedao.hub.loads import load_all

    results = load_all(get_database().session, data_dir)
    for r in results:
        _echo_run(r)
    if any(r["status"] != "ok" for r in results):
        raise typer.Exit(2)


@hub_app.command("runs")
def runs_cmd(
    source: str = typer.Option(None, "--source", help="只看该数据源"),
    limit: int = typer.Option(20, "--limit", help="显示条数"),
) -> None:
    """最近的导入记录（计数、问题清单、错误）。"""
    from sqlalchemy import select

    from jiedao.db import get_database
    from jiedao.hub.models import ImportRun

    with get_database().session() as s:
        stmt = select(ImportRun).order_by(ImportRun.id.desc()).limit(limit)
        if source:
            stmt = stmt.where(ImportRun.source_code == source)
        runs = list(s.scalars(stmt))
    if not runs:
        typer.echo("尚无导入记录")
    for r in runs:
        status = {"ok": "成功", "failed": "失败", "running": "进行中"}.get(r.status, r.status)
        typer.echo(f"#{r.id} {r.started_at:%Y-%m-%d %H:%M:%S} {r.source_code} {status} "
                   f"读取 {r.n_read:,} 新增 {r.n_new:,} 变更 {r.n_changed:,} 未变 {r.n_unchanged:,} "
                   f"消失 {r.n_vanished:,} 问题行 {r.n_rejected:,}"
                   + (f" 用时 {r.seconds:.1f}s" if r.seconds is not None else "")
                   + (f"\n    问题清单：{r.rejects_path}" if r.rejects_path else "")
                   + (f"\n    错误：{r.error}" if r.error else ""))


_hooked: set[str] = set()


def register(app: typer.Typer) -> None:
    """Mount ``jiedao hub`` and let the other hub modules add their commands."""
    for modname in HUB_CLI_MODULES:
        if modname in _hooked:
            continue
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name != modname:
                raise
            continue
        hook = getattr(mod, "register_cli", None)
        if hook is not None:
            hook(hub_app)
        _hooked.add(modname)
    app.add_typer(hub_app, name="hub")
