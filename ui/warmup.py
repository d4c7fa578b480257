"""The model process: TensorFlow and the models under test, warmed up once per server, outside its interpreter.

Why: on a fresh server the first prediction waited ~5 s after the stroke (issue 8) for `import tensorflow`,
loading the model and tracing its tf.function. app.py calls `start()` on every page load; the first call starts
a core.model_process child and has it load the shipped model and make its first call, so pages never wait for
them once the child is ready (about 5 s after it launches here: once no page has loaded for START_DELAY_S, or
at once for a page that waits for a model). `ui.cache.predictor()` then hands out RemotePredictors of that
child, for the shipped model and any other model file (each loaded once, there). Drawings do not wait even
before that: the shipped model's OpenCV twin answers them (core/twin.py, `ui.cache.quick_predictor`).

A child process, not a thread of the server: importing TensorFlow holds Python's GIL, and in a thread it made
every page drawn meanwhile share one interpreter with it (a fully cached Report in a second tab: 3.2-3.9 s with
a warm-up thread, 1.8-2.0 s with the child; fresh servers, interleaved). While the child serves, the server
process does not import TensorFlow.

A failed warm-up (model file missing, TensorFlow broken) is logged and remembered, and its child stopped; pages
then load models in the server process, as before, with their normal spinner and error message. A ready child
that died later (killed, out of memory) is started again by the next page load or model request (`recover`).

`DIGITLAB_WARMUP=0` (or false, no, off) turns it off: models then load in the server process when a page needs
them (a server short of memory, or a measurement without it). This module never imports streamlit, and nothing
here runs at import time.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future
from typing import Callable

LOG = logging.getLogger("digitlab")

IDLE, RUNNING, READY, FAILED, OFF = "idle", "running", "ready", "failed", "off"
#: How long a page waits for a running warm-up, or for a model to load in the child, before giving up (a hung
#: child must not hang every page for good; normally a few seconds).
WAIT_LIMIT_S = 300.0

#: The child launches once no page load has begun for this long (app.py calls start() as each page load begins,
#: before the page runs, so a first page that needs a model does not load it in the server), or at once when a
#: page waits for it. The Draw page does not cut it short: the shipped model's OpenCV twin answers its strokes
#: meanwhile (core/twin.py; a stroke drawn the moment a fresh server showed the canvas: 0.47-0.52 s with the
#: quiet spell, 0.42-0.76 s with the child launched as the page opened; 3 servers each, interleaved).
#: Why wait at all: a page's last messages still have to reach the browser, which renders it on the same CPUs,
#: and a starting child competes with both even at a lower priority (Home on a fresh server, 4 servers each:
#: median 1.78 s starting right after the page, 1.16 s one second after it, 1.20 s with no warm-up). Why a
#: quiet spell and not a fixed delay: Training Runs opened right after Home took 1.97-4.07 s with the child
#: launched 1.5 s after Home began, in the middle of it (bench/page_speed.py, 3 runs). Why 3 s: with 1.5 s, the
#: child still launched while the browser drew Training Runs' first visit (1.98-2.53 s in 3 bench runs at
#: 300bd31; 1.39-1.62 s medians with no warm-up in probes).
START_DELAY_S = 3.0

_lock = threading.Lock()
_wanted = threading.Event()  # a page waits for the warm-up: the child starts without START_DELAY_S
_state: dict = {"state": IDLE, "process": None, "shipped": None, "error": None, "seconds": {}}
_last_page = [0.0]  # time.monotonic() of the latest page load (start() call)
_models: dict[str, Future] = {}  # model file (resolved) -> future RemotePredictor, in the current child


def enabled() -> bool:
    return os.environ.get("DIGITLAB_WARMUP", "1").strip().lower() not in ("0", "false", "no", "off")


def _default_process():
    from core.model_process import ModelProcess

    return ModelProcess()


def _finished(shipped: Future) -> None:
    """Done callback of the shipped model's load (in a loading thread: no st.* here)."""
    with _lock:
        if _state["shipped"] is not shipped:
            return  # a reset or a restart came first
        err = shipped.exception()
        if err is not None:
            _state.update(state=FAILED, error=err)
        else:
            _state.update(state=READY, seconds=dict(getattr(shipped.result(), "seconds", {}) or {}))
        seconds = dict(_state["seconds"])
    if err is not None:
        LOG.warning("Model warm-up failed (%s: %s); pages will load the model themselves.", type(err).__name__, err)
    else:
        total = sum(seconds.values())
        LOG.info("Model warm-up ready in %.1f s (%s).", total, ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))


