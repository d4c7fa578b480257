"""Other ways to spend k labelled digits per class, against core.adaptation's fine-tuning, on form variants only.

Issue 9 asks for >= 98 % on scikit-learn digits with 10 labelled digits per class; fine-tuning gives about
97.8 %. Each candidate here changes one thing about that fine-tuning and is measured on the five variant domains
of bench/select_adaptation.py (core.variants; never on scikit-learn digits as distributed, the target the choice
is checked on), k=10, seeds 0 and 1 (select_adaptation.py uses seed 0 alone), and the mean over all ten fits is
printed last.

- current: core.adaptation's fine-tune (4 elastic copies per labelled image, 600 steps, Adam 3e-4, replay 0.25);
- self-training: fine-tune, label the rest of the pool (unlabelled scans) with the fine-tuned model where it is
  at least 90 % confident, and fine-tune the shipped model again on both (the labels stay k per class);
- ensemble of 3: the mean probabilities of three fine-tunes with different seeds;
- replay 0.1: a tenth of each batch MNIST instead of a quarter;
- 2 elastic + 2 affine: half the copies elastic, half rotated (+-10 deg), scaled (+-10 %) and shifted (+-2 px);
- AdamW 1e-2: decoupled weight decay;
- label smoothing 0.1;
- shifted views: the current fine-tune's probabilities averaged over the image and its four 1-px shifts;
- two reframings: the current fine-tune on `paper`-reframed images averaged with a fine-tune on `mnist`-reframed
  ones, each given its own reframing of the test image;
- 16 / 48 elastic copies: more distorted copies of each labelled image than the current 4 (the same steps);
- WiSE-FT 0.8 / 0.6: the weights 80 % (60 %) the fine-tune's and the rest the shipped model's (Wortsman et al.
  2022, robust fine-tuning);
- last layer first: the last-layer strategy's fit, then the current fine-tune from it (LP-FT, Kumar et al. 2022);
- both reframings in one model: the current fine-tune, also given the labelled images reframed by `mnist` (and
  their elastic copies), one model reading the `paper`-reframed test image;
- EMA 0.99: Adam keeping an exponential moving average of the weights, which replaces them at the end;
- cosine 3e-4 / 1e-3: the learning rate warmed up over a tenth of the steps to that peak, then cosine decay to 0;
- 900 / 1200 steps: longer than the current 600, the longest bench/select_adaptation.py tried (and its best).
- self-training 2 rounds: self-training's model labels the pool again, and the shipped model is fine-tuned a
  third time;
- self-training 0.7: self-training taking labels the fine-tuned model is at least 70 % sure of;
- label spreading: the pool labelled by spreading the k labels over a 7-nearest-neighbour graph of the fine-tuned
  model's penultimate features (sklearn's LabelSpreading), where the spread label is at least 90 % sure, then
  fine-tuned as in self-training.

    python bench/adaptation_candidates.py      # all, seeds 0 and 1
    python bench/adaptation_candidates.py --only "WiSE-FT 0.8,last layer first" --seeds 3   # current always runs

The first nine, measured when they were the whole script (17 minutes on this 2-core CPU, seeds 0 and 1):
current 97.50 %, self-training 97.56 %, ensemble of 3 97.37 %, replay 0.1 97.32 %, 2 elastic + 2 affine 97.37 %,
AdamW 1e-2 97.51 %, label smoothing 0.1 96.97 %, shifted views 97.39 %, two reframings 97.70 % (means of ten
fits). Two reframings is the only one ahead by more than 0.06 points: 0.21 (never behind in a fit, ahead in 4
of 10, tied in 6; Wilcoxon p = 0.125). It is not taken: an adapted model is kept as a run that every page feeds
one reframed image, and this is two models, each needing its own reframing of the input; and the gain is two
images in a thousand on ten fits.

The next five, with `--seeds 3` (means of fifteen fits): current 97.28 %, 16 elastic copies 97.02 %, 48 elastic
copies 97.04 %, WiSE-FT 0.8 97.06 %, WiSE-FT 0.6 95.62 % (`--only "16 elastic copies,48 elastic copies,WiSE-FT
0.8,WiSE-FT 0.6"`, 9 minutes with the next), last layer first 96.94 % (`--only "last layer first"`, 5 minutes;
measured again once a fresh copy made every layer trainable: its second stage had trained the last layer only,
96.86 %). None is ahead.

The next four, with `--seeds 3` (means of fifteen fits; current 97.28 % in both runs): EMA 0.99 97.21 %, cosine
3e-4 97.01 %, cosine 1e-3 97.15 % (`--only "EMA 0.99,cosine 3e-4,cosine 1e-3"`, 8 minutes), both reframings in
one model 97.04 % (`--only "both reframings in one model"`, 3 minutes). None is ahead. Nor are more steps: 900
steps 97.27 %, 1200 steps 97.30 % (`--only "900 steps,1200 steps" --seeds 3`, 6 minutes): fine-tuning has
levelled off by 600.

The last three, with self-training again, `--seeds 3` (means of fifteen fits; `--only "self-training,self-training
2 rounds,self-training 0.7,label spreading"`, 9 minutes): current 97.28 %, self-training 97.44 %, self-training 2
rounds 97.35 %, self-training 0.7 97.44 %, label spreading 96.88 %. Self-training was measured on three more seeds
(`--only "self-training,self-training 0.7" --seeds 3 --first-seed 3`, 5 minutes): current 96.94 %, self-training
97.21 %, self-training 0.7 97.14 %. Over the thirty fits of seeds 0-5, self-training is ahead by 0.22 points, in
20 fits ahead, in 6 behind (Wilcoxon signed-rank p = 0.012; 0.7: +0.19, p = 0.016). It became core.adaptation's
`self-training` strategy, at the 90 % it had been measured with since the first nine.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from core import adaptation as A  # noqa: E402
from core import variants as V  # noqa: E402

DOMAINS = [("mnist-test", "low-res"), ("mnist-test", "slant"), ("mnist-test", "european"),
           ("sklearn-digits", "thick-pen"), ("sklearn-digits", "stretched")]
SEEDS = 2


def affine_copies(x: np.ndarray, copies: int, seed: int) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed + 7)
    out = []
    for _ in range(copies):
        for img in x:
            m = cv2.getRotationMatrix2D((13.5, 13.5), rng.uniform(-10, 10), rng.uniform(0.9, 1.1))
            m[:, 2] += rng.uniform(-2, 2, 2)
            out.append(cv2.warpAffine(img[..., 0], m, (28, 28), flags=cv2.INTER_LINEAR, borderValue=0)[..., None])
    return np.stack(out).astype(np.float32)


def fit(base, x, y, seed, replay, replay_share=None, weight_decay=None, smoothing=0.0, ema=None, cosine_peak=None,
        steps=None):
    """core.adaptation.fit_strategy's fine-tune (the same draws in the same order), with one thing changeable."""
    import keras

    keras.utils.set_random_seed(seed)
    model = A._fresh_copy(base, keep_weights=True)
    s = A.SETTINGS["fine-tune"]
    s = s if steps is None else A.FitSettings(steps, s.batch_size, s.learning_rate, s.replay)
    replay_share = s.replay if replay_share is None else replay_share
    rng = np.random.default_rng(seed)
    n = s.steps * s.batch_size
    n_replay = int(round(n * replay_share))
    pick = rng.integers(0, len(x), n - n_replay)
    rp = rng.integers(0, len(replay[1]), n_replay)
    order = rng.permutation(n)
    fx = np.concatenate([x[pick], replay[0][rp]])[order]
    fy = np.concatenate([y[pick], replay[1][rp]])[order]
    rate = s.learning_rate
    if cosine_peak:  # a tenth of the steps warming up to the peak, then cosine decay to zero
        rate = keras.optimizers.schedules.CosineDecay(0.0, s.steps - s.steps // 10, warmup_target=cosine_peak,
                                                      warmup_steps=s.steps // 10)
    ema_kw = {"use_ema": True, "ema_momentum": ema} if ema else {}
    optimizer = (keras.optimizers.AdamW(learning_rate=rate, weight_decay=weight_decay, **ema_kw) if weight_decay
                 else keras.optimizers.Adam(learning_rate=rate, **ema_kw))
    if smoothing:
        loss, fy = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing), keras.utils.to_categorical(fy, 10)
    else:
        loss = "sparse_categorical_crossentropy"
    model.compile(optimizer=optimizer, loss=loss)
    model.fit(fx, fy, batch_size=s.batch_size, epochs=1, shuffle=False, verbose=0)
    return model


