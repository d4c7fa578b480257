"""Warm TensorFlow and the shipped model up in a background thread, once per server process.

Why: on a fresh server the first prediction waited ~5 s after the stroke (issue 8) for `import tensorflow`,
loading the model and tracing its tf.function. app.py calls `start()` on every page load; the first call
starts one daemon thread that does all three, and `ui.cache.predictor()` hands out the predictor it made,
so the model is never loaded twice. A page that needs the model while the thread still runs waits for it
(with a spinner that says so) instead of importing TensorFlow a second time from another thread.

The thread never calls Streamlit, not even a cached function: Streamlit 1.67's `st.cache_resource` does work
from a foreign thread, but every call logs "missing ScriptRunContext" and a spinner or element made there goes
nowhere. So this module does not import streamlit at all; the registry is a plain dict under a lock.

The warm-up gives way to pages: importing TensorFlow holds Python's GIL most of the time, so a page rendered
meanwhile ran two to three times slower (measured: a page-like loop 0.5 s alone, 0.7-1.9 s during the import).
app.py marks each script run (`page_started` / `page_finished`); while one runs, the thread pauses before each
module it imports (at most IMPORT_YIELD_S each; an audit hook) and between its steps. A page blocked on an
import lock the thread holds, or waiting for the warm-up itself, does not count: the thread then goes on at
full speed. It also begins START_DELAY_S after the page that started it, so that page reaches the browser first.

A failed warm-up (model file missing, TensorFlow broken) is logged and remembered; pages then load the model
themselves, as before, with their normal spinner and error message.

`DIGITLAB_WARMUP=0` (or false, no, off) turns it off: a server short of memory, or a measurement without it.
Nothing here runs at import time.
"""
from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
from typing import Callable

LOG = logging.getLogger("digitlab")

IDLE, RUNNING, READY, FAILED, OFF = "idle", "running", "ready", "failed", "off"
#: How long a page waits for a running warm-up before loading the model itself (a hung thread must not
#: hang every page for good; normally the wait is a few seconds).
WAIT_LIMIT_S = 300.0

#: How long the thread waits after the page that started it before it begins, unless a page waits for it: the
#: first page's last messages still have to reach the browser, and the import would hold the GIL against the
#: server's event loop (Home on a fresh server, 4 servers each, load ~3: median 2.0 s starting at once, 1.5 s
#: after 1 s, 1.6 s with no warm-up).
START_DELAY_S = 1.0
#: The longest the thread pauses before one import while a page runs, and between two steps. Bounded: a page
#: may wait on something the thread holds that is not visible as an import lock.
IMPORT_YIELD_S = 0.5
STEP_YIELD_S = 2.0

_lock = threading.Lock()
_done = threading.Event()
_wanted = threading.Event()  # a page waits for the warm-up: it starts without its START_DELAY_S
_state: dict = {"state": IDLE, "predictor": None, "error": None, "seconds": {}, "thread": None}
_pages: dict[int, threading.Thread] = {}  # script threads running a page now: ident -> thread


def page_started() -> None:
    """The calling (script) thread runs a page: until page_finished, the warm-up gives way to it."""
    with _lock:
        _pages[threading.get_ident()] = threading.current_thread()


def page_finished() -> None:
    with _lock:
        _pages.pop(threading.get_ident(), None)


def _pages_running() -> bool:
    """A page is running and not merely waiting for an import (perhaps one the warm-up thread holds)."""
    with _lock:
        running = [(ident, t) for ident, t in _pages.items() if t.is_alive()]  # a thread that died: not running
    # CPython's import machinery records which thread waits on which module lock (3.11: a dict by thread id).
    blocking = getattr(sys.modules.get("importlib._bootstrap"), "_blocking_on", None)
    if blocking is None:
        return False  # cannot tell whether a page waits on us: never pause
    return any(not blocking.get(ident) for ident, _ in running)


def _yield_to_pages(limit: float) -> None:
    start = time.monotonic()
    while time.monotonic() - start < limit and _pages_running():
        time.sleep(0.02)
    _state["gave_way"] = _state.get("gave_way", 0.0) + time.monotonic() - start  # only the thread writes it


def _give_way_on_import(event: str, args: tuple) -> None:
    """An audit hook: before each module the warm-up thread imports, it pauses while a page runs.

    An audit hook, not a finder on sys.meta_path: the import system calls finders holding its global import
    lock, so a finder that pauses would stop every other thread's imports too (measured: a page took 45 s).
    The "import" event (raised for import statements and __import__, not importlib.import_module, which
    TensorFlow uses for a few lazy modules only) comes before any lock of the module being imported is taken.
    Audit hooks cannot be removed: after the warm-up it returns at once (one comparison per audited event).
    """
    if event == "import" and _state["state"] == RUNNING:
        thread = _state["thread"]
        if thread is not None and thread.ident == threading.get_ident():
            try:
                _yield_to_pages(IMPORT_YIELD_S)
            except Exception:  # an error in an audit hook would fail the import itself: never let one out
                pass


def enabled() -> bool:
    return os.environ.get("DIGITLAB_WARMUP", "1").strip().lower() not in ("0", "false", "no", "off")


