"""Fetching ImageNet weights and training data sets into the Keras cache, only when a user asks for it.

The product is offline by default: nothing here runs at import, start-up or page load, and training never
downloads. `fetch(name)` is called by `python -m core weights fetch ...` / `data fetch ...` (and the Training Runs
page's buttons). Every file goes exactly where Keras' own loaders look (`keras.applications.*`,
`keras.datasets.*.load_data()`), under the URL and checksum Keras' source names, so Keras and this product
agree on what is cached.

A download is streamed under a temporary name in the destination folder and renamed into place only after its
checksum matched (SHA-256 or MD5, whichever Keras publishes); where Keras publishes none, the table says so and
the SHA-256 of what arrived is recorded in a `<file>.sha256` sidecar. Connect and every read time out after a
few seconds, and the host name is resolved under the same limit, so an offline machine fails at once with a
message that says where to copy the file by hand.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from core import config
from core.errors import DigitLabError, InvalidOptionError
from core.storage import atomic_write_text, storage_error

#: Seconds allowed to resolve the host, to connect, and for each read: a stalled server fails in this time.
DEFAULT_TIMEOUT = 10.0
CHUNK = 1 << 16
#: At most this often the progress callback is called (a page redraws on each call); the last call always comes.
PROGRESS_INTERVAL = 0.1

Progress = Callable[[int, "int | None"], None]


class DownloadError(DigitLabError):
    """A file that could not be fetched (server error, truncated transfer, bad archive); says how to get it."""


class OfflineError(DownloadError):
    """No network: the host could not be resolved or reached, or stopped sending within the timeout."""


class ChecksumError(DownloadError):
    """The downloaded bytes are not the ones Keras publishes; nothing was kept."""


# --- what can be fetched: Keras' own URLs, cache paths and checksums (keras/src/applications, keras/src/datasets)

KERAS_APPLICATIONS = "https://storage.googleapis.com/tensorflow/keras-applications/"
KERAS_DATASETS = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
NO_CHECKSUM = "Keras publishes no checksum for this file"


@dataclass(frozen=True)
class RemoteFile:
    """One file: its path under the Keras cache, its URL, and the checksum Keras publishes (None: none)."""

    name: str  # relative to config.keras_home(), e.g. "models/vgg16_..._notop.h5"
    url: str
    checksum: str | None = None
    algorithm: str | None = None  # "sha256" or "md5", as Keras' get_file(file_hash=...) reads it

    @property
    def path(self) -> Path:
        return config.keras_home() / self.name

    @property
    def checksum_text(self) -> str:
        return f"{self.algorithm} {self.checksum} (published by Keras)" if self.checksum else NO_CHECKSUM


@dataclass(frozen=True)
class Resource:
    """Something a user can fetch: one or more files, maybe an archive to extract (CIFAR-10)."""

    name: str
    kind: str  # "weights" or "data"
    title: str
    files: tuple[RemoteFile, ...]
    source: str  # where Keras names the URL and checksum
    command: str  # the CLI command that fetches (or verifies and installs a hand-copied file)
    extract_to: str | None = None  # folder (relative to the Keras cache) the archive is unpacked into
    expect: tuple[str, ...] = ()  # files the extracted folder must hold (relative to extract_to)

    @property
    def path(self) -> Path:
        """What a loader reads: the file, the extracted folder, or the folder holding several files."""
        if self.extract_to:
            return config.keras_home() / self.extract_to
        return self.files[0].path if len(self.files) == 1 else self.files[0].path.parent

    @property
    def checksums_published(self) -> bool:
        return all(f.checksum for f in self.files)

    def present(self) -> bool:
        """Every file (and the extracted folder) is in the cache. Checks existence only: cheap, no hashing.
        A cache that cannot be looked at (no permission) counts as missing: fetching then says why."""
        try:
            if not all(f.path.is_file() for f in self.files):
                return False
            return not self.extract_to or all((self.path / e).is_file() for e in self.expect)
        except OSError:
            return False


def _sha(hexdigest: str) -> tuple[str, str]:
    return hexdigest, "sha256" if len(hexdigest) == 64 else "md5"  # the rule of Keras' resolve_hasher


def _mobilenet(size: int) -> Resource:
    from core.models import IMAGENET_FILES

    fname = IMAGENET_FILES["mobilenetv2"].format(size=size)
    return Resource(
        f"mobilenetv2-{size}", "weights", f"MobileNetV2 ImageNet weights (alpha 1.0, {size} px, no top)",
        (RemoteFile(f"models/{fname}", KERAS_APPLICATIONS + "mobilenet_v2/" + fname),),
        "keras/src/applications/mobilenet_v2.py (BASE_WEIGHT_PATH; get_file without file_hash)",
        f"python -m core weights fetch mobilenetv2 --input-size {size}")


def _resources() -> dict[str, Resource]:
    from core.models import IMAGENET_FILES, MOBILENET_SIZES

    vgg = IMAGENET_FILES["vgg16"]
    table = [
        Resource("vgg16", "weights", "VGG16 ImageNet weights (no top)",
                 (RemoteFile(f"models/{vgg}", KERAS_APPLICATIONS + "vgg16/" + vgg,
                             *_sha("6d6bbae143d832006294945121d1f1fc")),),
                 "keras/src/applications/vgg16.py (WEIGHTS_PATH_NO_TOP, file_hash)",
                 "python -m core weights fetch vgg16"),
        *[_mobilenet(s) for s in MOBILENET_SIZES],
        Resource("mnist", "data", "MNIST (60,000 training and 10,000 test digits)",
                 (RemoteFile("datasets/mnist.npz", KERAS_DATASETS + "mnist.npz",
                             *_sha("731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1")),),
                 "keras/src/datasets/mnist.py", "python -m core data fetch mnist"),
        Resource("fashion-mnist", "data", "Fashion-MNIST (60,000 training and 10,000 test images)",
                 tuple(RemoteFile(f"datasets/fashion-mnist/{f}", KERAS_DATASETS + f) for f in (
                     "train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
                     "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz")),
                 "keras/src/datasets/fashion_mnist.py (get_file without file_hash)",
                 "python -m core data fetch fashion-mnist"),
        # Keras 3 caches the archive as "<fname>_archive" and unpacks it into "<fname>/" (file_utils.get_file
        # with extract=True and a dot-less fname), which its cifar10.load_data() then reads.
        Resource("cifar10", "data", "CIFAR-10 (50,000 training and 10,000 test images, 32x32 colour)",
                 (RemoteFile("datasets/cifar-10-batches-py-target_archive",
                             "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                             *_sha("6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce")),),
                 "keras/src/datasets/cifar10.py", "python -m core data fetch cifar10",
                 extract_to="datasets/cifar-10-batches-py-target",
                 expect=tuple(f"cifar-10-batches-py/{b}" for b in
                              [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"])),
    ]
    return {r.name: r for r in table}


def resources(kind: str | None = None) -> list[Resource]:
    """Every fetchable resource (or those of one kind: "weights", "data"), in table order."""
    return [r for r in _resources().values() if kind in (None, r.kind)]


def get_resource(name: str) -> Resource:
    """The resource with this name; InvalidOptionError names the valid ones."""
    table = _resources()
    if name not in table:
        raise InvalidOptionError("resource", name, list(table))
    return table[name]


def weights_resource(architecture: str, input_size: int = 32) -> str:
    """The resource holding the ImageNet weights a transfer run of this size loads (see models.imagenet_weights_path):
    "vgg16", or "mobilenetv2-<nearest Keras size>"."""
    from core.models import MOBILENET_SIZES

    if architecture == "vgg16":
        return "vgg16"
    if architecture == "mobilenetv2":
        return f"mobilenetv2-{min(MOBILENET_SIZES, key=lambda s: abs(s - input_size))}"
    raise InvalidOptionError("architecture", architecture, ("vgg16", "mobilenetv2"))


def manual_instructions(res: Resource) -> str:
    """How to provide a resource by hand: the URL(s) to fetch elsewhere, the exact path(s) to copy to."""
    lines = ["To provide it by hand, download on a machine with internet:"]
    for f in res.files:
        renamed = Path(urllib.parse.urlparse(f.url).path).name != f.path.name
        # Keras looks for a cached archive under its own name, not the one in the URL: say so, or the
        # "_archive" suffix reads like a typo
        lines.append(f"  {f.url}\n  and copy it to {f.path}"
                     + (" (this exact name, which is where Keras looks for it)" if renamed else ""))
    one = len(res.files) == 1
    it, its = ("the file", "its") if one else ("the files", "their")
    check = (f"checks {it} against the {res.files[0].algorithm} Keras publishes" if res.checksums_published
             else f"records {its} SHA-256 (Keras publishes no checksum)")
    then = f"then run `{res.command}` here: it finds {it}, {check}"
    lines.append(then + (f" and unpacks it into {res.path}." if res.extract_to else ", and downloads nothing."))
    if res.kind == "weights":
        lines.append("Or train with `--weights PATH` to a local copy of the file, or `--weights none` (from scratch).")
    return "\n".join(lines)


# --- the result ---------------------------------------------------------------------------------------------

@dataclass
class FileResult:
    path: str
    bytes: int
    sha256: str
    verified: bool  # its checksum matched the one Keras publishes (False where Keras publishes none)
    checksum: str  # what it was checked against, in words
    downloaded: bool  # False: it was already in the cache (and checked)
    seconds: float = 0.0


@dataclass
class FetchResult:
    resource: str
    title: str
    path: str
    files: list[FileResult] = field(default_factory=list)
    extracted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    @property
    def verified(self) -> bool:
        return bool(self.files) and all(f.verified for f in self.files)

    def as_dict(self) -> dict:
        """path, bytes, sha256 (a string for one file, {file name: digest} for several), verified, and per file."""
        sha = self.files[0].sha256 if len(self.files) == 1 else {Path(f.path).name: f.sha256 for f in self.files}
        return {"resource": self.resource, "title": self.title, "path": self.path, "bytes": self.bytes,
                "sha256": sha, "verified": self.verified, "downloaded": any(f.downloaded for f in self.files),
                "extracted": self.extracted, "files": [f.__dict__ for f in self.files], "notes": self.notes}


# --- fetching -----------------------------------------------------------------------------------------------

def fetch(resource: str, progress: Progress | None = None, timeout: float = DEFAULT_TIMEOUT,
          on_file: Callable[[str, int, int], None] | None = None, force: bool = False) -> FetchResult:
    """Put a resource in the Keras cache and return what is there (paths, sizes, SHA-256, verified).

    A file already there is checked, not downloaded again (unless its published checksum does not match, or
    `force`). `progress(done_bytes, total_bytes_or_None)` is called while each file streams (at most every
    0.1 s, and once at its end); `on_file(name, index, count)` before each file. An exception raised by a
    callback stops the download and leaves nothing behind (a page can cancel that way). Raises OfflineError
    within about `timeout` seconds without network, ChecksumError when the bytes differ from the published
    ones, DownloadError for other transfer failures (each says how to provide the file by hand),
    StorageError when the cache cannot be written, ReadOnlyError on a read-only server.
    """
    res = get_resource(resource)
    config.require_writable(f"downloading {res.title}")
    result = FetchResult(res.name, res.title, str(res.path))
    for i, f in enumerate(res.files):
        if on_file:
            on_file(Path(f.name).name, i, len(res.files))
        result.files.append(_fetch_file(res, f, progress, timeout, force))
    if res.extract_to and (force or not res.present() or any(x.downloaded for x in result.files)):
        _extract(res)
        result.extracted = True
    for f in res.files:
        if not f.checksum:
            result.notes.append(f"{Path(f.name).name}: {NO_CHECKSUM}; the SHA-256 of what is here is recorded "
                                f"in {_sidecar(f.path)}.")
    return result


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _digests(path: Path) -> dict[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
            md5.update(chunk)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest()}


def _write_sidecar(path: Path, sha256: str) -> None:
    try:  # `sha256sum -c` reads it; a cache that cannot take it does not undo a good download
        atomic_write_text(_sidecar(path), f"{sha256}  {path.name}\n")
    except DigitLabError:
        pass


def _fetch_file(res: Resource, f: RemoteFile, progress, timeout: float, force: bool) -> FileResult:
    dest = f.path
    if dest.is_file() and not force:
        try:
            digest = _digests(dest)
        except OSError as e:
            raise storage_error(e, dest.parent, "read") from None
        if f.checksum is None or digest[f.algorithm] == f.checksum:
            if f.checksum is None:  # the sidecar says what is here now (a file copied by hand included)
                _write_sidecar(dest, digest["sha256"])
            return FileResult(str(dest), dest.stat().st_size, digest["sha256"], f.checksum is not None,
                              f.checksum_text, downloaded=False)
        # A copy whose checksum does not match (truncated, outdated, damaged): fetched again, as Keras does;
        # if that fails too, the user learns that the copy they may have put there is not the right file.
        try:
            return _download(res, f, progress, timeout)
        except DownloadError as e:
            raise type(e)(f"{dest} is there but is not the file Keras publishes ({f.algorithm} "
                          f"{digest[f.algorithm]}, expected {f.checksum}); fetching it again failed. {e}") from None
    return _download(res, f, progress, timeout)


def _resolve(host: str, port: int, timeout: float) -> None:
    """Resolve `host` in a helper thread: a broken resolver can block getaddrinfo far longer than `timeout`
    (socket timeouts do not cover name resolution)."""
    outcome: dict = {}

    def work() -> None:
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            outcome["ok"] = True
        except OSError as e:
            outcome["error"] = e

    t = threading.Thread(target=work, name=f"resolve-{host}", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise OSError(f"resolving {host} took longer than {timeout:g} s")
    if "error" in outcome:
        raise OSError(f"the name {host} could not be resolved ({outcome['error']})")


def _target_host(url: str) -> tuple[str, int]:
    """The host this process actually connects to: the proxy when one is configured for the URL, else the URL's."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return p.hostname or "", p.port or 80
    return host, parts.port or (443 if parts.scheme == "https" else 80)


