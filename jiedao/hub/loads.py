"""Load a source ledger into ``hub_record``: incremental by content hash, vanished rows
marked (never deleted), every problem written to a rejects CSV (row, field, reason), and
every load recorded as an import run.

Decisions (issue 4, "Bad input"):

* Structural failures — unreadable or damaged file, a mapped column missing from the file,
  an invalid mapping, an empty file — fail the whole load: nothing of it is written (one
  transaction, rolled back) and the import run is recorded as ``failed`` with the reasons in
  a separate transaction.
* Field problems — a credit code with a wrong check character, an unparseable date, a bad
  phone or industry code — do not lose the row: the row is loaded with that field blank and
  the rejects file names the row, field and reason.
* Row problems — missing key, duplicate key, a required field empty, a row of the wrong
  width — the row is not loaded; it is named in the rejects file. A row whose key is known
  keeps its previous record (it is not marked vanished).

``n_rejected`` counts rows with at least one entry in the rejects file. Problems of rows
whose content did not change are repeated in every run's rejects file, so each file is a
complete list for the ledger as loaded.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Text, bindparam, cast, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from jiedao.clock import now
from jiedao.errors import Problem, ValidationError
from jiedao.hub.bulk import insert_rows
from jiedao.hub.connectors import CHUNK_SIZE, ROW_ERROR, jsonable, open_reader
from jiedao.hub.models import ImportRun, Record, Source
from jiedao.hub.sources import Mapping, default_data_dir, get_source, mapping_path
from jiedao.hub.standardise import RECORD_COLUMNS, Standardiser, clean_text

STANDARDISER_VERSION = "2"  # part of every content hash: a change reloads all rows once
REJECT_HEADER = ("row", "field", "reason", "action", "key", "value")
ACTION_SKIPPED = "整行未载入"
ACTION_BLANKED = "字段置空后载入"
ACTION_FAILED = "整批未载入"


def rejects_dir() -> Path:
    from jiedao.config import get_settings

    return get_settings().home / "hub" / "rejects"


def content_hash(raw: dict, salt: str = "") -> str:
    """A 40-hex digest of the raw row (and the mapping fingerprint as ``salt``).

    Rows whose cells are all text (CSV) are hashed as their column names and cells joined by
    control characters — four times cheaper than JSON; other rows as sorted JSON."""
    try:
        body = "\x1e".join(raw) + "\x1d" + "\x1f".join(raw.values())
    except TypeError:
        body = "\x1cj" + json.dumps(raw, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1((salt + body).encode("utf-8")).hexdigest()


class _Rejects:
    """Rejects CSV written while the load runs (created on the first entry)."""

    def __init__(self, path: Path):
        self.path = path
        self._f = None
        self._w = None
        self.rows: set[int] = set()
        self.count = 0
        self.first: list[Problem] = []

    def add(self, row: int | None, field: str | None, reason: str, action: str,
            key: str | None = None, value=None) -> None:
        if self._w is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = self.path.open("w", encoding="utf-8-sig", newline="")
            self._w = csv.writer(self._f)
            self._w.writerow(REJECT_HEADER)
        v = "" if value is None else str(value)[:200]
        self._w.writerow((row if row is not None else "", field or "", reason, action, key or "", v))
        if row is not None:
            self.rows.add(row)
        self.count += 1
        if len(self.first) < 50:
            self.first.append(Problem(reason, row=row, field=field))

    def close(self) -> str | None:
        """Close the file, its entries sorted by row (a worker may return rows late)."""
        if self._f is None:
            return None
        self._f.close()
        self._f = None
        with self.path.open(encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f))[1:]
        rows.sort(key=lambda r: (1, int(r[0])) if r[0] else (0, 0))
        with self.path.open("w", encoding="utf-8-sig", newline="") as f:
            w = csv.writer(f)
            w.writerow(REJECT_HEADER)
            w.writerows(rows)
        return str(self.path)


def _run_session(session: Session) -> Session:
    """A separate session on the same engine, for the import-run row's own transactions."""
    return sessionmaker(bind=session.get_bind(), expire_on_commit=False)()


