"""The Training Runs page as a run comparison tool: compact table, overlay, rename/delete, settings side by side.

Runs are written into the per-test run store (tests/conftest.py sets DIGITLAB_HOME) with core.runs.RunWriter;
no test trains or imports TensorFlow.
"""
import json
import os
import re
import time

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core import jobs, runs
from core.process import process_token
from core.training import RunConfig
from ui import downloads_view, runs_view
from ui.safe import md_escape

TIMEOUT = 120
HOSTILE = "**x** [link](http://evil) <img src=x onerror=alert(1)>"


@pytest.fixture(autouse=True)
def no_worker(monkeypatch):
    """The page starts a worker for queued jobs; in a test nothing may train."""
    monkeypatch.setattr(jobs, "ensure_worker", lambda: None)


def own_run(run_id, title=None, status="done", test_accuracy=0.9, epochs=2, **config):
    w = runs.RunWriter(runs.user_runs_dir() / run_id)
    w.write_config({"architecture": "mlp", "dataset": "mnist-subset", "batch_size": 32, "epochs": epochs,
                    "learning_rate": 0.001, "optimizer": "adam", **config})
    w.update_info(status=status, title=title or f"run {run_id}", dataset="mnist-subset", params=1000,
                  trainable_params=1000, device="CPU (x86_64)")
    if status == "running":
        w.update_info(process=process_token())  # this test's process: alive, so the run reads "running"
    for e in range(1, epochs + 1):
        w.append_epoch({"epoch": e, "loss": 1 / e, "accuracy": 0.5 + e / 100, "val_loss": 1.1 / e,
                        "val_accuracy": 0.4 + e / 100, "seconds": 2})
    if status != "running":
        w.write_metrics({"test_accuracy": test_accuracy, "test_n": 10000})
    return w


