"""Train the candidate augmentation measured on the form variants (README, "Zero-shot accuracy per form variant").

    python bench/candidate_augmentation.py OUT_DIR

The shipped model's own command (`python -m core train --arch cnn --epochs 20 --augment --elastic 5
--early-stopping 0 --seed 0`), with more scan jitter patched in for this run only (core/training.py is not
changed): a 3x3 "felt pen" among the stroke widths, 1-bit digits with probability 0.2, and the width zoomed
apart from the height (up to 35 % wider, as digits stretched into a form box are). Compare it with
`python -m core variants --model OUT_DIR`, `python -m core evaluate --target sklearn-digits --model OUT_DIR`
and the MNIST test accuracy the run prints.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def scan_jitter(x, low: int = 8, p: float = 0.5):
    """core.training.scan_jitter plus a wider pen and 1-bit digits."""
    import tensorflow as tf

    thicker = tf.nn.max_pool2d(x, 2, 1, "SAME")
    felt_pen = tf.nn.max_pool2d(x, 3, 1, "SAME")
    thinner = -tf.nn.max_pool2d(-x, 2, 1, "SAME")
    width = tf.random.uniform((), 0, 4, dtype=tf.int32)
    x = tf.switch_case(width, [lambda: x, lambda: thicker, lambda: felt_pen, lambda: thinner])
    x = tf.cond(tf.random.uniform(()) < 0.2, lambda: tf.cast(x > 0.5, x.dtype), lambda: x)
    size = tf.random.uniform((), low, 29, dtype=tf.int32)
    small = tf.image.resize(x, tf.stack([size, size]), method="area")
    blurred = tf.image.resize(small, (28, 28), method="bilinear")
    return tf.cond(tf.random.uniform(()) < p, lambda: blurred, lambda: x)


def augmenter(random_state: int = 0):
    """core.training.augmenter with the width zoomed apart from the height."""
    import keras
    from keras import layers

    return keras.Sequential([
        layers.RandomRotation(0.04, fill_mode="constant", seed=random_state),
        layers.RandomShear(0.15, 0.0, fill_mode="constant", seed=random_state + 3),
        layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=random_state + 1),
        layers.RandomZoom((-0.15, 0.15), (-0.35, 0.15), fill_mode="constant", seed=random_state + 2),
    ], name="augment")


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    import core.training as training
    from core.cli import main as cli

    # make_dataset looks both up in core.training at call time, so patching the module is enough.
    training.scan_jitter, training.augmenter = scan_jitter, augmenter
    return cli(["train", "--arch", "cnn", "--epochs", "20", "--augment", "--elastic", "5", "--early-stopping", "0",
                "--seed", "0", "--out", sys.argv[1], "--title", "Candidate: more scan jitter (form variants)"])


if __name__ == "__main__":
    sys.exit(main())