def load_source(session: Session, source_code: str, path: str | Path | None = None,
                data_dir: str | Path | None = None, *, standardiser: Standardiser | None = None,
                chunk_size: int = CHUNK_SIZE, workers: int | None = None,
                worker_min_rows: int = 1000) -> ImportRun:
    """Load one registered source (from ``path`` or its registered location) in full.

    Returns the finished :class:`ImportRun` (status ``ok``). On a structural failure the
    session is rolled back (nothing of the load stays), the run is recorded as ``failed``
    in its own transaction, and ValidationError is raised naming file, row and field.
    The caller commits (``db.session()`` does) to keep the result.

    Rows to standardise are handed to ``workers`` forked processes (default: two when the
    machine has two cores or more) once a chunk holds ``worker_min_rows`` of them, so that
    standardising and writing overlap; small and incremental loads stay in this process.
    """
    src = get_source(session, source_code)
    started = now()
    t0 = time.perf_counter()
    location = str(path) if path else src.location
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    display = _display(location, data_dir, path is not None)
    run = ImportRun(source_code=src.code, started_at=started, status="running", file=display)
    session.add(run)
    session.flush()
    run_id = run.id
    rej = _Rejects(rejects_dir() / f"run{run_id}_{src.code}_{started:%Y%m%d%H%M%S}.csv")
    try:
        if workers is None:
            workers = min(2, os.cpu_count() or 1) if (os.cpu_count() or 1) >= 2 else 0
        with _big_cache(session):
            counts = _load(session, src, run_id, started, location, data_dir, path is not None,
                           rej, standardiser, chunk_size, workers, worker_min_rows)
    except BaseException as e:
        # nothing of this load stays; the failure is recorded in its own transaction
        session.rollback()
        probs = e.problems if isinstance(e, ValidationError) else [Problem(f"{type(e).__name__}: {e}")]
        for p in probs:
            rej.add(p.row, p.field, str(p) if p.source else p.message, ACTION_FAILED)
        _record_failure(session, source_code, started, display, probs, rej.close(),
                        time.perf_counter() - t0)
        raise
    rejects_path = rej.close()
    for k, v in counts.items():
        setattr(run, k, v)
    run.n_rejected = len(rej.rows)
    run.rejects_path = rejects_path
    run.status = "ok"
    run.finished_at = now()
    run.seconds = round(time.perf_counter() - t0, 3)
    session.flush()
    return run


@contextlib.contextmanager
def _big_cache(session: Session):
    """On SQLite, a 256 MB page cache while the load writes (index pages of a large
    hub_record stay in memory), back to the default afterwards."""
    conn = session.connection()
    if conn.dialect.name != "sqlite":
        yield
        return
    conn.exec_driver_sql("PRAGMA cache_size=-262144")
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            session.connection().exec_driver_sql("PRAGMA cache_size=-2000")


def _record_failure(session: Session, source_code: str, started, display: str,
                    probs: list[Problem], rejects_path: str | None, seconds: float) -> None:
    try:
        with _run_session(session) as rs:
            if rs.get(Source, source_code) is None:  # the source itself was not committed
                return
            rs.add(ImportRun(source_code=source_code, started_at=started, finished_at=now(),
                             status="failed", file=display, seconds=round(seconds, 3),
                             error="; ".join(str(p) for p in probs[:20])[:4000],
                             rejects_path=rejects_path))
            rs.commit()
    except Exception:  # recording the failure must not hide the failure itself
        pass


def _display(location: str, data_dir: Path, explicit: bool) -> str:
    if "://" in location:
        from jiedao.hub.connectors import _mask_url

        return _mask_url(location.replace("{data_dir}", str(data_dir)))
    p = Path(location)
    return str(p if p.is_absolute() or explicit else data_dir / p)