def _offline(res: Resource, f: RemoteFile, reason: str) -> OfflineError:
    host = urllib.parse.urlsplit(f.url).hostname
    return OfflineError(f"Could not download {res.title}: {reason}. Nothing was written: this machine looks "
                        f"offline, or {host} is unreachable from it.\n{manual_instructions(res)}")


def _download(res: Resource, f: RemoteFile, progress, timeout: float) -> FileResult:
    import http.client

    t0 = time.monotonic()
    try:
        _resolve(*_target_host(f.url), timeout)
        response = urllib.request.urlopen(urllib.request.Request(f.url, headers={"User-Agent": "digit-reuse-lab"}),
                                          timeout=timeout)
    except urllib.error.HTTPError as e:
        raise DownloadError(f"Could not download {res.title}: {f.url} answered HTTP {e.code} ({e.reason}); "
                            f"nothing was written.\n{manual_instructions(res)}") from None
    except urllib.error.URLError as e:
        reason = e.reason if isinstance(e.reason, str) else str(e.reason)
        raise _offline(res, f, f"{urllib.parse.urlsplit(f.url).hostname} could not be reached ({reason})") from None
    except (OSError, http.client.HTTPException) as e:  # our resolver check, a timeout, a reset connection
        raise _offline(res, f, str(e) or type(e).__name__) from None
    dest = f.path
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as e:
        response.close()
        raise storage_error(e, dest.parent) from None
    tmp = Path(tmp_name)
    sha, md5 = hashlib.sha256(), hashlib.md5()
    done, last_report = 0, 0.0
    try:
        with response, os.fdopen(fd, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if progress:
                progress(0, total)
            while True:
                try:
                    chunk = response.read1(CHUNK)  # what has arrived: progress moves, a stall loses nothing
                except (OSError, http.client.HTTPException) as e:  # socket timeout, reset, IncompleteRead
                    stalled = isinstance(e, TimeoutError) or "timed out" in str(e)
                    why = (f"the server stopped sending for {timeout:g} s after {done:,} bytes" if stalled
                           else f"the connection broke after {done:,} bytes ({e or type(e).__name__})")
                    raise _offline(res, f, why) from None
                if not chunk:
                    break
                try:
                    out.write(chunk)
                except OSError as e:
                    raise storage_error(e, dest.parent) from None
                sha.update(chunk)
                md5.update(chunk)
                done += len(chunk)
                if progress and time.monotonic() - last_report >= PROGRESS_INTERVAL:
                    last_report = time.monotonic()
                    progress(done, total)
            try:
                out.flush()
                os.fsync(out.fileno())
            except OSError as e:
                raise storage_error(e, dest.parent) from None
        if progress:
            progress(done, total)
        if total is not None and done != total:
            raise DownloadError(f"Could not download {res.title}: the transfer ended after {done:,} of {total:,} "
                                f"bytes; the partial file was deleted.\n{manual_instructions(res)}")
        digest = {"sha256": sha.hexdigest(), "md5": md5.hexdigest()}
        if f.checksum and digest[f.algorithm] != f.checksum:
            raise ChecksumError(
                f"{dest.name} from {f.url} does not match the checksum Keras publishes ({f.algorithm} expected "
                f"{f.checksum}, got {digest[f.algorithm]}); the download was deleted and nothing was kept. "
                f"Try again later; if it persists, the file on the server is not the one Keras expects.")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared Keras cache is read by other users' processes
        os.replace(tmp, dest)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise storage_error(e, dest.parent) from None
    except BaseException:  # a DownloadError, a callback that cancels, Ctrl-C: no partial file is ever left
        tmp.unlink(missing_ok=True)
        raise
    _write_sidecar(dest, digest["sha256"])
    return FileResult(str(dest), done, digest["sha256"], f.checksum is not None, f.checksum_text, downloaded=True,
                      seconds=round(time.monotonic() - t0, 2))


def _extract(res: Resource) -> None:
    """Unpack the resource's archive into its folder: into a temporary folder first, renamed when complete."""
    archive, dest = res.files[0].path, res.path
    try:
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial"))
    except OSError as e:
        raise storage_error(e, dest.parent) from None
    try:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")  # refuses absolute paths, '..', links out, devices
        except (tarfile.TarError, EOFError, ValueError, OSError) as e:
            if isinstance(e, OSError) and e.errno is not None:
                raise storage_error(e, dest.parent) from None
            raise DownloadError(f"{archive} could not be unpacked ({e}); delete it and run `{res.command}` "
                                "again.") from None
        missing = [e for e in res.expect if not (tmp / e).is_file()]
        if missing:
            raise DownloadError(f"{archive} does not hold {', '.join(missing)}: it is not the archive Keras "
                                f"expects. Delete it and run `{res.command}` again.")
        if dest.exists():
            aside = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, aside)
            shutil.rmtree(aside, ignore_errors=True)
        os.replace(tmp, dest)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise storage_error(e, dest.parent) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _cached_bytes(res: Resource) -> int | None:
    """The bytes of the resource's files now in the cache (an archive, not what it unpacks to); None: none."""
    sizes = []
    for f in res.files:
        try:
            sizes.append(f.path.stat().st_size)
        except OSError:
            pass
    return sum(sizes) if sizes else None


def status(kind: str | None = None) -> list[dict]:
    """Each resource: name, title, where it goes, whether it is here, the bytes of its files in the cache
    (`bytes`, None when none is there), and how its integrity is checked.

    Looks at file names and sizes only (no hashing, no network): cheap enough for a page to call on every rerun.
    """
    return [{"name": r.name, "kind": r.kind, "title": r.title, "path": str(r.path), "present": r.present(),
             "bytes": _cached_bytes(r),
             "checksum": (f"{r.files[0].algorithm} published by Keras" if r.checksums_published else NO_CHECKSUM),
             "urls": [f.url for f in r.files], "command": r.command, "source": r.source} for r in resources(kind)]
