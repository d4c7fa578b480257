"""Time to evaluate the reused model on a 14,000-image target set (the paper's size), reframing included.

    python bench/evaluate_speed.py [--json] [--n 14000]

The set repeats scikit-learn's 1,797 digit scans up to n images; every image is reframed and classified
(no evaluation cache). Target: under 5 s on the project's 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from core.datasets import Dataset, load_sklearn_digits  # noqa: E402
from core.evaluation import evaluate  # noqa: E402
from core.models import Predictor  # noqa: E402
from core.reframing import METHODS, reframe_batch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=14000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    base = load_sklearn_digits()
    idx = np.arange(args.n) % len(base)
    ds = Dataset("sklearn-digits-x8", base.images[idx], base.labels[idx], f"{args.n} images repeating {base.name}")
    predictor = Predictor.load()
    predictor.predict_proba(np.zeros((1, 28, 28), np.float32))  # trace once, as the page's cached model has
    result = {"n": args.n, "target_seconds": 5.0, "methods": {}}
    for method in METHODS:
        t0 = time.perf_counter()
        X, _ = reframe_batch(ds.images, method)
        t_reframe = time.perf_counter() - t0
        t0 = time.perf_counter()
        ev = evaluate(predictor, ds, method, use_cache=False)
        total = time.perf_counter() - t0
        result["methods"][method] = {"seconds": round(total, 3), "reframe_seconds": round(t_reframe, 3),
                                     "images_per_second": round(args.n / total), "accuracy": round(
                                         float(np.mean(ev.y_pred == ds.labels)), 4)}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for m, r in result["methods"].items():
        print(f"evaluate {args.n} images, {m:>5}: {r['seconds']:.2f} s in all (reframing alone "
              f"{r['reframe_seconds']:.2f} s), {r['images_per_second']:,} images/s (target < 5 s)")


if __name__ == "__main__":
    main()
