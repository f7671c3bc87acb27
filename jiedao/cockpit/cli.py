"""`jiedao cockpit …`: maintenance of the cockpit's metrics mirror."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    cockpit = typer.Typer(help="驾驶舱：指标镜像与统计", no_args_is_help=True)

    @cockpit.command()
    def refresh() -> None:
        """Sync the DuckDB metrics mirror from the database now (incremental) and print the
        latest month's headline figures."""
        from jiedao.cockpit.metrics import METRICS, Metrics
        from jiedao.db import get_database

        m = Metrics.for_database(get_database())
        n = m.refresh(force=True)
        t = m.mirror.timings
        typer.echo(f"镜像已同步：变更 {n:,} 件（新增/修改 {t.get('changed', 0):,}，删除 {t.get('deleted', 0):,}），"
                   f"用时 {t.get('total', 0):.2f} 秒；镜像文件 {m.mirror.path or '内存'}")
        p = m.latest_period("month")
        if p is None:
            typer.echo("暂无工单数据")
            return
        s = m.summary(p)
        parts = []
        for k, v in s.items():
            d = METRICS[k]
            if v.value is None:
                parts.append(f"{d.label} —")
            elif d.kind == "rate":
                parts.append(f"{d.label} {v.value:.1f}%")
            elif d.kind == "count":
                parts.append(f"{d.label} {int(v.value):,}")
            else:
                parts.append(f"{d.label} {v.value:.1f}")
        typer.echo(f"{p.label}（截至 {m.as_of:%Y-%m-%d %H:%M}）：" + "，".join(parts))

    app.add_typer(cockpit, name="cockpit")
