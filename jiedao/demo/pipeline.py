"""The demo generator as a pipeline of named stages.

Every stage gets its own ``random.Random`` derived from the master seed and the stage's
name (:func:`stage_rng`), so adding, removing or changing a later stage never changes the
output of an earlier one. A stage reads what earlier stages put into the :class:`World`
and adds its own rows. Rows are plain dicts keyed by table column, collected per table
name in ``world.tables``; the writer in :mod:`jiedao.demo.build` inserts them in
foreign-key order. Shapely geometries (lon/lat) used by later stages live in
``world.geoms`` keyed by code.

Later issues extend the pipeline: department ledgers (hub) and a year of appeals (cases)
are further stages appended to the list in :func:`_stages` (pure generation, rows into
``world.tables``) or to :data:`jiedao.demo.build.DB_STAGES` (stages that must run through
a capability's real engine against the database after the rows are written).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_SEED = 20260101


def stage_rng(seed: int, stage: str) -> random.Random:
    """An RNG for one stage: independent of every other stage, stable across Python runs."""
    digest = hashlib.sha256(f"jiedao-demo:{seed}:{stage}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@dataclass(frozen=True)
class Scale:
    """How big the district is. ``FULL`` follows DESIGN.md; ``SMALL`` is for tests."""

    name: str
    size_km: tuple[float, float]  # semi-axes of the district blob (x, y) before the river cut
    streets: int
    communities: int
    grids: int
    buildings: int  # target total of buildings of every kind
    offices: int
    roads: int  # target number of named roads (大道/路/街), lanes come on top
    lanes: int
    commercial_share: float  # share of non-office, non-public buildings that are commercial
    primary_schools: int
    middle_schools: int
    kindergartens: int
    markets: int
    hospitals: int
    malls: int
    parks: int
    metro_lines: int
    metro_spacing_km: float
    min_communities_per_street: int = 8


FULL = Scale(
    name="full", size_km=(6.4, 5.3), streets=13, communities=191, grids=1500,
    buildings=25000, offices=135, roads=215, lanes=90, commercial_share=0.10,
    primary_schools=48, middle_schools=22, kindergartens=70, markets=40, hospitals=10,
    malls=18, parks=24, metro_lines=3, metro_spacing_km=1.1,
)
SMALL = Scale(
    name="small", size_km=(1.5, 1.25), streets=2, communities=4, grids=12,
    buildings=60, offices=3, roads=10, lanes=3, commercial_share=0.15,
    primary_schools=1, middle_schools=1, kindergartens=1, markets=1, hospitals=1,
    malls=1, parks=1, metro_lines=1, metro_spacing_km=0.8, min_communities_per_street=2,
)
SCALES = {"full": FULL, "small": SMALL}


@dataclass
class World:
    """Everything generated so far: table rows, geometries and free-form stage context."""

    seed: int
    scale: Scale
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    geoms: dict[str, Any] = field(default_factory=dict)
    ctx: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def rows(self, table: str) -> list[dict[str, Any]]:
        """The (mutable) row list of ``table``, created on first use."""
        return self.tables.setdefault(table, [])


@dataclass(frozen=True)
class Stage:
    """One named generation step: ``func(world, rng)`` adds rows to the world."""

    name: str
    func: Callable[[World, random.Random], None]
    label: str  # shown in the progress bar (Chinese)


def _stages() -> list[Stage]:
    from jiedao.demo import buildings, geography, landmarks, roads

    return [
        Stage("district", geography.stage_district, "区界与河道"),
        Stage("streets", geography.stage_streets, "街道划分"),
        Stage("communities", geography.stage_communities, "社区划分"),
        Stage("grids", geography.stage_grids, "网格划分"),
        Stage("roads", roads.stage_roads, "道路"),
        Stage("buildings", buildings.stage_buildings, "楼栋与标准地址"),
        Stage("landmarks", landmarks.stage_landmarks, "地标与别名"),
    ]


def generate(
    scale: Scale | str = "full",
    seed: int = DEFAULT_SEED,
    *,
    until: str | None = None,
    on_stage: Callable[[Stage, str], None] | None = None,
) -> World:
    """Run the generation stages in order (optionally stopping after ``until``).

    ``on_stage(stage, "start"|"done")`` lets a caller show progress.
    """
    import time

    if isinstance(scale, str):
        scale = SCALES[scale]
    world = World(seed=seed, scale=scale)
    for stage in _stages():
        if on_stage:
            on_stage(stage, "start")
        t0 = time.perf_counter()
        stage.func(world, stage_rng(seed, stage.name))
        world.timings[stage.name] = round(time.perf_counter() - t0, 3)
        if on_stage:
            on_stage(stage, "done")
        if stage.name == until:
            break
    return world
