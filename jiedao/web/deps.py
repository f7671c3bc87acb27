"""FastAPI dependencies shared by every capability's routes."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Request
from sqlalchemy.orm import Session


def get_session(request: Request) -> Iterator[Session]:
    """A SQLAlchemy session on ``request.app.state.db``: commits on success, rolls back on error."""
    with request.app.state.db.session() as session:
        yield session
