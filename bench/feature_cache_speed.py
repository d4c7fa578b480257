"""Frozen backbone: training the head on cached features vs end-to-end frozen training, same data and epochs.

    python bench/feature_cache_speed.py [--arch mobilenetv2] [--input-size 32] [--samples 2000] [--epochs 3]

ImageNet weights cannot be downloaded here, so the frozen backbone carries random weights saved to a local
file (speed does not depend on the values). Prints, measured in one run: end-to-end fit time; cached-feature
time when the features must be computed first (cold) and when they come from the cache (warm); the ratios
(target: at least 3x on CPU).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="mobilenetv2", choices=["vgg16", "mobilenetv2"])
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    os.environ["DIGITLAB_HOME"] = tempfile.mkdtemp(prefix="bench-home-")
    import keras

    from core import models
    from core.training import RunConfig, cached_features, load_data, make_dataset
    from core.models import to_model_input

    weights = Path(os.environ["DIGITLAB_HOME"]) / f"{args.arch}.weights.h5"
    shape = (args.input_size, args.input_size, 3)
    backbone = (keras.applications.VGG16(include_top=False, weights=None, input_shape=shape) if args.arch == "vgg16"
                else keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=shape, pooling="avg"))
    backbone.save_weights(weights)
    cfg = RunConfig.preset(args.arch, weights=str(weights), input_size=args.input_size, epochs=args.epochs,
                           max_samples=args.samples, fine_tune_layers=0, fine_tune_epochs=0)
    train, val, _ = load_data(cfg)
    x, y, vx, vy = to_model_input(train.images), train.labels, to_model_input(val.images), val.labels

    def fit(model, a, b, va, vb):
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        t0 = time.perf_counter()
        model.fit(make_dataset(a, b, cfg.batch_size, True, False, 0), epochs=args.epochs, verbose=0,
                  validation_data=make_dataset(va, vb, cfg.batch_size, False, False, 0))
        return time.perf_counter() - t0

    feat, head = models.build_transfer_parts(args.arch, input_size=args.input_size, weights=str(weights))
    e2e = fit(models.assemble(feat, head), x, y, vx, vy)
    timings = {}
    for label in ("cold", "warm"):
        feat, head = models.build_transfer_parts(args.arch, input_size=args.input_size, weights=str(weights))
        t0 = time.perf_counter()
        (fx, _), (fvx, _) = cached_features(feat, cfg, x), cached_features(feat, cfg, vx)
        extract = time.perf_counter() - t0
        timings[label] = extract + fit(head, fx, y, fvx, vy)
    result = {"arch": args.arch, "input_size": args.input_size, "train_images": len(y), "epochs": args.epochs,
              "end_to_end_frozen_s": round(e2e, 2), "cached_cold_s": round(timings["cold"], 2),
              "cached_warm_s": round(timings["warm"], 2), "speedup_cold": round(e2e / timings["cold"], 1),
              "speedup_warm": round(e2e / timings["warm"], 1), "target": 3.0}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.arch} {args.input_size}px, {len(y)} images, {args.epochs} epochs: end-to-end frozen "
          f"{e2e:.1f} s; cached features {timings['cold']:.1f} s when computed in this run "
          f"({result['speedup_cold']}x), {timings['warm']:.1f} s from the cache ({result['speedup_warm']}x); "
          f"target >= 3x")


if __name__ == "__main__":
    main()
