"""Pages and JSON API for the district model: home map, street → community → grid drill-down,
boundaries as GeoJSON, point-in-grid lookup and address resolution.

Every page and endpoint requires a signed-in user, and every query is scope-restricted
(``jiedao.auth.scope``). Objects outside the caller's scope answer **403** (PermissionDenied);
codes that do not exist answer **404**. Malformed parameters answer **422** naming the field.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jiedao.auth.deps import require_user
from jiedao.auth.scope import Principal, check_visible, restrict
from jiedao.errors import NotFound
from jiedao.geo.models import (
    Address,
    Building,
    Community,
    District,
    Grid,
    Landmark,
    LandmarkAlias,
    Street,
)
from jiedao.web.deps import get_session
from jiedao.web.templating import render

router = APIRouter()

StreetCode = Annotated[str, Path(pattern=r"^\d{9}$", description="街道代码（9位）")]
CommunityCode = Annotated[str, Path(pattern=r"^\d{12}$", description="社区代码（12位）")]
GridCode = Annotated[str, Path(pattern=r"^\d{15}$", description="网格代码（15位）")]
User = Annotated[Principal, Depends(require_user)]
DB = Annotated[Session, Depends(get_session)]

BUILDING_KINDS = {
    "residential": "住宅",
    "commercial": "商业",
    "office": "写字楼",
    "school": "学校",
    "market": "市场",
    "hospital": "医院",
    "public": "公共建筑",
}
LANDMARK_KINDS = {
    "compound": "小区",
    "residential": "小区",
    "school": "学校",
    "market": "市场",
    "metro": "地铁站",
    "hospital": "医院",
    "park": "公园",
    "office": "写字楼",
    "mall": "商场",
    "commercial": "商业",
    "government": "机关",
    "public": "公共场所",
}

# Columns carrying scope on each entity, for restrict().
SCOPE = {
    Street: {"street": Street.code},
    Community: {"street": Community.street_code, "community": Community.code},
    Grid: {"street": Grid.street_code, "community": Grid.community_code},
    Building: {"street": Building.street_code, "community": Building.community_code},
    Address: {"street": Address.street_code, "community": Address.community_code},
    Landmark: {"street": Landmark.street_code, "community": Landmark.community_code},
}


# ---------------------------------------------------------------- response models


class Counts(BaseModel):
    communities: int | None = None
    grids: int | None = None
    buildings: int = 0
    landmarks: int = 0


class AreaSummary(BaseModel):
    code: str
    name: str
    centroid: list[float] | None = Field(None, description="[经度, 纬度]")
    counts: Counts


class StreetDetail(AreaSummary):
    district_code: str
    district_name: str
    communities: list[AreaSummary]


class CommunityDetail(AreaSummary):
    street_code: str
    street_name: str
    grids: list[AreaSummary]


class BuildingOut(BaseModel):
    code: str
    name: str
    kind: str
    kind_label: str
    compound: str | None
    floors: int | None
    address: str | None
    lon: float
    lat: float


class LandmarkOut(BaseModel):
    id: int
    name: str
    kind: str
    kind_label: str
    aliases: list[str]
    address: str | None
    lon: float
    lat: float


class GridDetail(AreaSummary):
    community_code: str
    community_name: str
    street_code: str
    street_name: str
    geometry: dict | None = Field(None, description="GeoJSON 几何")
    buildings: list[BuildingOut]
    landmarks: list[LandmarkOut]


class GridRef(BaseModel):
    code: str
    name: str
    community_code: str
    community_name: str
    street_code: str
    street_name: str


class LocateResult(BaseModel):
    lon: float
    lat: float
    grid: GridRef | None = Field(None, description="点所在网格；不在任何网格内时为 null")


class CandidateOut(BaseModel):
    name: str
    kind: str = Field(description="address / compound / landmark / road")
    score: float
    grid_code: str | None = None
    address_code: str | None = None
    lon: float | None = None
    lat: float | None = None


class ResolveResult(BaseModel):
    query: str
    matched: bool = Field(description="是否定位到网格")
    matched_by: str | None = Field(None, description="address / compound / landmark / road")
    matched_name: str | None = None
    address: str | None = Field(None, description="标准地址全文")
    address_code: str | None = None
    building_code: str | None = None
    lon: float | None = None
    lat: float | None = None
    grid: GridRef | None = None
    confidence: float = 0.0
    candidates: list[CandidateOut] = Field(default_factory=list,
                                           description="其他可能的地点（仅限数据范围内）")


class Feature(BaseModel):
    type: Literal["Feature"] = "Feature"
    properties: dict
    geometry: dict


class FeatureCollection(BaseModel):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[Feature]


# ---------------------------------------------------------------- queries


def _restricted(stmt, p: Principal, model):
    return restrict(stmt, p, **SCOPE[model])


def _count_by(s: Session, p: Principal, model, key, where=None) -> dict[str, int]:
    stmt = select(key, func.count()).group_by(key)
    if where is not None:
        stmt = stmt.where(where)
    return dict(s.execute(_restricted(stmt, p, model)).all())


def _centroid(row) -> list[float] | None:
    if row.centroid_lon is None or row.centroid_lat is None:
        return None
    return [row.centroid_lon, row.centroid_lat]


def _district(s: Session) -> District | None:
    return s.scalars(select(District).order_by(District.code)).first()


def _streets(s: Session, p: Principal) -> list[AreaSummary]:
    rows = s.scalars(_restricted(select(Street).order_by(Street.code), p, Street)).all()
    comm = _count_by(s, p, Community, Community.street_code)
    grids = _count_by(s, p, Grid, Grid.street_code)
    bld = _count_by(s, p, Building, Building.street_code)
    lm = _count_by(s, p, Landmark, Landmark.street_code)
    return [AreaSummary(code=r.code, name=r.name, centroid=_centroid(r), counts=Counts(
        communities=comm.get(r.code, 0), grids=grids.get(r.code, 0),
        buildings=bld.get(r.code, 0), landmarks=lm.get(r.code, 0))) for r in rows]


def _communities(s: Session, p: Principal, street_code: str | None = None) -> list[AreaSummary]:
    stmt = select(Community).order_by(Community.code)
    where_g = where_b = where_l = None
    if street_code:
        stmt = stmt.where(Community.street_code == street_code)
        where_g, where_b = Grid.street_code == street_code, Building.street_code == street_code
        where_l = Landmark.street_code == street_code
    rows = s.scalars(_restricted(stmt, p, Community)).all()
    grids = _count_by(s, p, Grid, Grid.community_code, where_g)
    bld = _count_by(s, p, Building, Building.community_code, where_b)
    lm = _count_by(s, p, Landmark, Landmark.community_code, where_l)
    return [AreaSummary(code=r.code, name=r.name, centroid=_centroid(r), counts=Counts(
        grids=grids.get(r.code, 0), buildings=bld.get(r.code, 0),
        landmarks=lm.get(r.code, 0))) for r in rows]


def _grids(s: Session, p: Principal, parent: str | None = None) -> list[AreaSummary]:
    stmt = select(Grid).order_by(Grid.code)
    where_b = where_l = None
    if parent and len(parent) == 12:
        stmt = stmt.where(Grid.community_code == parent)
        where_b, where_l = Building.community_code == parent, Landmark.community_code == parent
    elif parent:
        stmt = stmt.where(Grid.street_code == parent)
        where_b, where_l = Building.street_code == parent, Landmark.street_code == parent
    rows = s.scalars(_restricted(stmt, p, Grid)).all()
    bld = _count_by(s, p, Building, Building.grid_code, where_b)
    lm = _count_by(s, p, Landmark, Landmark.grid_code, where_l)
    return [AreaSummary(code=r.code, name=r.name, centroid=_centroid(r), counts=Counts(
        buildings=bld.get(r.code, 0), landmarks=lm.get(r.code, 0))) for r in rows]


def _get_street(s: Session, p: Principal, code: str) -> Street:
    row = s.get(Street, code)
    if row is None:
        raise NotFound(f"街道 {code} 不存在")
    check_visible(p, street_code=row.code)
    return row


def _get_community(s: Session, p: Principal, code: str) -> Community:
    row = s.get(Community, code)
    if row is None:
        raise NotFound(f"社区 {code} 不存在")
    check_visible(p, street_code=row.street_code, community_code=row.code)
    return row


def _get_grid(s: Session, p: Principal, code: str) -> Grid:
    row = s.get(Grid, code)
    if row is None:
        raise NotFound(f"网格 {code} 不存在")
    check_visible(p, street_code=row.street_code, community_code=row.community_code)
    return row


def _totals(s: Session, p: Principal, where: dict | None = None) -> dict[str, int]:
    """Counts of streets, communities, grids, buildings, addresses and landmarks in scope."""
    where = where or {}
    out = {}
    for key, model in (("streets", Street), ("communities", Community), ("grids", Grid),
                       ("buildings", Building), ("addresses", Address),
                       ("landmarks", Landmark)):
        stmt = select(func.count()).select_from(model)
        for col, value in where.items():
            if hasattr(model, col):
                stmt = stmt.where(getattr(model, col) == value)
        out[key] = s.scalar(_restricted(stmt, p, model)) or 0
    return out


def street_detail(s: Session, p: Principal, code: str) -> StreetDetail:
    """One street with its communities and their counts (scope-checked)."""
    st = _get_street(s, p, code)
    comms = _communities(s, p, code)
    t = _totals(s, p, {"street_code": code})
    return StreetDetail(
        code=st.code, name=st.name, centroid=_centroid(st), district_code=st.district_code,
        district_name=st.district.name,
        counts=Counts(communities=len(comms), grids=t["grids"], buildings=t["buildings"],
                      landmarks=t["landmarks"]),
        communities=comms)


def community_detail(s: Session, p: Principal, code: str) -> CommunityDetail:
    """One community with its grids and their counts (scope-checked)."""
    c = _get_community(s, p, code)
    grids = _grids(s, p, code)
    t = _totals(s, p, {"community_code": code})
    return CommunityDetail(
        code=c.code, name=c.name, centroid=_centroid(c), street_code=c.street_code,
        street_name=c.street.name,
        counts=Counts(grids=len(grids), buildings=t["buildings"], landmarks=t["landmarks"]),
        grids=grids)


def grid_detail(s: Session, p: Principal, code: str) -> GridDetail:
    """One grid with its buildings (and their first standard address) and landmarks."""
    g = _get_grid(s, p, code)
    community = g.community
    addr_by_building: dict[str, str] = {}
    for bcode, full in s.execute(select(Address.building_code, Address.full)
                                 .where(Address.grid_code == code).order_by(Address.code)):
        addr_by_building.setdefault(bcode, full)
    buildings = [BuildingOut(
        code=b.code, name=b.name, kind=b.kind, kind_label=BUILDING_KINDS.get(b.kind, b.kind),
        compound=b.compound, floors=b.floors, address=addr_by_building.get(b.code),
        lon=b.lon, lat=b.lat)
        for b in s.scalars(select(Building).where(Building.grid_code == code)
                           .order_by(Building.code))]
    aliases: dict[int, list[str]] = {}
    lms = s.scalars(select(Landmark).where(Landmark.grid_code == code).order_by(Landmark.id)).all()
    if lms:
        for lid, alias in s.execute(select(LandmarkAlias.landmark_id, LandmarkAlias.alias)
                                    .where(LandmarkAlias.landmark_id.in_([x.id for x in lms]))
                                    .order_by(LandmarkAlias.id)):
            aliases.setdefault(lid, []).append(alias)
    lm_addr = dict(s.execute(select(Address.code, Address.full).where(
        Address.code.in_([x.address_code for x in lms if x.address_code]))).all()) if lms else {}
    landmarks = [LandmarkOut(
        id=x.id, name=x.name, kind=x.kind, kind_label=LANDMARK_KINDS.get(x.kind, x.kind),
        aliases=aliases.get(x.id, []), address=lm_addr.get(x.address_code), lon=x.lon, lat=x.lat)
        for x in lms]
    return GridDetail(
        code=g.code, name=g.name, centroid=_centroid(g), community_code=g.community_code,
        community_name=community.name, street_code=g.street_code,
        street_name=community.street.name,
        geometry=json.loads(g.geometry) if g.geometry else None,
        counts=Counts(buildings=len(buildings), landmarks=len(landmarks)),
        buildings=buildings, landmarks=landmarks)


def boundaries(s: Session, p: Principal, level: str, parent: str | None = None) -> dict:
    """A GeoJSON FeatureCollection of the areas at ``level`` (optionally under ``parent``),
    limited to the caller's scope. Properties: code, name, level, counts and page url."""
    if parent:
        if len(parent) == 9:
            _get_street(s, p, parent)
        elif len(parent) == 12:
            _get_community(s, p, parent)
    if level == "street":
        summaries, model, url = _streets(s, p), Street, "/geo/streets/"
    elif level == "community":
        summaries, model, url = _communities(s, p, parent), Community, "/geo/communities/"
    else:
        summaries, model, url = _grids(s, p, parent), Grid, "/geo/grids/"
    codes = [a.code for a in summaries]
    geoms = dict(s.execute(select(model.code, model.geometry).where(model.code.in_(codes))).all()) \
        if codes else {}
    features = []
    for a in summaries:
        g = geoms.get(a.code)
        if not g:
            continue
        props = {"code": a.code, "name": a.name, "level": level, "url": url + a.code,
                 "centroid": a.centroid}
        props.update({k: v for k, v in a.counts.model_dump().items() if v is not None})
        features.append({"type": "Feature", "properties": props, "geometry": json.loads(g)})
    return {"type": "FeatureCollection", "features": features}


