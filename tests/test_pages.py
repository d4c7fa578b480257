"""Every page through streamlit.testing.v1.AppTest."""
import json

import cv2
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import canvas, headline

TIMEOUT = 120


def png(img) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


def test_app_opens_on_home_with_links():
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT).run()
    assert not at.exception
    assert at.title[0].value == "Digit Reuse Lab"
    text = " ".join(m.value for m in at.markdown)
    assert "domain shift" in text and "reframing" in text.lower()
    assert at.metric[0].label == "MNIST test accuracy"


def test_draw_page_starts_with_a_hint_and_no_prediction():
    at = AppTest.from_file("../pages/draw.py", default_timeout=TIMEOUT).run()
    assert not at.exception
    assert "Draw a digit" in at.info[0].value
    assert not [m for m in at.metric if m.label == "Predicted digit"]


def image_captions(at) -> str:
    """All st.image captions on the page (AppTest has no typed accessor for images)."""
    return " ".join(img.caption for el in at.get("image") for img in el.proto.imgs)


def _upload(at, name, data):
    at.segmented_control(key="source").set_value("Upload").run()
    at.file_uploader[0].upload(name, data, "image/png")
    return at.run()


def test_draw_page_upload_shows_every_stage_and_the_prediction():
    at = AppTest.from_file("../pages/draw.py", default_timeout=TIMEOUT).run()
    _upload(at, "one.png", png(canvas([((140, 50), (140, 230))], rgba=False)))
    at.radio(key="method").set_value("mnist").run()
    assert not at.exception and not at.error
    predicted = [m for m in at.metric if m.label == "Predicted digit"]
    assert predicted and predicted[0].value == "1"
    joined = image_captions(at)
    for stage in ("grayscale", "invert", "crop to ink", "fit 20x20", "centre of mass"):
        assert stage in joined
    side_by_side = [m.label for m in at.metric if m.label.endswith(": predicted")]
    assert side_by_side == ["naive: predicted", "paper: predicted", "mnist: predicted"]
    import pyarrow as pa

    chart = at.get("vega_lite_chart")[0].proto  # Vega-Lite, not plotly: a new tab need not load plotly.js
    assert json.loads(chart.spec)["title"] == "Class probabilities"
    bars = pa.ipc.open_stream(chart.data.data).read_all().to_pylist()  # Streamlit sends the values as Arrow
    assert [b["digit"] for b in bars] == [str(d) for d in range(10)]
    assert [b["digit"] for b in bars if b["predicted"]] == ["1"]
    assert sum(b["probability"] for b in bars) == pytest.approx(1, abs=1e-4)


def test_draw_page_method_choice_changes_the_strip():
    at = AppTest.from_file("../pages/draw.py", default_timeout=TIMEOUT).run()
    _upload(at, "one.png", png(canvas([((140, 50), (140, 230))], rgba=False)))
    joined = image_captions(at)  # the default is the paper's method
    assert "pad to square" in joined and "margin" in joined
    at.radio(key="method").set_value("mnist").run()
    assert "centre of mass" in image_captions(at)


@pytest.mark.parametrize("name, data, message", [
    ("notes.png", b"this is text", "not an image"),
    ("blank.png", png(np.full((200, 200), 255, np.uint8)), "blank"),
])
def test_draw_page_bad_or_blank_upload_gets_a_clear_message(name, data, message):
    at = AppTest.from_file("../pages/draw.py", default_timeout=TIMEOUT).run()
    _upload(at, name, data)
    assert not at.exception
    shown = " ".join(e.value for e in list(at.error) + list(at.info))
    assert message in shown
    assert not [m for m in at.metric if m.label == "Predicted digit"]


def test_draw_page_example_from_scikit_learn_digits():
    at = AppTest.from_file("../pages/draw.py", default_timeout=TIMEOUT).run()
    at.segmented_control(key="source").set_value("Example").run()
    assert not at.exception
    assert [m for m in at.metric if m.label == "Predicted digit"]


