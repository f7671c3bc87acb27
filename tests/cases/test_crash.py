"""An acknowledged case survives ``kill -9`` and a retry never doubles it.

The real server (``jiedao serve`` in a subprocess on a free loopback port) takes a bounded
load of POST /api/cases with idempotency keys from a few threads; it is SIGKILLed in the
middle, restarted, and every request that was not acknowledged is retried with the same key
(plus a sample of acknowledged ones). Then: every acknowledged case is in the database with
its key, no key has two cases, and there is exactly one case per key sent.
Runs on a file SQLite database, and on PostgreSQL when JIEDAO_TEST_DATABASE_URL is set.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

PG_URL = os.environ.get("JIEDAO_TEST_DATABASE_URL")
THREADS = 3
PER_THREAD = 40  # requests per thread: bounded load
KILL_AFTER = 30  # acknowledgements before the SIGKILL

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_db(kind: str, tmp_path):
    """A migrated database with the small demo district; returns (Database, url, drop)."""
    from jiedao.db import Database

    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'crash.sqlite'}"
        db = Database(url)
        return db, url, db.dispose
    base = make_url(PG_URL)
    name = f"{base.database}_crash"
    admin = sa.create_engine(base.set(drivername="postgresql+psycopg", database="postgres"),
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    db = Database(url)

    def drop():
        db.dispose()
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return db, url, drop


class Server:
    """``jiedao serve`` in a subprocess (its own process group, so SIGKILL takes it all)."""

    def __init__(self, url: str, log):
        self.port = free_port()
        env = {**os.environ, "JIEDAO_DATABASE_URL": url}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jiedao.cli", "serve", "--host", "127.0.0.1",
             "--port", str(self.port)], env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.base = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "server exited during start-up"
            try:
                if httpx.get(self.base + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("server did not start")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def texts(n: int) -> list[str]:
    phrases = ["小区门口烧烤摊占道经营，油烟很大", "楼道里堆满杂物存在消防隐患", "路灯坏了好几天晚上很黑",
               "工地夜间施工噪音扰民", "下水道堵塞污水横流", "共享单车乱停乱放堵住人行道"]
    return [f"{phrases[i % len(phrases)]}（第{i}号）" for i in range(n)]


@pytest.mark.parametrize("backend", ["sqlite"] + (["postgresql"] if PG_URL else []))
def test_sigkill_mid_load_loses_no_acknowledged_case_and_doubles_none(backend, tmp_path):
    from jiedao.auth import service as auth
    from jiedao.cases.analysis.training import load_or_train
    from jiedao.cases.models import Case
    from jiedao.catalog.loader import load_catalog
    from jiedao.demo.build import build_demo

    load_or_train(load_catalog())  # the catalogue model is cached in JIEDAO_HOME for the servers
    db, url, drop = make_db(backend, tmp_path)
    servers: list[Server] = []
    log = (tmp_path / "server.log").open("wb")  # noqa: SIM115 (closed in finally)
    try:
        db.upgrade()
        build_demo(db, small=True, progress=False)
        with db.session() as s:
            user = auth.get_user(s, "operator01")
            raw, _ = auth.create_api_token(s, user, "crash-test")
            prefix = f"api:{user.id}:"
        headers = {"authorization": f"Bearer {raw}"}
        run = f"crash-{backend}-{time.time_ns()}"
        keys = [f"{run}-{t}-{i}" for t in range(THREADS) for i in range(PER_THREAD)]
        body = dict(zip(keys, texts(len(keys)), strict=True))

        server = Server(url, log)
        servers.append(server)
        server.wait_ready()
        warm = httpx.post(server.base + "/api/cases", json={"text": "预热：路灯不亮"},
                          headers={**headers, "Idempotency-Key": f"{run}-warm"}, timeout=60)
        assert warm.status_code == 201, warm.text
        acked: dict[str, int] = {f"{run}-warm": warm.json()["id"]}
        unacked: list[str] = []
        lock = threading.Lock()
        enough = threading.Event()

        def client(t: int) -> None:
            with httpx.Client(base_url=server.base, timeout=30) as c:
                for i in range(PER_THREAD):
                    key = f"{run}-{t}-{i}"
                    try:
                        r = c.post("/api/cases", json={"text": body[key]},
                                   headers={**headers, "Idempotency-Key": key})
                        ok = r.status_code in (200, 201)
                    except httpx.TransportError:
                        ok = False
                    with lock:
                        if ok:
                            acked[key] = r.json()["id"]
                            if len(acked) >= KILL_AFTER:
                                enough.set()
                        else:
                            unacked.append(key)

        threads = [threading.Thread(target=client, args=(t,)) for t in range(THREADS)]
        for th in threads:
            th.start()
        assert enough.wait(60), "the load did not get going"
        server.kill()  # SIGKILL with requests in flight
        for th in threads:
            th.join(60)
        assert len(acked) - 1 + len(unacked) == len(keys)
        assert unacked, "the kill came too late to interrupt anything"

        server = Server(url, log)
        servers.append(server)
        server.wait_ready()
        statuses = []
        with httpx.Client(base_url=server.base, timeout=60) as c:
            for key in unacked:
                r = c.post("/api/cases", json={"text": body[key]},
                           headers={**headers, "Idempotency-Key": key})
                assert r.status_code in (200, 201), r.text
                acked[key] = r.json()["id"]
                statuses.append(r.status_code)
        print(f"{backend}: {len(keys) - len(unacked)} acknowledged before SIGKILL, "
              f"{len(unacked)} retried: {statuses.count(200)} had been committed unacknowledged, "
              f"{statuses.count(201)} were new")
        with httpx.Client(base_url=server.base, timeout=60) as c:
            for key in list(acked)[1:11]:  # retries of acknowledged requests: the same case
                r = c.post("/api/cases", json={"text": body[key]},
                           headers={**headers, "Idempotency-Key": key})
                assert r.status_code == 200 and r.json()["id"] == acked[key]
        server.kill()

        with db.session() as s:
            rows = dict(s.execute(select(Case.idempotency_key, Case.id)
                                  .where(Case.idempotency_key.like(f"{prefix}{run}-%"))).all())
            per_key = s.execute(select(Case.idempotency_key, func.count())
                                .where(Case.idempotency_key.like(f"{prefix}{run}-%"))
                                .group_by(Case.idempotency_key)
                                .having(func.count() > 1)).all()
        assert per_key == []  # no key has two cases
        assert len(rows) == len(keys) + 1 == len(acked)  # one case per key sent, no more
        for key, case_id in acked.items():  # every acknowledged case is there, as acknowledged
            assert rows[prefix + key] == case_id, key
    finally:
        for srv in servers:
            srv.kill()
        log.close()
        drop()
