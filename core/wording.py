"""Counts and shares written for people: '1 image', '2 images', '94.1 %'. One way for every page and report."""
from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 image', '2 images', '1,797 images'; `many` for an irregular plural ('entries')."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def spread(std: float | None, n: int) -> str:
    """'± 0.3 points over 3 seeds'; with one seed (or no std) '1 seed: no spread measured', not a spread of 0."""
    if std is None or std != std or n < 2:
        return f"{plural(n, 'seed')}: no spread measured"
    return f"± {100 * float(std):.1f} points over {plural(n, 'seed')}"


def pct(x: float | None, digits: int = 1, sign: bool = False) -> str:
    """0.9413 -> '94.1 %', with `sign` '+94.1 %' (a change); None or NaN -> 'n/a'."""
    if x is None or x != x:  # x != x: NaN
        return "n/a"
    return f"{100 * float(x):{'+' if sign else ''}.{digits}f} %"