def _load(session: Session, src: Source, run_id: int, started, location: str, data_dir: Path,
          explicit: bool, rej: _Rejects, standardiser: Standardiser | None,
          chunk_size: int, workers: int, worker_min_rows: int) -> dict:
    mapping = Mapping.load(mapping_path(src.mapping))
    salt = f"{STANDARDISER_VERSION}:{mapping.fingerprint}:"
    if explicit and "://" not in location:
        location = str(Path(location).resolve())
    reader = open_reader(src.connector, location, src.options or {}, data_dir)
    with reader:
        needed = mapping.needed_columns
        if reader.columns is not None:
            missing = [c for c in needed if c not in reader.columns]
            if missing:
                raise ValidationError([
                    Problem(f"映射文件 {mapping.path} 中的列“{c}”在文件中不存在（文件的列：{'、'.join(reader.columns[:30])}）",
                            source=reader.label, row=1, field=c) for c in missing])
        st = standardiser  # built on first need: an unchanged ledger needs no resolver
        existing: dict[str, tuple[int, str, bool, list]] = {}
        # field problems of stored rows (repeated for unchanged rows); only rows that have any
        stored_problems = {
            rid: (extra or {}).get("problems") or []
            for rid, extra in session.execute(
                select(Record.id, Record.extra).where(
                    Record.source_code == src.code,
                    cast(Record.extra, Text).like('%"problems"%')))}
        # a Core text query: no ORM row loading, no per-row type processing
        for rid, key, h, van in session.connection().execute(
                text("SELECT id, source_key, content_hash, vanished FROM hub_record "
                     "WHERE source_code = :src"), {"src": src.code}).all():
            existing[key] = (rid, h, bool(van), stored_problems.get(rid, ()))
        seen: dict[str, int] = {}
        keys_seen_columns: set[str] = set()
        c = {"n_read": 0, "n_new": 0, "n_changed": 0, "n_unchanged": 0, "n_vanished": 0}
        pending: deque = deque()  # chunks being standardised by the worker, oldest first

        def write(todo: list, results: list) -> None:
            inserts, updates = [], []
            for (row_no, raw, key, h, old), (std, problems) in zip(todo, results, strict=True):
                if any(p.fatal for p in problems):
                    for p in problems:
                        rej.add(row_no, p.field, p.reason,
                                ACTION_SKIPPED if p.fatal else ACTION_BLANKED, key, raw.get(p.field))
                    continue
                for p in problems:
                    rej.add(row_no, p.field, p.reason, ACTION_BLANKED, key, raw.get(p.field))
                if problems:
                    std["extra"]["problems"] = [[p.field, p.reason] for p in problems]
                if old is None:
                    # plain tuple in _INSERT_COLUMNS order (bulk path: COPY / executemany)
                    inserts.append((src.code, key, h, row_no, raw,
                                    *[std[k] for k in RECORD_COLUMNS],
                                    run_id, run_id, False, None, started))
                    c["n_new"] += 1
                else:
                    updates.append({"id": old[0], **std, "raw": raw, "content_hash": h,
                                    "row_no": row_no, "last_run_id": run_id, "vanished": False,
                                    "vanished_run_id": None, "updated_at": started})
                    c["n_changed"] += 1
            if inserts:
                insert_rows(session, _RECORD, _INSERT_COLUMNS, inserts)
            if updates:
                _bulk_update(session, updates)

        pool = None
        text_only = getattr(reader, "text_only", False)  # CSV cells are already JSON text
        try:
            for chunk in _chunks(reader.rows(), chunk_size):
                todo = []
                for row_no, raw in chunk:
                    c["n_read"] += 1
                    if ROW_ERROR in raw:
                        rej.add(row_no, None, raw[ROW_ERROR], ACTION_SKIPPED)
                        continue
                    if reader.columns is None:
                        keys_seen_columns.update(raw)
                    if not text_only:
                        raw = {k: jsonable(v) for k, v in raw.items()}
                    key = _key(raw, mapping.key)
                    if key is None:
                        rej.add(row_no, "+".join(mapping.key), "缺少主键（标识行的列为空）",
                                ACTION_SKIPPED)
                        continue
                    if key in seen:
                        rej.add(row_no, "+".join(mapping.key),
                                f"主键重复（与第{seen[key]}行相同）：{key}", ACTION_SKIPPED, key)
                        continue
                    seen[key] = row_no
                    h = content_hash(raw, salt)
                    old = existing.get(key)
                    if old is not None and old[1] == h and not old[2]:
                        c["n_unchanged"] += 1
                        for f, reason in old[3]:
                            rej.add(row_no, f, reason, ACTION_BLANKED, key, raw.get(f))
                        continue
                    todo.append((row_no, raw, key, h, old))
                if todo and st is None:
                    st = shared_standardiser(session)
                if pool is None and workers and len(todo) >= worker_min_rows:
                    pool = _start_worker(st, mapping, workers)
                if pool is None:
                    write(todo, [st.record(t[1], mapping) for t in todo])
                    continue
                # the worker standardises this chunk while this process writes the previous one
                pending.append((todo, pool.apply_async(_std_batch, ([t[1] for t in todo],))))
                while len(pending) > workers:
                    done, res = pending.popleft()
                    write(done, res.get())
            while pending:
                done, res = pending.popleft()
                write(done, res.get())
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
        if reader.columns is None and c["n_read"] and keys_seen_columns:
            missing = [col for col in needed if col not in keys_seen_columns]
            if missing:
                raise ValidationError([
                    Problem(f"映射文件 {mapping.path} 中的列“{col}”在文件中不存在",
                            source=reader.label, field=col) for col in missing])
        if c["n_read"] == 0 and not (src.options or {}).get("allow_empty"):
            raise ValidationError(Problem("文件没有数据行（若确属清空，请在 options 中设 allow_empty: true）",
                                          source=reader.label))
        if c["n_read"] and len(rej.rows) == c["n_read"] and not seen:
            raise ValidationError([Problem("所有行都未能载入", source=reader.label), *rej.first[:20]])
        gone = [v[0] for k, v in existing.items() if not v[2] and k not in seen]
        for i in range(0, len(gone), 5000):
            part = gone[i:i + 5000]
            session.execute(update(Record).where(Record.id.in_(part)).values(
                vanished=True, vanished_run_id=run_id))
        c["n_vanished"] = len(gone)
    return c


_STD_CACHE: dict[tuple, Standardiser] = {}


