"""ui.warmup: TensorFlow and the shipped model warmed up in a background thread, handed out by ui.cache."""
import gc
import subprocess
import sys
import threading

import cv2
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT, canvas
from ui import cache, warmup

TIMEOUT = 120
CACHED_LOAD = cache._load_predictor  # Streamlit's cached loader (some tests replace it with a stub)


@pytest.fixture(autouse=True)
def _fresh_warmup(monkeypatch):
    """Each test starts with no warm-up and no model cached by Streamlit, and leaves none running."""
    monkeypatch.delenv("DIGITLAB_WARMUP", raising=False)
    monkeypatch.setattr(warmup, "START_DELAY_S", 0.0)  # the test about the delay sets its own
    warmup._reset()
    CACHED_LOAD.clear()
    yield
    warmup._reset()  # joins a thread still running
    gc.unfreeze()  # a warm-up froze the heap: give the rest of the suite its collector back
    CACHED_LOAD.clear()
    cache.reused_model_info.clear()  # a test may have read it with the model folder patched away


def png(img) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


def _draw_with_upload(at):
    at.segmented_control(key="source").set_value("Upload").run()
    at.file_uploader[0].upload("one.png", png(canvas([((140, 50), (140, 230))], rgba=False)), "image/png")
    return at.run()


def test_warmup_runs_without_streamlit_and_ui_cache_hands_out_its_predictor():
    # A separate process in which streamlit is never imported until the warm-up is over: its thread cannot
    # have called st.* (nor a cached function), and it needs no script context.
    code = """
import sys
from ui import warmup
assert warmup.start() and not warmup.start()   # once per process
p = warmup.wait()
assert warmup.state() == "ready", warmup.info()
assert "streamlit" not in sys.modules, "the warm-up thread imported streamlit"
assert "tensorflow" in sys.modules and set(warmup.info()["seconds"]) >= {"tensorflow", "model", "first_call"}
from ui import cache
from core.models import reused_model_path
def no_second_load(path=None):
    raise AssertionError("loaded again")
cache._load_predictor = no_second_load
assert cache.predictor() is p and cache.predictor(str(reused_model_path())) is p
from tests.conftest import canvas
from core.models import classify
print(classify(cache.predictor(), canvas([((140, 50), (140, 230))]), "paper").digit)
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split()[-1] == "1"
    assert "missing ScriptRunContext" not in r.stderr


def test_registry_and_ui_cache_give_the_same_object(monkeypatch):
    made = object()
    assert warmup.start(loader=lambda seconds: made)
    assert warmup.wait(30) is made and warmup.ready() is made

    def no_second_load(path=None):
        raise AssertionError("the model was loaded again")

    monkeypatch.setattr(cache, "_load_predictor", no_second_load)
    assert cache.predictor() is made
    assert cache.predictor("") is made


def test_other_models_are_not_the_warmed_one(monkeypatch):
    made, other = object(), object()
    warmup.start(loader=lambda seconds: made)
    warmup.wait(30)
    monkeypatch.setattr(cache, "_load_predictor", lambda path=None: other)
    assert cache.predictor("models/runs/cnn-mnist-subset/model.keras") is other


def test_a_load_waits_for_a_running_warmup_instead_of_loading_again(monkeypatch):
    release, made = threading.Event(), object()
    warmup.start(loader=lambda seconds: release.wait(30) and made)
    assert warmup.state() == warmup.RUNNING and warmup.ready() is None
    monkeypatch.setattr(cache, "_load_predictor", lambda path=None: pytest.fail("loaded while warming up"))
    threading.Timer(0.5, release.set).start()
    assert cache.predictor() is made  # waited (behind a spinner on a page), then got the warmed one


def test_a_ready_warmup_freezes_the_heap_it_leaves():
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    assert warmup.start(loader=lambda seconds: object())
    assert warmup.wait(30) is not None
    assert gc.get_freeze_count() > 1000  # everything alive then, this test's modules among it


def test_a_failed_warmup_freezes_nothing():
    gc.unfreeze()

    def broken(seconds):
        raise RuntimeError("no model")

    assert warmup.start(loader=broken)
    assert warmup.wait(30) is None and gc.get_freeze_count() == 0


def test_turned_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("DIGITLAB_WARMUP", "0")
    assert not warmup.start(loader=lambda seconds: pytest.fail("ran although turned off"))
    assert warmup.state() == warmup.OFF and warmup.wait() is None


def test_a_failed_warmup_leaves_the_page_to_load_the_model_itself():
    def broken(seconds):
        raise RuntimeError("TensorFlow is broken here")

    warmup.start(loader=broken)
    assert warmup.wait(30) is None and warmup.state() == warmup.FAILED
    assert "TensorFlow is broken here" in warmup.info()["error"]
    at = _draw_with_upload(AppTest.from_file("../pages/draw.py", default_timeout=TIMEOUT).run())
    assert not at.exception and not at.error
    assert [m.value for m in at.metric if m.label == "Predicted digit"] == ["1"]


def test_a_missing_model_fails_the_warmup_and_the_page_says_so(monkeypatch, tmp_path):
    from core import config

    monkeypatch.setattr(config, "REUSED_MODEL_DIR", tmp_path / "gone")
    warmup.start()
    assert warmup.wait(TIMEOUT) is None and warmup.state() == warmup.FAILED
    assert "No model file" in warmup.info()["error"]
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT).run()
    at.switch_page("pages/draw.py").run()
    assert not at.exception
    assert "Draw a digit" in at.info[0].value  # the canvas page itself does not need the model
    _draw_with_upload(at)
    assert not at.exception  # the page's own load fails too: the normal message, not a traceback
    assert "No model file" in " ".join(e.value for e in at.error)


def test_app_renders_home_and_starts_the_warmup_once(monkeypatch):
    started = []
    real_start = warmup.start
    # app.py's own call, with a loader that costs nothing: this test is about the wiring, not TensorFlow
    monkeypatch.setattr(warmup, "start", lambda loader=None: started.append(1) or real_start(lambda s: "warm"))
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT).run()
    assert not at.exception
    assert at.title[0].value == "Digit Reuse Lab"
    assert at.metric[0].label == "MNIST test accuracy"
    at.run()  # every page load calls start(); only the first starts a thread
    assert len(started) == 2 and warmup.wait(30) == "warm"


def test_a_page_run_on_its_own_starts_no_warmup():
    at = AppTest.from_file("../pages/training.py", default_timeout=TIMEOUT).run()
    assert not at.exception
    assert warmup.state() == warmup.IDLE  # only app.py starts it


def _probe_module(tmp_path, monkeypatch, name):
    """A module not imported yet: an import statement (or __import__) raises the "import" audit event for it."""
    (tmp_path / f"{name}.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_the_warmup_gives_way_to_a_running_page(tmp_path, monkeypatch):
    import time

    monkeypatch.setattr(warmup, "IMPORT_YIELD_S", 60.0)  # so only page_finished can end the pause here
    name = _probe_module(tmp_path, monkeypatch, "warmup_probe_gives_way")
    warmup.page_started()  # this test's thread plays a page being rendered
    try:
        warmup.start(loader=lambda seconds: (__import__(name), time.monotonic())[1])
        time.sleep(0.5)
        assert warmup.state() == warmup.RUNNING  # paused before its import
        released = time.monotonic()
    finally:
        warmup.page_finished()
    imported_at = warmup.wait(30)
    assert imported_at is not None and imported_at >= released
    assert warmup.info()["seconds"]["gave_way"] >= 0.4


def test_a_page_waiting_for_the_warmup_does_not_hold_it_back(tmp_path, monkeypatch):
    monkeypatch.setattr(warmup, "IMPORT_YIELD_S", 60.0)
    name = _probe_module(tmp_path, monkeypatch, "warmup_probe_waiting")
    warmup.page_started()
    try:
        warmup.start(loader=lambda seconds: __import__(name))
        assert warmup.wait(30) is not None  # the page waits (the Draw page's first prediction): no pause
        assert warmup._pages_running()  # and runs again afterwards
    finally:
        warmup.page_finished()
    assert not warmup._pages_running()


def test_a_page_thread_that_died_does_not_hold_the_warmup_back():
    t = threading.Thread(target=warmup.page_started)  # started a page, never finished it
    t.start()
    t.join()
    assert not warmup._pages_running()


def test_a_page_can_import_while_the_warmup_gives_way(tmp_path, monkeypatch):
    import time

    monkeypatch.setattr(warmup, "IMPORT_YIELD_S", 60.0)
    held_back = _probe_module(tmp_path, monkeypatch, "warmup_probe_held_back")
    pages_own = _probe_module(tmp_path, monkeypatch, "warmup_probe_pages_own")
    warmup.page_started()
    try:
        warmup.start(loader=lambda seconds: __import__(held_back))
        time.sleep(0.3)  # the thread now pauses before its import
        t0 = time.monotonic()
        __import__(pages_own)  # the page's own import is not held up by that pause
        assert time.monotonic() - t0 < 5
        assert warmup.state() == warmup.RUNNING
    finally:
        warmup.page_finished()
    assert warmup.wait(30) is not None


def test_the_warmup_waits_for_the_first_page_to_reach_the_browser_unless_a_page_needs_it(monkeypatch):
    import time

    monkeypatch.setattr(warmup, "START_DELAY_S", 0.6)
    began = []
    warmup.start(loader=lambda seconds: began.append(time.monotonic()) or "warm")
    t0 = time.monotonic()
    time.sleep(0.2)
    assert not began  # still letting the first page's messages out
    assert warmup.wait(30) == "warm" and began[0] - t0 < 0.6 + 0.5  # began when the delay ended, at the latest

    warmup._reset()
    monkeypatch.setattr(warmup, "START_DELAY_S", 60.0)
    warmup.start(loader=lambda seconds: "warm")
    t0 = time.monotonic()
    assert warmup.wait(30) == "warm"  # a page that waits cuts the delay short
    assert time.monotonic() - t0 < 30
