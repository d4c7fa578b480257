"""Training speed per architecture on this machine's devices: seconds per epoch and images per second.

    python bench/train_speed.py [--arch mlp,cnn,cnn-deep,vgg16,mobilenetv2] [--devices auto|cpu|gpu|cpu,gpu]
                                [--samples 1000] [--epochs 2] [--json]

A fixed small workload: `--samples` images of the embedded MNIST subset (stratified), the product's own
models and settings (RunConfig presets: batch size, optimizer; VGG16 and MobileNetV2 from scratch at 32 px, so no
ImageNet weights are needed), the product's tf.data pipeline, the product's precision policy (mixed float16 for
transfer models on a GPU, float32 otherwise). The first epoch is reported apart (warm-up: tracing, XLA compilation,
memory allocation); seconds per epoch and images per second are the mean of the later epochs, training only (no
validation pass). With `--devices cpu,gpu` both are measured in one run and the GPU/CPU speed-up is printed; on a
machine without a GPU it says so and prints CPU figures only. The 1-minute load average is printed before and
after: on a shared machine (load above the core count) every figure is slower than on an idle one. About 1.5 min on
an idle 2-core CPU (VGG16 from scratch is most of it).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ARCHS = ("mlp", "cnn", "cnn-deep", "vgg16", "mobilenetv2")


def measure(arch: str, device: str, x, y, epochs: int) -> dict:
    """Fit one freshly built model for `epochs` epochs on `device` ("/CPU:0", "/GPU:0"); time every epoch."""
    import keras
    import tensorflow as tf

    from core.training import RunConfig, _optimizer, build_model, make_dataset

    cfg = RunConfig.preset(arch, weights="none", input_size=32 if arch in ("vgg16", "mobilenetv2") else 28)
    on_gpu = device.startswith("/GPU")
    keras.mixed_precision.set_global_policy("mixed_float16" if on_gpu and cfg.is_transfer else "float32")
    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t0)

    keras.utils.set_random_seed(0)
    with tf.device(device):
        model = build_model(cfg)
        model.compile(optimizer=_optimizer(cfg.optimizer, cfg.learning_rate),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(make_dataset(x, y, cfg.batch_size, True, False, 0), epochs=epochs, callbacks=[Timer()],
                  verbose=0)
    keras.mixed_precision.set_global_policy("float32")
    steady = times[1:] or times
    per_epoch = sum(steady) / len(steady)
    return {"arch": arch, "device": "gpu" if on_gpu else "cpu", "batch_size": cfg.batch_size,
            "params": int(model.count_params()), "images": len(y), "epochs": len(times),
            "first_epoch_s": round(times[0], 2), "s_per_epoch": round(per_epoch, 3),
            "images_per_s": round(len(y) / per_epoch, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default=",".join(ARCHS), help=f"comma-separated, from {', '.join(ARCHS)}")
    p.add_argument("--devices", default="auto", help="auto (the GPU when visible, else the CPU), cpu, gpu or cpu,gpu")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=2, help="at least 2: the first is reported apart as warm-up")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    archs = [a.strip() for a in args.arch.split(",") if a.strip()]
    unknown = [a for a in archs if a not in ARCHS]
    if unknown or args.epochs < 2 or args.samples < 20:
        p.error(f"unknown architecture(s) {unknown}" if unknown else "--epochs must be >= 2 and --samples >= 20")
    os.environ["DIGITLAB_HOME"] = tempfile.mkdtemp(prefix="bench-home-")  # nothing touches the user's data home
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    import tensorflow as tf

    from core.datasets import load_mnist_subset
    from core.models import to_model_input
    from core.training import _stratified_cap, device_name

    gpus = tf.config.list_physical_devices("GPU")
    wanted = ["gpu" if gpus else "cpu"] if args.devices == "auto" else [d.strip() for d in args.devices.split(",")]
    notes = []
    if "gpu" in wanted and not gpus:
        notes.append("no GPU is visible to TensorFlow on this machine: CPU figures only")
        wanted = [d for d in wanted if d != "gpu"] or ["cpu"]
    train, _ = load_mnist_subset()
    train = _stratified_cap(train, args.samples, 0)
    x, y = to_model_input(train.images), train.labels
    rows = [measure(a, "/GPU:0" if d == "gpu" else "/CPU:0", x, y, args.epochs) for d in wanted for a in archs]
    ratios = {}
    if {"cpu", "gpu"} <= set(wanted):
        by = {(r["arch"], r["device"]): r for r in rows}
        ratios = {a: round(by[(a, "cpu")]["s_per_epoch"] / by[(a, "gpu")]["s_per_epoch"], 1) for a in archs}
    machine = {"device": device_name(), "gpus": [g.name for g in gpus], "cpu_count": os.cpu_count(),
               "load_average_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
               "tensorflow": tf.__version__, "python": platform.python_version(),
               "wall_s": round(time.perf_counter() - started, 1)}
    if max(machine["load_average_1min"]) > (os.cpu_count() or 1):
        notes.append(f"the machine was shared while measuring (load average {load_before:.1f} before, "
                     f"{machine['load_average_1min'][1]} after, {os.cpu_count()} cores): figures are slower than on "
                     "an idle machine; compare only figures from one run")
    if args.json:
        print(json.dumps({"machine": machine, "rows": rows, "gpu_speedup": ratios, "notes": notes}, indent=2))
        return
    print(f"{machine['device']}, {machine['cpu_count']} CPU cores, TensorFlow {machine['tensorflow']}; {len(y):,} MNIST "
          f"images, {args.epochs} epochs, first epoch = warm-up; {machine['wall_s']:.0f} s in all")
    print(f"{'arch':<12} {'device':<6} {'batch':>5} {'params':>11} {'warm-up s':>10} {'s/epoch':>8} {'images/s':>9}"
          + ("  GPU speed-up" if ratios else ""))
    for r in rows:
        extra = f"  {ratios[r['arch']]:>6}x" if ratios and r["device"] == "gpu" else ""
        print(f"{r['arch']:<12} {r['device']:<6} {r['batch_size']:>5} {r['params']:>11,} {r['first_epoch_s']:>10.2f} "
              f"{r['s_per_epoch']:>8.2f} {r['images_per_s']:>9,.0f}{extra}")
    for n in notes:
        print(f"note: {n}")


if __name__ == "__main__":
    main()
