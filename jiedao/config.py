"""Runtime settings, read from environment variables once per process.

Everything a district may want to change without touching code lives in files
(catalogue, calendar overrides, users) whose folder is configurable here.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _home() -> Path:
    return Path(os.environ.get("JIEDAO_HOME", "var")).resolve()


@dataclass(frozen=True)
class Settings:
    """Process-wide settings. Build with :func:`get_settings`."""

    home: Path
    database_url: str
    catalog_dir: Path
    secret_key: str
    timezone: str = "Asia/Shanghai"
    session_hours: int = 12
    extra: dict = field(default_factory=dict)


def _secret_key(home: Path) -> str:
    if key := os.environ.get("JIEDAO_SECRET_KEY"):
        return key
    path = home / "secret.key"
    if path.exists():
        return path.read_text().strip()
    home.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    path.write_text(key)
    path.chmod(0o600)
    return key


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment (JIEDAO_HOME, JIEDAO_DATABASE_URL, JIEDAO_CATALOG_DIR…)."""
    home = _home()
    url = os.environ.get("JIEDAO_DATABASE_URL") or f"sqlite:///{home / 'jiedao.sqlite'}"
    catalog_dir = Path(os.environ.get("JIEDAO_CATALOG_DIR", PACKAGE_DIR / "catalog" / "data"))
    return Settings(home=home, database_url=url, catalog_dir=catalog_dir, secret_key=_secret_key(home))
