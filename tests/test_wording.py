"""core.wording: counts written for people."""
import pytest

from core.wording import plural


@pytest.mark.parametrize("n, word, many, expected", [
    (0, "digit", None, "0 digits"), (1, "digit", None, "1 digit"), (2, "image", None, "2 images"),
    (1, "other trained model", None, "1 other trained model"), (1234, "entry", "entries", "1,234 entries"),
])
def test_plural(n, word, many, expected):
    assert plural(n, word, many) == expected
