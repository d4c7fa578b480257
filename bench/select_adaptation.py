"""Choose the fine-tuning settings of core.adaptation on several form variants together, never on one target.

For each candidate, fine-tune the shipped model with k=10 labelled digits per class (seed 0) on five variant
domains built by core.variants (MNIST test digits: low resolution, slant, European 1s and 7s; scikit-learn
digits: thick pen, stretched into a box), and print the accuracy on each domain's test part, the MNIST accuracy
after adaptation, and the mean over the domains. scikit-learn digits as distributed are not among them: they
are the target the choice is checked on afterwards (`python -m core adapt --target sklearn-digits`).

    python bench/select_adaptation.py          # about 10 minutes on a 2-core CPU
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from core import adaptation as A  # noqa: E402
from core import variants as V  # noqa: E402
from core.datasets import Dataset  # noqa: E402

DOMAINS = [("mnist-test", "low-res"), ("mnist-test", "slant"), ("mnist-test", "european"),
           ("sklearn-digits", "thick-pen"), ("sklearn-digits", "stretched")]
CANDIDATES = {
    "lr 3e-4, 200 steps, replay 0.5": A.FitSettings(200, 64, 3e-4, 0.5),
    "lr 1e-3, 300 steps, replay 0.25": A.FitSettings(300, 64, 1e-3, 0.25),
    "lr 3e-4, 400 steps, replay 0.5": A.FitSettings(400, 64, 3e-4, 0.5),
    "lr 3e-4, 400 steps, replay 0.25": A.FitSettings(400, 64, 3e-4, 0.25),
    "lr 1e-4, 600 steps, replay 0.5": A.FitSettings(600, 64, 1e-4, 0.5),
    "lr 3e-4, 600 steps, replay 0.25": A.FitSettings(600, 64, 3e-4, 0.25),
}
if len(sys.argv) > 1:  # e.g. "lr 3e-4, 600 steps, replay 0.25": only those candidates
    CANDIDATES = {k: v for k, v in CANDIDATES.items() if k in sys.argv[1:]}


def main() -> None:
    rows = []
    for src, var in DOMAINS:
        scans, labels, prov = V.load_source(src, n=1000 if src == "mnist-test" else None)
        x, y = V.VARIANTS[var](scans, labels, 0)
        ds = Dataset(f"{src}/{var}", x, y, prov)
        for name, settings in CANDIDATES.items():
            A.SETTINGS["fine-tune"] = settings
            r = A.adapt(ds, shots=(10,), seeds=1, strategies=("fine-tune",))
            rows.append((name, r.results[0]["accuracy"], r.results[0]["mnist_accuracy"]))
            print(f"{src:<15} {var:<10} {name:<34} zero-shot {r.zero_shot:.4f}  k=10 "
                  f"{r.results[0]['accuracy']:.4f}  MNIST after {r.results[0]['mnist_accuracy']:.4f}", flush=True)
    for name in CANDIDATES:
        acc = [a for n, a, _ in rows if n == name]
        mn = [m for n, _, m in rows if n == name]
        print(f"MEAN {name:<34} k=10 {np.mean(acc):.4f}  MNIST after {np.mean(mn):.4f}")


if __name__ == "__main__":
    main()
