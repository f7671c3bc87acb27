"""`jiedao cockpit scan`: compute the early warnings (预警) and store them."""

from __future__ import annotations

import typer


def _cockpit_group(app: typer.Typer) -> typer.Typer:
    """The `cockpit` command group (made by jiedao.cockpit.cli), created here if absent."""
    for info in app.registered_groups:
        if info.name == "cockpit" and info.typer_instance is not None:
            return info.typer_instance
    group = typer.Typer(help="驾驶舱", no_args_is_help=True)
    app.add_typer(group, name="cockpit")
    return group


def register(app: typer.Typer) -> None:
    cockpit = _cockpit_group(app)

    @cockpit.command(help="预警扫描：计算类别激增、同址反复、重复来电、新词上升并保存（重复扫描更新同一条预警）")
    def scan(
        as_of: str = typer.Option(None, "--as-of",
                                  help="截至时间，如 2025-06-30 或 2025-06-30T18:00（默认：数据中最新的工单时间）"),
    ) -> None:
        """Find and store the early warnings as of a time (idempotent)."""
        import time

        from jiedao.cockpit import warnings as W
        from jiedao.db import get_database

        t0 = time.perf_counter()
        with get_database().session() as s:
            when = W.parse_as_of(as_of) or W.latest_case_time(s)
            if when is None:
                typer.echo("暂无工单数据，未扫描")
                return
            report: dict = {}
            counts = W.scan(s, as_of=when, report=report)
        parts = "，".join(f"{W.WARNING_KINDS[k]} {n}" for k, n in counts.items())
        typer.echo(f"预警扫描（截至 {when:%Y-%m-%d %H:%M}）：{parts}；新增 {report['created']}，更新 {report['updated']}，"
                   f"过期 {report['expired']}；用时 {time.perf_counter() - t0:.2f} 秒")
