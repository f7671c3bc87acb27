"""`jiedao demo` — build (or reuse) the synthetic demo district; `jiedao demo export-geojson`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from jiedao.demo.pipeline import DEFAULT_SEED

demo_app = typer.Typer(
    help="示例数据：构建（或复用）合成演示辖区（临江区，非真实数据）",
    invoke_without_command=True,
)

LEVELS = ("district", "street", "community", "grid", "building", "landmark")


@demo_app.callback()
def demo(
    ctx: typer.Context,
    small: bool = typer.Option(False, "--small", help="小规模辖区（测试用，几秒钟）"),
    force: bool = typer.Option(False, "--force", help="即使已有相同版本的示例数据也重新构建"),
    seed: int = typer.Option(DEFAULT_SEED, "--seed", help="随机种子（相同种子生成相同辖区）"),
    quiet: bool = typer.Option(False, "--quiet", help="不显示进度条"),
) -> None:
    """Run the schema upgrade, then build or reuse the demo district and print the logins."""
    if ctx.invoked_subcommand is not None:
        return
    from jiedao.db import get_database
    from jiedao.demo.build import ensure_demo

    db = get_database()
    db.upgrade()
    result = ensure_demo(db, small=small, force=force, seed=seed, progress=not quiet)
    warm_cockpit(db, quiet=quiet)
    print_summary(result)


def warm_cockpit(db, *, quiet: bool = False) -> None:
    """Sync the cockpit's DuckDB mirror now, so the first page after a build doesn't pay it.

    Incremental: after a reused demo this only probes for changes (well under a second).
    """
    import time

    from jiedao.cockpit.metrics import Metrics

    t0 = time.perf_counter()
    changed = Metrics.for_database(db).refresh()
    if not quiet:
        typer.echo(f"驾驶舱指标镜像已同步：{changed:,} 件工单有变化，用时 {time.perf_counter() - t0:.1f} 秒")


def print_summary(result: dict) -> None:
    """Counts, time taken, demo logins and the next step, in Chinese."""
    from rich.console import Console
    from rich.table import Table

    from jiedao.demo.build import DEMO_LABEL
    from jiedao.demo.people.users import DEMO_PASSWORD

    con = Console()
    c = result.get("counts", {})
    verb = "已复用现有示例数据（生成器与种子未变）" if result.get("reused") else "示例数据构建完成"
    con.print(f"[bold green]{verb}[/]：{DEMO_LABEL}，规模 {result['scale']}，种子 {result['seed']}，"
              f"用时 {result['seconds']:.1f} 秒")
    labels = [("geo_street", "街道"), ("geo_community", "社区"), ("geo_grid", "网格"),
              ("geo_building", "楼栋"), ("offices", "其中写字楼"), ("geo_address", "标准地址"),
              ("geo_road", "道路"), ("geo_landmark", "地标"), ("geo_landmark_alias", "地标别名"),
              ("catalog_department", "部门（含街道办事处）"), ("catalog_matter", "职责清单事项"),
              ("auth_user", "演示用户"), ("cases_case", "一年诉求工单（经真实引擎回放）")]
    con.print("，".join(f"{label} {c[k]:,}" for k, label in labels if k in c))
    t = Table(title="演示账号（密码相同，仅限演示）")
    t.add_column("用户名")
    t.add_column("密码")
    t.add_column("姓名 / 角色范围")
    for user, desc in _sample_logins():
        t.add_row(user, DEMO_PASSWORD, desc)
    con.print(t)
    con.print("其他账号：handler.<部门编码小写>（各部门处置人）、street.<街道编码后三位>、"
              "leader.<街道编码后三位>、sq.<社区编码>（社区工作人员）")
    con.print("下一步：运行 [bold]jiedao serve[/] 然后在浏览器打开 http://127.0.0.1:8000/")


def _sample_logins() -> list[tuple[str, str]]:
    """One login per kind of demo user, with its display name from the database."""
    from sqlalchemy import select

    from jiedao.auth.models import User
    from jiedao.db import get_database

    with get_database().session() as s:
        users = {u.username: u for u in s.scalars(select(User).order_by(User.username))}
    wanted = ["admin", "operator01", "steward01", "leader01", "handler.cgj", "street.001",
              "leader.001"]
    wanted += [next((n for n in users if n.startswith("sq.")), "")]
    return [(n, f"{users[n].display_name} · {users[n].role}/{users[n].scope_level}")
            for n in wanted if n in users]


@demo_app.command("export-geojson", help="把某一层级的区域或点导出为 GeoJSON FeatureCollection")
def export_geojson(
    out: Path = typer.Argument(..., help="输出文件，例如 grids.geojson"),
    level: str = typer.Option("grid", "--level", help="层级：" + "/".join(LEVELS)),
) -> None:
    from jiedao.db import get_database
    from jiedao.errors import Problem, ValidationError

    if level not in LEVELS:
        raise ValidationError([Problem(f"未知层级 {level}，可选：{'/'.join(LEVELS)}", field="level")])
    with get_database().session() as s:
        fc = feature_collection(s, level)
    out.write_text(json.dumps(fc, ensure_ascii=False), encoding="utf-8")
    typer.echo(f"已导出 {len(fc['features'])} 个要素到 {out}")


def feature_collection(session, level: str) -> dict:
    """A GeoJSON FeatureCollection of one level of the district (areas, buildings or landmarks)."""
    from sqlalchemy import select

    from jiedao.geo import models as m

    model = {"district": m.District, "street": m.Street, "community": m.Community,
             "grid": m.Grid, "building": m.Building, "landmark": m.Landmark}[level]
    features = []
    cols = [c.key for c in model.__table__.columns if c.key != "geometry"]
    for row in session.scalars(select(model).order_by(*model.__table__.primary_key.columns)):
        if level == "landmark":
            geom = {"type": "Point", "coordinates": [row.lon, row.lat]}
        elif row.geometry:
            geom = json.loads(row.geometry)
        else:
            continue
        props = {c: getattr(row, c) for c in cols}
        features.append({"type": "Feature", "geometry": geom, "properties": props})
    return {"type": "FeatureCollection", "features": features}


def register(app: typer.Typer) -> None:
    """Mount `jiedao demo …` on the main CLI."""
    app.add_typer(demo_app, name="demo")