def page() -> AppTest:
    at = AppTest.from_file("../pages/training.py", default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    return at


class Chart:
    """A Vega-Lite chart as the page sent it: its spec, and its points (Streamlit sends them as Arrow)."""

    def __init__(self, proto):
        import pyarrow as pa

        self.spec = json.loads(proto.spec)
        self.rows = pa.ipc.open_stream(proto.data.data).read_all().to_pandas()

    def names(self) -> list[str]:
        """The series in the legend, in its order."""
        return self.spec["vconcat"][0]["encoding"]["color"]["scale"]["domain"]

    def colors(self) -> dict[str, str]:
        scale = self.spec["vconcat"][0]["encoding"]["color"]["scale"]
        return dict(zip(scale["domain"], scale["range"]))

    def x_encoding(self) -> dict:
        return self.spec["vconcat"][-1]["encoding"]["x"]


def charts(at) -> list[Chart]:
    return [Chart(c.proto) for c in at.get("vega_lite_chart")]


def figure(at) -> Chart:
    """The overlay of runs' curves (the page's first chart)."""
    found = charts(at)
    assert found and "run" in found[0].rows.columns
    return found[0]


def overlay(at):
    """The "Runs to overlay" multiselect (its key changes when runs join or leave the overlay)."""
    return next(m for m in at.multiselect if m.label == "Runs to overlay")


def texts(at) -> str:
    return " ".join(e.value for e in list(at.markdown) + list(at.caption) + list(at.success) + list(at.error)
                    + list(at.text))


# --- the runs table ----------------------------------------------------------------------------------------------

def test_compact_table_shows_titles_and_the_essential_columns():
    own_run("20261123-101010-mlp", title="My tiny MLP")
    at = page()
    compact, details = at.dataframe[0].value, at.dataframe[1].value
    assert list(compact.columns) == ["title", "status", "test acc", "best val acc", "epochs", "architecture",
                                     "kind", "dataset"]
    assert "My tiny MLP" in set(compact["title"]) and "20261123-101010-mlp" not in compact.to_string()
    assert {"id", "params", "trainable params", "s / epoch", "device", "weights", "source", "model file",
            "problem"} <= set(details.columns)
    assert details.set_index("id").loc["20261123-101010-mlp", "title"] == "My tiny MLP"
    arch = details.set_index("id")["architecture"]  # transfer and scratch told apart where both are possible
    assert arch["prac2-fashion-vgg16-transfer"] == "VGG16 · ImageNet" and arch["vgg16-scratch-32"] == "VGG16 · scratch"
    assert arch["20261123-101010-mlp"] == "MLP"


def test_reference_runs_show_blanks_not_none():
    at = page()
    details = at.dataframe[1].value.set_index("id")
    ref = details.loc["lab3-mnist-digit-cnn"]
    assert pd.isna(ref["params"]) and pd.isna(ref["trainable params"])  # shown blank by the NumberColumn
    assert str(details["params"].dtype) == "Int64"  # pandas NA, not None or NaN-as-float
    assert details.loc["prac2-fashion-cnn-simple", "params"] == 50186
    for column in details.columns:
        assert not details[column].astype(object).isin(["None", "nan", None]).any(), column
    assert all(d.proto.placeholder == "" and d.proto.HasField("placeholder") for d in at.dataframe[:2])


def test_cancelled_and_failed_runs_are_marked_and_not_overlaid_by_default():
    own_run("a-done", title="finished run")
    own_run("b-cancelled", title="stopped run", status="cancelled", test_accuracy=0.11)
    own_run("c-failed", title="broken run", status="failed")
    at = page()
    compact = at.dataframe[0].value.set_index("title")
    assert compact.loc["stopped run", "status"] == "cancelled" and compact.loc["broken run", "status"] == "failed"
    chosen = overlay(at)
    assert "a-done" in chosen.value and not {"b-cancelled", "c-failed"} & set(chosen.value)
    assert "stopped run [cancelled]" in chosen.options and "broken run [failed]" in chosen.options
    names = " ".join(figure(at).names())
    assert "finished run" in names and "stopped run" not in names and "broken run" not in names
    chosen.select("b-cancelled").run()  # still there to overlay on request
    assert "stopped run" in " ".join(figure(at).names())


def test_a_new_run_joins_the_table_and_the_overlay_on_the_next_rerun():
    own_run("a-first", title="first")
    at = page()
    overlay(at).unselect("reused-cnn").run()
    own_run("b-second", title="second")  # e.g. a job finished: the job monitor reruns the page
    at.run()
    assert "second" in set(at.dataframe[0].value["title"])
    chosen = overlay(at).value
    assert "b-second" in chosen and "reused-cnn" not in chosen  # the user's own choice is kept


def test_a_run_that_finishes_loses_its_running_mark_in_the_overlay_chooser():
    """The browser keeps a chosen option's label for as long as the widget lives: a status change must give the
    chooser a new key, or a finished run reads "[running]" until the page is reloaded."""
    w = own_run("live", title="training now", status="running", epochs=2)
    at = page()
    before = overlay(at)
    assert "live" in before.value and any("[running]" in o for o in before.options)
    w.update_info(status="done")
    w.write_metrics({"test_accuracy": 0.9, "test_n": 10000})
    at.run()  # the job monitor reruns the page when the job's status changes
    after = overlay(at)
    assert after.key != before.key and "live" in after.value
    assert not any("[running]" in o for o in after.options)


# --- the curves ----------------------------------------------------------------------------------------------

def test_curves_mark_reference_runs_and_keep_the_legend_outside_the_plot():
    at = page()
    fig = figure(at)
    panels = fig.spec["vconcat"]
    assert [p["transform"][0]["filter"]["equal"] for p in panels] == ["loss", "accuracy"]  # one x axis, shared
    assert fig.spec["resolve"]["scale"]["x"] == "shared"
    encoding = panels[0]["encoding"]
    assert encoding["color"]["legend"]["orient"] == "bottom"  # under the plots, never over a curve or a title
    ref = fig.rows[fig.rows["published"]]
    own = fig.rows[~fig.rows["published"]]
    assert not ref.empty and not own.empty and ref["name"].str.startswith("[ref] ").all()
    shape = encoding["shape"]  # published runs' points are diamonds, ours dots, drawn from the rows' flag
    assert shape["field"] == "published" and dict(zip(shape["scale"]["domain"], shape["scale"]["range"])) == {
        False: "circle", True: "diamond"}
    dashes = encoding["strokeDash"]["scale"]
    assert dashes["domain"] == ["train", "validation"] and dashes["range"][0] == [1, 0]  # train solid, val dashed
    # one zoom, on the last panel: the shared x scale follows one selection (with one per panel, only the last)
    zooms = [p["name"] for panel in panels for p in panel["params"] if p.get("bind") == "scales"]
    assert zooms == ["zoom"] and panels[-1]["params"][-1]["name"] == "zoom"
    assert set(fig.rows["part"]) == {"train", "validation"}


def test_wall_time_is_on_a_log_scale_by_default():
    w = own_run("zero-time", title="instant first epoch", epochs=0)
    for e, seconds in ((1, 0), (2, 3)):  # the first epoch logged 0 s: its wall time is 0
        w.append_epoch({"epoch": e, "loss": 1 / e, "accuracy": 0.5, "val_loss": 1 / e, "val_accuracy": 0.5,
                        "seconds": seconds})
    own_run("untimed", title="no time logged", epochs=0).append_epoch({"epoch": 1, "loss": 1, "accuracy": 0.5})
    at = page()
    overlay(at).set_value(["zero-time", "untimed"]).run()
    at.radio(key="x_axis").set_value("wall time (s)").run()
    fig = figure(at)
    assert fig.x_encoding()["scale"]["type"] == "log" and "log scale" in fig.x_encoding()["title"]
    assert (fig.rows["x"] > 0).all() and len(fig.rows) > 0  # a log axis has no place for 0: a 0 would blank it
    assert fig.names() == ["instant first epoch"]  # a run with nothing to draw is not in the legend either
    at.toggle(key="log_x").set_value(False).run()
    assert figure(at).x_encoding()["scale"]["type"] == "linear"


def test_ten_runs_get_ten_distinct_colours_one_per_run():
    for k in range(10):
        own_run(f"r{k:02d}", title=f"run {k}")
    at = page()
    overlay(at).set_value([f"r{k:02d}" for k in range(10)]).run()
    fig = figure(at)
    colours = fig.colors()  # one colour per run: train and validation share their run's colour
    assert sorted(colours) == sorted(f"run {k}" for k in range(10))
    assert len(set(colours.values())) == 10 and set(fig.rows["series"]) == set(colours)


def test_a_running_run_is_overlaid_and_its_curves_grow():
    w = own_run("live", title="training now", status="running", epochs=2)
    at = page()
    assert "live" in overlay(at).value

    def live_points():
        rows = figure(at).rows
        rows = rows[(rows["run"] == "live") & (rows["metric"] == "loss") & (rows["part"] == "train")]
        assert set(rows["name"]) == {"training now (training)"}
        return len(rows)

    assert live_points() == 2
    w.append_epoch({"epoch": 3, "loss": 0.2, "accuracy": 0.6, "val_loss": 0.3, "val_accuracy": 0.55, "seconds": 2})
    at.run()  # what the fragment's run_every does every two seconds
    assert live_points() == 3


def test_titles_in_the_legend_are_shown_as_typed_and_long_ones_wrap():
    own_run("h", title=HOSTILE)
    at = page()
    overlay(at).set_value(["h"]).run()
    name = figure(at).names()[0]
    assert name.replace("\n", " ") == HOSTILE  # Vega draws text, never markup: nothing escaped, nothing lost
    wrapped = runs_view.legend_label("a " * 40)
    assert wrapped.count("\n") >= 2 and max(map(len, wrapped.split("\n"))) <= runs_view.LEGEND_WRAP


# --- rename and delete --------------------------------------------------------------------------------------

def test_only_own_runs_can_be_renamed_or_deleted():
    own_run("mine", title="mine")
    at = page()
    assert at.selectbox(key="manage_run").options == ["mine"]  # no shipped, reused or reference run


def test_no_own_runs_no_rename_or_delete():
    at = page()
    assert not [s for s in at.selectbox if s.key == "manage_run"]
    assert "Runs you train appear here." in texts(at)


def test_rename_a_run():
    w = own_run("mine", title="old title")
    at = page()
    at.text_input(key="title_mine").input("  new title ").run()
    at.button(key="rename").click().run()
    assert not at.exception
    assert "Renamed: new title" in [s.value for s in at.success]
    assert "new title" in set(at.dataframe[0].value["title"]) and "old title" not in set(at.dataframe[0].value["title"])
    assert runs.read_json(w.path / "run.json")["title"] == "new title"


def test_a_hostile_title_is_kept_and_shown_literally():
    own_run("mine", title="old")
    at = page()
    at.text_input(key="title_mine").input(HOSTILE).run()
    at.button(key="rename").click().run()
    assert runs.get_run("mine").title == HOSTILE
    assert [s.value for s in at.success] == [md_escape(f"Renamed: {HOSTILE}")]  # Markdown shows it as typed
    assert HOSTILE in [t.value for t in at.text]  # the delete confirmation names it with st.text
    rendered = " ".join(m.value for m in list(at.markdown) + list(at.success) + list(at.caption))
    assert HOSTILE not in rendered


def test_delete_a_run_after_confirming():
    own_run("keep", title="keep me")
    own_run("gone", title="delete me")
    at = page()
    at.selectbox(key="manage_run").set_value("gone").run()
    popover = [p.proto.popover for p in at.get("popover") if p.proto.popover.label == "Delete"]
    assert popover  # the delete button is behind a confirmation
    assert at.button(key="delete").label == "Delete for good"
    at.button(key="delete").click().run()
    assert not at.exception
    assert "Deleted: delete me" in [s.value for s in at.success]
    assert "delete me" not in set(at.dataframe[0].value["title"])
    assert "gone" not in overlay(at).value
    assert not (runs.user_runs_dir() / "gone").exists() and (runs.user_runs_dir() / "keep").exists()


def test_a_run_still_training_is_not_deleted():
    own_run("live", title="training now", status="running")
    at = page()
    at.button(key="delete").click().run()
    assert "still training" in " ".join(e.value for e in at.error)
    assert (runs.user_runs_dir() / "live").exists()


def test_read_only_mode_has_no_rename_or_delete(monkeypatch):
    own_run("mine", title="mine")
    monkeypatch.setenv("DIGITLAB_READ_ONLY", "1")
    at = page()
    assert not at.error
    assert not [s for s in at.selectbox if s.key == "manage_run"] and not at.text_input
    assert not [b for b in at.button if b.key in ("rename", "delete")] and not at.get("popover")
    assert "mine" in set(at.dataframe[0].value["title"])  # still listed to read


# --- settings side by side ----------------------------------------------------------------------------------

def highlighted_rows(at, frame_index: int = 2) -> set[int]:
    styles = at.dataframe[frame_index].proto.arrow_data.styler.styles
    rows = set()
    for selector, body in re.findall(r"([^{}]+)\{([^}]*)\}", styles):
        if runs_view.DIFFERS_STYLE.split(": ")[1] in body:
            rows |= {int(n) for n in re.findall(r"_row(\d+)_", selector)}
    return rows


def test_settings_side_by_side_highlight_what_differs():
    own_run("a", title="small batch", batch_size=16)
    own_run("b", title="big batch", batch_size=128, learning_rate=0.01)
    at = page()
    overlay(at).set_value(["a", "b", "lab3-mnist-digit-cnn"]).run()
    settings = at.dataframe[2].value
    assert list(settings.columns) == ["small batch", "big batch", "[ref] CNN 32-64 + BN + Dense256 (MNIST digits)"]
    assert settings.loc["batch size"].tolist() == ["16", "128", "128"]
    assert settings.loc["learning rate"].tolist() == ["0.001", "0.01", ""]  # the reference did not publish it
    keys = list(settings.index)
    lit = {keys[i] for i in highlighted_rows(at)}
    assert {"batch size", "learning rate", "architecture", "dataset"} <= lit
    assert not {"optimizer", "epochs", "device"} & lit  # the same wherever stated
    at.toggle(key="only_differs").set_value(True).run()
    assert set(at.dataframe[2].value.index) == lit


# --- the job monitor ----------------------------------------------------------------------------------------

def finished_job(status="done", test_accuracy=0.8765):
    job = jobs.submit(RunConfig.preset("mlp", epochs=2, max_samples=40), title="job title", start_worker=False)
    own_run(os.path.basename(job.run_dir), title="job title", status=status, test_accuracy=test_accuracy)
    with jobs._connect() as con:
        con.execute("UPDATE jobs SET status=?, epoch=2 WHERE id=?", (status, job.id))
    return job


def test_a_job_queued_from_the_page_is_listed_without_a_no_jobs_line():
    at = page()
    assert "No jobs yet" in " ".join(c.value for c in at.caption)
    at.selectbox(key="arch").set_value("mlp").run()
    next(b for b in at.button if b.label == "Queue training").click().run()
    assert not at.exception and len(jobs.list_jobs()) == 1
    captions = " ".join(c.value for c in at.caption)
    assert "No jobs yet" not in captions
    assert any(m.value.startswith("**Job 1") or "Job 1" in m.value for m in at.markdown)


def test_a_finished_job_shows_its_test_accuracy():
    finished_job()
    at = page()
    assert any("Test accuracy **0.8765** on 10,000 images" in m.value for m in at.markdown)


def test_a_cancelled_job_is_marked_and_its_run_not_overlaid():
    job = finished_job("cancelled", test_accuracy=0.11)
    at = page()
    assert any(f"**Job {job.id}** · `cancelled`" in m.value for m in at.markdown)
    assert any("cancelled: its curves are left out of the overlay" in c.value for c in at.caption)
    assert os.path.basename(job.run_dir) not in overlay(at).value


def test_a_pending_cancel_reads_cancelling():
    job = jobs.submit(RunConfig.preset("mlp", epochs=2, max_samples=40), start_worker=False)
    with jobs._connect() as con:
        con.execute("UPDATE jobs SET status='running', pid=?, cancel_requested=1 WHERE id=?", (os.getpid(), job.id))
    at = page()
    assert any("`cancelling...`" in m.value for m in at.markdown)
    assert at.button(key=f"cancel_{job.id}").disabled


def test_cancel_button_asks_the_job_to_stop():
    job = jobs.submit(RunConfig.preset("mlp", epochs=2, max_samples=40), start_worker=False)
    with jobs._connect() as con:
        con.execute("UPDATE jobs SET status='running', pid=? WHERE id=?", (os.getpid(), job.id))
    at = page()
    at.button(key=f"cancel_{job.id}").click().run()
    assert not at.exception and jobs.get_job(job.id).shown_status == "cancelling"
    assert any("`cancelling...`" in m.value for m in at.markdown)


def test_the_palette_keeps_a_dozen_runs_apart():
    import itertools

    rgb = [tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in runs_view.PALETTE[:12]]
    closest = min(sum((a - b) ** 2 for a, b in zip(p, q)) ** 0.5 for p, q in itertools.combinations(rgb, 2))
    assert len(set(runs_view.PALETTE)) >= 20 and closest > 60


def test_a_job_whose_run_was_deleted_says_so():
    job = finished_job()
    runs.delete_run(os.path.basename(job.run_dir))
    at = page()
    assert any("its run was deleted" in c.value for c in at.caption)


def test_older_finished_jobs_are_folded_away():
    for _ in range(7):
        finished_job()
    at = page()
    assert sum("Test accuracy **0.8765**" in m.value for m in at.markdown) == 5
    at.toggle(key="older_jobs").set_value(True).run()
    assert at.toggle(key="older_jobs").label == "Show 2 older jobs"
    assert sum("Test accuracy **0.8765**" in m.value for m in at.markdown) == 7


# --- the runs table at 1024 px ------------------------------------------------------------------------------

def test_compact_table_is_set_up_to_wrap_titles_and_fit_1024_px():
    """At 1024x768 with the sidebar open the table is 564 px wide: title, status and the three numbers must fit,
    and the title column's rows must be tall enough that Streamlit wraps a long title (it wraps only above 64 px).
    This checks the table's settings; the grid draws on a canvas, so whether the text wraps was checked by eye in
    Chromium screenshots at 1024x768, sidebar open and collapsed."""
    at = page()
    compact = at.dataframe[0].proto
    assert compact.row_height > 64
    widths = {c: runs_view.COLUMN_CONFIG[c]["width"] for c in runs_view.COMPACT_COLUMNS[:5]}
    assert sum(widths.values()) <= 564 and widths["title"] >= 240
    longest = max(len(t) for t in at.dataframe[0].value["title"])  # 81 characters among the shipped runs
    lines = compact.row_height // 19  # Streamlit's data grid: about 19 px per line of text
    assert lines * (widths["title"] - 16) // 7 >= longest  # about 7 px per character


# --- data sets and ImageNet weights -------------------------------------------------------------------------

def offline(monkeypatch):
    """Every download fails as offline, whatever network the test machine has: an unresolvable proxy."""
    for var in ("https_proxy", "http_proxy", "HTTPS_PROXY", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://proxy.nonexistent.invalid:3128")
    monkeypatch.setenv("no_proxy", "")
    monkeypatch.setenv("NO_PROXY", "")


def downloads_section(at):
    return next(e for e in at.expander if e.label == "Data sets and ImageNet weights")


def test_the_downloads_list_says_what_is_here_with_its_size_and_offers_fetch_for_the_rest(offline_keras):
    from tests.test_reproduce import write_mnist

    write_mnist(offline_keras)
    at = page()
    section = downloads_section(at)
    lines = [m.value for m in section.markdown]
    mnist = next(m for m in lines if m.startswith("MNIST"))
    size = (offline_keras / "datasets" / "mnist.npz").stat().st_size
    assert ":green[here]" in mnist and downloads_view.size_text(size) in mnist
    assert any(c.value == f"in {offline_keras / 'datasets' / 'mnist.npz'}" for c in section.caption)
    vgg = next(m for m in lines if m.startswith("VGG16"))
    assert ":orange[missing]" in vgg
    fetch = {b.key for b in section.button}
    assert {"fetch_vgg16", "fetch_fashion-mnist", "fetch_cifar10", "fetch_mobilenetv2-96"} <= fetch
    assert "fetch_mnist" not in fetch  # here already: nothing to fetch


def test_fetch_offline_says_so_within_seconds_and_how_to_provide_the_file(offline_keras, monkeypatch):
    offline(monkeypatch)
    at = page()
    t0 = time.monotonic()
    at.button(key="fetch_vgg16").click().run()
    assert time.monotonic() - t0 < 20  # never hangs: core gives up within its 10 s timeout at most
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "looks offline" in errors[0] and "VGG16 ImageNet weights" in errors[0]
    manual = " ".join(c.value for c in at.code)
    assert "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" in manual
    assert f"copy it to {offline_keras / 'models' / 'vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5'}" in manual
    assert not (offline_keras / "models").exists() or not list((offline_keras / "models").iterdir())
    assert at.button(key="fetch_vgg16")  # still offered: try again once online


def test_fetch_from_a_server_shows_success_and_the_resource_is_then_here(offline_keras, monkeypatch):
    """A fake resource served on 127.0.0.1: the button downloads it (progress reported), the page reruns and
    lists it as here."""
    import hashlib
    import http.server
    import threading

    from core import downloads

    body = os.urandom(200_000)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for i in range(0, len(body), 8192):
                self.wfile.write(body[i:i + 8192])

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/w.h5"
        monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
        fake = downloads.Resource("fake-weights", "weights", "Fake weights for a test",
                                  (downloads.RemoteFile("models/fake.h5", url, hashlib.sha256(body).hexdigest(),
                                                        "sha256"),), "tests", "python -m core weights fetch fake")
        table = downloads._resources()
        monkeypatch.setattr(downloads, "_resources", lambda: {**table, fake.name: fake})
        monkeypatch.setattr(downloads, "PROGRESS_INTERVAL", 0.0)
        seen = []
        real_fetch = downloads.fetch
        monkeypatch.setattr(downloads, "fetch", lambda name, progress=None, **kw: real_fetch(
            name, progress=lambda d, t: (seen.append((d, t)), progress(d, t)), **kw))
        at = page()
        at.button(key="fetch_fake-weights").click().run()
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert not at.exception and not at.error
    assert seen and seen[-1] == (len(body), len(body))  # the page's progress bar was fed to the end
    assert (offline_keras / "models" / "fake.h5").read_bytes() == body
    success = [s.value for s in at.success]
    assert len(success) == 1 and "Fake weights for a test: fetched, 200 kB" in success[0]
    assert "checksum published by Keras verified" in success[0]
    section = downloads_section(at)
    assert ":green[here], 200 kB" in " ".join(m.value for m in section.markdown)
    assert not [b for b in section.button if b.key == "fetch_fake-weights"]


# --- published runs, reproduced -----------------------------------------------------------------------------

def choose_reference(at, reference_id):
    at.selectbox(key="reproduce_ref").set_value(reference_id).run()
    assert not at.exception, at.exception
    return at


def test_reproduce_queues_the_published_settings_on_its_own_data(offline_keras):
    from tests.test_reproduce import write_fashion_mnist

    write_fashion_mnist(offline_keras)
    at = choose_reference(page(), "prac2-fashion-cnn-simple")
    assert not at.warning  # its data is here: nothing missing
    assert at.number_input(key="repro_epochs_prac2-fashion-cnn-simple").value == 10  # the published number
    at.number_input(key="repro_epochs_prac2-fashion-cnn-simple").set_value(2)
    at.number_input(key="repro_images_prac2-fashion-cnn-simple").set_value(500)
    assert not at.button(key="reproduce").disabled
    at.button(key="reproduce").click().run()
    assert not at.exception and not at.error
    queued = jobs.list_jobs()
    assert len(queued) == 1 and queued[0].status == "queued"
    job = queued[0]
    assert job.title == "Reproduction of Model 1: CNN simple 32-64 (Fashion-MNIST)"
    assert (job.config["reproduces"], job.config["dataset"], job.config["architecture"]) == \
        ("prac2-fashion-cnn-simple", "fashion-mnist", "cnn")
    assert (job.config["epochs"], job.config["max_samples"], job.config["batch_size"]) == (2, 500, 64)
    assert any(f"**Job {job.id}** · `queued`" in m.value for m in at.markdown)  # its card, at once


def test_missing_data_is_named_with_a_fetch_and_reproduce_waits_for_it(offline_keras, monkeypatch):
    offline(monkeypatch)
    at = page()  # the published MNIST CNN is chosen first; full MNIST is not in the Keras cache
    assert at.selectbox(key="reproduce_ref").value == "lab3-mnist-digit-cnn"
    warning = " ".join(w.value for w in at.warning)
    assert "needed before it can train: MNIST (60,000 training and 10,000 test digits)" in warning
    assert at.button(key="reproduce").disabled
    assert "or by hand: python -m core data fetch mnist" in [c.value for c in at.caption]
    at.button(key="reproduce_fetch_mnist").click().run()
    assert not at.exception
    assert "looks offline" in at.error[0].value and "datasets/mnist.npz" in at.code[0].value
    assert not jobs.list_jobs()


def test_a_polymnist_run_says_why_it_cannot_be_reproduced(offline_keras):
    at = choose_reference(page(), "lab3-polymnist-cnn")
    assert "(cannot be reproduced)" in at.selectbox(key="reproduce_ref").format_func("lab3-polymnist-cnn")
    warning = " ".join(w.value for w in at.warning)
    assert "cannot be reproduced: PolyMNIST" in warning and "Keras does not publish" in warning
    assert not [b for b in at.button if b.key == "reproduce"]


def reproduction(run_id="20261123-120000-cnn", status="done", test_accuracy=0.9, epochs=3):
    """A finished reproduction of the published Fashion-MNIST simple CNN (published test accuracy 0.91)."""
    w = own_run(run_id, title="Reproduction of Model 1: CNN simple 32-64 (Fashion-MNIST)", status=status,
                test_accuracy=test_accuracy, epochs=epochs, architecture="cnn", dataset="fashion-mnist",
                batch_size=64, reproduces="prac2-fashion-cnn-simple")
    w.update_info(reproduces="prac2-fashion-cnn-simple", dataset="fashion-mnist")
    return w


def comparison_chart(at) -> Chart:
    for chart in charts(at):
        if chart.names() == ["published", "ours"]:
            return chart
    raise AssertionError("no comparison chart")


def test_a_reproduction_is_overlaid_on_the_published_curve_with_the_accuracy_difference(offline_keras):
    reproduction()
    at = choose_reference(page(), "prac2-fashion-cnn-simple")
    fig = comparison_chart(at)
    rows = fig.rows
    assert set(rows["part"]) == {"train"}  # the report logged no validation curve
    panels = [p["transform"][0]["filter"]["equal"] for p in fig.spec["vconcat"]]
    assert panels == ["loss", "accuracy"] and fig.spec["resolve"]["scale"]["x"] == "shared"
    published, ours = rows[rows["series"] == "published"], rows[rows["series"] == "ours"]
    assert published["published"].all() and not ours["published"].any()  # drawn as diamonds, ours as dots
    per_metric = lambda r: sorted(r.groupby("metric").size().items())  # noqa: E731
    assert per_metric(published) == [("accuracy", 10), ("loss", 10)] and per_metric(ours) == [("accuracy", 3),
                                                                                             ("loss", 3)]
    assert len(set(fig.colors().values())) == 2
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Published test acc": "0.9100", "Our test acc": "0.9000", "Ours - published": "-0.0100"}
    assert at.selectbox(key="reproduction_prac2-fashion-cnn-simple").options == \
        ["20261123-120000-cnn (done, test acc 0.9000)"]
    assert not at.warning or "does not record" not in " ".join(w.value for w in at.warning)


def test_a_reproduction_cut_short_says_so(offline_keras):
    reproduction(status="cancelled", test_accuracy=None, epochs=2)
    at = choose_reference(page(), "prac2-fashion-cnn-simple")
    assert {m.label: m.value for m in at.metric}["Ours - published"] == "n/a"
    assert any("is cancelled: its curve stops at epoch 2" in w.value for w in at.warning)


def test_read_only_shows_plans_and_comparisons_but_no_fetch_or_reproduce(offline_keras, monkeypatch):
    reproduction()
    monkeypatch.setenv("DIGITLAB_READ_ONLY", "1")
    at = page()
    assert not [e for e in at.expander if e.label == "Data sets and ImageNet weights"]
    assert not [b for b in at.button if b.key == "reproduce" or (b.key or "").startswith(("fetch_", "reproduce_fetch_"))]
    assert not [b for b in at.button if b.label == "Fetch"]
    assert str(offline_keras) not in texts(at)  # no server path
    assert "MNIST (60,000 training and 10,000 test digits)" in " ".join(w.value for w in at.warning)  # still said
    at = choose_reference(at, "prac2-fashion-cnn-simple")
    assert comparison_chart(at) and {m.label for m in at.metric} >= {"Ours - published"}
    assert not [b for b in at.button if b.key == "reproduce"]



def test_reproducing_and_comparing_never_import_tensorflow(offline_keras):
    """Queueing a reproduction and drawing the comparison read files only; training happens in the worker."""
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.test_reproduce import write_fashion_mnist

    write_fashion_mnist(offline_keras)
    reproduction()
    code = ("import sys; from core import jobs; jobs.ensure_worker = lambda: None; "
            "from streamlit.testing.v1 import AppTest; "
            "at = AppTest.from_file('pages/training.py', default_timeout=60).run(); "
            "at.selectbox(key='reproduce_ref').set_value('prac2-fashion-cnn-simple').run(); "
            "at.button(key='reproduce').click().run(); "
            "assert not at.exception and not at.error, (at.exception, at.error); "
            "assert len(at.get('vega_lite_chart')) == 2 and len(jobs.list_jobs()) == 1; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env=os.environ.copy())
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["False", "False"]

# --- where each job ran -------------------------------------------------------------------------------------

def test_job_cards_say_where_each_job_ran(monkeypatch):
    job = finished_job()
    with jobs._connect() as con:
        con.execute("UPDATE jobs SET node=?, device=?, executor=? WHERE id=?",
                    ("gpu-3 (10.0.0.7)", "GPU (1x NVIDIA H100 80GB HBM3)", "ray", job.id))
    at = page()
    captions = [c.value for c in at.caption]
    assert "ran on gpu-3 (10.0.0.7) · GPU (1x NVIDIA H100 80GB HBM3) · Ray cluster" in captions
    monkeypatch.setenv("DIGITLAB_READ_ONLY", "1")  # a visitor: the device, not the host name and address
    at = page()
    captions = [c.value for c in at.caption]
    assert "ran on GPU (1x NVIDIA H100 80GB HBM3) · Ray cluster" in captions
    assert "10.0.0.7" not in texts(at)


def test_a_job_not_started_yet_says_nothing_about_where():
    jobs.submit(RunConfig.preset("mlp", epochs=2, max_samples=40), start_worker=False)
    at = page()
    assert not [c for c in at.caption if c.value.startswith(("ran on", "running on"))]