def _bad_query(field: str, message: str):
    """Answer 422 naming the query parameter, like FastAPI's own parameter validation."""
    from fastapi.exceptions import RequestValidationError

    raise RequestValidationError([{"type": "value_error", "loc": ("query", field),
                                   "msg": message, "input": None}])


def _grid_ref(s: Session, code: str) -> GridRef | None:
    g = s.get(Grid, code)
    if g is None:
        return None
    c = g.community
    return GridRef(code=g.code, name=g.name, community_code=c.code, community_name=c.name,
                   street_code=c.street_code, street_name=c.street.name)


def _grid_index(request: Request, s: Session):
    """The spatial index of grids, built once per app (rebuilt if the grid count changes)."""
    from jiedao.geo.locate import GridIndex

    n = s.scalar(select(func.count()).select_from(Grid))
    cached = getattr(request.app.state, "grid_index", None)
    if cached is None or cached[0] != n:
        cached = (n, GridIndex.from_session(s))
        request.app.state.grid_index = cached
    return cached[1]


def _home_map(p: Principal) -> dict | None:
    if p.scope_level == "district":
        return {"level": "street", "parent": None, "child": "/geo/streets/{code}"}
    if p.scope_level == "street":
        return {"level": "community", "parent": p.scope_code,
                "child": "/geo/communities/{code}"}
    if p.scope_level == "community":
        return {"level": "grid", "parent": p.scope_code, "child": "/geo/grids/{code}"}
    return None