def _wise(base, tuned, alpha: float):
    """Weight-space ensemble (WiSE-FT, Wortsman et al. 2022): (1 - alpha) * shipped + alpha * fine-tuned."""
    model = A._fresh_copy(base, keep_weights=True)
    model.set_weights([(1 - alpha) * w0 + alpha * w1 for w0, w1 in zip(base.get_weights(), tuned.get_weights())])
    return model


def candidates(c) -> dict:
    """name -> a function of one fit's context `c` (see main) giving the test part's class probabilities."""
    from core.models import Predictor, to_model_input
    from core.reframing import reframe_batch
    from core.training import elastic_copies

    def copies(n):
        def run():
            xa = np.concatenate([c.xk, elastic_copies(c.xk, n, random_state=c.seed)])
            return c.proba(fit(c.base, xa, np.tile(c.yk, n + 1), c.seed, c.replay))
        return run

    def unlabelled():
        """The rest of the pool: the scans not drawn as labelled ones (as core.adaptation.adapt gives them)."""
        rest = np.setdiff1d(c.pool, c.idx)
        return c.x_all[rest[~c.blank[rest]]]

    def self_training_rounds(rounds: int, threshold: float = A.PSEUDO_CONFIDENCE):
        def run():
            model = c.current()
            for _ in range(rounds):
                xp, yp = A.pseudo_labels(model, unlabelled(), threshold)
                model = fit(c.base, np.concatenate([c.xa, xp]), np.concatenate([c.ya, yp]), c.seed, c.replay)
            return c.proba(model)
        return run

    def label_spreading():
        # Labels spread over a k-nearest-neighbour graph of the fine-tuned model's penultimate features of the
        # labelled images and the rest of the pool (Zhou et al. 2004); then fine-tune on both, as self-training.
        from sklearn.semi_supervised import LabelSpreading

        xu = unlabelled()
        feats = Predictor(c.current()).features(np.concatenate([c.xk, xu]))
        spread = LabelSpreading(kernel="knn", n_neighbors=7, alpha=0.2, max_iter=100)
        spread.fit(feats, np.concatenate([c.yk, np.full(len(xu), -1)]))
        dist = spread.label_distributions_[len(c.yk):]
        sure = dist.max(1) >= A.PSEUDO_CONFIDENCE
        yp = spread.classes_[dist.argmax(1)][sure]
        return c.proba(fit(c.base, np.concatenate([c.xa, xu[sure]]), np.concatenate([c.ya, yp]), c.seed, c.replay))

    def ensemble():
        others = [c.proba(fit(c.base, c.xa, c.ya, 100 * k + c.seed, c.replay)) for k in (1, 2)]
        return np.mean([c.proba(c.current())] + others, axis=0)

    def affine():
        half = A.ELASTIC_COPIES // 2
        xb = np.concatenate([c.xk, elastic_copies(c.xk, half, random_state=c.seed), affine_copies(c.xk, half, c.seed)])
        return c.proba(fit(c.base, xb, np.tile(c.yk, 2 * half + 1), c.seed, c.replay))

    def shifted():
        views = [c.x_all[c.test]] + [np.roll(c.x_all[c.test], d, axis=a) for d in (1, -1) for a in (1, 2)]
        return np.mean([Predictor(c.current()).predict_proba(v) for v in views], 0)

    def mnist_reframed_shots(copy_seed: int):
        """(every image reframed by `mnist`, the labelled ones with ink so reframed plus their elastic copies, and
        their labels)."""
        xm_all, blank_m = reframe_batch(c.scans, "mnist")
        xm = to_model_input(xm_all)
        keep = ~blank_m[c.idx]
        xmk = xm[c.idx][keep]
        xma = np.concatenate([xmk, elastic_copies(xmk, A.ELASTIC_COPIES, random_state=copy_seed)])
        return xm, xma, np.tile(c.yk[keep], A.ELASTIC_COPIES + 1)

    def two_reframings():
        xm, xma, yma = mnist_reframed_shots(c.seed)
        other = fit(c.base, xma, yma, c.seed, c.replay)
        return c.proba(c.current()) + Predictor(other).predict_proba(xm[c.test])

    def both_reframings_one_model():
        # seed + 1: other distortions than those of the paper-reframed copies that go into the same fit
        _, xma, yma = mnist_reframed_shots(c.seed + 1)
        return c.proba(fit(c.base, np.concatenate([c.xa, xma]), np.concatenate([c.ya, yma]), c.seed, c.replay))

    def last_layer_first():
        return c.proba(fit(A.fit_strategy(c.base, "last-layer", c.xa, c.ya, c.seed), c.xa, c.ya, c.seed, c.replay))

    return {
        "current": lambda: c.proba(c.current()),
        "self-training": self_training_rounds(1),
        "ensemble of 3": ensemble,
        "replay 0.1": lambda: c.proba(fit(c.base, c.xa, c.ya, c.seed, c.replay, replay_share=0.1)),
        "2 elastic + 2 affine": affine,
        "AdamW 1e-2": lambda: c.proba(fit(c.base, c.xa, c.ya, c.seed, c.replay, weight_decay=1e-2)),
        "label smoothing 0.1": lambda: c.proba(fit(c.base, c.xa, c.ya, c.seed, c.replay, smoothing=0.1)),
        "shifted views": shifted,
        "two reframings": two_reframings,
        "16 elastic copies": copies(16),
        "48 elastic copies": copies(48),
        "WiSE-FT 0.8": lambda: c.proba(_wise(c.base, c.current(), 0.8)),
        "WiSE-FT 0.6": lambda: c.proba(_wise(c.base, c.current(), 0.6)),
        "last layer first": last_layer_first,
        "both reframings in one model": both_reframings_one_model,
        "EMA 0.99": lambda: c.proba(fit(c.base, c.xa, c.ya, c.seed, c.replay, ema=0.99)),
        "cosine 3e-4": lambda: c.proba(fit(c.base, c.xa, c.ya, c.seed, c.replay, cosine_peak=3e-4)),
        "cosine 1e-3": lambda: c.proba(fit(c.base, c.xa, c.ya, c.seed, c.replay, cosine_peak=1e-3)),
        "900 steps": lambda: c.proba(fit(c.base, c.xa, c.ya, c.seed, c.replay, steps=900)),
        "1200 steps": lambda: c.proba(fit(c.base, c.xa, c.ya, c.seed, c.replay, steps=1200)),
        "self-training 2 rounds": self_training_rounds(2),
        "self-training 0.7": self_training_rounds(1, 0.7),
        "label spreading": label_spreading,
    }


