"""HTTP intake with analysis and automatic dispatch, on PostgreSQL, 8 concurrent clients.

A database (``JIEDAO_BENCH_PG_URL``, or ``jiedao_bench_intake`` created on the local server)
gets the demo district (small with --quick); uvicorn serves ``jiedao.web.app:create_app``
with a few workers; 8 client threads POST /api/cases (bearer token, idempotency key, appeal
texts built from the responsibility list's examples and real standard addresses) for a fixed
duration after a warm-up. Reported: cases/s sustained and p50/p99 latency in ms.
Loopback only; bounded in time; the server is stopped at the end.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

CLIENTS = 8
DEFAULT_DB = "jiedao_bench_intake"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _database(quick: bool):
    """(Database, url, drop) — a fresh PostgreSQL database with the demo district."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    from jiedao.db import Database
    from jiedao.demo.build import build_demo

    url = os.environ.get("JIEDAO_BENCH_PG_URL") or \
        f"postgresql://postgres@127.0.0.1:5432/{DEFAULT_DB}"
    base = make_url(url)
    admin = sa.create_engine(base.set(drivername="postgresql+psycopg", database="postgres"),
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{base.database}" WITH (FORCE)'))
        c.execute(sa.text(f'CREATE DATABASE "{base.database}"'))
    db = Database(url)
    db.upgrade()
    # the district (geography, catalogue, users) without replaying the demo year of appeals:
    # this measures intake, not the replay (bench/replay.py does that)
    from jiedao.demo import build

    stages = build.DB_STAGES
    build.DB_STAGES = [st for st in stages if st[0] not in ("appeals", "hub")]
    try:
        build_demo(db, small=quick, progress=False)
    finally:
        build.DB_STAGES = stages

    def drop():
        db.dispose()
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{base.database}" WITH (FORCE)'))
        admin.dispose()

    return db, url, drop


def _texts(db, n: int = 2000, seed: int = 7) -> list[str]:
    from sqlalchemy import select

    from jiedao.catalog.models import Matter
    from jiedao.geo.models import Address

    rng = random.Random(seed)
    with db.session() as s:
        examples = [e for m in s.scalars(select(Matter)) for e in (m.examples or [])]
        addresses = list(s.scalars(select(Address.full).limit(5000)))
    out = []
    for _ in range(n):
        ex = rng.choice(examples)
        out.append(f"{rng.choice(addresses)}{ex}" if rng.random() < 0.8 else ex)
    return out


def _percentile(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))] if v else float("nan")


def run(quick: bool = False) -> list[dict]:
    import httpx

    from jiedao.auth import service as auth
    from jiedao.cases.analysis.training import load_or_train
    from jiedao.catalog.loader import load_catalog

    duration = 6.0 if quick else 20.0
    workers = int(os.environ.get("JIEDAO_BENCH_WORKERS", "2"))
    load_or_train(load_catalog())  # the servers load the cached catalogue model
    db, url, drop = _database(quick)
    proc = None
    log_path = Path(os.environ.get("JIEDAO_HOME", "var")) / "bench_intake_http.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with db.session() as s:
            raw, _ = auth.create_api_token(s, auth.get_user(s, "operator01"), "bench")
        texts = _texts(db)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "JIEDAO_DATABASE_URL": url}
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "jiedao.web.app:create_app", "--factory",
                 "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
                 "--log-level", "warning", "--no-access-log"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"server exited, see {log_path}"
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        headers = {"authorization": f"Bearer {raw}"}
        counter = iter(range(10**9))
        lock = threading.Lock()

        def client(stop_at: float, out: list, errors: list, dispatched: list):
            with httpx.Client(base_url=base, timeout=60, headers=headers) as c:
                while time.monotonic() < stop_at:
                    with lock:
                        i = next(counter)
                    t0 = time.perf_counter()
                    try:
                        r = c.post("/api/cases", json={"text": texts[i % len(texts)]},
                                   headers={"Idempotency-Key": f"bench-{i}"})
                        ok = r.status_code == 201
                    except httpx.TransportError:
                        ok = False
                    ms = (time.perf_counter() - t0) * 1000
                    if ok:
                        out.append(ms)
                        dispatched.append(r.json()["state"] == "dispatched")
                    else:
                        errors.append(ms)

        def phase(seconds: float):
            out, errors, dispatched = [], [], []
            stop_at = time.monotonic() + seconds
            threads = [threading.Thread(target=client, args=(stop_at, out, errors, dispatched))
                       for _ in range(CLIENTS)]
            t0 = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join(seconds + 120)
            return out, errors, dispatched, time.monotonic() - t0

        phase(8.0 if quick else 12.0)  # warm-up: every worker builds its pipeline
        lat, errors, dispatched, elapsed = phase(duration)
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        drop()
    rate = len(lat) / elapsed if elapsed else 0.0
    return [
        {"name": "intake_http_cases_per_s", "value": round(rate, 1), "unit": "cases/s",
         "target": 200.0, "better": "higher"},
        {"name": "intake_http_p50_ms", "value": round(_percentile(lat, 0.50), 1), "unit": "ms",
         "target": None, "better": "lower"},
        {"name": "intake_http_p99_ms", "value": round(_percentile(lat, 0.99), 1), "unit": "ms",
         "target": 100.0, "better": "lower"},
        {"name": "intake_http_errors", "value": float(len(errors)), "unit": "requests",
         "target": 0.0, "better": "lower"},
        {"name": "intake_http_auto_dispatched", "value": round(
            100 * sum(dispatched) / max(len(dispatched), 1), 1), "unit": "%", "target": None,
         "better": "higher"},
        {"name": "intake_http_workers", "value": float(workers), "unit": "processes",
         "target": None, "better": "higher"},
    ]


if __name__ == "__main__":
    for fig in run(quick="--quick" in sys.argv):
        print(fig)
