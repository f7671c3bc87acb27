"""HTTP intake with analysis and automatic dispatch, on PostgreSQL, 8 concurrent clients.

A database (``JIEDAO_BENCH_PG_URL``, or ``jiedao_bench_intake`` created on the local server)
gets the demo district (small with --quick); the server is started the way production runs
it, ``jiedao serve --workers N --no-access-log`` (N = ``JIEDAO_BENCH_WORKERS``, default 2:
one per core here). The load comes from a separate process (this file run with
``--client``): 8 keep-alive HTTP/1.1 connections on asyncio, hand-written requests, so that
the load generator costs little of the CPU it shares with the server. Each connection POSTs
/api/cases in a closed loop (bearer token, a fresh idempotency key, appeal texts built from
the responsibility list's examples and real standard addresses) for a warm-up, then for the
measured phase (30 s; 8 s with --quick).

Reported: cases/s sustained, p50/p99 latency, errors, share dispatched automatically, and
the CPU the server processes and the load generator spent per case, which depends far less
on what else runs on the machine than the rate does (on 2 cores, 200 cases/s leaves 10 ms of
CPU per case for server, database and client together); the load average at the start and
the end says how busy the machine was. The PostgreSQL backends serving the benchmark's
database are reported too (their CPU during the measured phase: the server's pool keeps its
connections, so they are the same processes from start to end; a backend that exits
meanwhile would be missed). Loopback only; bounded in time; the server is stopped at the end.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
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


# ---------------------------------------------------------------- load generator (own process)


def _client_main(cfg_path: str) -> None:
    """Run the load described in ``cfg_path`` (JSON) and print the results as JSON."""
    import asyncio
    import resource

    cfg = json.loads(Path(cfg_path).read_text(encoding="utf-8"))
    host, port, token, texts = cfg["host"], cfg["port"], cfg["token"], cfg["texts"]
    bodies = [json.dumps({"text": t}, ensure_ascii=False).encode() for t in texts]
    head = (f"POST /api/cases HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nAccept: application/json\r\n").encode()
    counter = iter(range(10**9))

    async def one(reader, writer, run: str, out: dict) -> bool:
        i = next(counter)
        body = bodies[i % len(bodies)]
        req = b"".join((head, f"Idempotency-Key: {run}-{i}\r\nContent-Length: {len(body)}\r\n\r\n"
                        .encode(), body))
        t0 = time.perf_counter()
        writer.write(req)
        status = int((await reader.readline()).split(b" ", 2)[1])
        length, close = 0, False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        payload = await reader.readexactly(length) if length else b""
        ms = (time.perf_counter() - t0) * 1000
        if status == 201:
            out["lat"].append(ms)
            out["dispatched"] += b'"state":"dispatched"' in payload
        else:
            out["errors"].append(status)
        return not close

    async def conn_loop(stop_at: float, run: str, out: dict) -> None:
        reader = writer = None
        while time.monotonic() < stop_at:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                if not await one(reader, writer, run, out):
                    writer.close()
                    writer = None
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                out["errors"].append(-1)
                if writer is not None:
                    writer.close()
                writer = None
                await asyncio.sleep(0.05)
        if writer is not None:
            writer.close()

    async def phase(seconds: float, run: str) -> dict:
        out = {"lat": [], "errors": [], "dispatched": 0}
        stop_at = time.monotonic() + seconds
        t0, r0 = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.gather(*(conn_loop(stop_at, run, out) for _ in range(cfg["clients"])))
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        out["elapsed"] = time.monotonic() - t0
        out["cpu_s"] = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        return out

    async def main() -> dict:
        await phase(cfg["warmup"], cfg["run"] + "-w")
        print("measuring", file=sys.stderr, flush=True)
        return await phase(cfg["duration"], cfg["run"])

    print(json.dumps(asyncio.run(main())))


# ---------------------------------------------------------------- the benchmark


def _proc_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children, so far."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _backend_cpu(db, seen: dict[int, float]) -> float:
    """CPU seconds the PostgreSQL backends of ``db``'s database have used since ``seen`` (pid →
    CPU then) was filled; ``seen`` is updated. Backends not seen before count from zero."""
    import psutil
    from sqlalchemy import text

    with db.engine.connect() as c:
        pids = list(c.scalars(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'")))
    used = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        now = t.user + t.system
        used += now - seen.get(pid, 0.0)
        seen[pid] = now
    return used


def run(quick: bool = False) -> list[dict]:
    import httpx

    from jiedao.auth import service as auth
    from jiedao.cases.analysis.training import load_or_train
    from jiedao.catalog.loader import load_catalog

    duration = float(os.environ.get("JIEDAO_BENCH_SECONDS", 8.0 if quick else 30.0))
    warmup = 6.0 if quick else 10.0
    workers = int(os.environ.get("JIEDAO_BENCH_WORKERS", "2"))
    load_or_train(load_catalog())  # the servers load the cached catalogue model
    db, url, drop = _database(quick)
    proc = None
    home = Path(os.environ.get("JIEDAO_HOME", "var"))
    log_path = home / "bench_intake_http.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.TemporaryDirectory()
    try:
        with db.session() as s:
            raw, _ = auth.create_api_token(s, auth.get_user(s, "operator01"), "bench")
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "JIEDAO_DATABASE_URL": url}
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "jiedao.cli", "serve", "--host", "127.0.0.1", "--port",
                 str(port), "--workers", str(workers), "--no-access-log"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"server exited, see {log_path}"
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        cfg = Path(tmp.name) / "client.json"
        cfg.write_text(json.dumps({
            "host": "127.0.0.1", "port": port, "token": raw, "texts": _texts(db),
            "clients": CLIENTS, "warmup": warmup, "duration": duration,
            "run": f"bench-{time.time_ns()}"}, ensure_ascii=False), encoding="utf-8")
        client = subprocess.Popen([sys.executable, __file__, "--client", str(cfg)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert client.stderr is not None
        client.stderr.readline()  # "measuring": the warm-up is over (every worker is ready)
        load0 = os.getloadavg()[0]
        seen: dict[int, float] = {}
        _backend_cpu(db, seen)
        srv0 = _proc_tree_cpu(proc.pid)
        out, err = client.communicate(timeout=duration + 120)
        srv1 = _proc_tree_cpu(proc.pid)
        pg_cpu = _backend_cpu(db, seen)
        load1 = os.getloadavg()[0]
        assert client.returncode == 0, err
        res = json.loads(out)
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        tmp.cleanup()
        drop()
    lat, n = res["lat"], max(len(res["lat"]), 1)
    rate = len(lat) / res["elapsed"] if res["elapsed"] else 0.0
    print(f"  {len(lat)} cases in {res['elapsed']:.1f} s with {workers} workers; "
          f"load average {load0:.1f} → {load1:.1f}; CPU per case: server "
          f"{1000 * (srv1 - srv0) / n:.2f} ms, PostgreSQL backends {1000 * pg_cpu / n:.2f} ms, "
          f"load generator {1000 * res['cpu_s'] / n:.2f} ms")

    def fig(name, value, unit, target=None, better="lower"):
        return {"name": name, "value": value, "unit": unit, "target": target, "better": better}

    return [
        fig("intake_http_cases_per_s", round(rate, 1), "cases/s", 200.0, "higher"),
        fig("intake_http_p50_ms", round(_percentile(lat, 0.50), 1), "ms"),
        fig("intake_http_p99_ms", round(_percentile(lat, 0.99), 1), "ms", 100.0),
        fig("intake_http_errors", float(len(res["errors"])), "requests", 0.0),
        fig("intake_http_auto_dispatched", round(100 * res["dispatched"] / n, 1), "%",
            better="higher"),
        fig("intake_http_workers", float(workers), "processes", better="higher"),
        fig("intake_http_server_cpu_per_case", round(1000 * (srv1 - srv0) / n, 2), "ms"),
        fig("intake_http_client_cpu_per_case", round(1000 * res["cpu_s"] / n, 2), "ms"),
        fig("intake_http_postgres_cpu_per_case", round(1000 * pg_cpu / n, 2), "ms"),
        fig("intake_http_load_average", round((load0 + load1) / 2, 1), "", better="lower"),
    ]


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--client":
        _client_main(sys.argv[2])
    else:
        for f in run(quick="--quick" in sys.argv):
            print(f)
