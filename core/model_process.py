"""TensorFlow and the models under test in a process of their own, beside the dashboard's server.

Why: importing TensorFlow (4-5 s on this 2-core machine) and running a model hold Python's GIL. Done in the
Streamlit server's process, by a background thread, every page drawn meanwhile shared one interpreter with it:
a fully cached Report took 3.2-3.9 s in a second tab during the import, 1.8-2.0 s with this child (issue 8;
fresh servers, measured interleaved). In a child process the server keeps its interpreter.

The child is `python -m core.model_process`, started with `subprocess` and spoken to over a socket pair with
`multiprocessing.connection` (pickled requests and NumPy arrays). Not a `multiprocessing` pool: its "spawn" and
"forkserver" children first import the parent's `__main__`, which in a Streamlit server is the app's script
(Streamlit runs it as `__main__`): the child would run the page again. The child loads each model file once
and answers one request at a time; it runs at a lower priority, so the server and the browser come first, and
it exits when the parent closes the connection (or dies).

`RemotePredictor` has the methods of `core.models.Predictor` that pages use (`predict_proba`, `outputs`,
`features`, `describe`), so `core.evaluation`, `core.models.classify` and `core.shift` take either. Nothing
here imports TensorFlow in the calling process, and nothing runs at import time.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from core.errors import DigitLabError, ModelError

#: The longest one request may take before the caller gives up and the child is stopped (a hung child must
#: not hang a page for good). A request is one model load (with TensorFlow's import: 4-40 s on a busy 2-core
#: machine), one chunk of an evaluation (2,048 images) or one drawing.
CALL_TIMEOUT_S = 300.0
#: The child's niceness: the server and the browser showing its pages come first, TensorFlow's import gets the
#: CPU they leave (on 2 cores it otherwise competes with them).
CHILD_NICENESS = 10
#: Models the child keeps loaded (as the server's own cache did: a model evicted is loaded again on its next
#: request, in a second or so).
MAX_MODELS = 12
#: Images per request (28x28 float32: 6.4 MB): an evaluation's chunks are this size already.
CHUNK = 2048

ROOT = Path(__file__).resolve().parents[1]


def model_key(path: str | Path | None) -> str:
    """The resolved model file a path, run folder or run id names (None: the shipped model); ModelError if none."""
    from core.models import resolve_model_path

    return str(resolve_model_path(path).resolve())


class ModelProcess:
    """One child process holding TensorFlow; `load(path)` gives a RemotePredictor of a model file in it."""

    def __init__(self) -> None:
        parent, child = socket.socketpair()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        try:
            # stdout unused (it would keep a caller's pipe open); stderr is the server's log, TensorFlow's too
            self._proc = subprocess.Popen([sys.executable, "-m", "core.model_process", str(child.fileno())],
                                          pass_fds=[child.fileno()], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL)
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self._conn = Connection(parent.detach())
        self._lock = threading.Lock()  # one request at a time: send, then wait for its answer
        self._stopped: str | None = None

    @property
    def broken(self) -> bool:
        """The child has stopped (killed, crashed, timed out): a new ModelProcess is needed."""
        return self._stopped is not None or self._proc.poll() is not None

    def request(self, kind: str, key: str, x: np.ndarray | None = None, timeout: float = CALL_TIMEOUT_S):
        """Send one request to the child and return its answer; a DigitLabError there is re-raised here.

        At most `timeout` s waiting for the requests before it and as long again for this one; then the child
        is stopped (a ModelError says so), so that no page waits for good."""
        if not self._lock.acquire(timeout=timeout):
            raise ModelError(f"The model process is busy: no answer in {timeout:.0f} s. Try again in a moment.")
        try:
            if self.broken:
                raise self._stopped_error()
            try:
                self._conn.send((kind, key, None if x is None else np.ascontiguousarray(x)))
                if not self._conn.poll(timeout):
                    self._stop(f"no answer in {timeout:.0f} s")
                    raise self._stopped_error()
                status, value = self._conn.recv()
            except DigitLabError:
                raise
            except Exception as e:  # EOF, a broken pipe, an answer that does not unpickle: out of step for good
                self._stop(self._stopped or f"it exited ({type(e).__name__})")
                raise self._stopped_error() from None
        finally:
            self._lock.release()
        if status == "error":
            raise ModelError(value)
        return value

    def _stop(self, why: str) -> None:
        self._stopped = why
        self._proc.kill()

    def _stopped_error(self) -> ModelError:
        code = self._proc.poll()
        why = self._stopped or "it exited"
        return ModelError(f"The model process has stopped ({why}{'' if code is None else f', exit code {code}'}); "
                          "the next page load starts it again.")

    def load(self, path: str | Path | None = None) -> Future:
        """Start loading a model file (None: the shipped model) in the child; the future's result is its
        RemotePredictor, or the ModelError that says why it cannot be used (raised at once when the path names
        no model file). The child keeps the MAX_MODELS files it used last."""
        key = model_key(path)
        done: Future = Future()

        def run() -> None:
            try:
                description, seconds = self.request("load", key)
                done.set_result(RemotePredictor(self, key, description, seconds))
            except BaseException as e:  # the future carries it to whoever waits
                done.set_exception(e)

        threading.Thread(target=run, name="digitlab-model-load", daemon=True).start()
        return done

    def close(self) -> None:
        """Stop the child and close the connection (a request running now ends with a ModelError)."""
        self._stopped = self._stopped or "closed"
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        # Closed once no request uses it (the child is gone, so one still waiting ends at once).
        if self._lock.acquire(timeout=10):
            try:
                self._conn.close()
            finally:
                self._lock.release()


class RemotePredictor:
    """A model loaded in a ModelProcess, used like core.models.Predictor."""

    def __init__(self, process: ModelProcess, key: str, description: dict, seconds: dict) -> None:
        self.process, self.path, self.seconds = process, key, seconds
        self._description = description

    def describe(self) -> dict:
        """name, params, input_shape, outputs: the model's identity (see core.models.model_identity)."""
        return dict(self._description)

    def _each_chunk(self, kind: str, X: np.ndarray) -> np.ndarray:
        # One request per CHUNK images: a big set never travels (and is never pickled) in one piece.
        X = np.asarray(X)
        if len(X) <= CHUNK:
            return self.process.request(kind, self.path, X)
        return np.concatenate([self.process.request(kind, self.path, X[i : i + CHUNK])
                               for i in range(0, len(X), CHUNK)])

    def outputs(self, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """As Predictor.outputs (the child batches as it does)."""
        return self._each_chunk("outputs", X)

    def predict_proba(self, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """As Predictor.predict_proba."""
        return self._each_chunk("predict_proba", X)

    def features(self, X: np.ndarray) -> np.ndarray:
        """As Predictor.features."""
        return self._each_chunk("features", X)


# --- the child ------------------------------------------------------------------------------------------------

def _load(loaded: dict, key: str) -> tuple[dict, dict]:
    """Load a model and make its first (tracing) call; (its description, seconds per phase)."""
    t0 = time.perf_counter()
    import tensorflow  # noqa: F401  the longest part, timed on its own

    from core.models import Predictor

    t1 = time.perf_counter()
    if key in loaded:
        loaded[key] = loaded.pop(key)  # most recently used last
    else:
        loaded[key] = Predictor.load(key)
        while len(loaded) > MAX_MODELS:
            loaded.pop(next(iter(loaded)))
    t2 = time.perf_counter()
    loaded[key].predict_proba(np.zeros((1, 28, 28, 1), np.float32))  # traces the tf.function once
    return loaded[key].describe(), {"tensorflow": t1 - t0, "model": t2 - t1, "first_call": time.perf_counter() - t2}


def serve(conn: Connection) -> None:
    """Answer requests until the parent closes the connection: ("ok", value) or ("error", message)."""
    loaded: dict = {}
    while True:
        try:
            kind, key, x = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if kind == "load":
                value = _load(loaded, key)
            elif kind in ("predict_proba", "outputs", "features"):
                if key not in loaded:
                    _load(loaded, key)
                value = getattr(loaded[key], kind)(x)
            else:
                raise ModelError(f"unknown request {kind!r}")
            reply = ("ok", value)
        except DigitLabError as e:
            reply = ("error", str(e))
        except Exception as e:  # noqa: BLE001  said to the page, which shows it; the child goes on
            reply = ("error", f"The model failed: {type(e).__name__}: {e}")
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return


def main(argv: list[str]) -> None:
    # Ctrl-C on the server reaches its whole process group: the child goes when the connection closes instead
    # (no second traceback in the terminal).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.nice(CHILD_NICENESS)
    except (AttributeError, OSError):  # not on this platform, or not allowed: normal priority then
        pass
    serve(Connection(int(argv[0])))


if __name__ == "__main__":
    main(sys.argv[1:])
