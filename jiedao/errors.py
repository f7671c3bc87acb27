"""Errors that name where bad input was found (file, row, field)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where it is and why."""

    message: str
    source: str | None = None  # file name or endpoint
    row: int | None = None  # 1-based row/line/feature number as a person counts
    field: str | None = None

    def __str__(self) -> str:
        where = []
        if self.source:
            where.append(str(self.source))
        if self.row is not None:
            where.append(f"第{self.row}行")
        if self.field:
            where.append(f"字段 {self.field}")
        return f"{' '.join(where)}: {self.message}" if where else self.message

    def as_dict(self) -> dict:
        return {"message": self.message, "source": self.source, "row": self.row, "field": self.field}


class JiedaoError(Exception):
    """Base class for domain errors the web layer turns into 4xx answers."""

    status_code = 400


class ValidationError(JiedaoError):
    """Input was rejected; ``problems`` lists every reason found, not just the first."""

    def __init__(self, problems: list[Problem] | Problem | str, source: str | None = None):
        if isinstance(problems, str):
            problems = [Problem(problems, source=source)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems[:20]) + (
            f" (共{len(self.problems)}处问题)" if len(self.problems) > 20 else ""))


class NotFound(JiedaoError):
    status_code = 404


class PermissionDenied(JiedaoError):
    status_code = 403


class Conflict(JiedaoError):
    status_code = 409
