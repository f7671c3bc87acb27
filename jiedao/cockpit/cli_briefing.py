"""`jiedao briefing --month YYYY-MM`: the monthly briefing (月度分析报告) as HTML, DOCX or PDF."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import typer

from jiedao.errors import Problem, ValidationError


def make_briefing_file(db, month: str | None, fmt: str, out: Path | None) -> tuple[Path, object]:
    """Build and write the briefing; returns (path, briefing). Validates everything before
    touching the output, and writes through a temporary file, so a failure leaves nothing."""
    from jiedao.cockpit import briefing as br
    from jiedao.cockpit.metrics import Metrics
    from jiedao.errors import NotFound

    fmt = (fmt or "").lower()
    if fmt not in br.FORMATS:
        raise ValidationError([Problem("--format 必须是 html、docx 或 pdf")])
    m = Metrics.for_database(db)
    if month:
        period = br.parse_month(month)
    else:
        period = m.latest_period("month")
        if period is None:
            raise NotFound("数据库中没有诉求数据，无法生成月度分析报告")
    b = br.build_briefing(db, period, metrics=m)
    data = br.render(b, fmt)
    path = Path(out) if out else Path(br.filename(b, fmt))
    if path.is_dir():
        path = path / br.filename(b, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".briefing-", suffix="." + fmt)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path, b


def register(app: typer.Typer) -> None:
    """Add ``jiedao briefing`` to the CLI."""

    @app.command("briefing")
    def briefing_cmd(
        month: str | None = typer.Option(None, "--month", help="月份 YYYY-MM，如 2025-06（默认：有数据的最近一个月）"),
        fmt: str = typer.Option("html", "--format", help="输出格式：html、docx 或 pdf"),
        out: Path | None = typer.Option(None, "--out", help="输出文件（默认：当前目录下 briefing-YYYY-MM.<格式>）"),
    ) -> None:
        """Generate the monthly briefing (月度分析报告) of the whole district from the metrics."""
        from jiedao.db import get_database

        if month is not None:  # check the argument before opening anything
            from jiedao.cockpit.briefing import parse_month

            parse_month(month)
        t0 = time.perf_counter()
        path, b = make_briefing_file(get_database(), month, fmt, out)
        size = path.stat().st_size
        typer.echo(f"已生成《{b.title}》：{path}（{size / 1024:,.0f} KB，用时 {time.perf_counter() - t0:.1f} 秒）")
        typer.echo(b.headline)
