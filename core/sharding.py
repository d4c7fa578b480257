"""Sharded evaluation: a target set too large for one machine, evaluated in slices as Ray tasks and merged.

Each shard is reframed and classified exactly as `core.evaluation.evaluate` does it (same chunks of 2048,
same predictor), and returns its per-image results (predictions, probabilities, unreadable images) and its
confusion matrix; the merge concatenates the per-image results in shard order and adds the matrices, giving
the same `Evaluation` the local function builds. The model file travels once through Ray's object store (a
node needs no shared path to it) and is loaded once per worker process, which keeps it for the next shard.

`executor="local"` runs the same shards one after the other in this process (no Ray needed).
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from core.datasets import Dataset
from core.errors import DigitLabError, InvalidOptionError
from core.evaluation import Evaluation, classify_images, confusion
from core.reframing import DEFAULT_METHOD, METHODS

#: A multiple of evaluate()'s chunk (2048): shards then batch images exactly as the local evaluation does.
DEFAULT_SHARD_SIZE = 16_384
_CHUNK = 2048

#: This process' loaded model: (sha256 of the file, Predictor). One only: a worker evaluates one model at a time,
#: and a VGG16 kept per file would add up.
_loaded: dict[str, object] = {}


def shard_bounds(n: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, stop) of each shard of n images, in order."""
    return [(start, min(start + shard_size, n)) for start in range(0, n, shard_size)]


def _predictor(digest: str, load: Callable[[], Path]):
    """The cached Predictor of the model with this digest; `load` gives its file when it is not cached."""
    if digest not in _loaded:
        from core.models import Predictor

        _loaded.clear()
        _loaded[digest] = Predictor.load(load())
    return _loaded[digest]