class _Fit:
    """One domain and seed: the labelled images, the test part, and the current fine-tune (made once)."""

    def __init__(self, **kw) -> None:
        self.__dict__.update(kw)
        self._current = None

    def current(self):
        if self._current is None:
            self._current = fit(self.base, self.xa, self.ya, self.seed, self.replay)
        return self._current

    def proba(self, model):
        from core.models import Predictor

        return Predictor(model).predict_proba(self.x_all[self.test])


def main(argv=None) -> None:
    import argparse

    from core.models import load_model, reused_model_path, to_model_input
    from core.reframing import DEFAULT_METHOD, reframe_batch
    from core.training import elastic_copies

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated candidate names (default: all); 'current' is always run")
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    args = parser.parse_args(argv)
    names = list(candidates(None))
    asked = [n.strip() for n in (args.only or "").split(",") if n.strip()]
    only = ["current"] + [n for n in asked if n != "current"] if asked else names
    unknown = [n for n in only if n not in names]
    if unknown:
        parser.error(f"unknown candidate(s) {unknown}; valid: {names}")
    base = load_model(reused_model_path())
    replay = A._mnist_replay(0)
    rows: dict[str, list[float]] = {}
    t0 = time.time()
    for src, var in DOMAINS:
        scans, labels, _ = V.load_source(src, n=1000 if src == "mnist-test" else None)
        x, y = V.VARIANTS[var](scans, labels, 0)
        X, blank = reframe_batch(x, DEFAULT_METHOD)
        x_all, y_all = to_model_input(X), np.asarray(y)
        pool, test = A.split_target(y_all, 0.5, 0)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            idx = A.sample_shots(y_all, pool, 10, seed=seed)
            idx = idx[~blank[idx]]
            xk, yk = x_all[idx], y_all[idx]
            xa = np.concatenate([xk, elastic_copies(xk, A.ELASTIC_COPIES, random_state=seed)])
            c = _Fit(base=base, replay=replay, scans=x, x_all=x_all, y_all=y_all, blank=blank, pool=pool, test=test,
                     seed=seed, idx=idx, xk=xk, yk=yk, xa=xa, ya=np.tile(yk, A.ELASTIC_COPIES + 1))
            runs = candidates(c)
            r = {}
            for name in only:
                p = runs[name]()
                r[name] = float(np.mean(np.where(blank[test], -1, p.argmax(1)) == y_all[test]))
            for k, v in r.items():
                rows.setdefault(k, []).append(v)
            print(f"{src}/{var} seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in r.items())
                  + f"  [{time.time() - t0:.0f} s]", flush=True)
    for k, v in rows.items():
        print(f"MEAN {k:<22} k=10 {np.mean(v):.4f} ({len(v)} fits)")


if __name__ == "__main__":
    main()
