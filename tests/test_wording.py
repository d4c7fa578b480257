"""core.wording: counts written for people."""
import pytest

from core.wording import pct, plural, spread


@pytest.mark.parametrize("n, word, many, expected", [
    (0, "digit", None, "0 digits"), (1, "digit", None, "1 digit"), (2, "image", None, "2 images"),
    (1, "other trained model", None, "1 other trained model"), (1234, "entry", "entries", "1,234 entries"),
])
def test_plural(n, word, many, expected):
    assert plural(n, word, many) == expected


@pytest.mark.parametrize("x, digits, sign, expected", [
    (0.9413, 1, False, "94.1 %"), (0.98471, 2, False, "98.47 %"), (0.87, 0, False, "87 %"),
    (0.012, 1, True, "+1.2 %"), (-0.003, 1, True, "-0.3 %"), (None, 1, False, "n/a"), (float("nan"), 1, False, "n/a"),
])
def test_pct(x, digits, sign, expected):
    assert pct(x, digits, sign) == expected


@pytest.mark.parametrize("std, n, expected", [
    (0.0034, 3, "± 0.3 points over 3 seeds"), (0.0, 2, "± 0.0 points over 2 seeds"),
    (None, 1, "1 seed: no spread measured"), (0.0, 1, "1 seed: no spread measured"),
    (float("nan"), 1, "1 seed: no spread measured"),
])
def test_spread_is_not_claimed_from_one_seed(std, n, expected):
    assert spread(std, n) == expected