def _geojson_url(level: str, parent: str | None) -> str:
    return f"/api/geo/boundaries.geojson?level={level}" + (f"&parent={parent}" if parent else "")


# ---------------------------------------------------------------- pages


@router.get("/", include_in_schema=False)
def home(request: Request, p: User, s: DB):
    """Home: overview map of the caller's area, summary counts and shortcuts."""
    from jiedao.catalog.models import Department, Matter

    district = _district(s)
    m = _home_map(p)
    area = None
    areas: list[AreaSummary] = []
    if p.scope_level == "street":
        area = _get_street(s, p, p.scope_code)
        areas = _communities(s, p, p.scope_code)
    elif p.scope_level == "community":
        area = _get_community(s, p, p.scope_code)
        areas = _grids(s, p, p.scope_code)
    elif p.scope_level == "district":
        areas = _streets(s, p)
    ctx = {
        "district": district,
        "area": area,
        "areas": areas,
        "area_url": {"street": "/geo/streets/", "community": "/geo/communities/",
                     "grid": "/geo/grids/"}[m["level"]] if m else None,
        "area_level_label": {"street": "街道", "community": "社区", "grid": "网格"}[m["level"]]
        if m else None,
        "totals": _totals(s, p),
        "map": m and {"geojson": _geojson_url(m["level"], m["parent"]), "child": m["child"]},
        "matters": s.scalar(select(func.count()).select_from(Matter)) or 0,
        "departments": s.scalar(select(func.count()).select_from(Department)) or 0,
        "department": s.get(Department, p.scope_code) if p.scope_level == "department" else None,
    }
    if ctx["department"] is not None:
        ctx["dept_matters"] = s.scalars(select(Matter).where(
            Matter.main_department_code == p.scope_code).order_by(Matter.code)).all()
    return render(request, "home.html", ctx)


