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


def _tiny_cached(tmp_path):
    imgs = np.full((4, 28, 28), 255, np.uint8)
    imgs[0, 4:24, 10:14] = 0
    imgs[1, 4:24, 16:19] = 0
    imgs[3, 4:24, 20:23] = 0
    ds = Dataset("tiny", imgs, np.array([1, 2, 3, 8]), "four constructed images")
    model = tmp_path / "model.keras"
    model.write_bytes(b"pretend model")
    return ds, model


def test_a_cached_evaluations_analysis_is_saved_and_read_back_the_same(tmp_path, monkeypatch):
    import core.evaluation as E

    ds, model = _tiny_cached(tmp_path)
    fresh = evaluate(FakePredictor(), ds, "paper", model_path=model).as_dict()
    saved = list((tmp_path / "home" / "cache" / "evaluations").glob(f"*.analysis-v{E.ANALYSIS_VERSION}.json"))
    assert len(saved) == 1
    # Read back, the analysis is not computed again: make computing it fail, and get the same answer
    monkeypatch.setattr(E.Evaluation, "_analysis", lambda self, target: pytest.fail("computed again"))
    again = evaluate(FakePredictor(), ds, "paper", model_path=model)
    assert again.as_dict() == fresh
    again.warnings.append("a note")  # what is not about the predictions comes from the evaluation in hand
    assert again.as_dict()["warnings"] == ["a note"]


@pytest.mark.parametrize("damage", [b"", b"{not json", b"[1, 2]", b'{"accuracy": 0.5}'])
def test_a_damaged_saved_analysis_is_computed_again(tmp_path, damage):
    import core.evaluation as E

    ds, model = _tiny_cached(tmp_path)
    fresh = evaluate(FakePredictor(), ds, "paper", model_path=model).as_dict()
    (path,) = (tmp_path / "home" / "cache" / "evaluations").glob(f"*.analysis-v{E.ANALYSIS_VERSION}.json")
    path.write_bytes(damage)
    assert evaluate(FakePredictor(), ds, "paper", model_path=model).as_dict() == fresh


def test_another_target_accuracy_is_computed_and_not_saved(tmp_path):
    ds, model = _tiny_cached(tmp_path)
    ev = evaluate(FakePredictor(), ds, "paper", model_path=model)
    at_90 = ev.as_dict(0.9)
    assert at_90["automation"]["target_accuracy"] == 0.9
    assert not list((tmp_path / "home" / "cache" / "evaluations").glob("*.json"))
    assert ev.as_dict()["automation"]["target_accuracy"] == 0.99


def test_a_cached_report_analysis_needs_neither_sklearn_metrics_nor_scipy_stats(tmp_path):
    """What a Report on a fresh server does with a cached evaluation: load the data set, read the evaluation
    and its analysis. None of it imports scikit-learn's metrics or scipy.stats (about 1 s here)."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = ("import sys; from core.datasets import load_sklearn_digits; from core.evaluation import evaluate; "
            "ds = load_sklearn_digits().subset(list(range(60))); "
            "d = evaluate(lambda: 1 / 0, ds, 'paper').as_dict(); "
            "print(d['n'], 'sklearn.metrics' in sys.modules, 'scipy.stats' in sys.modules)")
    env = dict(os.environ, DIGITLAB_HOME=str(tmp_path / "home"))
    from core.datasets import load_sklearn_digits
    from core.models import Predictor

    evaluate(Predictor.load(), load_sklearn_digits().subset(list(range(60))), "paper").as_dict()  # cached
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["60", "False", "False"]
