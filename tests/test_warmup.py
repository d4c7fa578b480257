"""ui.warmup: the model process started with the server's first page, its predictors handed out by ui.cache."""
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import Future

import cv2
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT, canvas, headline
from ui import cache, warmup

TIMEOUT = 120
CACHED_LOAD = cache._load_predictor  # Streamlit's cached loader (some tests replace it with a stub)


@pytest.fixture(autouse=True)
def _fresh_warmup(monkeypatch):
    """Each test starts with no warm-up and no model cached by Streamlit, and leaves no child running."""
    monkeypatch.delenv("DIGITLAB_WARMUP", raising=False)
    monkeypatch.setattr(warmup, "START_DELAY_S", 0.0)  # the test about the delay sets its own
    warmup._reset()
    CACHED_LOAD.clear()
    yield
    warmup._reset()  # stops a child still running
    CACHED_LOAD.clear()
    cache.reused_model_info.clear()  # a test may have read it with the model folder patched away


class FakeProcess:
    """Stands in for core.model_process.ModelProcess: loads resolve when the test says so."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.loads: dict[str | None, Future] = {}
        self.calls: list[str | None] = []
        self.fail, self.broken, self.closed = fail, False, False

    def load(self, path=None) -> Future:
        self.calls.append(path)
        if self.fail is not None:
            raise self.fail
        return self.loads.setdefault(path, Future())

    def finish(self, path=None, value="warm") -> None:
        self.loads[path].set_result(value)

    def close(self) -> None:
        self.closed = True


def _started_with(process: FakeProcess) -> FakeProcess:
    assert warmup.start(lambda: process)
    deadline = time.monotonic() + 30
    while None not in process.loads and process.fail is None and time.monotonic() < deadline:
        time.sleep(0.01)  # the launcher thread asks for the shipped model
    return process


def png(img) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


def _draw_with_upload(at):
    at.segmented_control(key="source").set_value("Upload").run()
    at.file_uploader[0].upload("one.png", png(canvas([((140, 50), (140, 230))], rgba=False)), "image/png")
    return at.run()


def test_the_model_process_serves_pages_and_the_server_never_imports_tensorflow():
    # A separate Python in which TensorFlow is never imported: the shipped model is warmed up, and another
    # model file loaded, in the child; ui.cache hands out those predictors, never loading the model here.
    code = """
import sys
from ui import warmup
assert warmup.start() and not warmup.start()   # once per process
p = warmup.wait()
assert warmup.state() == "ready", warmup.info()
assert set(warmup.info()["seconds"]) == {"tensorflow", "model", "first_call"}
from ui import cache
from core.models import classify, reused_model_path
from core.errors import ModelError
def no_load_here(path=None):
    raise AssertionError("loaded in the server process")
cache._load_predictor = no_load_here
assert cache.predictor() is p and cache.predictor(str(reused_model_path())) is p
assert p.describe()["params"] == 34826
from tests.conftest import canvas
print(classify(cache.predictor(), canvas([((140, 50), (140, 230))]), "paper").digit)
bad = sys.argv[1]
try:  # a file that is no model: the child's message
    warmup.predictor(bad)
except ModelError as e:
    print("refused:", e)
