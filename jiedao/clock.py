"""The district's wall clock. Times are stored naive, in the district's local time zone,
because SLAs and office hours are defined in local time (see docs/architecture.md)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from jiedao.config import get_settings


def now() -> datetime:
    """Current local time in the district, naive, to the second."""
    return datetime.now(ZoneInfo(get_settings().timezone)).replace(tzinfo=None, microsecond=0)
