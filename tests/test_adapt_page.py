"""The Few-shot adaptation page: queue a job, watch it, read a saved learning curve; no TensorFlow to render."""
import json
import subprocess
import sys

import pytest
from streamlit.testing.v1 import AppTest

from core import adaptation, jobs
from core.adaptation import AdaptationResult
from tests.conftest import ROOT

TIMEOUT = 120


def saved_result(name="a1", zero_shot=0.941):
    r = AdaptationResult(target="sklearn-digits", provenance="scikit-learn digits",
                         model="models/reused-cnn/model.keras", reframing="paper", n_test=899, n_pool=898,
                         zero_shot=zero_shot, zero_shot_mnist=0.984)
    for strategy, accs in {"last-layer": (0.95, 0.97), "fine-tune": (0.96, 0.985), "self-training": (0.96, 0.98),
                           "scratch": (0.4, 0.85)}.items():
        for k, acc in zip((1, 10), accs):
            for seed in range(2):
                r.results.append({"strategy": strategy, "shots": k, "seed": seed, "accuracy": acc + seed * 0.002,
                                  "mnist_accuracy": 0.98, "seconds": 1.0})
    folder = adaptation.results_dir() / name
    folder.mkdir(parents=True)
    return adaptation.save_result(r, folder)


def test_the_page_queues_an_adaptation_job(monkeypatch):
    started = []
    monkeypatch.setattr(jobs, "ensure_worker", lambda: started.append(1))  # no real worker in a page test
    at = AppTest.from_file("../pages/adapt.py", default_timeout=TIMEOUT).run()
    assert not at.exception
    assert "No adaptation has finished yet" in " ".join(i.value for i in at.info)
    at.multiselect(key="adapt_shots").set_value([1, 5])
    at.multiselect(key="adapt_strategies").set_value(["last-layer"])
    at.button[0].click().run()
    assert not at.exception and not at.error
    queued = [j for j in jobs.list_jobs() if j.what == "adaptation"]
    assert len(queued) == 1 and queued[0].config["shots"] == [1, 5] and queued[0].epochs == 2 * 1 * 3
    assert started  # a worker was asked for
    assert "Job 1 · queued" in " ".join(t.value for t in at.text)


def test_a_model_to_keep_must_be_among_the_chosen_strategies_and_k(monkeypatch):
    monkeypatch.setattr(jobs, "ensure_worker", lambda: None)
    at = AppTest.from_file("../pages/adapt.py", default_timeout=TIMEOUT).run()
    at.multiselect(key="adapt_shots").set_value([1, 5])
    at.multiselect(key="adapt_strategies").set_value(["last-layer"])
    at.multiselect(key="adapt_keep").set_value(["fine-tune:5", "last-layer:100"])
    at.button[0].click().run()
    assert not at.exception and "fine-tune:5, last-layer:100 are not among the chosen" in at.error[0].value
    assert not [j for j in jobs.list_jobs() if j.what == "adaptation"]  # nothing queued
    at.multiselect(key="adapt_keep").set_value(["last-layer:5"])
    at.button[0].click().run()
    assert not at.error and [j.config["keep"] for j in jobs.list_jobs()] == [[["last-layer", 5]]]


def test_the_chosen_result_stays_chosen_when_a_newer_one_is_saved():
    """The box holds a result's id: a job that ends meanwhile comes first in the list, and a position would then
    point at it while the box still named the other."""
    import os

    older = saved_result("a1", 0.941)
    os.utime(older, (1e9, 1e9))
    at = AppTest.from_file("../pages/adapt.py", default_timeout=TIMEOUT).run()
    assert at.selectbox(key="adapt_result").value == "a1"
    saved_result("a2", 0.9)  # newer: listed first
    at.run()
    assert not at.exception and at.selectbox(key="adapt_result").value == "a1"
    assert at.selectbox(key="adapt_result").options[0].endswith("a2")  # newest first, labelled with k and seeds
    assert "k 1-10 · 2 seeds · a2" in at.selectbox(key="adapt_result").options[0]
    assert {m.label: m.value for m in at.metric}["Zero-shot accuracy (test part)"] == "94.1 %"  # a1's, not a2's


