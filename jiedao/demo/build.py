"""Write the synthetic demo district (示例数据) into a database, or reuse the one there.

:func:`build_demo` wipes the database's content tables, runs the generator pipeline, bulk
inserts its rows (SQLAlchemy Core executemany in chunks), loads the catalogue through
``jiedao.catalog.loader.sync_catalog`` (which adds one street office per street) and
creates the demo users — all in one transaction, so a failed build leaves the previous
content intact. :func:`ensure_demo` rebuilds only when the stored fingerprint differs
from the current one (generator sources, catalogue files, seed, scale, schema revision).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from jiedao.db import Database, get_meta, set_meta
from jiedao.demo import names
from jiedao.demo.pipeline import DEFAULT_SEED, SCALES, Stage, World, generate, stage_rng

DEMO_LABEL = "示例数据（合成，非真实）"
CHUNK = 2000
KEEP_TABLES = ("alembic_version", "jiedao_meta")
DEMO_DIR = Path(__file__).resolve().parent
PACKAGE_DIR = DEMO_DIR.parent
# Packages (or single files/folders, relative to the package root) whose source the demo's
# content depends on. A later stage that runs data through another capability's engine
# (e.g. "cases", "hub") adds it here, so a change to the engine rebuilds the stored demo.
# Only the cockpit's warning scanner writes demo data, not its pages.
FINGERPRINT_PACKAGES: tuple[str, ...] = (
    "demo", "cases", "hub", "cockpit/warnings.py", "cockpit/models.py", "cockpit/data/warnings.yaml")
FINGERPRINT_SUFFIXES = frozenset({".py", ".yaml", ".yml", ".csv", ".json", ".txt"})


# ---------------------------------------------------------------- fingerprint
def _schema_heads() -> list[str]:
    from alembic.script import ScriptDirectory

    from jiedao.db import alembic_config

    return sorted(ScriptDirectory.from_config(alembic_config()).get_heads())


def _catalog_dir() -> Path | None:
    try:
        from jiedao.config import get_settings

        return Path(get_settings().catalog_dir)
    except Exception:  # pragma: no cover - settings always available in practice
        return None


def fingerprint(scale: str = "full", seed: int = DEFAULT_SEED) -> str:
    """sha256 over the generator's sources, the catalogue files, seed, scale and schema heads."""
    h = hashlib.sha256()
    h.update(f"seed={seed};scale={scale};heads={','.join(_schema_heads())}\n".encode())
    for pkg in FINGERPRINT_PACKAGES:
        root = PACKAGE_DIR / pkg
        # Data files count too: a district-editable YAML (linkage, survivorship, sources)
        # changes what the stages produce just as code does. Pages (routes, templates) don't.
        found = [root] if root.is_file() else root.rglob("*")
        files = sorted(p for p in found if p.is_file() and p.suffix in FINGERPRINT_SUFFIXES
                       and "__pycache__" not in p.parts and "templates" not in p.parts
                       and not p.name.startswith("routes"))
        for p in files:
            h.update(str(p.relative_to(PACKAGE_DIR)).encode() + b"\0" + p.read_bytes() + b"\0")
    cat = _catalog_dir()
    if cat is not None and cat.is_dir():
        for p in sorted(q for q in cat.rglob("*") if q.is_file()):
            h.update(b"catalog/" + str(p.relative_to(cat)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


# ---------------------------------------------------------------- progress
class _Progress:
    """A rich progress bar with one line per stage; silent when disabled."""

    def __init__(self, enabled: bool):
        self.p = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self.p = Progress(
                SpinnerColumn(), TextColumn("{task.description:<16}"), BarColumn(),
                MofNCompleteColumn(), TimeElapsedColumn(),
            )

    def __enter__(self):
        if self.p:
            self.p.start()
        return self

    def __exit__(self, *exc):
        if self.p:
            self.p.stop()

    def add(self, label: str, total: int = 1):
        return self.p.add_task(label, total=max(total, 1)) if self.p else None

    def advance(self, task, n: int = 1) -> None:
        if self.p and task is not None:
            self.p.advance(task, n)

    def finish(self, task) -> None:
        if self.p and task is not None:
            t = self.p.tasks[task]
            self.p.update(task, completed=t.total)


# ---------------------------------------------------------------- database writing
def _wipe(conn: sa.Connection) -> list[sa.Table]:
    """Empty every content table (children first); returns the reflected tables."""
    md = sa.MetaData()
    md.reflect(conn)
    tables = [t for t in md.sorted_tables if t.name not in KEEP_TABLES]
    if conn.dialect.name == "postgresql" and tables:
        conn.execute(sa.text(
            "TRUNCATE " + ", ".join(f'"{t.name}"' for t in tables) + " RESTART IDENTITY CASCADE"
        ))
    else:
        for t in reversed(tables):
            conn.execute(t.delete())
    conn.execute(sa.text("DELETE FROM jiedao_meta WHERE key LIKE 'demo%'"))
    return tables


def _chunks(rows: list[dict], n: int) -> Iterable[list[dict]]:
    for i in range(0, len(rows), n):
        yield rows[i : i + n]


def _insert(conn: sa.Connection, table: sa.Table, rows: list[dict], bar: _Progress, task) -> None:
    stmt = table.insert()
    for chunk in _chunks(rows, CHUNK):
        conn.execute(stmt, chunk)
        bar.advance(task, len(chunk))


def _fix_sequences(conn: sa.Connection, tables: Iterable[sa.Table]) -> None:
    """After inserts with explicit ids, move PostgreSQL sequences past the largest id."""
    if conn.dialect.name != "postgresql":
        return
    for t in tables:
        if "id" not in t.c:
            continue
        conn.execute(sa.text(
            f"SELECT setval(pg_get_serial_sequence('{t.name}', 'id'), "
            f"COALESCE((SELECT MAX(id) FROM \"{t.name}\"), 0) + 1, false)"
        ))


def _load_catalog(session, world: World, rng, tables: dict[str, sa.Table]) -> dict[str, int]:
    """The catalogue files through the real loader (street offices come from geo_street)."""
    from jiedao.catalog.loader import sync_catalog

    summary = sync_catalog(session)
    session.flush()
    conn = session.connection()
    n = conn.execute(sa.select(sa.func.count()).select_from(tables["catalog_department"]))
    return {"catalog_department": int(n.scalar_one()),
            "catalog_matter": int(summary.get("matters", 0)) if isinstance(summary, dict) else 0}


def _users_stage(session, world: World, rng, tables: dict[str, sa.Table]) -> dict[str, int]:
    return {"auth_user": _insert_users(session.connection(), world, tables)}


def _appeals_stage(session, world: World, rng, tables: dict[str, sa.Table]) -> dict[str, int]:
    from jiedao.demo.appeals import db_stage  # a year of appeals through the case engine

    return db_stage(session, world, rng, tables)


def _warnings_stage(session, world: World, rng, tables: dict[str, sa.Table]) -> dict[str, int]:
    from jiedao.cockpit.warnings import scan  # early warnings as of the last appeal

    return {"cockpit_warning": sum(scan(session).values())}


def _hub_stage(session, world: World, rng, tables: dict[str, sa.Table]) -> dict[str, int]:
    from jiedao.demo.hub import db_stage  # six department ledgers through the data hub

    return db_stage(session, world, rng, tables)


# Stages that run against the database after the generated rows are written, in order:
# (name, progress label, func(session, world, rng, tables) -> counts). Each gets its own RNG
# (stage_rng(seed, "db:" + name)). Later issues append theirs (hub ledgers, a year of appeals).
DB_STAGES: list[tuple[str, str, Any]] = [
    ("catalog", "职责清单与部门", _load_catalog),
    ("users", "演示用户", _users_stage),
    ("appeals", "一年诉求回放", _appeals_stage),
    ("warnings", "预警扫描", _warnings_stage),
    ("hub", "部门台账归集", _hub_stage),
]


def _insert_users(conn: sa.Connection, world: World, tables: dict[str, sa.Table]) -> int:
    from jiedao import clock
    from jiedao.demo.people.users import check_specs, demo_password_hash, demo_user_specs

    dept = tables["catalog_department"]
    departments = [
        (r.code, r.name)
        for r in conn.execute(
            sa.select(dept.c.code, dept.c.name)
            .where(dept.c.kind.in_(("district", "utility")))
            .order_by(dept.c.code)
        )
    ]
    specs = demo_user_specs(
        names.DISTRICT_CODE, world.rows("geo_street"), world.rows("geo_community"), departments
    )
    check_specs(specs)
    pw, now = demo_password_hash(), clock.now()
    rows = [{**s, "password_hash": pw, "phone": None, "active": True, "created_at": now,
             "last_login_at": None} for s in specs]
    for chunk in _chunks(rows, CHUNK):
        conn.execute(tables["auth_user"].insert(), chunk)
    return len(rows)


def build_demo(
    db: Database, small: bool = False, seed: int = DEFAULT_SEED, progress: bool = True
) -> dict[str, Any]:
    """Wipe the database's content and write the demo district; returns counts and timings.

    Everything happens in one transaction: a failure leaves the previous content intact.
    """
    scale = "small" if small else "full"
    t_start = time.perf_counter()
    fp = fingerprint(scale, seed)
    with _Progress(progress) as bar:
        tasks: dict[str, Any] = {}

        def on_stage(stage: Stage, event: str) -> None:
            if event == "start":
                tasks[stage.name] = bar.add(stage.label)
            else:
                bar.finish(tasks[stage.name])

        world = generate(SCALES[scale], seed, on_stage=on_stage)
        timings = {f"generate.{k}": v for k, v in world.timings.items()}
        t_gen = time.perf_counter()
        counts: dict[str, int] = {}
        with db.session() as s:
            conn = s.connection()
            t0 = time.perf_counter()
            task = bar.add("清空旧数据")
            reflected = {t.name: t for t in _wipe(conn)}
            bar.finish(task)
            timings["write.wipe"] = round(time.perf_counter() - t0, 3)
            order = [n for n in reflected if n in world.tables]
            for name in order:
                t0 = time.perf_counter()
                rows = world.tables[name]
                task = bar.add(f"写入 {name}", len(rows))
                _insert(conn, reflected[name], rows, bar, task)
                counts[name] = len(rows)
                timings[f"write.{name}"] = round(time.perf_counter() - t0, 3)
            _fix_sequences(conn, [reflected[n] for n in order])
            world.ctx["progress"] = bar
            for name, label, func in DB_STAGES:
                t0 = time.perf_counter()
                task = bar.add(label)
                counts.update(func(s, world, stage_rng(seed, "db:" + name), reflected))
                bar.finish(task)
                timings[f"db.{name}"] = round(time.perf_counter() - t0, 3)
            counts["offices"] = sum(1 for b in world.rows("geo_building") if b["kind"] == "office")
            set_meta(s, "demo", "true")
            set_meta(s, "demo_label", DEMO_LABEL)
            set_meta(s, "demo_seed", str(seed))
            set_meta(s, "demo_scale", scale)
            set_meta(s, "demo_fingerprint", fp)
            set_meta(s, "demo_counts", json.dumps(counts, ensure_ascii=False, sort_keys=True))
        timings["write.total"] = round(time.perf_counter() - t_gen, 3)
    seconds = round(time.perf_counter() - t_start, 3)
    with db.session() as s:
        set_meta(s, "demo_build_seconds", str(seconds))
    return {"scale": scale, "seed": seed, "fingerprint": fp, "reused": False,
            "counts": counts, "timings": timings, "seconds": seconds}


def ensure_demo(
    db: Database, small: bool = False, force: bool = False, seed: int = DEFAULT_SEED,
    progress: bool = True,
) -> dict[str, Any]:
    """Reuse the database's demo when its fingerprint is current, else (or with force) rebuild."""
    scale = "small" if small else "full"
    t0 = time.perf_counter()
    fp = fingerprint(scale, seed)
    if not force:
        with db.session() as s:
            stored = get_meta(s, "demo_fingerprint")
            counts = get_meta(s, "demo_counts")
        if stored == fp:
            return {"scale": scale, "seed": seed, "fingerprint": fp, "reused": True,
                    "counts": json.loads(counts or "{}"), "timings": {},
                    "seconds": round(time.perf_counter() - t0, 3)}
    return build_demo(db, small=small, seed=seed, progress=progress)
