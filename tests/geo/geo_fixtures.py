"""Hand-made geography for geo tests: squares laid out on a lattice near 114.2°E, 30.5°N."""

from __future__ import annotations

import json

X0, Y0, STEP = 114.20, 30.50, 0.01


def square(ix: int, iy: int, size: float = STEP) -> dict:
    x, y = X0 + ix * STEP, Y0 + iy * STEP
    return {"type": "Polygon",
            "coordinates": [[[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]]}


def feature(code, name, geometry, **props) -> dict:
    return {"type": "Feature", "properties": {"code": code, "name": name, **props},
            "geometry": geometry}


def fc(*features) -> dict:
    return {"type": "FeatureCollection", "features": list(features)}


def district_fc() -> dict:
    g = {"type": "Polygon", "coordinates": [[[X0, Y0], [X0 + 0.04, Y0], [X0 + 0.04, Y0 + 0.02],
                                             [X0, Y0 + 0.02], [X0, Y0]]]}
    return fc(feature("420199", "临江区", g, city="江城市"))


def street_fc() -> dict:
    left = {"type": "Polygon", "coordinates": [[[X0, Y0], [X0 + 0.02, Y0], [X0 + 0.02, Y0 + 0.02],
                                                [X0, Y0 + 0.02], [X0, Y0]]]}
    right = {"type": "Polygon", "coordinates": [[[X0 + 0.02, Y0], [X0 + 0.04, Y0],
                                                 [X0 + 0.04, Y0 + 0.02], [X0 + 0.02, Y0 + 0.02],
                                                 [X0 + 0.02, Y0]]]}
    return fc(feature("420199001", "琴台街道", left, district_code="420199"),
              feature("420199002", "月湖街道", right))


def community_fc() -> dict:
    return fc(feature("420199001001", "桃源社区", square(0, 0, 0.02)),
              feature("420199002001", "梅园社区", square(2, 0, 0.02), street_code="420199002"))


def grid_fc() -> dict:
    """Eight 0.01° squares: four per community, codes 001..004 in row order."""
    feats = []
    for comm, x_off in (("420199001001", 0), ("420199002001", 2)):
        n = 0
        for iy in range(2):
            for ix in range(2):
                n += 1
                feats.append(feature(f"{comm}{n:03d}", f"第{n}网格", square(ix + x_off, iy),
                                     community_code=comm))
    return fc(*feats)


def write(tmp_path, name: str, data) -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data, ensure_ascii=False),
                    encoding="utf-8")
    return path


def load_all(session) -> None:
    """District, streets, communities and grids of the fixture, through the importer."""
    from jiedao.geo.boundaries import import_boundaries

    import_boundaries(session, district_fc(), "district")
    import_boundaries(session, street_fc(), "street")
    import_boundaries(session, community_fc(), "community")
    import_boundaries(session, grid_fc(), "grid")
