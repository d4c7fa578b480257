"""Risk-coverage and the automation figure on tiny literal predictions; Wilson intervals."""
import numpy as np
import pytest

from core.coverage import (accuracy_with_interval, automation, automation_per_digit, images_to_show, risk_coverage,
                           wilson_interval)
from core.errors import InvalidOptionError


def proba(conf, pred):
    """(n, 10) probabilities whose top class is `pred` with probability `conf`."""
    p = np.zeros((len(conf), 10))
    for i, (c, d) in enumerate(zip(conf, pred)):
        p[i] = (1 - c) / 9
        p[i, d] = c
    return p


Y_TRUE = np.array([1, 1, 2, 2, 3, 3])
Y_PRED = np.array([1, 1, 2, 5, 3, -1])  # one wrong (0.6 confident), one blank
CONF = [0.99, 0.95, 0.90, 0.60, 0.80, 0.0]


@pytest.mark.parametrize("correct, n, low, high", [(95, 100, 0.8882, 0.9785), (0, 10, 0.0, 0.2775),
                                                   (10, 10, 0.7225, 1.0)])
def test_wilson_interval_matches_the_textbook_values(correct, n, low, high):
    lo, hi = wilson_interval(correct, n)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)


def test_accuracy_with_interval_and_no_images():
    assert accuracy_with_interval([1, 2], [1, 3])["accuracy"] == 0.5
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_risk_coverage_rows():
    rows = {r["threshold"]: r for r in risk_coverage(Y_TRUE, Y_PRED, proba(CONF, np.maximum(Y_PRED, 0)))}
    assert rows[0.0]["coverage"] == pytest.approx(5 / 6) and rows[0.0]["accuracy"] == pytest.approx(4 / 5)
    assert rows[0.7]["coverage"] == pytest.approx(4 / 6) and rows[0.7]["accuracy"] == 1.0
    assert rows[0.9999]["accepted"] == 0 and rows[0.9999]["accuracy"] is None


@pytest.mark.parametrize("target, threshold, coverage", [(0.99, 0.80, 4 / 6), (0.8, 0.60, 5 / 6), (1.0, 0.80, 4 / 6)])
def test_automation_accepts_the_most_at_the_target(target, threshold, coverage):
    a = automation(Y_TRUE, Y_PRED, proba(CONF, np.maximum(Y_PRED, 0)), target)
    assert a["threshold"] == pytest.approx(threshold) and a["coverage"] == pytest.approx(coverage)
    assert a["low"] <= a["accuracy"] <= a["high"]


def test_ties_are_accepted_together_or_not_at_all():
    # two images at the same confidence, one right one wrong: a threshold cannot take only the right one
    a = automation(np.array([1, 1, 2]), np.array([1, 1, 3]), proba([0.9, 0.7, 0.7], [1, 1, 3]), 0.99)
    assert a["accepted"] == 1 and a["threshold"] == pytest.approx(0.9)


def test_no_threshold_reaches_the_target():
    a = automation(np.array([1]), np.array([2]), proba([0.9], [2]), 0.99)
    assert a["threshold"] is None and a["coverage"] == 0.0


def test_per_predicted_digit():
    rows = automation_per_digit(Y_TRUE, Y_PRED, proba(CONF, np.maximum(Y_PRED, 0)), 0.99)
    assert rows[1]["predicted"] == 2 and rows[1]["coverage"] == 1.0
    assert rows[5]["predicted"] == 1 and rows[5]["coverage"] == 0.0 and rows[0]["predicted"] == 0


def test_target_out_of_range():
    with pytest.raises(InvalidOptionError, match="from 0.5 to 1"):
        automation(Y_TRUE, Y_PRED, proba(CONF, np.maximum(Y_PRED, 0)), 1.5)


@pytest.mark.parametrize("target, needed", [(0.9, 35), (0.95, 73), (0.99, 381), (0.999, 3838), (1.0, None)])
def test_images_to_show_a_target_is_the_fewest_whose_perfect_interval_reaches_it(target, needed):
    assert images_to_show(target) == needed
    if needed:  # all right on `needed` images shows the target; on one fewer it does not
        assert wilson_interval(needed, needed)[0] >= target > wilson_interval(needed - 1, needed - 1)[0]