def test_the_page_shows_a_saved_learning_curve():
    saved_result()
    at = AppTest.from_file("../pages/adapt.py", default_timeout=TIMEOUT).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Zero-shot accuracy (test part)"] == "94.1 %"
    assert metrics["Best with 10 labels per class (fine-tune)"] == "98.6 %"  # mean of 0.985 and 0.987
    table = at.dataframe[0].value
    assert set(table["strategy"]) == set(adaptation.STRATEGIES) and len(table) == 8
    fine_10 = table[(table["strategy"] == "fine-tune") & (table["shots"] == 10)].iloc[0]  # in points, as shown
    assert fine_10["accuracy (mean)"] == pytest.approx(98.6) and fine_10["± over seeds"] == pytest.approx(
        0.1414, abs=1e-3)
    import pyarrow as pa

    curve, forgetting = at.get("vega_lite_chart")  # the learning curve and the forgetting one, both Vega-Lite
    points = pa.ipc.open_stream(curve.proto.data.data).read_all().to_pandas()
    fine = points[points["strategy"] == "fine-tune"].set_index("shots")
    assert fine.loc[10, "value"] == pytest.approx(0.986) and fine.loc[10, "low"] < 0.986 < fine.loc[10, "high"]
    spec = json.loads(curve.proto.spec)
    assert spec["layer"][0]["mark"]["type"] == "area"  # the band over seeds
    assert next(layer for layer in spec["layer"] if layer["mark"]["type"] == "rule")["data"]["values"][0][
        "baseline"] == pytest.approx(0.941)  # zero-shot, dashed
    assert "low" not in pa.ipc.open_stream(forgetting.proto.data.data).read_all().column_names  # no band there


def test_read_only_shows_results_but_no_form(monkeypatch):
    monkeypatch.setenv("DIGITLAB_READ_ONLY", "1")
    saved_result()
    at = AppTest.from_file("../pages/adapt.py", default_timeout=TIMEOUT).run()
    assert not at.exception and not at.button and len(at.metric) == 3
    assert "read-only" in at.info[0].value


def test_the_page_renders_without_tensorflow():
    code = ("import sys; from streamlit.testing.v1 import AppTest; "
            "at = AppTest.from_file('pages/adapt.py', default_timeout=60).run(); "
            "assert not at.exception, at.exception; print('tensorflow' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["False"]


def test_my_digits_with_nothing_saved_cannot_be_queued():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file("../pages/adapt.py", default_timeout=120).run()
    at.selectbox(key="adapt_target").set_value("collected").run()
    assert not at.exception and not at.error
    assert "No digits saved yet" in at.info[0].value
    assert at.button(key="FormSubmitter:adapt_form-Queue adaptation").disabled


def test_a_failed_job_is_said_on_the_page_that_queued_it(monkeypatch):
    """A job that fails (here: the worker found a digit with one image) shows its error here, not only on the
    Training Runs page; the Results part still says nothing has finished."""
    monkeypatch.setattr(jobs, "ensure_worker", lambda: None)
    job = jobs.submit_adaptation({"target": "collected", "shots": [1], "strategies": ["last-layer"], "seeds": 1},
                                 title="Few-shot adaptation on collected")
    message = ("Every digit in the target set needs at least 2 images (one to adapt, one to test); counts per "
               "digit: [1, 1, 2, 2, 2, 2, 2, 2, 2, 2].")
    at = AppTest.from_file("../pages/adapt.py", default_timeout=TIMEOUT).run()
    assert f"Job {job.id} · queued · Few-shot adaptation on collected" in [t.value for t in at.text]
    jobs._fail_queued(job.id, message)
    at.run()
    assert not at.exception
    assert f"Job {job.id} · failed · Few-shot adaptation on collected" in [t.value for t in at.text]
    assert any("needs at least 2 images" in e.value for e in at.error)
    assert "No adaptation has finished yet" in " ".join(i.value for i in at.info)


def test_my_digits_with_a_digit_saved_once_cannot_be_queued():
    import numpy as np

    from core.datasets import save_collected

    for d in range(10):
        for _ in range(1 if d == 3 else 2):
            img = np.full((28, 28), 255, np.uint8)
            img[6:22, 10 + d % 3:14 + d % 3] = 0
            save_collected(img, d)
    at = AppTest.from_file("../pages/adapt.py", default_timeout=TIMEOUT).run()
    at.selectbox(key="adapt_target").set_value("collected").run()
    assert not at.exception
    assert "needs at least 2 images" in at.error[0].value
    assert at.button(key="FormSubmitter:adapt_form-Queue adaptation").disabled
