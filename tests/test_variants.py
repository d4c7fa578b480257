import cv2
import numpy as np
import pandas as pd
import pytest

from core import variants as V
from core.reframing import METHODS

SIZE = V.SCAN_SIZE


def sheet(*lines, width=4):
    """A literal 48x48 scan: paper with dark strokes drawn between the given points."""
    img = np.full((SIZE, SIZE), V.PAPER, np.uint8)
    for p, q in lines:
        cv2.line(img, p, q, V.INK, width)
    return img


BAR = sheet(((24, 8), (24, 40)))  # a vertical "1"
SEVEN = sheet(((14, 8), (34, 8)), ((34, 8), (20, 40)))  # top bar, then the stem down to the left
ONE_LABEL, SEVEN_LABEL = np.array([1]), np.array([7])


def ink(img):
    return float((255 - img.astype(np.float64)).sum() - (255 - V.PAPER) * img.size)


def ink_columns(row):
    return np.flatnonzero(row < (V.PAPER + V.INK) // 2)


def run(name, img, label=ONE_LABEL, random_state=0):
    out, labels = V.VARIANTS[name](img[None], label, random_state)
    return out[0], labels


def test_one_bit_scan_has_two_grey_levels():
    soft = cv2.GaussianBlur(BAR, (7, 7), 2)  # anti-aliased edges: many grey levels
    assert len(np.unique(soft)) > 10
    out, _ = run("1-bit", soft)
    assert set(np.unique(out)) == {0, 255}


def test_stretched_digit_fills_its_box_whatever_its_aspect():
    out, _ = run("stretched", BAR)
    x, y, w, h = cv2.boundingRect((out < 128).astype(np.uint8))
    off = (SIZE - V.STRETCH_BOX) // 2
    assert (x, y, w, h) == (off, off, V.STRETCH_BOX, V.STRETCH_BOX)  # a narrow bar became a full square


def test_thick_pen_has_more_ink_than_thin_pen():
    thick, _ = run("thick-pen", BAR)
    thin, _ = run("thin-pen", BAR)
    assert ink(thick) > ink(BAR) > ink(thin) > 0  # thinner, but not erased


def test_slant_moves_the_top_of_a_vertical_bar_sideways():
    out, _ = run("slant", BAR)
    top, bottom = ink_columns(out[10]).mean(), ink_columns(out[38]).mean()
    # tan(15..20 deg) * 28 rows = 7.5 to 10 px between the two rows, either way
    assert 6 <= abs(top - bottom) <= 11


def test_low_resolution_blurs_a_sharp_stroke():
    out, _ = run("low-res", BAR)
    assert len(np.unique(BAR)) == 2 and len(np.unique(out)) > 5
    touched = lambda row: np.flatnonzero(row < V.PAPER - 5).size  # noqa: E731
    assert touched(out[24]) > 2 * touched(BAR[24])  # the 4 px stroke is smeared wider
    assert out.min() > BAR.min() + 50  # and loses its dark core


def test_european_seven_gains_a_crossbar_in_its_middle_row():
    out, _ = run("european", SEVEN, SEVEN_LABEL)
    mid = 8 + round(0.55 * 33)  # the crossbar sits at 55 % of the digit's height
    assert ink_columns(out[mid]).size >= ink_columns(SEVEN[mid]).size + 8
    assert np.array_equal(out[:12], SEVEN[:12])  # the top bar is untouched


def test_european_one_gains_a_flag_and_a_base():
    out, _ = run("european", BAR, ONE_LABEL)
    assert ink_columns(out[13])[0] < 22  # the flag reaches left of the stem near the top
    assert ink_columns(out[40]).size > 2 * ink_columns(BAR[40]).size  # a base line at the bottom


def test_european_leaves_other_digits_alone():
    out, _ = run("european", SEVEN, np.array([4]))
    assert np.array_equal(out, SEVEN)


@pytest.mark.parametrize("name", list(V.VARIANTS))
def test_every_variant_keeps_labels_and_makes_uint8_scans(name):
    scans, labels = np.stack([BAR, SEVEN, BAR]), np.array([1, 7, 3])
    out, kept = V.VARIANTS[name](scans, labels, 0)
    assert np.array_equal(kept, labels) and kept is not labels
    assert out.dtype == np.uint8 and out.ndim == 3 and len(out) == 3 and out.shape[1] == SIZE
    assert V.VARIANTS[name].description


def test_render_scans_gives_dark_ink_on_light_paper_from_either_polarity():
    mnist_like = np.zeros((28, 28), np.uint8)
    mnist_like[4:24, 12:16] = 255  # white ink on black, as MNIST
    paper_like = 255 - mnist_like
    a, b = V.render_scans([mnist_like, paper_like])
    assert a.shape == (SIZE, SIZE) and a[0, 0] == V.PAPER and a.min() == V.INK
    assert np.array_equal(a, b)


class ZeroPredictor:
    """Always answers 0: accuracy is the share of zeros among the images that are not blank."""

    def predict_proba(self, X):
        p = np.zeros((len(X), 10), np.float32)
        p[:, 0] = 1.0
        return p


def test_evaluate_variants_has_one_row_per_source_variant_and_method():
    table = V.evaluate_variants(ZeroPredictor(), n=20)
    assert len(table) == len(V.SOURCES) * len(V.VARIANTS) * len(METHODS)
    assert not table.duplicated(["source", "variant", "method"]).any()
    assert table["accuracy"].between(0, 1).all() and (table["n"] == 20).all()
    # 20 stratified digits hold two zeros; a blank is never a zero, so accuracy is at most 2/20
    assert (table["accuracy"] <= 0.1 + 1e-9).all() and (table.loc[table["blank"] == 0, "accuracy"] == 0.1).all()
    assert set(table.attrs["provenance"]) == set(V.SOURCES)


def test_a_blank_counts_as_wrong():
    def erase(scans, labels, random_state):
        return np.full_like(scans, V.PAPER), labels.copy()

    table = V.evaluate_variants(ZeroPredictor(), methods=("paper",), variants={"erased": erase},
                                sources=("sklearn-digits",), n=20)
    assert table.loc[0, "blank"] == 20 and table.loc[0, "accuracy"] == 0.0


def literal(cells):
    return pd.DataFrame([{"source": s, "variant": v, "method": m, "accuracy": a} for s, v, m, a in cells])


@pytest.mark.parametrize("cells, best, worst", [
    # "a" wins on one target but "b" is better over all variants together
    ([("s1", "v1", "a", 0.99), ("s1", "v2", "a", 0.50), ("s2", "v1", "a", 0.60),
      ("s1", "v1", "b", 0.90), ("s1", "v2", "b", 0.80), ("s2", "v1", "b", 0.85)], "b", ("s1", "v2", 0.80)),
    # equal means: the better worst case wins
    ([("s1", "v1", "paper", 0.9), ("s2", "v1", "paper", 0.7),
      ("s1", "v1", "mnist", 0.8), ("s2", "v1", "mnist", 0.8)], "mnist", ("s1", "v1", 0.8)),
])
def test_choose_default_picks_the_best_mean_over_every_variant(cells, best, worst):
    choice = V.choose_default(literal(cells))
    assert choice["method"] == best
    assert (choice["worst"]["source"], choice["worst"]["variant"]) == worst[:2]
    assert choice["worst"]["accuracy"] == pytest.approx(worst[2])
    means = [r["mean"] for r in choice["per_method"]]
    assert means == sorted(means, reverse=True)
