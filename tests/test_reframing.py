import numpy as np
import pytest

from core.errors import InvalidImageError, InvalidOptionError
from core.reframing import METHODS, reframe, reframe_batch, to_gray
from tests.conftest import canvas

VERTICAL = canvas([((140, 40), (140, 240))])
EXPECTED_STAGES = {
    "naive": ["grayscale", "resize 28x28"],
    "paper": ["grayscale", "pad to square", "margin", "resize 28x28", "invert"],
    "mnist": ["grayscale", "invert", "crop to ink", "fit 20x20", "centre of mass"],
}


def centre_of_mass(a):
    total = a.sum()
    return (a.sum(0) @ np.arange(a.shape[1])) / total, (a.sum(1) @ np.arange(a.shape[0])) / total


@pytest.mark.parametrize("method", METHODS)
def test_every_method_names_its_stages_and_ends_in_28x28_unit_floats(method):
    r = reframe(VERTICAL, method)
    assert [s.name for s in r.stages] == EXPECTED_STAGES[method]
    assert r.image.shape == (28, 28) and r.image.dtype == np.float32
    assert 0.0 <= r.image.min() and r.image.max() <= 1.0
    assert not r.blank and r.polarity == "dark-on-light"


@pytest.mark.parametrize("method", ["paper", "mnist"])
def test_dark_ink_on_paper_becomes_white_ink_on_black(method):
    out = reframe(VERTICAL, method).image
    assert out[0, 0] == 0.0 and out[-1, -1] == 0.0  # background black
    assert out.max() > 0.8  # ink bright
    assert out[:, 12:16].sum() > 5 * out[:, :10].sum()  # the vertical stroke stays in the middle columns


def test_naive_keeps_paper_white_which_is_why_it_fails():
    out = reframe(VERTICAL, "naive").image
    assert out.mean() > 0.8  # mostly white: nothing like MNIST's black background


def test_pad_to_square_crops_to_ink_and_pads_the_short_side():
    r = reframe(VERTICAL, "paper")
    square = r.stages[1].image
    assert square.shape[0] == square.shape[1]
    x, y, w, h = r.bbox
    assert square.shape[0] == max(w, h)
    assert h > 150 and w < 40  # a tall thin stroke


def test_margin_makes_the_digit_fill_20_of_28():
    r = reframe(VERTICAL, "paper")
    square, framed = r.stages[1].image, r.stages[2].image
    assert framed.shape[0] / square.shape[0] == pytest.approx(28 / 20, abs=0.02)


def test_mnist_method_fits_20x20_and_centres_the_mass():
    off_centre = canvas([((30, 20), (30, 120)), ((30, 20), (90, 20))])  # an off-centre "7"-like shape
    r = reframe(off_centre, "mnist")
    fitted = r.stages[3].image
    assert max(fitted.shape) == 20
    cx, cy = centre_of_mass(r.image)
    assert cx == pytest.approx(13.5, abs=0.25) and cy == pytest.approx(13.5, abs=0.25)


def test_light_ink_on_dark_is_detected_and_not_inverted():
    dark = canvas([((140, 40), (140, 240))], ink=255, paper=0, rgba=False)
    r = reframe(dark, "paper")
    assert r.polarity == "light-on-dark"
    assert r.image[0, 0] == 0.0 and r.image.max() > 0.8


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("value", [0, 255, 128])
def test_uniform_images_are_blank_and_not_reframed(method, value):
    r = reframe(np.full((100, 100), value, np.uint8), method)
    assert r.blank and r.image is None and [s.name for s in r.stages] == ["grayscale"]


def test_faint_noise_on_paper_is_blank():
    rng = np.random.default_rng(0)
    paper = np.clip(230 + rng.normal(0, 6, (200, 200)), 0, 255).astype(np.uint8)
    assert reframe(paper).blank


def test_transparent_canvas_with_black_strokes_works():
    img = np.zeros((280, 280, 4), np.uint8)  # transparent black background, as a canvas without background
    img[40:240, 130:150] = (0, 0, 0, 255)
    r = reframe(img, "mnist")
    assert not r.blank and r.polarity == "dark-on-light"
    assert r.image[:, 12:16].sum() > r.image[:, :10].sum()


@pytest.mark.parametrize("image", [
    np.zeros((8, 8), np.uint8),
    np.ones((8, 8), np.float64),
    np.full((8, 8), 16.0),
    np.zeros((28, 28, 1), np.uint8),
    np.zeros((30, 30, 3), np.uint8),
    np.zeros((64, 48), np.uint16),
    np.zeros((20, 20), bool),
])
def test_accepted_shapes_and_dtypes(image):
    g = to_gray(image)
    assert g.shape == image.shape[:2] and g.dtype == np.float32 and 0 <= g.min() <= g.max() <= 1


def test_tiny_8x8_digit_is_reframed():
    img = np.full((8, 8), 255, np.uint8)
    img[1:7, 3:5] = 0
    r = reframe(img, "mnist")
    assert r.image.shape == (28, 28) and r.image.max() > 0.5


def test_huge_4096_image_is_reframed():
    img = np.full((4096, 4096), 255, np.uint8)
    img[1000:3000, 1900:2200] = 0
    r = reframe(img, "paper")
    assert r.image.shape == (28, 28) and not r.blank


@pytest.mark.parametrize("image, message", [
    (np.zeros((7, 50), np.uint8), "between 8x8 and 4096x4096"),
    (np.zeros((4097, 10), np.uint8), "between 8x8 and 4096x4096"),
    (np.zeros((10, 10, 2), np.uint8), "HxW"),
    (np.zeros((2, 10, 10, 3), np.uint8), "HxW"),
    (np.full((10, 10), np.nan), "NaN"),
    (np.full((10, 10), -1.0), r"\[0, 1\] or \[0, 255\]"),
    (np.full((10, 10), 300.0), r"\[0, 1\] or \[0, 255\]"),
    (np.array([["a"] * 10] * 10), "numbers"),
])
def test_malformed_images_get_a_clear_error(image, message):
    with pytest.raises(InvalidImageError, match=message):
        reframe(image)


def test_unknown_method_names_the_valid_ones():
    with pytest.raises(InvalidOptionError, match="naive, paper, mnist"):
        reframe(VERTICAL, "magic")


def test_batch_marks_blanks_and_zeroes_their_input():
    X, blank = reframe_batch([VERTICAL, np.full((50, 50), 255, np.uint8)], "mnist")
    assert X.shape == (2, 28, 28) and blank.tolist() == [False, True] and X[1].max() == 0
