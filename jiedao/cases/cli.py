"""``jiedao train``, ``jiedao evaluate`` and ``jiedao cases …`` (SLA sweep)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer
from sqlalchemy.exc import DBAPIError

from jiedao.errors import Problem, ValidationError

cases_app = typer.Typer(help="工单：时限巡检等", no_args_is_help=True)


def _print_problems(problems: list[Problem], title: str, limit: int = 30) -> None:
    typer.echo(f"{title}（{len(problems)} 处）：", err=True)
    for p in problems[:limit]:
        typer.echo(f"  - {p}", err=True)
    if len(problems) > limit:
        typer.echo(f"  … 另有 {len(problems) - limit} 处", err=True)


def train_cmd(
    sources: list[Path] = typer.Option(None, "--from", help="带标注的历史工单 CSV/XLSX（可多次给出）"),
    text_col: str = typer.Option("内容", "--text-col", help="诉求内容所在列的列名"),
    label_col: str = typer.Option("事项编码", "--label-col", help="分类标注所在列的列名"),
    label_by: str = typer.Option("auto", "--label-by", help="标注是事项编码(code)、事项名称(name)还是自动识别(auto)"),
    on_unknown: str = typer.Option("skip", "--on-unknown", help="未知标注：skip 跳过并报告 / fail 整体失败"),
    overrides: bool = typer.Option(True, "--overrides/--no-overrides", help="是否使用受理员改派记录"),
    seed: int = typer.Option(0, "--seed", help="随机种子"),
) -> None:
    """训练工单分类模型：历史标注 + 职责清单关键词与示例 + 受理员改派记录。"""
    from jiedao.cases.analysis.training import (
        mark_overrides_used,
        read_labelled,
        save_model,
        train_from_sources,
    )
    from jiedao.catalog.loader import load_catalog

    catalog = load_catalog()
    files = []
    for src in sources or []:
        data = read_labelled(src, catalog, text_col=text_col, label_col=label_col, label_by=label_by,
                             on_unknown=on_unknown)
        typer.echo(f"{src}: 可用 {len(data.rows)} 行")
        if data.skipped:
            _print_problems(data.skipped, f"{src}: 已跳过的行")
        files.append(data)
    db = None
    if overrides:
        from jiedao.db import get_database

        db = get_database()
    if db is not None:
        with db.session() as s:
            try:
                clf, ids = train_from_sources(catalog, files=files, session=s, seed=seed)
            except DBAPIError:  # no schema yet: train without overrides
                s.rollback()
                clf, ids = train_from_sources(catalog, files=files, seed=seed)
            path = save_model(clf)
            if ids:
                mark_overrides_used(s, ids)
    else:
        clf, ids = train_from_sources(catalog, files=files, seed=seed)
        path = save_model(clf)
    m = clf.meta
    typer.echo(f"训练完成：{m['n_rows']} 行（历史 {m['n_history']}，改派 {len(ids)}），"
               f"{m['n_classes']} 个事项，{m['n_features']} 个特征")
    typer.echo(f"模型：{path}（已设为当前模型；运行中的服务重启后生效）")


def evaluate_cmd(
    test: Path = typer.Option(..., "--test", help="带标注的测试集 CSV/XLSX"),
    text_col: str = typer.Option("内容", "--text-col", help="诉求内容所在列的列名"),
    label_col: str = typer.Option("事项编码", "--label-col", help="分类标注所在列的列名"),
    label_by: str = typer.Option("auto", "--label-by", help="code / name / auto"),
    model: Path = typer.Option(None, "--model", help="模型文件（默认当前模型）"),
) -> None:
    """在测试集上评估当前分类模型：准确率、宏平均F1、最差事项与最常混淆的事项对。"""
    from jiedao.cases.analysis.training import (
        evaluate,
        format_report,
        load_model,
        load_or_train,
        read_labelled,
    )
    from jiedao.catalog.loader import load_catalog

    catalog = load_catalog()
    data = read_labelled(test, catalog, text_col=text_col, label_col=label_col, label_by=label_by,
                         on_unknown="skip")
    if data.skipped:
        _print_problems(data.skipped, f"{test}: 未参与评估的行")
    clf = load_model(model, catalog) if model else load_or_train(catalog)
    typer.echo(format_report(evaluate(clf, data.rows), catalog))


@cases_app.command("sweep")
def sweep_cmd(
    at: str = typer.Option(None, "--at", help="以此时间巡检（YYYY-MM-DD HH:MM，默认现在）"),
    warn: float = typer.Option(0.75, "--warn", help="已用时限比例达到此值时预警"),
    every: float = typer.Option(0, "--every", help="每隔多少分钟巡检一次，直到按 Ctrl-C（0：只巡检一次）"),
) -> None:
    """巡检时限：标记即将超时（预警）和已超时的派单。``jiedao serve`` 已每 5 分钟自动巡检。"""
    from jiedao import clock
    from jiedao.cases.sla import sweep
    from jiedao.catalog.calendar import get_calendar
    from jiedao.db import get_database

    if not 0 < warn < 1:
        raise ValidationError(Problem("--warn 必须在 0 和 1 之间", field="warn"))
    when = clock.now()
    if at:
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            raise ValidationError(Problem(f"时间格式不正确：{at!r}（应为 YYYY-MM-DD HH:MM）", field="at")) from None
    if every < 0 or (every and at):
        raise ValidationError(Problem("--every 必须是正数，且不能与 --at 同用", field="every"))
    if every:
        from jiedao.cases.sla import SweepScheduler

        typer.echo(f"每 {every:g} 分钟巡检一次时限（Ctrl-C 停止）")
        SweepScheduler(get_database(), every * 60, warn_fraction=warn).run_forever()
        return
    with get_database().session() as s:
        counts = sweep(s, get_calendar(), when, warn_fraction=warn)
    typer.echo(f"巡检时间 {when:%Y-%m-%d %H:%M}：新增预警 {counts['warned']} 条，新增超时 {counts['overdue']} 条")


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("evaluate")(evaluate_cmd)
    app.add_typer(cases_app, name="cases")
