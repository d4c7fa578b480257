import numpy as np
import pytest

from core.datasets import Dataset
from core.evaluation import BLANK, confusion, evaluate, per_digit, summary_metrics

# Six images, hand-checked: digit 0 twice right; a 1 read as 7; a 7 right; a 7 read as 1; a 3 with no ink.
Y_TRUE = np.array([0, 0, 1, 7, 7, 3])
Y_PRED = np.array([0, 0, 7, 7, 1, BLANK])


def test_per_digit_counts_match_hand_computation():
    rows = {r["digit"]: r for r in per_digit(Y_TRUE, Y_PRED)}
    assert (rows[0]["tp"], rows[0]["tn"], rows[0]["fp"], rows[0]["fn"]) == (2, 4, 0, 0)
    assert (rows[1]["tp"], rows[1]["tn"], rows[1]["fp"], rows[1]["fn"]) == (0, 4, 1, 1)
    assert (rows[7]["tp"], rows[7]["tn"], rows[7]["fp"], rows[7]["fn"]) == (1, 3, 1, 1)
    assert (rows[3]["tp"], rows[3]["tn"], rows[3]["fp"], rows[3]["fn"]) == (0, 5, 0, 1)  # blank = a miss
    assert (rows[5]["tp"], rows[5]["tn"], rows[5]["fp"], rows[5]["fn"]) == (0, 6, 0, 0)


def test_every_row_sums_to_the_data_set_size():
    for r in per_digit(Y_TRUE, Y_PRED):
        assert r["tp"] + r["tn"] + r["fp"] + r["fn"] == len(Y_TRUE)


def test_rates_per_digit():
    rows = {r["digit"]: r for r in per_digit(Y_TRUE, Y_PRED)}
    assert rows[7]["recall"] == pytest.approx(1 / 2) and rows[7]["precision"] == pytest.approx(1 / 2)
    assert rows[7]["f1"] == pytest.approx(0.5) and rows[7]["accuracy"] == pytest.approx(4 / 6)
    assert rows[0]["recall"] == rows[0]["precision"] == rows[0]["f1"] == 1.0
    assert rows[5]["recall"] == 0.0 and rows[5]["accuracy"] == 1.0  # absent digit: 0 by convention


def test_summary_accuracy_and_macro():
    s = summary_metrics(Y_TRUE, Y_PRED)
    assert s["accuracy"] == pytest.approx(3 / 6)
    # recall per digit: 0 -> 1, 1 -> 0, 3 -> 0, 7 -> 0.5, others 0 -> macro over ten digits = 1.5 / 10
    assert s["macro"]["recall"] == pytest.approx(0.15)


def test_confusion_matrix_leaves_blanks_out():
    cm = confusion(Y_TRUE, Y_PRED)
    assert cm.shape == (10, 10) and cm.sum() == 5
    assert cm[0, 0] == 2 and cm[1, 7] == 1 and cm[7, 1] == 1 and cm[7, 7] == 1 and cm[3].sum() == 0


class FakePredictor:
    """Says the digit whose column (of ten 2-pixel bands) holds the most ink: lets evaluate() run without TF."""

    def predict_proba(self, X):
        X = np.asarray(X).reshape(-1, 28, 28)
        bands = np.stack([X[:, :, 4 + 2 * d: 6 + 2 * d].sum(axis=(1, 2)) for d in range(10)], 1)
        e = np.exp(bands - bands.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)


def test_evaluate_blank_images_and_disk_cache(tmp_path):
    imgs = np.full((3, 28, 28), 255, np.uint8)
    imgs[0, 4:24, 10:14] = 0
    imgs[1, 4:24, 16:19] = 0
    ds = Dataset("tiny", imgs, np.array([1, 2, 3]), "three constructed images")
    model = tmp_path / "model.keras"
    model.write_bytes(b"pretend model")
    ev = evaluate(FakePredictor(), ds, "paper", model_path=model)
    assert ev.y_pred[2] == BLANK and ev.blank == 1 and ev.n == 3
    again = evaluate(FakePredictor(), ds, "paper", model_path=model)  # read back from the cache
    assert (again.y_pred == ev.y_pred).all() and np.allclose(again.probabilities, ev.probabilities)
    model.write_bytes(b"another model")  # a new model file is a new cache key
    assert len(list((tmp_path / "home" / "cache" / "evaluations").glob("*.npz"))) == 1
    evaluate(FakePredictor(), ds, "paper", model_path=model)
    assert len(list((tmp_path / "home" / "cache" / "evaluations").glob("*.npz"))) == 2
    d = ev.as_dict()
    assert set(d) >= {"target", "n", "accuracy", "macro", "per_digit", "confusion_matrix", "skipped"}


def test_a_cached_evaluation_never_loads_the_model():
    from core.datasets import load_sklearn_digits
    from core.evaluation import evaluate
    from core.models import Predictor

    ds = load_sklearn_digits().subset(np.arange(40))
    loads = []

    def factory():
        loads.append(1)
        return Predictor.load()

    first = evaluate(factory, ds, "paper")
    second = evaluate(factory, ds, "paper")
    assert loads == [1] and np.array_equal(first.y_pred, second.y_pred)