def shared_standardiser(session: Session) -> Standardiser:
    """A Standardiser for this database, built once per process while the standard
    addresses and street names stay the same (building its address resolver takes seconds,
    and every load of a run needs the same one)."""
    from sqlalchemy import func

    from jiedao.geo.models import Address, District, Street

    fp = (session.get_bind().url.render_as_string(hide_password=True),
          *session.execute(select(func.count(Address.code), func.max(Address.code))).one(),
          *session.execute(select(func.count(Street.code), func.max(Street.name))).one(),
          session.scalar(select(func.count()).select_from(District)))
    st = _STD_CACHE.get(fp)
    if st is None:
        _STD_CACHE.clear()
        st = _STD_CACHE[fp] = Standardiser.from_session(session)
    return st


_WORKER: tuple | None = None


def _start_worker(st: Standardiser, mapping: Mapping, workers: int):
    """Forked processes that standardise rows with this load's standardiser (the address
    resolver is inherited, not rebuilt). None where fork is not available."""
    import multiprocessing as mp

    global _WORKER
    if "fork" not in mp.get_all_start_methods():
        return None
    _WORKER = (st, mapping)
    try:
        return mp.get_context("fork").Pool(workers)
    finally:
        _WORKER = None


def _std_batch(raws: list[dict]) -> list:
    st, mapping = _WORKER
    return [st.record(raw, mapping) for raw in raws]


_RECORD = Record.__table__
_INSERT_COLUMNS = ("source_code", "source_key", "content_hash", "row_no", "raw", *RECORD_COLUMNS,
                   "first_run_id", "last_run_id", "vanished", "vanished_run_id", "updated_at")


def _bulk_update(session: Session, rows: list[dict]) -> None:
    """Core executemany UPDATE by primary key (every row sets the same columns)."""
    cols = [k for k in rows[0] if k != "id"]
    stmt = (_RECORD.update().where(_RECORD.c.id == bindparam("_id"))
            .values({c: bindparam(f"_{c}") for c in cols}))
    session.execute(stmt, [{f"_{k}": v for k, v in r.items()} for r in rows])


def _chunks(rows: Iterator, size: int) -> Iterator[list]:
    buf = []
    for r in rows:
        buf.append(r)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf


def _key(raw: dict, key_cols: list[str]) -> str | None:
    parts = []
    for col in key_cols:
        v = raw.get(col)
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        t = clean_text(v)
        if t is None:
            return None
        parts.append(t)
    key = "|".join(parts)
    return key[:100] if len(key) <= 100 else hashlib.blake2b(key.encode(), digest_size=20).hexdigest()


def load_all(session_factory, data_dir: str | Path | None = None) -> list[dict]:
    """Load every registered source, each in its own transaction; a failure is reported
    and the others still load. ``session_factory`` is ``db.session``."""
    with session_factory() as s:
        codes = list(s.scalars(select(Source.code).order_by(Source.priority.desc(), Source.code)))
    out = []
    for code in codes:
        try:
            with session_factory() as s:
                run = load_source(s, code, data_dir=data_dir)
                out.append(run_summary(run))
        except ValidationError as e:
            out.append({"source": code, "status": "failed", "error": str(e)})
    return out


def run_summary(run: ImportRun) -> dict:
    return {"run": run.id, "source": run.source_code, "status": run.status, "read": run.n_read,
            "new": run.n_new, "changed": run.n_changed, "unchanged": run.n_unchanged,
            "vanished": run.n_vanished, "rejected": run.n_rejected, "seconds": run.seconds,
            "rejects": run.rejects_path, "error": run.error}


def records_frame(session: Session, entity_type: str = "enterprise", *,
                  include_vanished: bool = False):
    """Current (not vanished) records of sources of ``entity_type`` as a pandas DataFrame
    with the columns LINK and quality checks use (contract of issue 4)."""
    import pandas as pd

    cols = ("record_id", "source_code", "name_norm", "name_core", "credit_code", "reg_no",
            "legal_rep", "phone", "address_norm", "building_code", "street_code",
            "industry_code", "established")
    stmt = (select(Record.id, Record.source_code, Record.name_norm, Record.name_core,
                   Record.credit_code, Record.reg_no, Record.legal_rep, Record.phone,
                   Record.address_norm, Record.building_code, Record.street_code,
                   Record.industry_code, Record.established)
            .join(Source, Source.code == Record.source_code)
            .where(Source.entity_type == entity_type)
            .order_by(Record.id))
    if not include_vanished:
        stmt = stmt.where(Record.vanished.is_(False))
    rows = session.execute(stmt).all()
    df = pd.DataFrame.from_records(rows, columns=list(cols))
    if len(df) == 0:
        df = df.astype({"record_id": "int64"})
    return df


__all__ = ["RECORD_COLUMNS", "content_hash", "load_all", "load_source", "records_frame",
           "rejects_dir", "run_summary", "shared_standardiser"]
