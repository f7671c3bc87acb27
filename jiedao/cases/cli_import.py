"""``jiedao import cases FILE.csv|xlsx``: batch import of hotline exports."""

from __future__ import annotations

from pathlib import Path

import typer

from jiedao.errors import Problem, ValidationError


def _import_group(app: typer.Typer) -> typer.Typer:
    """The ``import`` sub-app, shared with other capabilities that import files."""
    for group in app.registered_groups:
        if group.name == "import" and group.typer_instance is not None:
            return group.typer_instance
    sub = typer.Typer(help="导入数据文件", no_args_is_help=True)
    app.add_typer(sub, name="import")
    return sub


def _print_problems(problems: list[Problem], limit: int = 50) -> None:
    typer.echo(f"导入被拒绝，未写入任何工单（{len(problems)} 处问题）：", err=True)
    for p in problems[:limit]:
        typer.echo(f"  - {p}", err=True)
    if len(problems) > limit:
        typer.echo(f"  … 另有 {len(problems) - limit} 处", err=True)


def register(app: typer.Typer) -> None:
    """Add ``jiedao import cases`` to the CLI."""
    group = _import_group(app)

    @group.command("cases")
    def import_cases_cmd(
        file: Path = typer.Argument(..., help="热线导出文件（CSV 或 XLSX）"),
        mapping_file: Path | None = typer.Option(None, "--mapping", help="列映射 YAML 文件"),
        maps: list[str] = typer.Option(None, "--map", help="列映射 字段=列名（可多次），如 --map text=诉求内容"),
        partial: bool = typer.Option(False, "--partial", help="部分导入：好的行导入，坏的行写入 <文件名>.rejects.csv"),
        sheet: str | None = typer.Option(None, "--sheet", help="XLSX 工作表名（默认第一个）"),
        channel: str = typer.Option("import", "--channel", help="没有渠道列时的渠道（如 hotline）"),
        date_format: str | None = typer.Option(None, "--date-format", help="时间格式，如 %Y/%m/%d %H:%M"),
        dispatch: bool = typer.Option(True, "--dispatch/--no-dispatch", help="研判无疑问时自动派单"),
        actor: str = typer.Option("import", "--actor", help="记入流转记录的操作人"),
    ) -> None:
        """导入热线工单：逐行校验（报告行号与原因），经研判与派单流程入库；重复导入不会重复建单。

        字段：text received_at phone name location channel urgency external_id kind lon lat enterprise
        """
        from jiedao.cases.importer import Mapping, import_cases
        from jiedao.cases.runtime import get_pipeline
        from jiedao.db import get_database

        mapping = Mapping.from_yaml(mapping_file) if mapping_file else Mapping()
        if maps:
            mapping = Mapping.from_pairs(maps, mapping)
        if date_format:
            mapping.date_format = date_format
        db = get_database()
        pipeline = get_pipeline()
        try:
            report = import_cases(db, pipeline, file, mapping, partial=partial, sheet=sheet,
                                  actor=actor, default_channel=channel, auto_dispatch=dispatch)
        except ValidationError as e:
            _print_problems(e.problems)
            raise typer.Exit(2) from None
        typer.echo(f"{file}: {report.rows} 行；新建 {report.created} 件（自动派单 "
                   f"{report.dispatched} 件），已存在跳过 {report.existing} 件，"
                   f"拒绝 {len(report.rejected)} 行")
        if report.rejects_path:
            typer.echo(f"被拒绝的行（行号、原因）已写入 {report.rejects_path}")
            for it in report.rejected[:20]:
                typer.echo(f"  - 第{it.row}行 {it.field or ''}: {it.reason}", err=True)
