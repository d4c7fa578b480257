"""core.model_process: models in a child process answer as they would in this one; a dead child says so."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from core import model_process
from core.errors import ModelError
from core.models import Predictor, reused_model_path, to_model_input
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def process():
    p = model_process.ModelProcess()
    yield p
    p.close()


def _digits(n: int = 12) -> np.ndarray:
    from sklearn.datasets import load_digits

    import cv2

    images = load_digits().images[:n] / 16.0
    return to_model_input(np.stack([cv2.resize(a, (28, 28), interpolation=cv2.INTER_LINEAR) for a in images]))


def test_the_child_answers_as_the_model_here(process):
    remote = process.load(None).result(300)
    local = Predictor.load(None)
    x = _digits()
    np.testing.assert_allclose(remote.predict_proba(x), local.predict_proba(x), atol=1e-5)
    np.testing.assert_allclose(remote.outputs(x), local.outputs(x), atol=1e-5)
    np.testing.assert_allclose(remote.features(x), local.features(x), atol=1e-4)
    as_bytes = np.round(x * 255).astype(np.uint8)  # to_model_input scales uint8 in the child, as here
    np.testing.assert_allclose(remote.predict_proba(as_bytes), local.predict_proba(as_bytes), atol=1e-5)
    assert remote.features(x).shape == (len(x), 1600)
    assert remote.describe() == local.describe() == {"name": "simple_cnn", "params": 34826,
                                                     "input_shape": [28, 28, 1], "outputs": 10}
    assert set(remote.seconds) == {"tensorflow", "model", "first_call"}
    assert remote.path == str(reused_model_path().resolve())


def test_big_sets_travel_in_chunks(process, monkeypatch):
    remote = process.load(None).result(300)
    x = _digits(12)
    whole = remote.predict_proba(x)
    monkeypatch.setattr(model_process, "CHUNK", 5)  # 12 images: requests of 5, 5 and 2
    sent = []
    real = process.request
    monkeypatch.setattr(process, "request", lambda kind, key, X=None, **kw: sent.append(len(X)) or real(kind, key, X))
    np.testing.assert_allclose(remote.predict_proba(x), whole, atol=1e-6)
    assert sent == [5, 5, 2]


def test_a_file_that_is_no_model_comes_back_as_a_model_error(process, tmp_path):
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ModelError, match="broken.keras"):
        process.load(bad).result(300)
    assert not process.broken  # the child goes on
    with pytest.raises(ModelError, match="No model file"):
        process.load(tmp_path / "missing.keras")  # no such file: said at once, nothing sent


def test_a_killed_child_is_reported_not_hung():
    p = model_process.ModelProcess()
    p._proc.kill()
    p._proc.wait(10)
    assert p.broken
    with pytest.raises(ModelError, match="model process has stopped.*exit code -9"):
        p.request("predict_proba", "any", np.zeros((1, 28, 28, 1)))
    p.close()


def test_a_request_past_its_time_stops_the_child():
    p = model_process.ModelProcess()
    t0 = time.monotonic()
    with pytest.raises(ModelError, match="no answer in 0 s"):
        p.request("load", str(reused_model_path()), timeout=0.05)  # TensorFlow's import alone takes longer
    assert time.monotonic() - t0 < 10 and p.broken
    p.close()


def test_the_child_exits_with_its_parent():
    code = ("from core.model_process import ModelProcess; import os; p = ModelProcess(); "
            "print(p._proc.pid, flush=True); os._exit(0)")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    pid = int(parent.stdout.readline())
    parent.wait(60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:  # our grandchild, re-parented: reap it if it became ours
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    pytest.fail(f"the model process {pid} outlived its parent")


def test_the_child_keeps_the_models_it_used_last(monkeypatch, tmp_path):
    import shutil

    monkeypatch.setattr(model_process, "MAX_MODELS", 2)
    keys = []
    for name in ("a", "b", "c"):
        shutil.copy(reused_model_path(), tmp_path / f"{name}.keras")
        keys.append(str(tmp_path / f"{name}.keras"))
    loaded: dict = {}
    for key in (keys[0], keys[1], keys[0], keys[2]):  # a used again: b is the one to go
        model_process._load(loaded, key)
    assert list(loaded) == [keys[0], keys[2]]


def test_the_protocol_answers_each_request_and_goes_on_after_an_error():
    import threading
    from multiprocessing import Pipe

    here, there = Pipe()
    server = threading.Thread(target=model_process.serve, args=(there,), daemon=True)
    server.start()
    here.send(("guess", "any", None))
    assert here.recv() == ("error", "unknown request 'guess'")
    here.send(("predict_proba", str(reused_model_path()), np.zeros((2, 28, 28, 1), np.float32)))
    status, value = here.recv()  # loaded on first use
    assert status == "ok" and value.shape == (2, 10)
    here.close()  # the parent goes: the child's loop ends
    server.join(10)
    assert not server.is_alive()