@router.get("/geo/streets", include_in_schema=False)
def streets_page(request: Request, p: User, s: DB):
    """All streets in the caller's scope."""
    return render(request, "geo/streets.html", {
        "district": _district(s), "streets": _streets(s, p), "totals": _totals(s, p),
        "map": {"geojson": _geojson_url("street", None), "child": "/geo/streets/{code}"}})


@router.get("/geo/streets/{code}", include_in_schema=False)
def street_page(request: Request, code: StreetCode, p: User, s: DB):
    """A street: its communities on a map and in a table."""
    d = street_detail(s, p, code)
    return render(request, "geo/street.html", {
        "street": d, "totals": _totals(s, p, {"street_code": code}),
        "map": {"geojson": _geojson_url("community", code),
                "child": "/geo/communities/{code}"}})


@router.get("/geo/communities/{code}", include_in_schema=False)
def community_page(request: Request, code: CommunityCode, p: User, s: DB):
    """A community: its grids on a map and in a table."""
    d = community_detail(s, p, code)
    from jiedao.auth.scope import is_visible

    return render(request, "geo/community.html", {
        "community": d, "totals": _totals(s, p, {"community_code": code}),
        "street_link": is_visible(p, street_code=d.street_code),
        "map": {"geojson": _geojson_url("grid", code), "child": "/geo/grids/{code}"}})


