"""Analysis of an incoming case: category, urgency, place, duplicates, repeat callers."""

from jiedao.cases.analysis.card import Analysis, Location

__all__ = ["Analysis", "Location"]
