"""`jiedao bench`: run the benchmarks in ``bench/`` and compare each figure with its target.

A benchmark is a module ``bench/<name>.py`` with ``run(quick: bool = False) -> list[dict]``;
each dict has ``name``, ``value``, ``unit``, ``target`` (or None) and ``better``
("lower" or "higher"). Figures are printed, never asserted by the test suite.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import typer


def find_bench_dir(start: Path | None = None) -> Path:
    """The repository's ``bench/`` folder: next to the current directory or above it."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "bench").is_dir() and (d / "pyproject.toml").exists():
            return d / "bench"
    raise typer.BadParameter("找不到 bench/ 目录（请在仓库目录中运行） no bench/ folder found")


def available(bench_dir: Path) -> list[str]:
    return sorted(p.stem for p in bench_dir.glob("*.py") if not p.stem.startswith("_"))


def run_one(bench_dir: Path, name: str, quick: bool = False) -> list[dict]:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", bench_dir / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.run(quick=quick)


def verdict(fig: dict) -> str:
    target, value = fig.get("target"), fig.get("value")
    if target is None or value is None:
        return "—"
    ok = value <= target if fig.get("better", "lower") == "lower" else value >= target
    return "达标 ok" if ok else "未达标 MISSED"


def register(app: typer.Typer) -> None:
    @app.command()
    def bench(
        names: list[str] = typer.Argument(None, help="benchmark names, or 'all'"),
        quick: bool = typer.Option(False, help="smaller inputs, for a smoke run"),
        json_out: Path = typer.Option(None, "--json", help="also write the figures to this file"),
    ) -> None:
        """Run benchmarks from bench/ and print figures against their targets."""
        from rich.console import Console
        from rich.table import Table

        bench_dir = find_bench_dir()
        names = list(names or [])
        todo = available(bench_dir) if not names or names == ["all"] else names
        unknown = [n for n in todo if n not in available(bench_dir)]
        if unknown:
            raise typer.BadParameter(f"未知的基准 unknown benchmark: {', '.join(unknown)}; "
                                     f"可选: {', '.join(available(bench_dir))}")
        console = Console()
        table = Table(title="Jiedao 基准测试 benchmarks")
        for col in ("benchmark", "figure", "value", "unit", "target", "verdict"):
            table.add_column(col)
        results = {}
        for name in todo:
            t0 = time.perf_counter()
            console.print(f"[bold]▶ {name}[/bold]")
            figs = run_one(bench_dir, name, quick=quick)
            results[name] = {"figures": figs, "seconds": round(time.perf_counter() - t0, 2)}
            for f in figs:
                tgt = f.get("target")
                table.add_row(name, f["name"], f"{f['value']:.4g}", f.get("unit", ""),
                              "" if tgt is None else f"{'≤' if f.get('better', 'lower') == 'lower' else '≥'} {tgt:g}",
                              verdict(f))
        console.print(table)
        if json_out:
            json_out.write_text(json.dumps(results, ensure_ascii=False, indent=2))
