"""Counts written for people: '1 image', '2 images'. One rule for every page, report and message."""
from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 image', '2 images', '1,797 images'; `many` for an irregular plural ('entries')."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"
