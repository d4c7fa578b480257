"""core.downloads against a local HTTP server on 127.0.0.1: progress, checksums, stalls, offline, archives.

No test touches the internet: the real resources are only checked against the installed Keras source, and the
offline case uses an unresolvable host (RFC 6761 .invalid) or a proxy that cannot be resolved.
"""
import hashlib
import http.server
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from core import datasets, downloads
from core.errors import ReadOnlyError
from tests.conftest import ROOT

STALL_SECONDS = 6  # how long the stalling handler holds a connection at most (the test's client gives up at 1 s)


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}
    release = threading.Event()

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def do_GET(self):
        name = self.path.lstrip("/")
        if name not in self.files:
            self.send_error(404, "Not Found")
            return
        body, mode = self.files[name]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        declared = len(body) * 2 if mode == "truncated" else len(body)
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        if mode == "stall":  # half the body, then silence: the client's read timeout must end it
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.release.wait(STALL_SECONDS)
            return
        for i in range(0, len(body), 4096):  # several chunks, so progress is reported more than once
            self.wfile.write(body[i : i + 4096])
        self.close_connection = True


@pytest.fixture
def server():
    """A threaded HTTP server on 127.0.0.1 serving `files` ({path: (bytes, mode)}), stopped after the test."""
    handler = type("Handler", (_Handler,), {"files": {}, "release": threading.Event()})
    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):  # a client that hung up on purpose is not news
            pass

    httpd = Server(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.files = handler.files
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    yield httpd
    handler.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    home = tmp_path / "keras"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")  # a CI proxy must not see the local test server
    return home


def _table(monkeypatch, *resources):
    monkeypatch.setattr(downloads, "_resources", lambda: {r.name: r for r in resources})


def _resource(name, files, **kw):
    return downloads.Resource(name, "data", f"test file {name}", tuple(files), "tests",
                              f"python -m core data fetch {name}", **kw)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
def test_fetch_streams_with_progress_and_verifies_the_published_checksum(server, keras_home, monkeypatch,
                                                                         algorithm):
    body = os.urandom(300_000)
    server.files["w.h5"] = (body, "ok")
    digest = getattr(hashlib, algorithm)(body).hexdigest()
    _table(monkeypatch, _resource("w", [downloads.RemoteFile("models/w.h5", server.url + "w.h5", digest,
                                                             algorithm)]))
    monkeypatch.setattr(downloads, "PROGRESS_INTERVAL", 0.0)
    calls = []
    result = downloads.fetch("w", progress=lambda done, total: calls.append((done, total)))
    path = keras_home / "models" / "w.h5"
    assert path.read_bytes() == body
    assert result.verified and result.files[0].downloaded and result.bytes == len(body)
    assert result.as_dict()["sha256"] == hashlib.sha256(body).hexdigest() == result.files[0].sha256
    assert calls[0] == (0, len(body)) and calls[-1] == (len(body), len(body)) and len(calls) > 3
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert _leftovers(path.parent) == ["w.h5", "w.h5.sha256"]  # no temporary file left
    again = downloads.fetch("w")  # already there: checked, not downloaded
    assert again.verified and not again.files[0].downloaded


def test_checksum_mismatch_deletes_the_download_and_says_so(server, keras_home, monkeypatch):
    server.files["w.h5"] = (b"x" * 50_000, "ok")
    _table(monkeypatch, _resource("w", [downloads.RemoteFile("models/w.h5", server.url + "w.h5", "0" * 64,
                                                             "sha256")]))
    with pytest.raises(downloads.ChecksumError, match="does not match the checksum Keras publishes.*deleted"):
        downloads.fetch("w")
    assert _leftovers(keras_home / "models") == []


def test_a_damaged_copy_in_the_cache_is_fetched_again(server, keras_home, monkeypatch):
    body = b"good" * 1000
    server.files["d.npz"] = (body, "ok")
    _table(monkeypatch, _resource("d", [downloads.RemoteFile("datasets/d.npz", server.url + "d.npz",
                                                             hashlib.sha256(body).hexdigest(), "sha256")]))
    (keras_home / "datasets").mkdir(parents=True)
    (keras_home / "datasets" / "d.npz").write_bytes(b"truncated")
    result = downloads.fetch("d")
    assert result.files[0].downloaded and (keras_home / "datasets" / "d.npz").read_bytes() == body


def test_a_wrong_copy_offline_says_it_is_the_wrong_file(keras_home, monkeypatch):
    url = "http://nonexistent.invalid/w.h5"
    _table(monkeypatch, _resource("w", [downloads.RemoteFile("models/w.h5", url, "0" * 32, "md5")]))
    (keras_home / "models").mkdir(parents=True)
    (keras_home / "models" / "w.h5").write_bytes(b"not the weights")
    with pytest.raises(downloads.OfflineError, match="(?s)is there but is not the file Keras publishes.*looks offline"):
        downloads.fetch("w", timeout=3.0)
    assert (keras_home / "models" / "w.h5").read_bytes() == b"not the weights"  # left for the user to replace


def test_without_a_published_checksum_the_sha256_is_recorded_and_said(server, keras_home, monkeypatch):
    body = os.urandom(10_000)
    server.files["m.h5"] = (body, "ok")
    _table(monkeypatch, _resource("m", [downloads.RemoteFile("models/m.h5", server.url + "m.h5")]))
    result = downloads.fetch("m")
    sha = hashlib.sha256(body).hexdigest()
    assert result.verified is False and result.files[0].checksum == downloads.NO_CHECKSUM
    assert (keras_home / "models" / "m.h5.sha256").read_text() == f"{sha}  m.h5\n"  # sha256sum -c reads it
    assert "publishes no checksum" in result.notes[0] and "m.h5.sha256" in result.notes[0]


def test_a_stalled_server_times_out_within_the_limit_and_leaves_nothing(server, keras_home, monkeypatch):
    server.files["big.bin"] = (os.urandom(200_000), "stall")
    _table(monkeypatch, _resource("big", [downloads.RemoteFile("datasets/big.bin", server.url + "big.bin")]))
    t0 = time.monotonic()
    with pytest.raises(downloads.OfflineError, match="stopped sending for 1 s after 100,000 bytes") as e:
        downloads.fetch("big", timeout=1.0)
    assert time.monotonic() - t0 < 4
    assert str(keras_home / "datasets" / "big.bin") in str(e.value) and server.url + "big.bin" in str(e.value)
    assert _leftovers(keras_home / "datasets") == []


def test_a_truncated_transfer_is_refused(server, keras_home, monkeypatch):
    server.files["t.bin"] = (b"y" * 20_000, "truncated")
    _table(monkeypatch, _resource("t", [downloads.RemoteFile("datasets/t.bin", server.url + "t.bin")]))
    with pytest.raises(downloads.DownloadError, match="20,000 of 40,000 bytes|connection broke after 20,000"):
        downloads.fetch("t", timeout=2.0)
    assert _leftovers(keras_home / "datasets") == []


def test_http_errors_say_how_to_provide_the_file(server, keras_home, monkeypatch):
    _table(monkeypatch, _resource("gone", [downloads.RemoteFile("datasets/gone.bin", server.url + "gone.bin")]))
    with pytest.raises(downloads.DownloadError, match="(?s)HTTP 404.*copy it to .*gone.bin"):
        downloads.fetch("gone")


def test_a_callback_that_raises_cancels_and_leaves_nothing(server, keras_home, monkeypatch):
    server.files["c.bin"] = (os.urandom(100_000), "ok")
    _table(monkeypatch, _resource("c", [downloads.RemoteFile("datasets/c.bin", server.url + "c.bin")]))

    def cancel(done, total):
        if done:
            raise KeyboardInterrupt

    monkeypatch.setattr(downloads, "PROGRESS_INTERVAL", 0.0)
    with pytest.raises(KeyboardInterrupt):
        downloads.fetch("c", progress=cancel)
    assert _leftovers(keras_home / "datasets") == []


def test_offline_fails_in_seconds_with_the_path_and_the_url(keras_home, monkeypatch):
    url = "http://nonexistent.invalid/vgg16_notop.h5"
    _table(monkeypatch, downloads.Resource("vgg16", "weights", "VGG16 ImageNet weights (no top)",
                                           (downloads.RemoteFile("models/vgg16_notop.h5", url, "0" * 32, "md5"),),
                                           "tests", "python -m core weights fetch vgg16"))
    t0 = time.monotonic()
    with pytest.raises(downloads.OfflineError) as e:
        downloads.fetch("vgg16", timeout=3.0)
    assert time.monotonic() - t0 < 5
    message = str(e.value)
    assert "looks offline" in message and url in message
    assert f"copy it to {keras_home / 'models' / 'vgg16_notop.h5'}" in message
    assert "--weights PATH" in message and "python -m core weights fetch vgg16" in message
    assert not (keras_home / "models").exists() or _leftovers(keras_home / "models") == []


def test_a_hanging_resolver_is_cut_off_at_the_timeout(keras_home, monkeypatch):
    def slow(*args, **kwargs):
        time.sleep(5)
        raise OSError("too late")

    monkeypatch.setattr(downloads.socket, "getaddrinfo", slow)
    _table(monkeypatch, _resource("x", [downloads.RemoteFile("datasets/x", "https://example.org/x")]))
    t0 = time.monotonic()
    with pytest.raises(downloads.OfflineError, match="took longer than 0.5 s"):
        downloads.fetch("x", timeout=0.5)
    assert time.monotonic() - t0 < 2


def test_read_only_server_refuses_downloads(keras_home, monkeypatch):
    monkeypatch.setenv("DIGITLAB_READ_ONLY", "1")
    with pytest.raises(ReadOnlyError):
        downloads.fetch("mnist")


def _cifar_batch(n, seed):
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"fabricated", b"labels": [int(v) for v in np.arange(n) % 10],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img{i}.png".encode() for i in range(n)]}


def cifar_archive(n_per_batch=20) -> bytes:
    """A cifar-10-python.tar.gz in the real layout and format: pickles of bytes-keyed dicts (the real files are
    Python 2 pickles read with encoding="bytes"; protocol 4 gives the same bytes keys and numpy globals)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        for k, name in enumerate(names):
            data = pickle.dumps(_cifar_batch(n_per_batch, k), protocol=4)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_an_archive_is_verified_then_unpacked_where_keras_reads_it(server, keras_home, monkeypatch):
    body = cifar_archive()
    server.files["cifar.tar.gz"] = (body, "ok")
    real = downloads.get_resource("cifar10")
    fake = downloads.Resource(
        "cifar10", "data", real.title,
        (downloads.RemoteFile(real.files[0].name, server.url + "cifar.tar.gz", hashlib.sha256(body).hexdigest(),
                              "sha256"),), "tests", real.command, extract_to=real.extract_to, expect=real.expect)
    _table(monkeypatch, fake)
    result = downloads.fetch("cifar10")
    assert result.extracted and result.verified and fake.present()
    assert Path(result.path) == keras_home / "datasets" / "cifar-10-batches-py-target"
    train, val = datasets.load_cifar10(validation_fraction=0.2)
    assert train.images.shape == (80, 32, 32, 3) and len(val) == 20 and train.images.dtype == np.uint8
    assert datasets.load_cifar10_test().images.shape == (20, 32, 32, 3)
    assert not downloads.fetch("cifar10").extracted  # already unpacked: nothing to do
    assert [p for p in (keras_home / "datasets").iterdir() if p.name.startswith(".")] == []


def test_resource_table_matches_the_installed_keras_source():
    """URLs, cache paths and checksums are Keras' own (read from its source, so an upgrade that moves them fails
    here rather than in a user's download)."""
    import importlib.util

    src = Path(importlib.util.find_spec("keras").origin).parent / "src"  # located, not imported (TF is slow)
    vgg = (src / "applications" / "vgg16.py").read_text()
    mobilenet = (src / "applications" / "mobilenet_v2.py").read_text()
    mnist = (src / "datasets" / "mnist.py").read_text()
    fashion = (src / "datasets" / "fashion_mnist.py").read_text()
    cifar = (src / "datasets" / "cifar10.py").read_text()
    r = downloads.get_resource("vgg16").files[0]
    assert r.checksum in vgg and r.url.rsplit("/", 1)[1] in vgg and "keras-applications/vgg16/" in r.url
    assert "keras-applications/mobilenet_v2/" in mobilenet and "file_hash" not in mobilenet.split("BASE_WEIGHT")[-1]
    m = downloads.get_resource("mnist").files[0]
    assert m.checksum in mnist and m.algorithm == "sha256" and m.name == "datasets/mnist.npz"
    assert all(Path(f.name).name in fashion and f.checksum is None for f in downloads.get_resource("fashion-mnist").files)
    c = downloads.get_resource("cifar10")
    assert c.files[0].checksum in cifar and c.files[0].url in cifar and '"cifar-10-batches-py-target"' in cifar
    assert downloads.weights_resource("mobilenetv2", 32) == "mobilenetv2-96"
    from core.models import imagenet_weights_path

    for arch, size in (("vgg16", 32), ("mobilenetv2", 32), ("mobilenetv2", 96), ("mobilenetv2", 150)):
        assert downloads.get_resource(downloads.weights_resource(arch, size)).path == imagenet_weights_path(arch, size)


def test_keras_own_loaders_read_what_we_cache(tmp_path):
    """Keras and this product agree on the cache: Keras' fashion_mnist.load_data() reads our files, and its
    get_file finds our CIFAR-10 archive (an origin it cannot reach proves it downloads nothing) and unpacks it
    into the folder our loader reads."""
    import gzip

    home = tmp_path / "keras"
    folder = home / "datasets" / "fashion-mnist"
    folder.mkdir(parents=True)
    for prefix, n in (("train", 30), ("t10k", 10)):  # gzipped IDX: magic, dimensions, then the bytes
        for kind, shape in (("images-idx3", (n, 28, 28)), ("labels-idx1", (n,))):
            header = bytes([0, 0, 8, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape)
            with gzip.open(folder / f"{prefix}-{kind}-ubyte.gz", "wb") as f:
                f.write(header + bytes(int(np.prod(shape))))
    (home / "datasets" / "cifar-10-batches-py-target_archive").write_bytes(cifar_archive(2))
    code = (
        "import keras, json\n"
        "(x, y), (xt, yt) = keras.datasets.fashion_mnist.load_data()\n"
        "p = keras.utils.get_file(fname='cifar-10-batches-py-target', origin='http://nonexistent.invalid/c.tgz', "
        "extract=True)\n"
        "print(json.dumps({'fashion': [list(x.shape), list(xt.shape)], 'cifar': p}))\n"
    )
    env = {**os.environ, "KERAS_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3", "https_proxy": "", "http_proxy": ""}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["fashion"] == [[30, 28, 28], [10, 28, 28]]
    assert Path(out["cifar"]) == home / "datasets" / "cifar-10-batches-py-target"
    assert (Path(out["cifar"]) / "cifar-10-batches-py" / "test_batch").is_file()


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


def test_cli_offline_fails_fast_with_the_manual_route(tmp_path):
    # An unresolvable proxy makes every download offline, whatever network the test machine has.
    env = {"KERAS_HOME": str(tmp_path / "keras"), "https_proxy": "http://proxy.nonexistent.invalid:3128",
           "no_proxy": ""}
    t0 = time.monotonic()
    r = _cli("weights", "fetch", "vgg16", "--json", env=env)
    assert time.monotonic() - t0 < 20  # the interpreter's start included; the fetch itself fails at once
    assert r.returncode == 2
    error = json.loads(r.stdout)["error"]
    assert "looks offline" in error and "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in error
    assert "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" in error


def test_cli_checks_a_file_copied_by_hand_and_reports_it(tmp_path):
    home = tmp_path / "keras"
    (home / "models").mkdir(parents=True)
    target = home / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5"
    target.write_bytes(b"\x89HDF\r\n\x1a\n" + b"0" * 100)
    env = {"KERAS_HOME": str(home), "https_proxy": "http://proxy.nonexistent.invalid:3128", "no_proxy": ""}
    r = _cli("weights", "fetch", "mobilenetv2", "--input-size", "32", "--json", env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["path"] == str(target) and out["bytes"] == 108 and out["verified"] is False
    assert out["sha256"] == hashlib.sha256(target.read_bytes()).hexdigest() and out["downloaded"] is False
    assert "no checksum" in out["files"][0]["checksum"]
    listed = json.loads(_cli("weights", "list", "--json", env=env).stdout)
    assert {r["name"]: r["present"] for r in listed}["mobilenetv2-96"] is True


def test_status_says_what_is_here_and_its_size_without_hashing(keras_home):
    rows = {r["name"]: r for r in downloads.status()}
    assert rows["mnist"]["present"] is False and rows["mnist"]["bytes"] is None
    (keras_home / "datasets").mkdir(parents=True)
    (keras_home / "datasets" / "mnist.npz").write_bytes(b"x" * 1234)
    (keras_home / "datasets" / "fashion-mnist").mkdir()
    (keras_home / "datasets" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"y" * 10)
    rows = {r["name"]: r for r in downloads.status("data")}
    assert rows["mnist"]["present"] is True and rows["mnist"]["bytes"] == 1234
    assert rows["fashion-mnist"]["present"] is False and rows["fashion-mnist"]["bytes"] == 10  # 1 of its 4 files
    assert set(rows) == {"mnist", "fashion-mnist", "cifar10"}


def test_an_unreadable_cache_counts_as_missing_instead_of_breaking_the_listing(keras_home, monkeypatch):
    """A Keras cache the server user may not look into (PermissionError from stat) must not break the
    Training Runs page, which lists every resource on each rerun."""
    real_stat = Path.stat

    def denied(self, *args, **kwargs):
        if str(self).startswith(str(keras_home)):
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", denied)
    rows = downloads.status()
    assert rows and all(r["present"] is False and r["bytes"] is None for r in rows)


def test_the_manual_route_says_when_keras_expects_another_name_than_the_urls():
    cifar = downloads.manual_instructions(downloads.get_resource("cifar10"))
    assert "cifar-10-batches-py-target_archive (this exact name, which is where Keras looks for it)" in cifar
    mnist = downloads.manual_instructions(downloads.get_resource("mnist"))
    assert "mnist.npz" in mnist and "this exact name" not in mnist  # the URL's own name: nothing to explain