def _zip(entries) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def test_report_page_default_shows_the_papers_tables():
    at = AppTest.from_file("../pages/report.py", default_timeout=TIMEOUT).run()
    assert not at.exception and not at.error
    assert list(headline(at)) == ["Accuracy", "Macro precision", "Macro recall", "Macro F1"]
    assert "1,797 images evaluated" in " ".join(c.value for c in at.caption)
    at.segmented_control(key="view").set_value("Per digit").run()  # only the chosen view runs
    assert len(at.table) >= 2  # TP/TN/FP/FN and the rates (ten rows each: static tables)
    counts = at.table[0].value
    assert list(counts.columns) == ["digit", "tp", "tn", "fp", "fn"]
    assert (counts[["tp", "tn", "fp", "fn"]].sum(axis=1) == 1797).all()
    assert "Download TP/TN/FP/FN (CSV)" in [b.proto.label for b in at.get("download_button")]
    at.segmented_control(key="view").set_value("HTML").run()
    assert "Download the whole report (HTML, opens offline)" in [b.proto.label for b in at.get("download_button")]


def test_report_page_method_switch_and_the_matrix_shares_switch():
    at = AppTest.from_file("../pages/report.py", default_timeout=TIMEOUT).run()
    acc_default = headline(at)["Accuracy"][0]
    at.radio(key="method").set_value("naive").run()
    assert not at.exception
    assert headline(at)["Accuracy"][0] != acc_default
    chart = at.get("vega_lite_chart")[0].proto
    spec = json.loads(chart.spec)
    assert spec["params"][0]["bind"]["input"] == "checkbox"  # the chart's own checkbox, no rerun
    labels = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "text")
    assert labels["transform"][0]["calculate"] == "share ? datum.share_label : datum.count_label"
    assert [b.proto.label for b in at.get("download_button")][:2] == ["Download counts (CSV)",
                                                                       "Download row shares (CSV)"]


def test_report_page_upload_with_missing_classes_and_bad_files():
    at = AppTest.from_file("../pages/report.py", default_timeout=TIMEOUT).run()
    at.selectbox(key="source").set_value("upload").run()
    one = png(canvas([((140, 50), (140, 230))], rgba=False))
    data = _zip([("scans/1/a.png", one), ("scans/1/b.png", one), ("scans/1/bad.png", b"nope")])
    at.file_uploader(key="zip").upload("scans.zip", data, "application/zip")
    at.run()
    assert not at.exception
    assert "no images of digit(s) 0, 2, 3, 4, 5, 6, 7, 8, 9" in at.warning[0].value
    assert "2 images evaluated" in " ".join(c.value for c in at.caption)
    assert any("1 file skipped" in e.label for e in at.expander)


def test_report_page_not_a_zip_gets_an_error():
    at = AppTest.from_file("../pages/report.py", default_timeout=TIMEOUT).run()
    at.selectbox(key="source").set_value("upload").run()
    at.file_uploader(key="zip").upload("scans.zip", b"not a zip at all", "application/zip")
    at.run()
    assert not at.exception and "not a valid .zip" in at.error[0].value


def test_training_page_lists_project_and_reference_runs():
    at = AppTest.from_file("../pages/training.py", default_timeout=TIMEOUT).run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value  # the compact table; every column is in the details table below it
    assert {"reference", "project"} <= set(table["kind"])
    # transfer architectures say how they started: "VGG16 · ImageNet" or "VGG16 · scratch"
    archs = {a.split(" · ")[0] for a in table["architecture"]}
    assert {"MLP", "CNN", "VGG16", "MobileNetV2"} <= archs
    assert all(" · " in a for a in table["architecture"] if a.startswith(("VGG16", "MobileNetV2")))
    assert {"epochs", "best val acc", "test acc"} <= set(table.columns)
    details = at.dataframe[1].value
    assert {"params", "trainable params", "epochs", "s / epoch", "best val acc", "test acc"} <= set(details.columns)
    assert at.multiselect(key="chosen").value  # some runs overlaid by default
    assert "No jobs yet" in " ".join(c.value for c in at.caption)


