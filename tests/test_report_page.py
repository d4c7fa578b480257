"""The Reused-model report page through AppTest: drill-down, pagination, reset, model choice, automation,
warnings, the lazy views, and a cached evaluation that renders without TensorFlow.

The three evaluations of scikit-learn digits are computed once for the module and copied into each test's own
data folder (the evaluation cache is keyed by content, so a copy is exactly what the page would compute).
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from core.reframing import METHODS
from tests.conftest import ROOT, canvas, headline, saved_adaptation

TIMEOUT = 120
PAGE = "../pages/report.py"


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory):
    """The evaluation cache of scikit-learn digits with every method, computed once."""
    from core.datasets import load_sklearn_digits
    from core.evaluation import compare_methods
    from core.models import Predictor

    home = tmp_path_factory.mktemp("warm-home")
    old = os.environ.get("DIGITLAB_HOME")
    os.environ["DIGITLAB_HOME"] = str(home)
    try:
        compare_methods(Predictor.load(), load_sklearn_digits())
    finally:  # put it back as it was: an empty value would send later writes to the working directory
        if old is None:
            del os.environ["DIGITLAB_HOME"]
        else:
            os.environ["DIGITLAB_HOME"] = old
    return home / "cache" / "evaluations"


@pytest.fixture(autouse=True)
def _cached(_isolated_home, warm_cache):
    shutil.copytree(warm_cache, Path(os.environ["DIGITLAB_HOME"]) / "cache" / "evaluations")


def sklearn_confusion() -> np.ndarray:
    """The confusion matrix the page shows by default (read from the copied evaluation cache)."""
    from core.datasets import load_sklearn_digits
    from core.evaluation import evaluate

    return evaluate(None, load_sklearn_digits(), "paper").confusion_matrix()


def report_page(**state):
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    for k, v in state.items():
        at.session_state[k] = v
    return at.run()


def selectbox(at, label):
    return next(s for s in at.selectbox if s.label == label)


def captions(at) -> list[str]:
    return [img.caption for el in at.get("image") for img in el.proto.imgs]


def confidences(at) -> list[int]:
    return [int(m.group(1)) for c in captions(at) if (m := re.search(r"\((\d+) %\)$", c))]


def test_default_page_headline_identity_and_the_commonest_mistake():
    at = report_page()
    assert not at.exception and not at.error
    figures = headline(at)
    assert list(figures) == ["Accuracy", "Macro precision", "Macro recall", "Macro F1"]
    assert figures["Accuracy"][0].endswith(" %") and figures["Accuracy"][1].startswith("95 % CI")
    text = " ".join(m.value for m in at.markdown)
    assert re.search(r"\*\*Automate \d+\.\d % of digits at ≥ 99\.0 % accuracy\*\* \(threshold 0\.\d{3}; accuracy "
                     r"\d+\.\d %, 95 % CI \d+\.\d-\d+\.\d %\)", text)
    caption = " ".join(c.value for c in at.caption)
    assert "34,826 parameters" in caption and "SHA-256" in caption and "input 28x28x1" in caption
    assert "trained on: MNIST training digits" in caption and "1,797 images evaluated" in caption
    # the drill-down opens on the commonest mistake: one tile (both images) per image, most confident first
    t, p = selectbox(at, "True digit").value, selectbox(at, "Predicted digit").value
    assert t != p
    shown = confidences(at)
    assert shown and shown == sorted(shown, reverse=True) and len(shown) <= 24
    assert all(f"true {t}, read {p}" in c for c in captions(at))


def test_choosing_a_cell_and_paging_through_it():
    at = report_page()
    cm = sklearn_confusion()
    for t in sorted(range(10), key=lambda d: -(cm[d].sum() - cm[d, d]))[:2] + [0]:  # two rows with mistakes, one
        selectbox(at, "True digit").set_value(t).run()  # choosing a true digit proposes its commonest mistake
        counts = [int(o.split("(")[1].rstrip(")")) for o in selectbox(at, "Predicted digit").options[:10]]
        wrong = [c if p != t else -1 for p, c in enumerate(counts)]
        assert selectbox(at, "Predicted digit").value == (int(np.argmax(wrong)) if max(wrong) > 0 else t)
    selectbox(at, "True digit").set_value(0).run()
    selectbox(at, "Predicted digit").set_value(0).run()  # the right answers: 178 images, 8 pages of 24
    assert "True 0, read as 0: 178 images, 1-24 shown" in " ".join(c.value for c in at.caption)
    first = confidences(at)
    assert len(first) == 24 and first == sorted(first, reverse=True)
    page = next(n for n in at.number_input if n.label.startswith("Page"))
    assert page.label == "Page (of 8)"
    page.set_value(8).run()
    assert not at.exception
    assert len(captions(at)) == 178 - 7 * 24 and max(confidences(at)) <= min(first)
    assert "169-178 shown" in " ".join(c.value for c in at.caption)


def test_a_cell_with_one_image_says_1_image():
    cm = sklearn_confusion()
    ones = np.argwhere(cm == 1)
    if not len(ones):
        pytest.skip("no confusion-matrix cell holds exactly one image with this model")
    t, p = (int(v) for v in ones[0])
    at = report_page()
    selectbox(at, "True digit").set_value(t).run()
    selectbox(at, "Predicted digit").set_value(p).run()
    text = " ".join(c.value for c in at.caption)
    assert f"True {t}, read as {p}: 1 image." in text and "1 images" not in text
    assert len(captions(at)) == 1


def test_the_selection_resets_when_the_data_set_method_or_model_changes():
    at = report_page()
    selectbox(at, "True digit").set_value(0).run()
    selectbox(at, "Predicted digit").set_value(0).run()
    at.radio(key="method").set_value("mnist").run()
    assert not at.exception
    t, p = selectbox(at, "True digit").value, selectbox(at, "Predicted digit").value
    assert (t, p) != (0, 0) and t != p  # the new evaluation's commonest mistake, not the old choice
    assert all(f"true {t}, read {p}" in c for c in captions(at))
    at.selectbox(key="source").set_value("upload").run()
    one = _png(canvas([((140, 50), (140, 230))], rgba=False))
    at.file_uploader(key="zip").upload("scans.zip", _zip([("s/1/a.png", one), ("s/1/b.png", one)]),
                                       "application/zip").run()
    assert not at.exception and not at.error
    assert "Choose an option" not in str(selectbox(at, "True digit").value)
    assert "2 images evaluated" in " ".join(c.value for c in at.caption)


def test_clicking_a_matrix_cell_selects_it():
    from core.report import confusion_frame
    from ui.report_view import cell_from_selection, commonest_mistake, confusion_cells, confusion_spec

    # what st.vega_lite_chart reports for a click on the cell (true 1, read as 8), and for a second click
    assert cell_from_selection({"selection": {"cell": [{"true": 1, "predicted": 8}]}}) == (1, 8)
    assert cell_from_selection({"selection": {"cell": []}}) is None and cell_from_selection(None) is None
    cm = np.eye(10, dtype=int) * 5
    cm[3, 5], cm[3, 8], cm[7, 1] = 2, 4, 9
    assert commonest_mistake(cm) == (7, 1) and commonest_mistake(cm, 3) == (3, 8)
    assert commonest_mistake(np.eye(10, dtype=int), 4) == (4, 4)
    y_true = np.repeat(np.arange(10), cm.sum(axis=1))
    frame = confusion_cells(cm, confusion_frame(cm, y_true, normalise=True), (3, 8))
    cells = {(r["true"], r["predicted"]): r for r in frame.to_dict(orient="records")}
    assert len(cells) == 100 and cells[3, 8]["chosen"] and not cells[7, 1]["chosen"] and frame["chosen"].sum() == 1
    assert cells[3, 8]["images"] == 4 and cells[3, 8]["count_label"] == "4"
    assert cells[3, 8]["share_label"] == "36"  # 4 of the row's 11 images, in percent
    assert cells[0, 1]["count_label"] == cells[0, 1]["share_label"] == ""  # an empty cell stays blank
    assert not confusion_cells(cm, confusion_frame(cm, y_true, normalise=True), None)["chosen"].any()
    spec = confusion_spec()
    assert "data" not in spec  # the spec never changes: Streamlit swaps the data in the drawn chart
    assert spec["layer"][0]["params"][0]["select"]["fields"] == ["true", "predicted"]
    assert spec["params"][0]["bind"]["input"] == "checkbox"  # counts or shares: switched in the browser


def test_the_matrix_is_clickable_on_the_page():
    at = report_page()
    charts = at.get("vega_lite_chart")
    assert len(charts) == 1
    assert '"name":"cell"' in charts[0].proto.spec.replace(" ", "")  # the point selection a click fills
    assert list(charts[0].proto.selection_mode) == ["cell"] and charts[0].proto.id  # reruns on a click


def test_an_uploaded_model_that_is_not_a_model_gets_an_error():
    at = report_page(model="upload")
    at.file_uploader(key="model_upload").upload("mine.keras", b"not a keras file", "application/octet-stream")
    at.run()
    assert not at.exception
    assert at.error and "mine.keras" in at.error[0].value
    assert not headline(at)


def test_a_run_model_is_evaluated_and_identified():
    at = report_page(model="mlp-mnist-subset", source="upload")
    one = _png(canvas([((140, 50), (140, 230))], rgba=False))
    seven = _png(canvas([((60, 60), (220, 60)), ((220, 60), (120, 240))], rgba=False))
    at.file_uploader(key="zip").upload("scans.zip", _zip([("s/1/a.png", one), ("s/7/b.png", seven)]),
                                       "application/zip").run()
    assert not at.exception and not at.error
    caption = " ".join(c.value for c in at.caption)
    assert "MLP 256-128 on the embedded MNIST subset" in caption and "235,146 parameters" in caption
    assert "input 28x28x1" in caption and "2 images evaluated" in caption
    assert "Accuracy" in headline(at)


def test_automation_view_follows_the_target_accuracy():
    at = report_page(view="Automation")
    assert not at.exception
    headline = next(m.value for m in at.markdown if "Automate" in m.value)
    spec = json.loads(at.get("vega_lite_chart")[0].proto.spec)  # Vega-Lite: no plotly.js to load for this view
    rule = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "rule")
    assert rule["data"]["values"][0]["target"] == pytest.approx(0.99)
    point = next(layer for layer in spec["layer"] if layer["mark"].get("color") == "#d62728")["data"]["values"][0]
    assert 0 < point["coverage"] <= 1 and point["accuracy"] >= 0.99  # the automation point keeps the target
    table = at.table[0].value
    assert list(table["predicted digit"]) == list(range(10))
    assert all(v.endswith(" %") for v in table["automated"]) and "accuracy (95 % CI)" in table.columns
    assert set(table["enough images to show it"]) <= {"yes"} | {f"no: {k} of 381" for k in range(381)}
    at.number_input(key="target_accuracy").set_value(95.0).run()
    lower = next(m.value for m in at.markdown if "Automate" in m.value)
    share = lambda s: float(re.search(r"Automate (\d+\.\d) %", s).group(1))  # noqa: E731
    assert "≥ 95.0 % accuracy" in lower and share(lower) > share(headline)


def test_warnings_are_shown(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data folder should be")
    monkeypatch.setenv("DIGITLAB_HOME", str(blocker / "home"))  # the evaluation cannot be cached
    at = report_page()
    assert not at.exception and not at.error
    assert any("not cached" in w.value for w in at.warning)
    assert "Accuracy" in headline(at)


def test_per_digit_methods_and_html_views():
    at = report_page(view="Per digit")
    assert not at.exception
    counts, rates = at.table[0].value, at.table[1].value
    assert list(counts.columns) == ["digit", "tp", "tn", "fp", "fn"]
    assert (counts[["tp", "tn", "fp", "fn"]].sum(axis=1) == 1797).all()
    assert list(rates.columns) == ["digit", "images", "one-vs-rest accuracy", "recall (95 % CI)",
                                   "precision (95 % CI)", "F1"]
    assert len(rates) == 10 and all(" % [" in v for v in rates["recall (95 % CI)"])
    at.segmented_control(key="view").set_value("Methods").run()
    assert not at.exception
    accuracy, recall = (json.loads(c.proto.spec) for c in at.get("vega_lite_chart"))
    assert accuracy["title"].startswith("Accuracy") and recall["title"] == "Recall per digit (95 % interval)"
    assert recall["encoding"]["x"]["type"] == "ordinal"  # every digit labelled, not every other one
    bars = pa.ipc.open_stream(at.get("vega_lite_chart")[1].proto.data.data).read_all().to_pylist()
    assert {b["method"] for b in bars} == set(METHODS) and {b["digit"] for b in bars} == {str(d) for d in range(10)}
    assert all(b["low"] <= b["recall"] <= b["high"] for b in bars)  # each bar with its interval
    # measured on scikit-learn digits: 85 % of naive's answers are 0 or 4
    assert any("of its answers here are 0 or 4" in c.value for c in at.caption)
    at.segmented_control(key="view").set_value("HTML").run()
    assert not at.exception
    assert "Download the whole report (HTML, opens offline)" in [b.proto.label for b in at.get("download_button")]
    verdict = " ".join(m.value for m in at.markdown)
    assert "The model reads" in verdict and "Weakest digit" in verdict
    assert "No few-shot adaptation has been measured" in verdict
    assert "report_adaptation" not in [b.key for b in at.selectbox]  # nothing to choose from


def test_the_html_view_cites_the_chosen_adaptation():
    import os

    os.utime(saved_adaptation(name="full"), (1e9, 1e9))
    saved_adaptation(name="quick", seeds=1)
    at = report_page(view="HTML")
    assert not at.exception and at.selectbox(key="report_adaptation").value == "full"  # 3 seeds before 1
    assert "(± 1.0 points over 3 seeds)" in " ".join(m.value for m in at.markdown)
    at.selectbox(key="report_adaptation").set_value("quick").run()
    assert not at.exception and "(1 seed: no spread measured)" in " ".join(m.value for m in at.markdown)


def test_rates_table_puts_each_interval_beside_its_value_and_marks_the_weakest():
    from core.evaluation import per_digit
    from core.report import rates_frame
    from ui.report_view import rates_table

    # digit 7 is absent (recall and F1 0 by convention), digit 2 is never predicted (precision undefined),
    # digit 9 is the weakest real one: half its images read as 4
    y_true = np.array([d for d in range(10) if d != 7 for _ in range(4)])
    y_pred = y_true.copy()
    y_pred[y_true == 9] = [9, 9, 4, 4]
    y_pred[y_true == 2] = [3, 3, 3, 3]
    rates = rates_frame(per_digit(y_true, y_pred))
    styler = rates_table(rates)
    shown = styler.data
    assert shown.loc[9, "recall (95 % CI)"].startswith("50.0 % [") and shown.loc[7, "recall (95 % CI)"] == "n/a"
    assert shown.loc[2, "precision (95 % CI)"] == "n/a" and shown.loc[0, "one-vs-rest accuracy"] == "100.0 %"
    styler._compute()
    marked = {(r, shown.columns[c]) for (r, c), css in styler.ctx.items() if css}
    # the weakest of each rate among the digits that have it: recall and F1 at digit 2 (none read right),
    # precision at digit 3 (4 of its 8 answers wrong) -- never the absent 7
    assert marked == {(2, "recall (95 % CI)"), (2, "F1"), (3, "precision (95 % CI)")}


def _marked(styler) -> set:
    styler._compute()
    return {(r, styler.data.columns[c]) for (r, c), css in styler.ctx.items() if css}


def test_a_perfect_set_marks_no_weakest_digit_and_no_errors():
    # five saved digits, all read right (a new user's walk-through): nothing to highlight
    from core.evaluation import per_digit
    import pandas as pd

    from core.report import COUNT_COLUMNS, rates_frame
    from ui.report_view import counts_table, rates_table

    y = np.array([1, 3, 5, 7, 9])
    assert _marked(rates_table(rates_frame(per_digit(y, y)))) == set()
    counts = pd.DataFrame(per_digit(y, y))[COUNT_COLUMNS]
    assert _marked(counts_table(counts)) == set()
    y_pred = y.copy()
    y_pred[0] = 7  # one 1 read as 7: a false negative of 1, a false positive of 7
    counts = pd.DataFrame(per_digit(y, y_pred))[COUNT_COLUMNS]
    assert _marked(counts_table(counts)) == {(1, "fn"), (7, "fp")}


def test_small_shares_are_not_written_as_zero_and_shades_follow_the_share():
    from core.evaluation import BLANK
    from core.report import confusion_frame
    from ui.report_view import confusion_cells

    cm = np.zeros((10, 10), int)
    cm[0, 0], cm[0, 1] = 999, 1  # 0.1 % of the row
    cm[1, 1], cm[1, 7] = 2, 1  # and one more true 1 that was blank: the row has four images
    y_true = np.repeat(np.arange(10), cm.sum(axis=1) + (np.arange(10) == 1))
    y_pred = np.concatenate([np.repeat(np.arange(10), cm[0]), [1, 1, 7, BLANK]])
    shares = confusion_frame(cm, y_true, normalise=True, y_pred=y_pred)
    cells = confusion_cells(cm, shares, None).set_index(["true", "predicted"])
    assert cells.loc[(0, 1), "share_label"] == "<1" and cells.loc[(0, 2), "share_label"] == ""
    assert cells.loc[(0, 0), "share_label"] == ">99"  # 99.9 %: not 100 beside a '<1'
    assert cells.loc[(0, 1), "count_label"] == "1"
    assert cells.loc[(1, 1), "share_label"] == "50" and cells.loc[(1, 7), "share_label"] == "25"  # of 4, blank too
    assert cells.loc[(1, 1), "shade"] == pytest.approx(np.sqrt(0.5))  # shaded by the same share as its label


def test_numbers_view_reads_the_built_in_numbers_on_request():
    at = report_page(view="Numbers")
    assert not at.exception and "Numbers read exactly right" not in [m.label for m in at.metric]
    at.button(key="read_numbers").click().run()
    assert not at.exception
    read = [m for m in at.metric if m.label == "Numbers read exactly right"]
    assert read and read[0].value.endswith(" %") and read[0].proto.delta.startswith("95 % CI ")
    assert not [b for b in at.button if b.key == "read_numbers"]  # read: the button is gone, in the same run


def test_a_cached_evaluation_renders_without_tensorflow():
    code = ("import sys; from streamlit.testing.v1 import AppTest; "
            "at = AppTest.from_file('pages/report.py', default_timeout=60).run(); "
            "assert not at.exception, at.exception; assert not at.error, at.error; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["False", "False"]


def _png(img) -> bytes:
    import cv2

    return cv2.imencode(".png", img)[1].tobytes()


def _zip(entries) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def test_my_digits_with_nothing_saved_is_a_note_not_an_error():
    at = report_page(source="collected")
    assert not at.exception and not at.error
    assert "No digits saved yet" in at.info[0].value and not headline(at)


def test_a_few_saved_digits_show_no_automation_threshold():
    from core.datasets import save_collected
    from tests.conftest import canvas

    for _ in range(5):
        save_collected(canvas([((140, 50), (140, 230))], rgba=False)[:, :, 0], 1)
    at = report_page(source="collected", view="Automation")
    assert not at.exception and not at.error
    text = " ".join(m.value for m in at.markdown)
    assert "**Too few images to show ≥ 99.0 % accuracy** (5 images accepted; at least 381" in text
    assert "Too few images to show the target: no point is chosen." in " ".join(c.value for c in at.caption)
    table = at.table[0].value
    one = table[table["predicted digit"] == 1].iloc[0]
    assert one["automated"] == "100.0 %" and one["enough images to show it"] == "no: 5 of 381"