@router.get("/geo/grids/{code}", include_in_schema=False)
def grid_page(request: Request, code: GridCode, p: User, s: DB):
    """A grid: its polygon with buildings as points, the building and landmark lists."""
    d = grid_detail(s, p, code)
    from jiedao.auth.scope import is_visible

    return render(request, "geo/grid.html", {
        "grid": d, "street_link": is_visible(p, street_code=d.street_code),
        "kinds": sorted({b.kind_label for b in d.buildings}),
        "map": {"geojson": _geojson_url("grid", d.community_code), "child": "/geo/grids/{code}",
                "points": f"/api/geo/grids/{code}", "highlight": code}})


# ---------------------------------------------------------------- JSON API

TAG = "辖区 geo"


@router.get("/api/geo/streets", response_model=list[AreaSummary], tags=[TAG],
            summary="街道列表（含社区、网格、楼栋数）")
def api_streets(p: User, s: DB):
    return _streets(s, p)


@router.get("/api/geo/streets/{code}", response_model=StreetDetail, tags=[TAG],
            summary="街道详情及其社区", responses={403: {"description": "不在数据范围内"},
                                           404: {"description": "不存在"}})
def api_street(code: StreetCode, p: User, s: DB):
    return street_detail(s, p, code)


@router.get("/api/geo/communities/{code}", response_model=CommunityDetail, tags=[TAG],
            summary="社区详情及其网格", responses={403: {"description": "不在数据范围内"},
                                           404: {"description": "不存在"}})
def api_community(code: CommunityCode, p: User, s: DB):
    return community_detail(s, p, code)