def load_reused(seconds: dict) -> object:
    """Import TensorFlow, load the shipped model and make its first (tracing) call; times go in `seconds`."""
    _yield_to_pages(STEP_YIELD_S)
    t0 = time.perf_counter()
    import numpy as np
    import tensorflow  # noqa: F401  the longest part (4-40 s on this shared 2-core machine), timed on its own

    from core.models import Predictor, classify
    from core.reframing import METHODS

    t1 = time.perf_counter()
    _yield_to_pages(STEP_YIELD_S)
    predictor = Predictor.load(None)
    t2 = time.perf_counter()
    _yield_to_pages(STEP_YIELD_S)
    # The first call traces the tf.function (~1 s); one reframed stroke per method also runs each reframing
    # once, as the Draw page's first answer will.
    stroke = np.full((96, 96), 255, np.uint8)
    stroke[16:80, 44:52] = 0
    for method in METHODS:
        classify(predictor, stroke, method)
    seconds.update(tensorflow=t1 - t0, model=t2 - t1, first_call=time.perf_counter() - t2)
    return predictor


def _freeze_heap() -> None:
    """Move every object alive now (TensorFlow's ~480,000 among them) out of the garbage collector's reach.

    They live as long as the server, yet every full collection walked them all: a Training Runs rerun cost
    0.45 s of CPU with TensorFlow loaded, 0.13 s after the freeze (AppTest, 6 reruns each way, this 2-core
    machine). Objects frozen here are still freed by reference counting; only cycles among them would stay.
    That includes whatever the first sessions hold at this moment (their pages' objects), not only TensorFlow's:
    a few cycles kept for the server's life, against a collector that no longer walks half a million objects.
    """
    gc.collect()  # garbage made by the imports goes first, so none of it is kept for good
    gc.freeze()


def _run(loader: Callable[[dict], object]) -> None:
    """The thread's body: no st.* here (see the module's docstring)."""
    _wanted.wait(START_DELAY_S)
    seconds: dict = {}
    t0 = time.perf_counter()
    _state["gave_way"] = 0.0
    try:
        predictor = loader(seconds)
    except BaseException as e:  # anything, even SystemExit from a broken import: pages then load it themselves
        with _lock:
            _state.update(state=FAILED, error=e)
        LOG.warning("Model warm-up failed after %.1f s (%s: %s); pages will load the model themselves.",
                    time.perf_counter() - t0, type(e).__name__, e)
    else:
        _freeze_heap()
        seconds["gave_way"] = _state["gave_way"]  # of the total, paused while pages ran
        seconds["total"] = time.perf_counter() - t0
        with _lock:
            _state.update(state=READY, predictor=predictor, seconds=seconds)
        LOG.info("Model warm-up ready in %.1f s (%s).", seconds["total"],
                 ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items() if k != "total"))
    finally:
        _done.set()


def start(loader: Callable[[dict], object] | None = None) -> bool:
    """Start the warm-up thread unless it has been started in this process (or is turned off).

    Cheap after the first call (a lock), so app.py calls it on every page load. True when this call started it.
    """
    with _lock:
        if _state["state"] != IDLE:
            return False
        if not enabled():
            _state["state"] = OFF
            _done.set()
            return False
        _state["state"] = RUNNING
        # daemon: a server that stops never waits for TensorFlow to finish importing
        thread = threading.Thread(target=_run, args=(loader or load_reused,), name="digitlab-warmup", daemon=True)
        _state["thread"] = thread
        if not _state.get("hooked"):
            sys.addaudithook(_give_way_on_import)
            _state["hooked"] = True
    LOG.info("Model warm-up started in the background.")
    thread.start()
    return True


def state() -> str:
    """idle (not started), running, ready, failed or off."""
    with _lock:
        return _state["state"]


def ready():
    """The warmed-up predictor of the shipped model, or None (not started, still running, failed or off)."""
    with _lock:
        return _state["predictor"] if _state["state"] == READY else None


def wait(timeout: float | None = WAIT_LIMIT_S):
    """Wait for a running warm-up to end (at most `timeout` s); its predictor, or None if it has none."""
    if state() == IDLE:
        return None  # never started (a page run on its own, e.g. in a test): nothing to wait for
    _wanted.set()
    me = threading.get_ident()
    with _lock:
        page = _pages.pop(me, None)  # a page waiting for the warm-up must not slow it down
    try:
        _done.wait(timeout)
    finally:
        if page is not None:
            with _lock:
                _pages[me] = page
    return ready()


def info() -> dict:
    """What happened: state, seconds per phase, and the error's text when it failed."""
    with _lock:
        err = _state["error"]
        return {"state": _state["state"], "seconds": dict(_state["seconds"]),
                "error": None if err is None else f"{type(err).__name__}: {err}"}


def _reset() -> None:
    """Back to 'never started' (tests only): waits for a running thread first, so it cannot report later."""
    thread = _state["thread"]
    if thread is not None:
        thread.join(WAIT_LIMIT_S)
    with _lock:
        _state.update(state=IDLE, predictor=None, error=None, seconds={}, thread=None)  # the hook stays
        _pages.clear()
        _done.clear()
        _wanted.clear()