def _model_file_from_bytes(data_ref: list, digest: str, suffix: str) -> Path:
    """The model's bytes (fetched from Ray's object store only now: a cached model never needs them) as a
    file in this node's temporary folder, written once per node under its digest."""
    import ray

    path = Path(tempfile.gettempdir()) / "digitlab-models" / f"{digest}{suffix}"
    if not path.exists():
        from core.storage import atomic_output

        data = ray.get(data_ref[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:  # two workers on one node may write it at once: rename is atomic
            Path(tmp).write_bytes(data)
    return path


def evaluate_shard(predictor, images, labels: np.ndarray, method: str) -> dict:
    """One slice: y_pred (BLANK, UNREADABLE or a digit), probabilities (n, 10), the unreadable images'
    (index in the slice, reason), and the slice's 10x10 confusion matrix."""
    y_pred, proba, failed = classify_images(predictor, images, method, _CHUNK)
    return {"y_pred": y_pred, "probabilities": proba, "failed": failed, "confusion": confusion(labels, y_pred),
            "pid": os.getpid()}


def _shard_task(images, labels, method: str, model: list, digest: str, suffix: str) -> dict:
    """A shard on a Ray worker: the model comes from this process' cache, else from the object store."""
    loaded = digest not in _loaded
    predictor = _predictor(digest, lambda: _model_file_from_bytes(model, digest, suffix))
    return {**evaluate_shard(predictor, images, labels, method), "loaded_model": loaded}


def evaluate_sharded(model_path: str | Path | None, dataset: Dataset, method: str = DEFAULT_METHOD,
                     shard_size: int = DEFAULT_SHARD_SIZE, executor: str | None = None,
                     progress: Callable[[float], None] | None = None, stats: dict | None = None) -> Evaluation:
    """Evaluate `dataset` in shards of `shard_size` images, as Ray tasks (`executor="ray"`) or one after the
    other here ("local"; None: DIGITLAB_EXECUTOR), and merge them into one core.evaluation.Evaluation.

    The result equals `core.evaluation.evaluate` on the same model, data and method (not cached). `progress`
    gets the fraction of shards done; `stats`, when given, is filled with shards, workers (distinct worker
    processes), model_loads and the confusion matrix added up from the shards.
    """
    from core.executors import executor_name
    from core.models import file_sha256, resolve_model_path

    if method not in METHODS:
        raise InvalidOptionError("reframing", method, METHODS)
    if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size < 1:
        raise InvalidOptionError("shard_size", shard_size, "a positive integer")
    executor = executor or executor_name()
    if executor not in ("local", "ray"):
        raise InvalidOptionError("executor", executor, ("local", "ray"))
    model_file = resolve_model_path(model_path)
    digest = file_sha256(model_file)
    bounds = shard_bounds(len(dataset), shard_size)
    t0 = time.perf_counter()
    if executor == "ray":
        results = _run_on_ray(model_file, digest, dataset, method, bounds, progress)
    else:
        predictor = _predictor(digest, lambda: model_file)
        results = []
        for k, (a, b) in enumerate(bounds):
            results.append({**evaluate_shard(predictor, dataset.images[a:b], dataset.labels[a:b], method),
                            "loaded_model": k == 0})
            if progress:
                progress((k + 1) / len(bounds))
    n = len(dataset)
    y_pred = np.concatenate([r["y_pred"] for r in results]) if results else np.zeros(0, np.int64)
    proba = np.concatenate([r["probabilities"] for r in results]) if results else np.zeros((0, 10), np.float32)
    unreadable = []
    for (a, _), r in zip(bounds, results):
        for i, reason in r["failed"]:
            name = dataset.files[a + i] if dataset.files else f"image {a + i}"
            unreadable.append(f"{name}: {reason}")
    assert len(y_pred) == n  # a lost or duplicated shard would misalign every label after it
    if stats is not None:
        stats.update(shards=len(bounds), workers=len({r["pid"] for r in results}),
                     model_loads=sum(bool(r["loaded_model"]) for r in results),
                     confusion_matrix=sum((r["confusion"] for r in results), np.zeros((10, 10), np.int64)))
    return Evaluation(target=dataset.name, provenance=dataset.provenance, method=method, y_true=dataset.labels,
                      y_pred=y_pred, probabilities=proba, skipped=list(dataset.skipped) + unreadable,
                      seconds=time.perf_counter() - t0, warnings=list(dataset.warnings))


def _run_on_ray(model_file: Path, digest: str, dataset: Dataset, method: str, bounds: list[tuple[int, int]],
                progress) -> list[dict]:
    """Every shard as a Ray task (1 CPU each), at most two per cluster CPU in flight so the object store holds
    a bounded number of slices; results come back in shard order."""
    from core.executors import connect

    ray, started_here = connect()
    try:
        model_ref = ray.put(model_file.read_bytes())
        task = ray.remote(num_cpus=1, max_retries=2)(_shard_task)  # a shard has no side effect: retry it
        limit = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        refs: dict = {}  # ObjectRef -> shard index
        results: list[dict | None] = [None] * len(bounds)
        pending = list(enumerate(bounds))
        done = 0
        while pending or refs:
            while pending and len(refs) < limit:
                k, (a, b) = pending.pop(0)
                refs[task.remote(dataset.images[a:b], dataset.labels[a:b], method, [model_ref], digest,
                                 model_file.suffix)] = k
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                k = refs.pop(ref)
                try:
                    results[k] = ray.get(ref)
                except ray.exceptions.RayError as e:
                    cause = getattr(e, "cause", None)
                    if isinstance(cause, DigitLabError):
                        raise cause from None  # e.g. the model file cannot be loaded: its own plain message
                    a, b = bounds[k]
                    raise DigitLabError(f"Shard {k + 1} of {len(bounds)} (images {a} to {b - 1}) could not be "
                                        f"evaluated on the Ray cluster: {type(cause or e).__name__}: "
                                        f"{cause or str(e).splitlines()[0]}") from None
                done += 1
                if progress:
                    progress(done / len(bounds))
        return results  # type: ignore[return-value]
    finally:
        if started_here:
            ray.shutdown()