assert warmup.state() == "ready" and warmup.predictor() is p  # the child goes on
import shutil
shutil.copy(reused_model_path(), bad)  # the file fixed: it gets another try, and loads
print("fixed:", warmup.predictor(bad).describe()["params"])
assert "tensorflow" not in sys.modules and "keras" not in sys.modules, "TensorFlow was imported in the server"
"""
    bad = ROOT / "tests" / "_not_a_model.keras"
    bad.write_bytes(b"not a zip")
    try:
        r = subprocess.run([sys.executable, "-c", code, str(bad)], cwd=ROOT, capture_output=True, text=True,
                           timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        bad.unlink()
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert lines[0] == "1"
    assert [line for line in lines if line.startswith("refused: ") and "_not_a_model.keras" in line]
    assert lines[-1] == "fixed: 34826"


def test_registry_hands_out_the_shipped_predictor_once_ready():
    process = _started_with(FakeProcess())
    assert warmup.state() == warmup.RUNNING and warmup.ready() is None and warmup.predictor() is None
    assert not warmup.start(lambda: pytest.fail("a second process"))  # once per server
    process.finish(None, "warm")
    assert warmup.wait(30) == "warm" and warmup.ready() == "warm" and warmup.state() == warmup.READY
    assert warmup.predictor() == "warm" and warmup.predictor(None) == "warm"


def test_other_model_files_load_in_the_child_once(tmp_path):
    other = tmp_path / "other.keras"
    other.write_bytes(b"x")
    process = _started_with(FakeProcess())
    process.finish(None)
    warmup.wait(30)
    process.loads[str(other)] = Future()
    process.loads[str(other)].set_result("other")
    assert warmup.predictor(str(other)) == "other"
    assert warmup.predictor(str(other)) == "other" and process.calls == [None, str(other)]  # loaded once


def test_a_page_waits_for_a_running_warmup_and_cache_hands_out_its_predictor(monkeypatch):
    process = _started_with(FakeProcess())
    monkeypatch.setattr(cache, "_load_predictor", lambda path=None: pytest.fail("loaded again"))
    threading.Timer(0.3, process.finish, args=(None, "warm")).start()
    assert cache.predictor() == "warm"  # waited for the warm-up, did not load a second time


def test_a_failed_warmup_is_remembered_and_leaves_pages_to_load_the_model(monkeypatch):
    monkeypatch.setattr(cache, "_twin", lambda path, stamp: None)  # a model without an OpenCV twin
    loads = []
    monkeypatch.setattr(cache, "_load_predictor", lambda path=None: loads.append(path) or CACHED_LOAD(path))
    _started_with(FakeProcess(fail=RuntimeError("TensorFlow is broken here")))
    assert warmup.wait(30) is None and warmup.state() == warmup.FAILED
    assert "TensorFlow is broken here" in warmup.info()["error"]
    assert warmup.predictor() is None  # the page loads it itself
    at = _draw_with_upload(AppTest.from_file("../pages/draw.py", default_timeout=TIMEOUT).run())
    assert not at.exception and not at.error
    assert [m.value for m in at.metric if m.label == "Predicted digit"] == ["1"] and loads


def test_a_drawing_during_the_warmup_is_answered_by_the_twin_at_once(monkeypatch):
    # The warm-up never finishes here: without the shipped model's OpenCV twin the page would wait for it.
    process = _started_with(FakeProcess())
    monkeypatch.setattr(warmup, "wait", lambda timeout=None: pytest.fail("waited for the warm-up"))
    monkeypatch.setattr(cache, "_load_predictor", lambda path=None: pytest.fail("loaded in the server"))
    at = _draw_with_upload(AppTest.from_file("../pages/draw.py", default_timeout=TIMEOUT).run())
    assert not at.exception and not at.error
    assert [m.value for m in at.metric if m.label == "Predicted digit"] == ["1"]
    assert "simple_cnn · 34,826 parameters" in " ".join(c.value for c in at.caption)  # identity from the twin
    assert process.calls == [None] and warmup.state() == warmup.RUNNING  # only the warm-up's own load


def test_a_dead_child_is_started_again_by_the_next_page_load():
    first = _started_with(FakeProcess())
    first.finish(None)
    warmup.wait(30)
    first.broken = True  # killed, out of memory...
    assert warmup.predictor() is None  # meanwhile a page loads the model itself
    second = _started_with(FakeProcess())  # the next page load's start()
    second.finish(None, "again")
    assert warmup.wait(30) == "again" and warmup.predictor() == "again"


def test_turned_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("DIGITLAB_WARMUP", "0")
    assert not warmup.start(lambda: pytest.fail("started although turned off"))
    assert warmup.state() == warmup.OFF and warmup.wait() is None and warmup.predictor() is None


def test_a_missing_model_fails_the_warmup_and_the_page_says_so(monkeypatch, tmp_path):
    from core import config

    monkeypatch.setattr(config, "REUSED_MODEL_DIR", tmp_path / "gone")
    warmup.start()  # the real process: it fails to load the missing file, and is stopped
    assert warmup.wait(TIMEOUT) is None and warmup.state() == warmup.FAILED
    assert "No model file" in warmup.info()["error"]
    assert warmup._state["process"].broken  # no child left holding TensorFlow for nothing
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT).run()
    at.switch_page("pages/draw.py").run()
    assert not at.exception
    assert "Draw a digit" in at.info[0].value  # the canvas page itself does not need the model
    _draw_with_upload(at)
    assert not at.exception  # the page's own load fails too: the normal message, not a traceback
    assert "No model file" in " ".join(e.value for e in at.error)


def test_app_renders_home_and_starts_the_warmup_once(monkeypatch):
    made = []
    monkeypatch.setattr(warmup, "_default_process", lambda: made.append(FakeProcess()) or made[-1])
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT).run()
    assert not at.exception
    assert at.title[0].value == "Digit Reuse Lab"
    assert at.metric[0].label == "MNIST test accuracy"
    at.run()  # every page load calls start(); only the first starts a process
    deadline = time.monotonic() + 30
    while not made and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(made) == 1 and warmup.state() == warmup.RUNNING


def test_a_page_run_on_its_own_starts_no_warmup():
    at = AppTest.from_file("../pages/training.py", default_timeout=TIMEOUT).run()
    assert not at.exception
    assert warmup.state() == warmup.IDLE  # only app.py starts it


def test_the_child_starts_after_the_first_page_unless_a_page_needs_it(monkeypatch):
    monkeypatch.setattr(warmup, "START_DELAY_S", 0.6)
    made = []
    warmup.start(lambda: made.append(time.monotonic()) or FakeProcess())
    t0 = time.monotonic()
    time.sleep(0.2)
    assert not made  # still letting the first page's messages out
    deadline = time.monotonic() + 30
    while not made and time.monotonic() < deadline:
        time.sleep(0.01)
    assert made and made[0] - t0 < 10  # began by itself once the delay was over

    warmup._reset()  # page loads during the delay put the launch off: it waits for a quiet spell
    made.clear()
    warmup.start(lambda: made.append(time.monotonic()) or FakeProcess())
    for _ in range(3):
        time.sleep(0.3)
        assert not warmup.start(lambda: pytest.fail("a second process"))  # another page load
    last_load = time.monotonic()
    assert not made  # 0.9 s after the first load, but only 0.3 s after the latest
    deadline = time.monotonic() + 30
    while not made and time.monotonic() < deadline:
        time.sleep(0.01)
    assert made and made[0] >= last_load + 0.6 - 0.05

    warmup._reset()
    monkeypatch.setattr(warmup, "START_DELAY_S", 60.0)
    process = FakeProcess()
    warmup.start(lambda: process)
    waiter = threading.Thread(target=warmup.wait, args=(30,))
    waiter.start()  # a page that waits cuts the delay short
    deadline = time.monotonic() + 30
    while None not in process.loads and time.monotonic() < deadline:
        time.sleep(0.01)
    assert None in process.loads  # asked for well before the 60 s
    process.finish(None)
    waiter.join(30)
    assert warmup.state() == warmup.READY


def test_a_reset_closes_a_child_launched_after_it(monkeypatch):
    monkeypatch.setattr(warmup, "START_DELAY_S", 60.0)
    process = FakeProcess()
    warmup.start(lambda: process)
    warmup._reset()  # the launcher wakes up, starts its process and closes it: nobody's
    deadline = time.monotonic() + 30
    while not process.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.closed and warmup.state() == warmup.IDLE


def test_a_failed_warmup_stops_its_child_and_is_not_retried():
    process = _started_with(FakeProcess())
    process.loads[None].set_exception(RuntimeError("TensorFlow is broken here"))
    assert warmup.wait(30) is None and warmup.state() == warmup.FAILED and process.closed
    process.broken = True
    assert not warmup.start(lambda: pytest.fail("retried a failed warm-up"))
    assert not warmup.recover() and warmup.state() == warmup.FAILED


def test_a_page_needing_a_model_restarts_a_dead_child_instead_of_loading_here(monkeypatch):
    first = _started_with(FakeProcess())
    first.finish(None)
    warmup.wait(30)
    first.broken = True
    second = FakeProcess()
    monkeypatch.setattr(warmup, "_default_process", lambda: second)
    monkeypatch.setattr(cache, "_load_predictor", lambda path=None: pytest.fail("loaded in the server"))
    threading.Timer(0.3, lambda: second.finish(None, "again")).start()
    assert cache.predictor() == "again" and first.closed


def test_a_model_that_does_not_load_in_time_is_a_plain_error(monkeypatch, tmp_path):
    from core.errors import ModelError

    slow = tmp_path / "slow.keras"
    slow.write_bytes(b"x")
    process = _started_with(FakeProcess())
    process.finish(None)
    warmup.wait(30)
    monkeypatch.setattr(warmup, "WAIT_LIMIT_S", 0.2)
    with pytest.raises(ModelError, match="did not load in 0 s"):
        warmup.predictor(str(slow))  # its future never resolves
    process.loads[str(slow)].set_result("late")
    assert warmup.predictor(str(slow)) == "late" and process.calls.count(str(slow)) == 2  # tried again


def test_an_uploaded_model_is_checked_in_the_model_process(monkeypatch, tmp_path):
    from core.errors import ModelError
    from ui import pickers

    class Refusing(FakeProcess):
        def load(self, path=None):
            if path is None:
                return super().load(path)
            self.calls.append(path)
            refused = Future()  # what the child says of a Lambda layer, naming the stored file
            refused.set_exception(ModelError(f"{os.path.basename(path)} has a Lambda layer; it is refused."))
            return refused

    monkeypatch.setenv("DIGITLAB_HOME", str(tmp_path))
    process = _started_with(Refusing())
    process.finish(None)
    warmup.wait(30)
    monkeypatch.setattr("core.models.load_model", lambda path: pytest.fail("checked in the server"))
    with pytest.raises(ModelError, match=r"^mine\.keras has a Lambda layer"):  # the user's name, not the hash
        pickers.uploaded_model.__wrapped__(b"zip bytes", "mine.keras", str(tmp_path))
    assert len(process.calls) == 2 and not list((tmp_path / "models").glob("*.keras"))  # not kept


def test_a_first_page_that_needs_a_model_waits_for_the_child_instead_of_loading_it(monkeypatch, tmp_path):
    from core.models import Predictor

    class Serving(FakeProcess):  # resolves every load at once, with a predictor made here
        def load(self, path=None):
            self.calls.append(path)
            done = Future()
            done.set_result(Predictor.load(path))
            return done

    monkeypatch.setenv("DIGITLAB_HOME", str(tmp_path))  # nothing cached: the Report must evaluate
    monkeypatch.setattr(warmup, "START_DELAY_S", 60.0)  # only a page that waits starts the child
    made = []
    monkeypatch.setattr(warmup, "_default_process", lambda: made.append(Serving()) or made[-1])
    monkeypatch.setattr(cache, "_load_predictor", lambda path=None: pytest.fail("loaded in the server"))
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT)
    at.switch_page("pages/report.py").run()
    assert not at.exception and not at.error
    assert "Accuracy" in headline(at) and made and made[0].calls[0] is None