@router.get("/api/geo/grids/{code}", response_model=GridDetail, tags=[TAG],
            summary="网格详情：边界、楼栋、地标", responses={403: {"description": "不在数据范围内"},
                                                404: {"description": "不存在"}})
def api_grid(code: GridCode, p: User, s: DB):
    return grid_detail(s, p, code)


@router.get("/api/geo/boundaries.geojson", response_model=FeatureCollection, tags=[TAG],
            summary="边界 GeoJSON（按层级，可限定上级）",
            responses={200: {"content": {"application/geo+json": {}}}})
def api_boundaries(
    p: User,
    s: DB,
    level: Annotated[Literal["street", "community", "grid"],
                     Query(description="层级：street / community / grid")] = "street",
    parent: Annotated[str | None, Query(pattern=r"^(\d{9}|\d{12})$",
                                        description="上级街道(9位)或社区(12位)代码")] = None,
):
    """Boundaries of the areas at ``level`` inside the caller's scope, as GeoJSON."""
    if parent and level == "street":
        _bad_query("parent", "街道层级不接受上级代码")
    if parent and level == "community" and len(parent) != 9:
        _bad_query("parent", "社区层级的上级必须是9位街道代码")
    return JSONResponse(boundaries(s, p, level, parent), media_type="application/geo+json")


@router.get("/api/geo/locate", response_model=LocateResult, tags=[TAG],
            summary="坐标定位网格（WGS-84 经纬度）",
            responses={403: {"description": "点所在网格不在数据范围内"}})
def api_locate(
    request: Request,
    p: User,
    s: DB,
    lon: Annotated[float, Query(ge=-180, le=180, description="经度")],
    lat: Annotated[float, Query(ge=-90, le=90, description="纬度")],
):
    code = _grid_index(request, s).grid_at(lon, lat)
    grid = _grid_ref(s, code) if code else None
    if grid is not None:
        check_visible(p, street_code=grid.street_code, community_code=grid.community_code)
    return LocateResult(lon=lon, lat=lat, grid=grid)


@router.get("/api/geo/resolve", response_model=ResolveResult, tags=[TAG],
            summary="地址或地标解析为标准地址与网格",
            responses={403: {"description": "地址所在网格不在数据范围内"}})
def api_resolve(
    request: Request,
    p: User,
    s: DB,
    q: Annotated[str, Query(min_length=2, max_length=200, description="地址或地标文字")],
):
    return resolve(request, s, p, q)


def _resolver(request: Request, s: Session):
    """The address resolver, loaded once per app (reloaded if the address count changes)."""
    from jiedao.geo.locate import AddressResolver

    n = s.scalar(select(func.count()).select_from(Address))
    cached = getattr(request.app.state, "address_resolver", None)
    if cached is None or cached[0] != n:
        cached = (n, AddressResolver(s))
        request.app.state.address_resolver = cached
    return cached[1]


def resolve(request: Request, s: Session, p: Principal, q: str) -> ResolveResult:
    """Resolve ``q`` (address or landmark text) to a standard address and grid.

    A match outside the caller's scope is refused (403); candidates outside it are dropped."""
    from jiedao.auth.scope import is_visible

    r = _resolver(request, s).resolve(q)
    grid = _grid_ref(s, r.grid_code) if r.grid_code else None
    if grid is not None:
        check_visible(p, street_code=grid.street_code, community_code=grid.community_code)
    full = s.get(Address, r.address_code).full if r.address_code else None
    cands = [CandidateOut(name=c.name, kind=c.kind, score=c.score, grid_code=c.grid_code,
                          address_code=c.address_code, lon=c.lon, lat=c.lat)
             for c in r.candidates
             if c.grid_code and is_visible(p, street_code=c.grid_code[:9],
                                           community_code=c.grid_code[:12])]
    return ResolveResult(
        query=q, matched=grid is not None, matched_by=r.matched_by, matched_name=r.matched_name,
        address=full, address_code=r.address_code, building_code=r.building_code,
        lon=r.lon, lat=r.lat, grid=grid, confidence=r.confidence, candidates=cands)
