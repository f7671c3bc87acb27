"""Area boundaries in and out as GeoJSON (街道/社区/网格边界).

``import_boundaries`` reads a FeatureCollection for one level (district, street, community
or grid), checks every feature first and reports all problems at once (feature number and
field), then inserts or updates the rows in the caller's transaction. A rejected file
changes nothing. ``to_feature_collection`` gives the stored areas back as GeoJSON for maps.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shapely.geometry import shape
from shapely.validation import explain_validity
from sqlalchemy import select
from sqlalchemy.orm import Session

from jiedao.errors import Problem, ValidationError
from jiedao.geo.models import Community, District, Grid, Street


@dataclass(frozen=True)
class Level:
    name: str
    label: str  # Chinese name for messages
    code_len: int
    model: type
    parent: str | None  # name of the parent level
    parent_keys: tuple[str, ...]  # property names accepted for the parent code


LEVELS: dict[str, Level] = {
    "district": Level("district", "区", 6, District, None, ()),
    "street": Level("street", "街道", 9, Street, "district",
                    ("district_code", "parent_code", "parent")),
    "community": Level("community", "社区", 12, Community, "street",
                       ("street_code", "parent_code", "parent")),
    "grid": Level("grid", "网格", 15, Grid, "community",
                  ("community_code", "parent_code", "parent")),
}


def get_level(level: str) -> Level:
    """The level named ``level`` or a ValidationError listing the known ones."""
    try:
        return LEVELS[level]
    except KeyError:
        raise ValidationError(Problem(
            f"未知的层级 {level!r}，可选：{'、'.join(LEVELS)}", field="level")) from None


@dataclass
class _Row:
    code: str
    name: str
    parent_code: str | None
    geometry: str
    centroid: tuple[float, float]
    city: str | None = None


def _read(source: str | Path | bytes | dict, source_name: str | None) -> tuple[Any, str]:
    """Parse the input into Python objects; a file path, JSON text/bytes or a dict."""
    if isinstance(source, dict):
        return source, source_name or "GeoJSON"
    if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith("{")):
        path = Path(source)
        name = source_name or path.name
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise ValidationError(Problem(f"无法读取文件：{e.strerror or e}", source=name)) from None
    else:
        raw = source.encode() if isinstance(source, str) else source
        name = source_name or "GeoJSON"
    try:
        return json.loads(raw.decode("utf-8-sig")), name
    except UnicodeDecodeError:
        raise ValidationError(Problem("文件不是 UTF-8 编码", source=name)) from None
    except json.JSONDecodeError as e:
        raise ValidationError(Problem(
            f"JSON 格式错误（第{e.lineno}行第{e.colno}列）：{e.msg}", source=name)) from None


def _positions(geom_type: str, coords: Any) -> Iterable[Any] | None:
    """All positions of a Polygon/MultiPolygon, or None when the nesting is wrong."""
    polygons = [coords] if geom_type == "Polygon" else coords
    if not isinstance(polygons, list) or not polygons:
        return None
    out = []
    for poly in polygons:
        if not isinstance(poly, list) or not poly:
            return None
        for ring in poly:
            if not isinstance(ring, list) or not ring:
                return None
            out.extend(ring)
    return out


def _check_geometry(geom: Any, where: dict, problems: list[Problem]) -> tuple | None:
    """Validate one GeoJSON geometry; return (geojson text, centroid) or None."""
    def bad(msg: str) -> None:
        problems.append(Problem(msg, field="geometry", **where))

    if not isinstance(geom, dict):
        bad("缺少几何图形 geometry")
        return None
    gtype = geom.get("type")
    if gtype not in ("Polygon", "MultiPolygon"):
        bad(f"几何类型必须是 Polygon 或 MultiPolygon，而不是 {gtype!r}")
        return None
    positions = _positions(gtype, geom.get("coordinates"))
    if positions is None:
        bad("坐标 coordinates 的嵌套结构不正确或为空")
        return None
    for pos in positions:
        if not (isinstance(pos, list | tuple) and len(pos) >= 2
                and all(isinstance(v, int | float) and not isinstance(v, bool) for v in pos[:2])):
            bad(f"坐标点格式不正确：{str(pos)[:40]}")
            return None
        lon, lat = pos[0], pos[1]
        if not (math.isfinite(lon) and math.isfinite(lat)) or not (-180 <= lon <= 180
                                                                    and -90 <= lat <= 90):
            bad(f"坐标 ({lon}, {lat}) 不是经纬度（经度 -180..180，纬度 -90..90，WGS-84）")
            return None
    try:
        shp = shape({"type": gtype, "coordinates": geom["coordinates"]})
    except Exception as e:  # shapely raises several types on malformed rings
        bad(f"几何图形无法解析：{e}")
        return None
    if shp.is_empty:
        bad("几何图形为空")
        return None
    if not shp.is_valid:
        bad(f"几何图形无效：{explain_validity(shp)}")
        return None
    if shp.area == 0:
        bad("几何图形面积为 0")
        return None
    c = shp.centroid
    text = json.dumps({"type": gtype, "coordinates": geom["coordinates"]},
                      ensure_ascii=False, separators=(",", ":"))
    return text, (round(c.x, 7), round(c.y, 7))


def _code_str(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value.strip()
    return None


def validate_boundaries(session: Session, data: Any, level: str, source: str = "GeoJSON") -> list[_Row]:
    """Check a parsed FeatureCollection for ``level``; raise ValidationError with every problem."""
    lv = get_level(level)
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        raise ValidationError(Problem("不是 GeoJSON FeatureCollection（type 应为 \"FeatureCollection\"）",
                                      source=source, field="type"))
    features = data.get("features")
    if not isinstance(features, list) or not features:
        raise ValidationError(Problem("FeatureCollection 中没有要素 features", source=source,
                                      field="features"))
    problems: list[Problem] = []
    rows: list[_Row] = []
    seen: dict[str, int] = {}
    parent_model = LEVELS[lv.parent].model if lv.parent else None
    known_parents = set(session.scalars(select(parent_model.code))) if parent_model else set()
    for n, feat in enumerate(features, start=1):
        where = {"source": source, "row": n}
        if not isinstance(feat, dict) or feat.get("type") != "Feature":
            problems.append(Problem(f"第{n}个要素不是 GeoJSON Feature", field="type", **where))
            continue
        props = feat.get("properties")
        if not isinstance(props, dict):
            problems.append(Problem("缺少属性 properties", field="properties", **where))
            props = {}
        ok = True
        code = _code_str(props.get("code"))
        if not code:
            problems.append(Problem(f"缺少{lv.label}代码", field="code", **where))
            ok = False
        elif not (code.isdigit() and code.isascii() and len(code) == lv.code_len):
            problems.append(Problem(f"{lv.label}代码 {code!r} 应为 {lv.code_len} 位数字",
                                    field="code", **where))
            ok = False
        elif code in seen:
            problems.append(Problem(f"代码 {code} 重复（与第{seen[code]}个要素相同）",
                                    field="code", **where))
            ok = False
        else:
            seen[code] = n
        name = props.get("name")
        if not isinstance(name, str) or not name.strip():
            problems.append(Problem("缺少名称 name", field="name", **where))
            ok = False
        elif len(name.strip()) > 100:
            problems.append(Problem("名称过长（最多100字）", field="name", **where))
            ok = False
        parent = None
        if lv.parent and ok:
            plen = LEVELS[lv.parent].code_len
            given = [(k, _code_str(props[k])) for k in lv.parent_keys if props.get(k) not in (None, "")]
            parent = code[:plen]
            for key, value in given:
                if value != parent:
                    problems.append(Problem(
                        f"上级代码 {value} 与{lv.label}代码 {code} 的前 {plen} 位 {parent} 不一致",
                        field=key, **where))
                    ok = False
            if ok and parent not in known_parents:
                problems.append(Problem(
                    f"上级{LEVELS[lv.parent].label} {parent} 不存在，请先导入上级边界",
                    field=given[0][0] if given else "code", **where))
                ok = False
        checked = _check_geometry(feat.get("geometry"), where, problems)
        if ok and checked:
            city = props.get("city") if isinstance(props.get("city"), str) else None
            rows.append(_Row(code, name.strip(), parent, checked[0], checked[1], city))
    if problems:
        raise ValidationError(problems)
    return rows


def import_boundaries(session: Session, source: str | Path | bytes | dict, level: str, *,
                      source_name: str | None = None) -> dict:
    """Validate, then insert or update the areas of ``level`` from a GeoJSON FeatureCollection.

    All-or-nothing: any problem raises ValidationError before anything is written; the
    writes happen in the caller's transaction. Returns {"level", "inserted", "updated"}.
    """
    lv = get_level(level)
    data, name = _read(source, source_name)
    rows = validate_boundaries(session, data, level, name)
    model = lv.model
    existing = {o.code: o for o in session.scalars(
        select(model).where(model.code.in_([r.code for r in rows])))}
    inserted = updated = 0
    for r in rows:
        obj = existing.get(r.code)
        if obj is None:
            obj = model(code=r.code)
            session.add(obj)
            inserted += 1
        else:
            updated += 1
        obj.name = r.name
        obj.geometry = r.geometry
        obj.centroid_lon, obj.centroid_lat = r.centroid
        if lv.name == "district":
            if r.city is not None or obj.city is None:
                obj.city = r.city or ""
        elif lv.name == "street":
            obj.district_code = r.parent_code
        elif lv.name == "community":
            obj.street_code = r.parent_code
        else:
            obj.community_code = r.parent_code
            obj.street_code = r.code[:9]
    session.flush()
    return {"level": lv.name, "inserted": inserted, "updated": updated}


def to_feature_collection(session: Session, level: str, parent_code: str | None = None) -> dict:
    """The stored areas of ``level`` (under ``parent_code`` if given) as a FeatureCollection.

    Each feature has properties code, name, level, parent_code and centroid [lon, lat];
    areas without a geometry are left out.
    """
    lv = get_level(level)
    model = lv.model
    stmt = select(model).where(model.geometry.is_not(None)).order_by(model.code)
    if parent_code:
        stmt = stmt.where(model.code.like(f"{parent_code}%"))
    features = []
    plen = LEVELS[lv.parent].code_len if lv.parent else None
    for obj in session.scalars(stmt):
        props = {"code": obj.code, "name": obj.name, "level": lv.name,
                 "parent_code": obj.code[:plen] if plen else None,
                 "centroid": [obj.centroid_lon, obj.centroid_lat]}
        if lv.name == "grid":
            props["community_code"] = obj.community_code
            props["street_code"] = obj.street_code
        features.append({"type": "Feature", "id": obj.code, "properties": props,
                         "geometry": json.loads(obj.geometry)})
    return {"type": "FeatureCollection", "features": features}
