import json
import subprocess
import sys

import cv2
import numpy as np

from tests.conftest import ROOT, canvas


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_predict_json(tmp_path):
    one, blank, bad = tmp_path / "one.png", tmp_path / "blank.png", tmp_path / "bad.png"
    cv2.imwrite(str(one), canvas([((140, 50), (140, 230))], rgba=False))
    cv2.imwrite(str(blank), np.full((100, 100), 255, np.uint8))
    bad.write_text("not an image")
    r = run_cli("predict", str(one), str(blank), str(bad), "--reframing", "paper", "--json")
    out = json.loads(r.stdout)
    assert r.returncode == 1  # one file failed
    assert [o["file"] for o in out] == [str(one), str(blank), str(bad)]
    assert out[0]["digit"] == 1 and out[0]["blank"] is False and out[0]["reframing"] == "paper"
    assert len(out[0]["probabilities"]) == 10 and abs(sum(out[0]["probabilities"]) - 1) < 1e-4
    assert out[0]["confidence"] == max(out[0]["probabilities"])
    assert out[1]["blank"] is True and out[1]["digit"] is None
    assert "not an image" in out[2]["error"]


def test_bad_reframing_names_valid_values():
    r = run_cli("predict", "x.png", "--reframing", "magic")
    assert r.returncode == 2 and "naive" in r.stderr and "mnist" in r.stderr


def test_evaluate_json_on_sklearn_digits():
    r = run_cli("evaluate", "--target", "sklearn-digits", "--reframing", "mnist", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["target"] == "sklearn-digits" and out["n"] == 1797 and out["skipped"] == 0
    assert set(out["macro"]) == {"precision", "recall", "f1"}
    assert len(out["per_digit"]) == 10 and len(out["confusion_matrix"]) == 10
    for row in out["per_digit"]:
        assert row["tp"] + row["tn"] + row["fp"] + row["fn"] == 1797
    correct = sum(out["confusion_matrix"][d][d] for d in range(10))
    assert out["accuracy"] == correct / 1797


def test_evaluate_naive_collapses_and_mnist_beats_it():
    naive = json.loads(run_cli("evaluate", "--target", "sklearn-digits", "--reframing", "naive", "--json").stdout)
    best = json.loads(run_cli("evaluate", "--target", "sklearn-digits", "--reframing", "mnist", "--json").stdout)
    predicted_columns = sorted((sum(col) for col in zip(*naive["confusion_matrix"])), reverse=True)
    assert sum(predicted_columns[:2]) > 0.8 * naive["n"]  # one or two answers for nearly every image
    assert naive["accuracy"] < 0.2 and best["accuracy"] > naive["accuracy"] + 0.5


def test_evaluate_numbers_builtin_json():
    r = run_cli("evaluate-numbers", "--target", "builtin", "--n", "40", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["n"] == 40 and 0 <= out["accuracy"] <= 1
    assert sum(x["n"] for x in out["per_length"]) == 40


def test_evaluate_missing_target_is_a_clear_error(tmp_path):
    r = run_cli("evaluate", "--target", str(tmp_path / "nothing.zip"), "--json")
    assert r.returncode == 2 and "sklearn-digits" in r.stderr


def test_runs_json_lists_project_and_reference_runs():
    r = run_cli("runs", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    kinds = {o["kind"] for o in out}
    assert kinds == {"project", "reference"}
    for o in out:
        assert {"id", "kind", "architecture", "dataset", "epochs", "test_accuracy"} <= set(o)
        assert o["architecture"] in {"MLP", "CNN", "VGG16", "MobileNetV2"}
