"""`jiedao geo …`: import boundaries, parse addresses, find grids for points and text."""

from __future__ import annotations

import json
from pathlib import Path

import typer

geo_app = typer.Typer(help="地理：边界导入、地址解析、网格定位 (geo)", no_args_is_help=True)


@geo_app.command("import")
def import_cmd(
    file: Path = typer.Argument(..., help="GeoJSON FeatureCollection 文件"),
    level: str = typer.Option(..., "--level", help="district / street / community / grid"),
) -> None:
    """导入边界（全部校验通过后一次性写入，有错误则不写入任何内容）。"""
    from jiedao.db import get_database
    from jiedao.geo.boundaries import import_boundaries

    with get_database().session() as s:
        summary = import_boundaries(s, file, level)
    typer.echo(f"已导入 {file.name}：层级 {summary['level']}，新增 {summary['inserted']}，"
               f"更新 {summary['updated']}")


@geo_app.command("export")
def export_cmd(
    level: str = typer.Option("grid", "--level", help="district / street / community / grid"),
    parent: str = typer.Option(None, "--parent", help="只导出该代码下的区域"),
    output: Path = typer.Option(None, "--output", "-o", help="输出文件（默认标准输出）"),
) -> None:
    """导出边界为 GeoJSON。"""
    from jiedao.db import get_database
    from jiedao.geo.boundaries import to_feature_collection

    with get_database().session() as s:
        fc = to_feature_collection(s, level, parent)
    text = json.dumps(fc, ensure_ascii=False)
    if output:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"已写出 {len(fc['features'])} 个要素到 {output}")
    else:
        typer.echo(text)


_LABELS = {"province": "省", "city": "市", "district": "区县", "street": "街道/镇",
           "community": "社区", "road": "道路", "number": "门牌号", "compound": "小区/楼宇",
           "building_no": "楼栋", "unit": "单元", "floor": "楼层", "room": "室"}


@geo_app.command("parse")
def parse_cmd(address: str = typer.Argument(..., help="地址文本"),
              as_json: bool = typer.Option(False, "--json", help="输出 JSON")) -> None:
    """解析地址，打印各组成部分。"""
    from jiedao.geo.address import parse_address

    p = parse_address(address)
    if as_json:
        typer.echo(json.dumps(p.as_dict(), ensure_ascii=False))
        return
    typer.echo(f"规范化：{p.normalized}")
    for key, label in _LABELS.items():
        if value := getattr(p, key):
            typer.echo(f"  {label}（{key}）：{value}")
    if p.rest:
        typer.echo(f"  未解析（rest）：{p.rest}")
    typer.echo(f"标准地址：{p.canonical}")
    typer.echo(f"置信度：{p.confidence:.2f}")


@geo_app.command("locate")
def locate_cmd(lon: float = typer.Option(..., "--lon", help="经度"),
               lat: float = typer.Option(..., "--lat", help="纬度"),
               near: float = typer.Option(0.0, "--near", help="点不在网格内时，按此距离（米）找最近网格")) -> None:
    """查找坐标所在的网格。"""
    from jiedao.db import get_database
    from jiedao.geo.locate import GridIndex

    with get_database().session() as s:
        index = GridIndex.from_session(s)
    code = index.grid_at(lon, lat)
    if code:
        community, street = index.parents(code)
        typer.echo(f"网格 {code}（社区 {community}，街道 {street}）")
        return
    if near > 0 and (hit := index.nearest(lon, lat, near)):
        typer.echo(f"不在任何网格内；最近网格 {hit[0]}，距离约 {hit[1]:.0f} 米")
        return
    typer.echo("不在任何网格内")
    raise typer.Exit(1)


@geo_app.command("resolve")
def resolve_cmd(text: str = typer.Argument(..., help="地址、小区或地标名称"),
                as_json: bool = typer.Option(False, "--json", help="输出 JSON")) -> None:
    """把地址/地标文本定位到标准地址、楼栋和网格。"""
    from jiedao.db import get_database
    from jiedao.geo.locate import AddressResolver

    with get_database().session() as s:
        resolver = AddressResolver(s)
    r = resolver.resolve(text)
    if as_json:
        typer.echo(json.dumps(r.as_dict(), ensure_ascii=False))
        return
    if r.grid_code:
        typer.echo(f"匹配方式：{r.matched_by}（{r.matched_name}），置信度 {r.confidence:.2f}")
        if r.address_code:
            full = resolver.by_code[r.address_code].full if r.address_code in resolver.by_code else ""
            typer.echo(f"标准地址：{r.address_code} {full}")
        if r.building_code:
            typer.echo(f"楼栋：{r.building_code}")
        typer.echo(f"网格 {r.grid_code}，社区 {r.community_code}，街道 {r.street_code}")
        if r.lon is not None:
            typer.echo(f"坐标：{r.lon:.6f}, {r.lat:.6f}")
    else:
        typer.echo(f"未能确定位置（置信度 {r.confidence:.2f}）")
    for c in r.candidates:
        typer.echo(f"  候选：{c.name}（{c.kind}，{c.score:.2f}，网格 {c.grid_code or '—'}）")


def register(app: typer.Typer) -> None:
    """Mount the ``geo`` sub-commands on the main CLI."""
    app.add_typer(geo_app, name="geo")