def start(process_factory: Callable[[], object] | None = None) -> bool:
    """Start the model process and its warm-up unless one runs in this server (or it is turned off).

    Cheap after the first call (a lock), so app.py calls it on every page load. A ready child that has died
    since is started again; a failed warm-up is not retried (pages load models themselves). True when this
    call started one. The child launches after START_DELAY_S without a page load, unless a page waits first.
    """
    _last_page[0] = time.monotonic()  # every page load, started or not: the launcher waits for a quiet spell
    with _lock:
        process = _state["process"]
        dead = _dead()
        if _state["state"] != IDLE and not dead:
            return False
        if not enabled():
            _state["state"] = OFF
            return False
        if dead:
            LOG.warning("The model process has stopped; starting it again.")
        shipped: Future = Future()
        _models.clear()
        _models["shipped"] = shipped
        _state.update(state=RUNNING, process=None, shipped=shipped, error=None, seconds={})
        _wanted.clear()
    if dead:
        process.close()
    shipped.add_done_callback(_finished)
    threading.Thread(target=_launch, args=(process_factory or _default_process, shipped), daemon=True,
                     name="digitlab-warmup").start()
    return True


def recover() -> bool:
    """Start the model process again if it was ready and has died (killed, out of memory): a page that needs a
    model calls this first, so the model does not load in the server meanwhile. True when it restarted."""
    with _lock:
        dead = _dead()
    return dead and start()


def _dead() -> bool:
    """A ready child that has stopped since (the caller holds _lock)."""
    return _state["state"] == READY and getattr(_state["process"], "broken", False)


def _launch(process_factory: Callable[[], object], shipped: Future) -> None:
    """Start the child and have it load the shipped model; its outcome goes to `shipped` (no st.* here)."""
    while not _wanted.is_set():  # a quiet spell: START_DELAY_S since the latest page load began
        left = START_DELAY_S - (time.monotonic() - _last_page[0])
        if left <= 0:
            break
        _wanted.wait(left)
    process = None
    try:
        process = process_factory()
        with _lock:
            current = _state["shipped"] is shipped
            if current:
                _state["process"] = process
        if not current:  # reset meanwhile (tests): this child is nobody's
            process.close()
            return
        LOG.info("Model warm-up started in a process of its own.")
        loading = process.load(None)
    except Exception as e:  # no model file, no Python to start: the pages say so with their own load
        if process is not None:
            process.close()  # a child without a model is of no use: pages load models themselves
        shipped.set_exception(e)
        return

    def done(f: Future) -> None:
        if f.exception() is not None:
            process.close()  # a child that cannot serve the shipped model is of no use: pages load models
            shipped.set_exception(f.exception())
        else:
            shipped.set_result(f.result())

    loading.add_done_callback(done)


def state() -> str:
    """idle (not started), running, ready, failed or off."""
    with _lock:
        return _state["state"]


def ready():
    """The shipped model's RemotePredictor, or None (not started, still running, failed or off)."""
    with _lock:
        return _state["shipped"].result() if _state["state"] == READY else None


def wait(timeout: float | None = WAIT_LIMIT_S):
    """Wait for a running warm-up to end (at most `timeout` s); the shipped model's predictor, or None."""
    with _lock:
        shipped = _state["shipped"]
    if shipped is None:
        return None  # never started (a page run on its own, e.g. in a test): nothing to wait for
    _wanted.set()
    try:
        shipped.exception(timeout)
    except TimeoutError:
        return None
    return ready()


def predictor(path: str | None = None):
    """A RemotePredictor of a model file (None: the shipped model) in the ready model process, loaded there
    once; None when there is no ready process (the caller loads the model itself). A file that is no usable
    model raises core.errors.ModelError, as a load in this process would."""
    from core.errors import ModelError
    from core.model_process import model_key

    with _lock:
        if _state["state"] != READY or getattr(_state["process"], "broken", False):
            return None
        key = "shipped" if path in (None, "") else model_key(path)
        if key == model_key(None):
            key = "shipped"
        if key not in _models:
            _models[key] = _state["process"].load(path)
        loading = _models[key]
    try:
        return loading.result(WAIT_LIMIT_S)
    except Exception as e:
        with _lock:
            if _models.get(key) is loading and key != "shipped":
                del _models[key]  # a file fixed or replaced later gets another try
        if isinstance(e, TimeoutError):  # concurrent.futures' (the built-in one since 3.11): said plainly
            raise ModelError(f"The model did not load in {WAIT_LIMIT_S:.0f} s; try again in a moment.") from None
        raise


def info() -> dict:
    """What happened: state, seconds per phase, and the error's text when it failed."""
    with _lock:
        err = _state["error"]
        return {"state": _state["state"], "seconds": dict(_state["seconds"]),
                "error": None if err is None else f"{type(err).__name__}: {err}"}


def _reset() -> None:
    """Back to 'never started' (tests only): stops the child."""
    with _lock:
        process = _state["process"]
        _state.update(state=IDLE, process=None, shipped=None, error=None, seconds={})
        _models.clear()
        _wanted.set()  # a launcher still waiting goes on, and its process is closed below or by its own test
    if process is not None and hasattr(process, "close"):
        process.close()
