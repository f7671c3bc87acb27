"""Shared helpers for tests that need a real server or a real browser.

``serve(app)`` runs uvicorn in a background thread on a free 127.0.0.1 port;
``chromium()`` launches Debian's headless Chromium through Playwright. When Chromium is
missing the browser tests skip locally, but fail under CI (``CI=true``), so a machine
without a browser can never turn them green by skipping.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

CHROMIUM = os.environ.get("JIEDAO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve(app, **config) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1; yields the base URL."""
    import uvicorn

    port = free_port()
    config.setdefault("lifespan", "off")
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                        **config))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@contextmanager
def chromium():
    """A headless Chromium browser (Playwright driving the Debian package)."""
    if not os.path.exists(CHROMIUM):
        message = f"Chromium not found at {CHROMIUM} (run `make browser`)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