def test_training_page_offline_imagenet_shows_how_to_get_weights():
    at = AppTest.from_file("../pages/training.py", default_timeout=TIMEOUT).run()
    at.selectbox(key="arch").set_value("vgg16").run()
    queue = next(b for b in at.button if b.label == "Queue training")
    queue.click().run()  # the form's submit button, with the preset's weights=imagenet
    assert not at.exception
    assert "not available offline" in at.error[0].value and "none" in at.error[0].value


def test_training_page_renders_without_tensorflow():
    import subprocess
    import sys

    code = ("import sys; from streamlit.testing.v1 import AppTest; "
            "at = AppTest.from_file('pages/training.py', default_timeout=60).run(); "
            "assert not at.exception, at.exception; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    from tests.conftest import ROOT

    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["False", "False"]


def test_draw_page_compares_the_other_models():
    at = AppTest.from_file("../pages/draw.py", default_timeout=TIMEOUT).run()
    _upload(at, "one.png", png(canvas([((140, 50), (140, 230))], rgba=False)))
    at.toggle(key="others").set_value(True).run()
    assert not at.exception
    table = at.dataframe[-1].value
    assert len(table) >= 3 and {"MLP", "CNN"} <= set(table["architecture"])
    assert table["predicted digit"].notna().all()


def test_draw_page_compares_the_shipped_model_and_not_the_model_under_test():
    at = AppTest.from_file("../pages/draw.py", default_timeout=TIMEOUT).run()
    at.selectbox(key="draw_model").set_value("mlp-mnist-subset").run()
    _upload(at, "one.png", png(canvas([((140, 50), (140, 230))], rgba=False)))
    at.toggle(key="others").set_value(True).run()
    assert not at.exception
    table = at.dataframe[-1].value
    assert "Reused model: Keras simple MNIST convnet" in set(table["model"])
    assert "MLP 256-128 on the embedded MNIST subset" not in set(table["model"])
    assert "note" not in table.columns  # every model answered


def test_draw_page_saves_a_labelled_digit_to_my_digits(tmp_path):
    from core.datasets import load_target

    at = AppTest.from_file("../pages/draw.py", default_timeout=TIMEOUT).run()
    _upload(at, "one.png", png(canvas([((140, 50), (140, 230))], rgba=False)))
    assert at.selectbox(key="label").value == 1  # proposed: the predicted digit
    at.selectbox(key="label").set_value(7)
    at.button(key="save").click().run()
    assert not at.exception
    collected = load_target("collected")
    assert collected.labels.tolist() == [7] and collected.images[0].shape[:2] == (280, 280)
    at.button(key="save").click().run()  # a second click on the same drawing
    assert not at.exception and "Already saved as a 7" in at.toast[0].value
    assert load_target("collected").labels.tolist() == [7]  # no copy


# --- Draw page: both screens, stages you can see, small defects (issue 8) ---


def test_draw_page_has_a_pen_width_and_a_clear_that_gives_a_new_canvas():
    at = AppTest.from_file("../pages/draw.py", default_timeout=TIMEOUT).run()
    assert at.slider(key="pen").value == 16 and at.slider(key="pen").label == "Pen width (px)"
    at.slider(key="pen").set_value(24).run()
    at.button(key="clear").click().run()
    assert not at.exception
    assert at.session_state["canvas_n"] == 1  # the canvas's key changed: an empty canvas is mounted
    assert at.slider(key="pen").value == 24  # the pen is kept
    assert "Draw a digit" in at.info[0].value


def test_draw_page_bad_upload_is_not_answered_with_draw_a_digit():
    at = AppTest.from_file("../pages/draw.py", default_timeout=TIMEOUT).run()
    assert "Draw a digit" in at.info[0].value
    at.segmented_control(key="source").set_value("Upload").run()
    assert "Upload a photo" in at.info[0].value and "canvas" not in at.info[0].value
    _upload(at, "notes.png", b"this is text")
    assert "not an image" in at.error[0].value
    assert "could not be read" in at.info[0].value and "canvas" not in at.info[0].value


def test_draw_page_confidence_pills_carry_no_arrow_and_counts_read_right():
    from streamlit.proto.Metric_pb2 import Metric

    at = AppTest.from_file("../pages/draw.py", default_timeout=TIMEOUT).run()
    _upload(at, "one.png", png(canvas([((140, 50), (140, 230))], rgba=False)))
    pills = [m for m in at.metric if m.proto.delta.endswith("confident")]
    assert len(pills) == 4  # the answer and the three methods
    assert all(m.proto.direction == Metric.MetricDirection.NONE for m in pills)  # not an "increase"
    assert all(m.proto.color == Metric.MetricColor.GRAY for m in pills)
    assert at.metric[0].label == "Predicted digit"  # the answer comes first, above the stages
    assert "other trained models" in at.toggle(key="others").label


def test_draw_page_example_is_shown_framed_at_its_real_pixels():
    at = AppTest.from_file("../pages/draw.py", default_timeout=TIMEOUT).run()
    at.segmented_control(key="source").set_value("Example").run()
    assert not at.exception
    assert "true label" in image_captions(at)


@pytest.mark.parametrize("method", ["naive", "paper", "mnist"])
@pytest.mark.parametrize("image", ["canvas one", "small scan", "light on dark"])
def test_every_stage_is_framed_and_captioned_in_a_few_short_words(method, image):
    from core.datasets import load_sklearn_digits
    from core.reframing import reframe
    from ui.render import FRAME_PX, FRAME_VALUE, framed, stage_caption

    img = {"canvas one": canvas([((140, 50), (140, 230))]),
           "small scan": load_sklearn_digits().images[0],
           "light on dark": 255 - canvas([((60, 140), (220, 140))], rgba=False)}[image]
    for stage in reframe(img, method).stages:
        thumb = framed(stage.image, 112)
        assert thumb.shape == (112, 112)
        edge = np.concatenate([thumb[:FRAME_PX].ravel(), thumb[-FRAME_PX:].ravel(),
                               thumb[:, :FRAME_PX].ravel(), thumb[:, -FRAME_PX:].ravel()])
        assert np.allclose(edge, FRAME_VALUE)  # a white stage (pad, margin) still shows where it ends
        caption = stage_caption(stage)
        assert 0 < len(caption) <= 32, (stage.name, caption)
        # no word wider than a thumbnail's column at 1024x768 (~80 px at 14 px), so none breaks mid-word
        assert max(len(w) for w in caption.split()) <= 10, (stage.name, caption)


# --- My digits (issue 8): counted per label, shown, relabelled and deleted ---


def _save_digits(label, n=1):
    from core.datasets import save_collected

    return [save_collected(canvas([((140, 50), (140, 230))]), label) for _ in range(n)]


def _my_digits():
    return AppTest.from_file("../pages/my_digits.py", default_timeout=TIMEOUT).run()


def test_my_digits_page_with_nothing_saved_says_how_to_start():
    at = _my_digits()
    assert not at.exception and not at.error
    assert "No digits saved yet" in at.info[0].value and "Save to my digits" in at.info[0].value


def test_my_digits_page_counts_and_shows_every_digit_by_label():
    _save_digits(1, 2)
    _save_digits(7)
    at = _my_digits()
    assert not at.exception and not at.error
    assert at.metric[0].label == "Saved digits" and at.metric[0].value == "3"
    assert [s.value for s in at.selectbox] == [1, 1, 7]  # one label choice per digit, grouped by label
    assert [h.value for h in at.subheader] == ["Labelled 1", "Labelled 7"]
    assert len(at.get("image")) == 3
    assert "None yet labelled 0, 2, 3, 4, 5, 6, 8, 9" in " ".join(c.value for c in at.caption)
    import pyarrow as pa

    bars = pa.ipc.open_stream(at.get("vega_lite_chart")[0].proto.data.data).read_all().to_pylist()
    assert [(b["label"], b["digits"]) for b in bars] == [(str(d), {1: 2, 7: 1}.get(d, 0)) for d in range(10)]


def test_my_digits_page_relabels_a_digit():
    from core.collected import counts

    (seven,) = _save_digits(7)
    _save_digits(1)
    at = _my_digits()
    at.selectbox(key=f"label-7/{seven.name}").set_value(1).run()
    assert not at.exception and not at.error
    assert counts()[1] == 2 and counts()[7] == 0
    assert not seven.exists() and (seven.parent.parent / "1" / seven.name).exists()
    assert [s.value for s in at.selectbox] == [1, 1]
    assert "Moved" in at.toast[0].value


def test_my_digits_page_deletes_only_the_confirmed_digit():
    first, second = _save_digits(4, 2)
    at = _my_digits()
    # Deleting takes two steps: open the digit's Delete popover, then confirm inside it.
    assert {b.label for b in at.button} == {"Delete it"}
    at.button(key=f"confirm-4/{first.name}").click().run()
    assert not at.exception and not at.error
    assert not first.exists() and second.exists()
    assert len(at.selectbox) == 1 and "Deleted" in at.toast[0].value


def test_my_digits_page_on_a_read_only_server_shows_but_never_changes(monkeypatch):
    _save_digits(2, 2)
    monkeypatch.setenv("DIGITLAB_READ_ONLY", "1")
    at = _my_digits()
    assert not at.exception
    assert not at.selectbox and not at.button  # no relabel, no delete
    assert "read-only" in at.info[0].value and len(at.get("image")) == 2


def test_my_digits_page_shows_a_file_name_literally():
    import os

    from ui.safe import md_escape

    (path,) = _save_digits(3)
    odd = path.with_name("*bold* [x](y).png")
    os.replace(path, odd)
    at = _my_digits()
    assert not at.exception
    assert any(md_escape(odd.name) in c.value for c in at.caption)  # in the delete confirmation
    at.button(key=f"confirm-3/{odd.name}").click().run()
    assert not odd.exists()


def test_my_digits_page_opens_with_the_newest_of_a_large_class_then_shows_all():
    _save_digits(5, 14)
    at = _my_digits()
    assert len(at.get("image")) == 12 and "The newest 12 of 14." in [c.value for c in at.caption]
    at.toggle(key="all-5").set_value(True).run()
    assert len(at.get("image")) == 14


def test_draw_page_model_under_test_can_be_a_run_or_an_uploaded_file(tmp_path):
    import keras

    at = AppTest.from_file("../pages/draw.py", default_timeout=TIMEOUT).run()
    _upload(at, "one.png", png(canvas([((140, 50), (140, 230))], rgba=False)))
    captions = " ".join(c.value for c in at.caption)
    assert "Model: simple\\_cnn" in captions or "Model: simple_cnn" in captions
    mlp = next(o for o in at.selectbox(key="draw_model").options if "MLP" in o)
    at.selectbox(key="draw_model").select(mlp).run()
    assert not at.exception and at.metric[0].value == "1"
    assert "235,146 parameters" in " ".join(c.value for c in at.caption)
    inputs = keras.Input((784,))
    flat = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(inputs), name="flat_user_model")
    path = tmp_path / "mine.keras"
    flat.save(path)
    at.selectbox(key="draw_model").set_value("upload").run()
    assert "Upload a Keras model on the left" in " ".join(i.value for i in at.info)
    at.file_uploader(key="draw_model_upload").upload("mine.keras", path.read_bytes(), "application/zip").run()
    assert not at.exception and not at.error
    assert "flat" in " ".join(c.value for c in at.caption) and at.metric[0].value in [str(d) for d in range(10)]


def test_kpi_row_shows_each_figure_as_a_label_a_value_and_a_note():
    def page():
        from ui.render import kpi_row

        kpi_row([("Accuracy", "94.1 %", "95 % CI 92.9-95.1 %"), ("a_b [c]", "#1 *"), ("Macro F1", "1 %", None)],
                key="headline")

    at = AppTest.from_function(page).run()
    assert not at.exception
    assert headline(at) == {"Accuracy": ("94.1 %", "95 % CI 92.9-95.1 %"), "a_b [c]": ("#1 *", None),
                            "Macro F1": ("1 %", None)}
    assert all(not h.proto.anchor and h.proto.hide_anchor for h in at.header)  # a number, not a section to link
