"""Speed of a prediction, measured in one run (ratios, so a noisy machine cancels out).

    python bench/predict_speed.py [--json]

Prints: single-image latency of core's Predictor vs Keras `model.predict` on the same model and input
(target: Predictor at least 5x faster), the same Predictor in the model process the dashboard uses
(core.model_process: one image and 2,048 images, the round trip included, and its ratio to model.predict), the
shipped model's OpenCV twin (core.twin: the Draw page's hot path, no TensorFlow) on one image, and the time to
reframe one 280x280 canvas image (target: < 2 ms).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from core.model_process import ModelProcess  # noqa: E402
from core.models import Predictor, reused_model_path  # noqa: E402
from core.reframing import METHODS, reframe  # noqa: E402
from core.twin import load_twin  # noqa: E402


def median_seconds(fn, repeat: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def canvas_image() -> np.ndarray:
    img = np.full((280, 280, 4), 255, np.uint8)
    cv2.line(img, (90, 60), (190, 60), (0, 0, 0, 255), 18)
    cv2.line(img, (190, 60), (110, 230), (0, 0, 0, 255), 18)
    return img


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    img = canvas_image()
    reframe_ms = {m: 1000 * median_seconds(lambda m=m: reframe(img, m), repeat=500) for m in METHODS}
    predictor = Predictor.load()
    x = reframe(img, "mnist").image[None]
    x4 = x[..., None]
    ours = median_seconds(lambda: predictor.predict_proba(x), repeat=300)
    keras_predict = median_seconds(lambda: predictor.model.predict(x4, verbose=0), repeat=60)
    same = np.allclose(predictor.predict_proba(x), predictor.model.predict(x4, verbose=0), atol=1e-5)
    twin = load_twin(reused_model_path())
    if twin is None:
        sys.exit("models/reused-cnn has no valid OpenCV twin: run `python -m core twin`")
    twin_one = median_seconds(lambda: twin.predict_proba(x), repeat=300)
    twin_same = np.allclose(twin.predict_proba(x), predictor.predict_proba(x), atol=1e-5)
    process = ModelProcess()
    try:
        remote = process.load(None).result(300)
        batch = np.repeat(x, 2048, axis=0)
        remote_one = median_seconds(lambda: remote.predict_proba(x), repeat=300)
        remote_batch = median_seconds(lambda: remote.predict_proba(batch), repeat=10, warmup=2)
        local_batch = median_seconds(lambda: predictor.predict_proba(batch), repeat=10, warmup=2)
        remote_same = np.allclose(remote.predict_proba(x), predictor.predict_proba(x), atol=1e-5)
    finally:
        process.close()
    result = {
        "predictor_ms": round(ours * 1000, 3),
        "model_predict_ms": round(keras_predict * 1000, 3),
        "speedup_vs_model_predict": round(keras_predict / ours, 1),
        "speedup_target": 5.0,
        "same_probabilities": bool(same),
        "model_process_ms": round(remote_one * 1000, 3),
        "model_process_speedup_vs_model_predict": round(keras_predict / remote_one, 1),
        "model_process_2048_s": round(remote_batch, 3),
        "predictor_2048_s": round(local_batch, 3),
        "model_process_same_probabilities": bool(remote_same),
        "twin_ms": round(twin_one * 1000, 3),
        "twin_speedup_vs_model_predict": round(keras_predict / twin_one, 1),
        "twin_same_probabilities": bool(twin_same),
        "reframe_280x280_ms": {m: round(v, 3) for m, v in reframe_ms.items()},
        "reframe_target_ms": 2.0,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"single-image latency: Predictor {result['predictor_ms']:.2f} ms, model.predict "
          f"{result['model_predict_ms']:.2f} ms -> {result['speedup_vs_model_predict']}x faster "
          f"(target >= 5x; same probabilities: {same})")
    print(f"in the model process (round trip included): one image {result['model_process_ms']:.2f} ms -> "
          f"{result['model_process_speedup_vs_model_predict']}x faster than model.predict; 2,048 images "
          f"{result['model_process_2048_s']:.3f} s (here {result['predictor_2048_s']:.3f} s); same probabilities: "
          f"{remote_same}")
    print(f"the OpenCV twin (no TensorFlow): one image {result['twin_ms']:.3f} ms -> "
          f"{result['twin_speedup_vs_model_predict']}x faster than model.predict; same probabilities: {twin_same}")
    for m, v in result["reframe_280x280_ms"].items():
        print(f"reframe one 280x280 canvas image, {m:>5}: {v:.3f} ms (target < 2 ms)")


if __name__ == "__main__":
    main()
