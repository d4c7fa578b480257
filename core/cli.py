"""`python -m core ...`: everything the dashboard does, scriptable, with --json output."""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from core import config
from core.adaptation import MIN_SEEDS, STRATEGIES
from core.datasets import TRAINING_SETS
from core.errors import DigitLabError
from core.models import ARCHITECTURES
from core.reframing import DEFAULT_METHOD, METHODS
from core.wording import spread


def _print(data, as_json: bool, text: str) -> None:
    print(json.dumps(data, indent=2) if as_json else text)


def cmd_predict(args) -> int:
    from core.images import display_name, failure_reason, read_image
    from core.models import classify
    from core.twin import quick_predictor

    predictor = quick_predictor(args.model)  # a model with a twin answers without importing TensorFlow
    results, failed = [], 0
    for f in args.images:
        shown = display_name(f)
        try:
            pred = classify(predictor, read_image(f), args.reframing)
            results.append({"file": shown, **pred.as_dict()})
        except Exception as e:  # whatever one file raises (OS, decoder, OpenCV), it is that file's error only
            failed += 1
            reason = failure_reason(e)
            if not isinstance(e, DigitLabError):
                reason = f"{shown}: {reason}."
            results.append({"file": shown, "digit": None, "confidence": None, "probabilities": None,
                            "reframing": args.reframing, "blank": None, "error": display_name(reason)})
    lines = []
    for r in results:
        if r.get("error"):
            lines.append(f"{r['file']}: error: {r['error']}")
        elif r["blank"]:
            lines.append(f"{r['file']}: blank (no ink found), not classified")
        else:
            lines.append(f"{r['file']}: {r['digit']}  (confidence {r['confidence']:.1%}, {r['reframing']})")
    _print(results, args.json, "\n".join(lines))
    return 1 if failed else 0


def _model_factory(model_path: Path):
    """The model under test, loaded (with TensorFlow) only when an evaluation is not cached, and only once."""
    from core.models import Predictor

    loaded = []

    def factory():
        if not loaded:
            loaded.append(Predictor.load(model_path))
        return loaded[0]

    return factory


def _check_target_accuracy(value: float) -> None:
    from core.errors import InvalidOptionError

    if not 0.5 <= value <= 1.0:  # refused before any evaluation runs
        raise InvalidOptionError("--target-accuracy", value, "a share from 0.5 to 1, e.g. 0.99")


def _automation_line(a: dict) -> str:
    from core.report import automation_claim

    claim, details = automation_claim(a)
    return (f"automation: {claim}" + (f" ({details})" if details else "")).replace("≥", ">=")  # any console


def cmd_twin(args) -> int:
    from core.twin import export_twin

    record = export_twin(args.model)
    _print(record, args.json, f"wrote the OpenCV twin {record['file']} of {record['source']} (largest difference "
                              f"from Keras {record['max_abs_diff']:.1e} on {record['checked_on']})")
    return 0


def cmd_evaluate(args) -> int:
    from core.datasets import load_target
    from core.evaluation import evaluate
    from core.models import resolve_model_path
    from core.report import ci_text, describe_model

    _check_target_accuracy(args.target_accuracy)
    dataset = load_target(args.target)
    model_path = resolve_model_path(args.model)  # a file, a run folder or a run id
    if args.shard_size:  # slices as tasks of the executor (DIGITLAB_EXECUTOR=ray: a Ray cluster), merged
        from core.sharding import evaluate_sharded

        ev = evaluate_sharded(model_path, dataset, args.reframing, shard_size=args.shard_size)
    else:
        # A factory: a cached evaluation never loads the model, nor TensorFlow.
        ev = evaluate(_model_factory(model_path), dataset, args.reframing, model_path=model_path,
                      use_cache=not args.no_cache)
    for warning in ev.warnings:  # e.g. the cache could not be written: the result stands, the user is told
        print(f"warning: {warning}", file=sys.stderr)
    out = ev.as_dict(args.target_accuracy)
    out["target"] = args.target
    out["model"] = describe_model(model_path)
    m = out["model"]
    lines = [f"{args.target}: {ev.n} images ({dataset.provenance}), reframing {args.reframing}",
             f"model {m.get('title') or m.get('name', '')} ({m['file']}, {m.get('params', 0):,} parameters, "
             f"sha256 {m['sha256'][:12]})",
             f"accuracy {out['accuracy']:.4f} ({ci_text(*out['accuracy_ci'])})  macro precision "
             f"{out['macro']['precision']:.4f}  recall {out['macro']['recall']:.4f}  F1 {out['macro']['f1']:.4f}  "
             f"blank {ev.blank}  skipped {len(ev.skipped)}",
             _automation_line(out["automation"]),
             "digit    TP    TN    FP    FN  accuracy  recall  precision  F1"]
    lines += [f"{r['digit']:>5} {r['tp']:>5} {r['tn']:>5} {r['fp']:>5} {r['fn']:>5}  {r['accuracy']:.4f}  "
              f"{r['recall']:.4f}  {r['precision']:.4f}  {r['f1']:.4f}" for r in out["per_digit"]]
    if dataset.missing_classes():
        lines.append(f"no images of digit(s) {dataset.missing_classes()}")
    lines += [f"skipped {s}" for s in ev.skipped[:20]] + (["..."] if len(ev.skipped) > 20 else [])
    _print(out, args.json, "\n".join(lines))
    return 0


def cmd_report(args) -> int:
    from core import numbers, report
    from core.adaptation import load_results, results_to_cite
    from core.datasets import load_target
    from core.evaluation import compare_methods
    from core.models import resolve_model_path
    from core.storage import atomic_write_text

    _check_target_accuracy(args.target_accuracy)
    dataset = load_target(args.target)
    model_path = resolve_model_path(args.model)
    saved = load_results(dataset.name)
    adaptation = report.pick_adaptation(saved, model_path, args.reframing, args.adaptation)
    if args.adaptation and adaptation is None:  # said before the evaluation, not after it
        ids = [r["id"] for r in results_to_cite(saved, model_path, args.reframing)]
        raise DigitLabError(f"--adaptation {args.adaptation} is not a saved few-shot result for this model on "
                            f"{dataset.name}; saved ones: {', '.join(ids) or 'none'} (python -m core adapt saves one).")
    factory = _model_factory(model_path)
    comparison = compare_methods(factory, dataset, model_path)  # every method: the report compares them
    for warning in dict.fromkeys(w for ev in comparison.values() for w in ev.warnings):
        print(f"warning: {warning}", file=sys.stderr)
    ev = comparison[args.reframing]
    summary = ev.as_dict(args.target_accuracy)
    numbers_result = None
    if not args.no_numbers:
        images, labels = numbers.compose_numbers()
        numbers_result = numbers.evaluate_numbers(factory(), images, labels, args.reframing)
        numbers_result["provenance"] = f"{len(labels)} numbers 0-303 composed from scikit-learn digit scans"
    identity = report.describe_model(model_path)
    html = report.build_html(ev, dataset.images, comparison, model=identity, numbers=numbers_result,
                             dataset_note=report.describe_dataset(dataset.name, dataset.provenance, dataset.labels,
                                                                  dataset.images, len(dataset.skipped)),
                             adaptation=adaptation, target_accuracy=args.target_accuracy, files=dataset.files,
                             summary=summary)
    out_path = Path(args.out)
    atomic_write_text(out_path, html)
    data = {"out": str(out_path.resolve()), "target": args.target, "reframing": args.reframing, "model": identity,
            "n": ev.n, "accuracy": summary["accuracy"], "accuracy_ci": summary["accuracy_ci"],
            "automation": summary["automation"],
            "verdict": report.verdict(summary, adaptation, dataset.name, model_path),
            "numbers": None if numbers_result is None else numbers_result["accuracy"],
            "adaptation": None if adaptation is None else adaptation.get("id")}
    cited = f"cites few-shot result {adaptation['id']}" if adaptation else "no few-shot result saved for this model"
    _print(data, args.json, f"{out_path} ({cited})")
    return 0


def cmd_evaluate_numbers(args) -> int:
    from core import numbers
    from core.models import Predictor

    if args.target == "builtin":
        images, labels = numbers.compose_numbers(n=args.n, random_state=args.seed)
        skipped, provenance = [], f"{args.n} numbers 0-303 composed from scikit-learn digit scans"
    else:
        images, labels, _, skipped = numbers.load_numbers_folder(args.target)
        provenance = f"{len(labels)} labelled number images in {args.target}"
    out = numbers.evaluate_numbers(Predictor.load(args.model), images, labels, args.reframing)
    out.update({"target": args.target, "provenance": provenance, "skipped": len(skipped), "skipped_files": skipped})
    per = ", ".join(f"{r['digits']} digit(s): {r['accuracy']:.2%} of {r['n']}" for r in out["per_length"])
    _print(out, args.json, "\n".join([f"{provenance}: {out['accuracy']:.2%} of numbers read exactly right ({per}); "
                                      f"skipped {len(skipped)}"] + [f"skipped {s}" for s in skipped[:20]]))
    return 0


def _train_config(args):
    from core.training import RunConfig

    cfg = RunConfig.preset(args.arch)  # the architecture's own defaults, then what was asked
    overrides = {"dataset": args.dataset, "epochs": args.epochs, "batch_size": args.batch_size,
                 "learning_rate": args.lr, "max_samples": args.max_samples, "input_size": args.input_size,
                 "weights": args.weights, "fine_tune_layers": args.fine_tune_layers,
                 "fine_tune_epochs": args.fine_tune_epochs, "random_state": args.seed,
                 "early_stopping": args.early_stopping, "elastic_copies": args.elastic}
    d = cfg.to_dict()
    d.update({k: v for k, v in overrides.items() if v is not None})
    if args.augment is not None:
        d["augment"] = args.augment
    if d["early_stopping"] == 0:
        d["early_stopping"] = None
    return RunConfig.from_dict(d)


def cmd_train(args) -> int:
    from core import runs
    from core.training import train

    cfg = _train_config(args)
    if args.background:
        from core import jobs
        from core.models import resolve_imagenet_weights

        if cfg.is_transfer:
            resolve_imagenet_weights(cfg.architecture, cfg.weights, cfg.input_size)  # refuse now, not in the worker
        job = jobs.submit(cfg, title=args.title)
        _print(job.as_dict(), args.json, f"queued job {job.id} ({cfg.architecture}); follow it with "
               f"`python -m core jobs`, cancel with `python -m core jobs cancel {job.id}`")
        return 0
    out = Path(args.out) if args.out else runs.allocate_run_dir(cfg.architecture)
    # `kill` (SIGTERM) stops a foreground run like Ctrl-C does, so the run is marked interrupted at once.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    log = None if args.json else (lambda row: print(
        f"epoch {row['epoch']:>3}  loss {row.get('loss', float('nan')):.4f}  acc {row.get('accuracy', 0):.4f}  "
        f"val_loss {row.get('val_loss', float('nan')):.4f}  val_acc {row.get('val_accuracy', 0):.4f}  "
        f"{row['seconds']:.1f}s", flush=True))
    result = train(cfg, out, on_epoch=log, title=args.title)
    _print(result, args.json, f"run {result['id']} {result['status']}: test accuracy "
           f"{result['test_accuracy']:.4f} on {result['test_n']} images ({result['test_set']}); saved in {out}")
    return 0


def cmd_runs(args) -> int:
    from core.runs import backbone_start, delete_run, list_runs, rename_run

    if args.action == "reproduce":
        return cmd_reproduce(args)
    if args.action in ("rename", "delete"):
        if args.id is None or (args.action == "rename" and args.title is None):
            raise DigitLabError("Say which run: `python -m core runs rename ID TITLE` or `runs delete ID`.")
        if args.action == "rename":
            run = rename_run(args.id, args.title)
            d = run.as_dict()
            d.pop("history_file", None)
            _print(d, args.json, f"run {run.id} renamed: {run.title}")
        else:
            delete_run(args.id)
            _print({"id": args.id, "deleted": True}, args.json, f"run {args.id} deleted")
        return 0
    runs = [r for r in list_runs(include_reference=not args.project_only)]
    out = []
    for r in runs:
        d = r.as_dict()
        d.pop("history_file", None)
        d["start"] = backbone_start(r)  # transfer (ImageNet, a weights file) or scratch, where it can be either
        out.append(d)
    lines = [f"{'id':<34} {'kind':<9} {'status':<11} {'arch':<11} {'start':<9} {'epochs':>6} {'test acc':>8}  "
             "dataset"]
    lines += [f"{r.id:<34} {r.kind:<9} {r.status:<11} {r.architecture:<11} {backbone_start(r) or '-':<9} {r.epochs:>6} "
              f"{'' if r.test_accuracy is None else f'{r.test_accuracy:.4f}':>8}  {r.dataset}"
              + (f"\n{'':<34} {r.status}: {r.problem}" if r.status in ("damaged", "interrupted") else "")
              for r in runs]
    _print(out, args.json, "\n".join(lines))
    return 0


def cmd_jobs(args) -> int:
    from core import jobs

    if args.action == "cancel":
        if args.id is None:
            raise DigitLabError("Say which job: `python -m core jobs cancel ID`.")
        job = jobs.cancel(args.id)
        _print(job.as_dict(), args.json, f"job {job.id}: {job.shown_status}"
               + (" (stops after the current epoch)" if job.shown_status == "cancelling" else ""))
        return 0
    listed = jobs.list_jobs(start_worker=True)  # queued jobs whose worker died get a new one
    lines = [f"{j.id:>4} {j.shown_status:<10} {j.what:<11} epoch {j.epoch}/{j.epochs}"
             + (f"  on {j.node}" + (f", {j.device}" if j.device else "") if j.node else "")
             + (f"  error: {j.error.splitlines()[0]}" if j.error else "") for j in listed]
    _print([j.as_dict() for j in listed], args.json, "\n".join(lines) or "no jobs")
    return 0


def cmd_worker(args) -> int:
    from core import jobs

    ran = jobs.run_worker(once=args.once, wait_lock=args.wait_lock)
    print(f"worker ran {ran} job(s)")
    return 0


def cmd_variants(args) -> int:
    from core import variants
    from core.models import Predictor, reused_model_path

    model_path = Path(args.model) if args.model else reused_model_path()
    table = variants.evaluate_variants(Predictor.load(model_path))
    choice = variants.choose_default(table)
    data = {"model": str(model_path), "sources": table.attrs["provenance"],
            "variants": {k: v.description for k, v in variants.VARIANTS.items()},
            "rows": table.to_dict("records"), "choice": choice, "current_default": DEFAULT_METHOD}
    wide = (variants.pivot(table) * 100).round(2)
    lines = [wide.to_string(), ""]
    for r in choice["per_method"]:
        w = r["worst"]
        lines.append(f"{r['method']:>6}: mean {r['mean']:.2%} over {r['cells']} (source, variant); worst "
                     f"{w['accuracy']:.2%} ({w['source']}, {w['variant']})")
    lines.append(f"best on all variants together: {choice['method']} (current default: {DEFAULT_METHOD})")
    if choice["method"] != DEFAULT_METHOD:
        # The product also keeps >= 94 % on the scikit-learn digits as distributed: the README says which passes.
        lines.append(f"the default changes only if {choice['method']} also keeps >= 94 % zero-shot on scikit-learn "
                     f"digits: python -m core evaluate --target sklearn-digits --reframing {choice['method']}")
    _print(data, args.json, "\n".join(lines))
    return 0


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None


def cmd_adapt(args) -> int:
    from core import adaptation
    from core.datasets import load_target

    dataset = load_target(args.target)
    shots = args.shots or list(adaptation.DEFAULT_SHOTS)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    keep = []
    for item in args.keep or []:
        strategy, _, k = item.partition(":")
        if not k.isdigit():
            raise DigitLabError(f"--keep takes STRATEGY:SHOTS, e.g. fine-tune:10; got {item!r}.")
        keep.append((strategy, int(k)))
    if args.background:
        from core import jobs

        job = jobs.submit_adaptation({"target": args.target, "model": args.model, "shots": shots,
                                      "strategies": strategies, "seeds": args.seeds,
                                      "test_fraction": args.test_fraction, "reframing": args.reframing,
                                      "keep": keep}, title=args.title)
        _print(job.as_dict(), args.json, f"queued adaptation job {job.id}; follow it with `python -m core jobs`")
        return 0
    report = None if args.json else (lambda done, total, what: print(f"[{done}/{total}] {what}", flush=True))
    result = adaptation.adapt(dataset, args.model, shots, strategies, args.seeds, args.test_fraction,
                              args.reframing, progress=report, keep=keep)
    out = result.as_dict()
    # Kept as a job's result is: the Adapt, Domain shift and Report pages and `report` can cite it
    # (core.adaptation.results_to_cite chooses which by default).
    if args.no_save or config.read_only():
        saved = "not saved (--no-save)" if args.no_save else "not saved: DIGITLAB_READ_ONLY is set"
    else:
        out["saved"] = str(adaptation.save_result(result, adaptation.new_result_dir()))
        saved = f"saved as {out['saved']}: the Adapt, Domain shift and Report pages and `report` can cite it"
    lines = [f"{result.target}: zero-shot {result.zero_shot:.2%} on {result.n_test} test images "
             f"(MNIST {result.zero_shot_mnist:.2%}); {result.n_pool} images to draw labels from"]
    lines += [f"{r['strategy']:<13} k={r['shots']:<3} {r['mean']:.2%} ({spread(r['std'], r['n'])}); "
              f"MNIST after: {r['mnist_mean']:.2%}" for r in out["summary"]]
    if result.skipped_shots:
        lines.append(f"skipped k={result.skipped_shots}: the smallest class has too few images")
    lines += [f"kept {k['strategy']} k={k['shots']} as run {k['run_id']}" for k in result.kept]
    _print(out, args.json, "\n".join(lines + [saved]))
    return 0


def cmd_shift(args) -> int:
    from core import shift
    from core.datasets import load_target

    target = load_target(args.target)
    source = shift.load_source()
    result = shift.analyse(shift.domain_properties(source, args.reframing),
                           shift.domain_properties(target, args.reframing))
    out = result.as_dict()
    out["target"] = args.target
    lines = [f"{args.target} ({result.target.provenance}, {len(result.target)} images) vs {source.provenance} "
             f"({len(result.source)}), reframing {args.reframing}",
             "Wasserstein distance per property, before -> after reframing (SD: divided by MNIST's spread):"]
    lines += ["  " + shift.sentence_for(row) for row in out["distances"]]
    lines += [""] + result.explanation
    _print(out, args.json, "\n".join(lines))
    return 0


def _fetch_progress(args):
    """Progress on stderr: one line redrawn on a terminal; a line per 10 % otherwise, so logs stay short."""
    state = {"name": "", "index": 0, "count": 1, "shown": None}
    tty = sys.stderr.isatty()

    def on_file(name: str, index: int, count: int) -> None:
        state.update(name=name, index=index, count=count, shown=None)

    def progress(done: int, total: int | None) -> None:
        pct = int(100 * done / total) if total else None
        step = pct if tty or pct is None else pct // 10 * 10
        if step == state["shown"] and done != total:
            return
        state["shown"] = step
        size = f"{done / 1e6:,.1f} of {total / 1e6:,.1f} MB ({pct} %)" if total else f"{done / 1e6:,.1f} MB"
        text = f"[{state['index'] + 1}/{state['count']}] {state['name']}: {size}"
        end = "\n" if not tty or (total and done >= total) else ""
        print(("\r" if tty else "") + text, end=end, file=sys.stderr, flush=True)

    return progress, on_file


def cmd_fetch(args) -> int:
    from core import downloads

    kind = "weights" if args.command == "weights" else "data"
    if args.action == "list":
        rows = downloads.status(kind)
        lines = [f"{r['name']:<17} {'here' if r['present'] else 'missing':<8} {r['path']}\n{'':<26}{r['checksum']}; "
                 f"get it with `{r['command']}`" for r in rows]
        _print(rows, args.json, "\n".join(lines))
        return 0
    if args.name is None:
        names = "vgg16 or mobilenetv2" if kind == "weights" else "mnist, fashion-mnist or cifar10"
        raise DigitLabError(f"Say what to fetch: `python -m core {kind} fetch NAME` with NAME {names}.")
    name = downloads.weights_resource(args.name, args.input_size) if kind == "weights" else args.name
    progress, on_file = (None, None) if args.quiet else _fetch_progress(args)
    result = downloads.fetch(name, progress=progress, on_file=on_file, timeout=args.timeout, force=args.force)
    lines = []
    for f in result.files:
        check = f"verified ({f.checksum})" if f.verified else f"NOT verified: {f.checksum}"
        how = f"downloaded in {f.seconds:.1f} s" if f.downloaded else "already in the Keras cache"
        lines.append(f"{f.path}: {f.bytes:,} bytes, {how}; sha256 {f.sha256}; {check}")
    if result.extracted:
        lines.append(f"unpacked into {result.path}")
    lines += result.notes
    _print(result.as_dict(), args.json, "\n".join(lines))
    return 0


def cmd_reproduce(args) -> int:
    from core import reproduce

    if args.id is None:
        raise DigitLabError("Say which published run: `python -m core runs reproduce ID`, one of "
                            f"{', '.join(reproduce.reproducible_ids())}.")
    overrides = {k: v for k, v in {"max_samples": args.max_samples, "epochs": args.epochs}.items() if v is not None}
    if args.background:
        job = reproduce.queue(args.id, **overrides)
        _print(job.as_dict(), args.json, f"queued job {job.id}: {job.title}; follow it with `python -m core jobs`, "
               f"cancel with `python -m core jobs cancel {job.id}`")
        return 0
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` marks the run interrupted, as for train
    log = None if args.json else (lambda row: print(
        f"epoch {row['epoch']:>3}  loss {row.get('loss', float('nan')):.4f}  acc {row.get('accuracy', 0):.4f}  "
        f"val_loss {row.get('val_loss', float('nan')):.4f}  val_acc {row.get('val_accuracy', 0):.4f}  "
        f"{row['seconds']:.1f}s", flush=True))
    result = reproduce.run(args.id, on_epoch=log, **overrides)
    cmp = reproduce.comparison(args.id, result["id"])
    acc = cmp["test_accuracy"]
    result["comparison"] = {k: cmp[k] for k in ("test_accuracy", "differences", "warnings")}
    diff = "" if acc["difference"] is None else f" ({acc['difference'] * 100:+.2f} points)"
    published = "not published" if acc["published"] is None else f"{acc['published']:.4f}"
    _print(result, args.json, f"run {result['id']} {result['status']}: test accuracy {result['test_accuracy']:.4f} "
           f"on {result['test_n']} images ({result['test_set']}); published {published}{diff}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="Digit Reuse Lab command line.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="classify digit images with the reused model")
    p.add_argument("images", nargs="+", help="PNG/JPEG/BMP/TIFF files")
    p.add_argument("--reframing", choices=METHODS, default=DEFAULT_METHOD)
    p.add_argument("--model", help="a .keras file or run folder (default: the shipped reused CNN)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("twin", help="write a model's OpenCV twin (a TFLite file beside it, checked against "
                                    "Keras): the Draw page and predict then answer without TensorFlow")
    p.add_argument("--model", help="a .keras/.h5 file, run folder or run id (default: the shipped reused CNN)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_twin)

    p = sub.add_parser("evaluate", help="the reused model's report on a target data set")
    p.add_argument("--target", required=True, help="sklearn-digits | mnist-test | collected | a folder or .zip "
                                                   "of images in folders 0..9")
    p.add_argument("--reframing", choices=METHODS, default=DEFAULT_METHOD)
    p.add_argument("--model", help="a .keras file or run folder (default: the shipped reused CNN)")
    p.add_argument("--no-cache", action="store_true", help="recompute instead of reading the evaluation cache")
    p.add_argument("--target-accuracy", type=float, default=0.99,
                   help="the accuracy the automation figure must keep (default 0.99)")
    p.add_argument("--shard-size", type=int, metavar="N",
                   help="evaluate in slices of N images, as Ray tasks with DIGITLAB_EXECUTOR=ray (not cached)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="the whole report as one offline HTML file (verdict, identity, charts)")
    p.add_argument("--target", required=True, help="sklearn-digits | mnist-test | collected | a folder or .zip "
                                                   "of images in folders 0..9")
    p.add_argument("--model", help="a .keras/.h5 file, run folder or run id (default: the shipped reused CNN)")
    p.add_argument("--reframing", choices=METHODS, default=DEFAULT_METHOD)
    p.add_argument("--target-accuracy", type=float, default=0.99,
                   help="the accuracy the automation figure must keep (default 0.99)")
    p.add_argument("--no-numbers", action="store_true", help="leave out the 300 built-in numbers (saves ~6 s)")
    p.add_argument("--adaptation", metavar="ID", help="the saved few-shot result to cite (default: the newest with "
                                                      f">= {MIN_SEEDS} seeds, same reframing first)")
    p.add_argument("--out", default="report.html", help="the HTML file to write (default report.html)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("evaluate-numbers", help="read numbers of 1-3 digits (split, classify, recompose)")
    p.add_argument("--target", required=True, help="builtin | a folder of images named like 127_0001.png")
    p.add_argument("--reframing", choices=METHODS, default=DEFAULT_METHOD)
    p.add_argument("--model", help="a .keras file or run folder (default: the shipped reused CNN)")
    p.add_argument("--n", type=int, default=300, help="builtin: how many numbers to compose")
    p.add_argument("--seed", type=int, default=0, help="builtin: random_state")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_evaluate_numbers)

    p = sub.add_parser("train", help="train a model (MLP, CNN, VGG16, MobileNetV2) on MNIST digits")
    p.add_argument("--arch", choices=ARCHITECTURES, default="cnn")
    p.add_argument("--dataset", choices=TRAINING_SETS)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--max-samples", type=int, help="train on at most N images (stratified)")
    p.add_argument("--input-size", type=int, help="transfer models: backbone input size, 32-96")
    p.add_argument("--weights", help="transfer models: imagenet | none | PATH to a .h5 file")
    p.add_argument("--fine-tune-layers", type=int, help="transfer models: unfreeze the last N backbone layers")
    p.add_argument("--fine-tune-epochs", type=int)
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="rotation, shear, shift, zoom, stroke width and resolution jitter")
    p.add_argument("--elastic", type=int, help="with --augment: N elastically distorted copies of each image")
    p.add_argument("--early-stopping", type=int, help="patience in epochs (0 disables)")
    p.add_argument("--seed", type=int, help="random_state")
    p.add_argument("--title", help="a title for the run")
    p.add_argument("--out", help="run folder (default: a new folder in the user's run store)")
    p.add_argument("--background", action="store_true", help="queue it as a background job and return")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("runs", help="every training run: project runs and published reference runs; "
                                    "rename ID TITLE or delete ID one of your own runs")
    p.add_argument("action", nargs="?", choices=["list", "rename", "delete", "reproduce"], default="list")
    p.add_argument("id", nargs="?", help="rename, delete: the run's id (`python -m core runs` lists them)")
    p.add_argument("title", nargs="?", help="rename: the new title")
    p.add_argument("--project-only", action="store_true", help="leave out the reference runs")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--background", action="store_true", help="reproduce: queue it as a background job and return")
    p.add_argument("--max-samples", type=int, help="reproduce: train on at most N images (a quicker look)")
    p.add_argument("--epochs", type=int, help="reproduce: train this many epochs instead of the published number")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("jobs", help="background training jobs: list, or cancel ID")
    p.add_argument("action", nargs="?", choices=["list", "cancel"], default="list")
    p.add_argument("id", nargs="?", type=int)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("worker", help="run queued jobs one at a time (started for you by train --background); "
                       "with DIGITLAB_EXECUTOR=ray, send them to the Ray cluster, several at once")
    p.add_argument("--once", action="store_true", help="run at most one job")
    p.add_argument("--wait-lock", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to this long for the lock of a worker that just died (default 0)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("variants", help="zero-shot accuracy on form variants (1-bit, stretched, pens, low-res, "
                                        "slant, European 1/7) per reframing method, and the best method overall")
    p.add_argument("--model", help="a .keras file or run folder (default: the shipped reused CNN)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_variants)

    p = sub.add_parser("adapt", help="few-shot adaptation: what k labelled target digits per class buy")
    p.add_argument("--target", required=True, help="sklearn-digits | mnist-test | collected | a folder or .zip")
    p.add_argument("--model", help="a .keras file or run folder (default: the shipped reused CNN)")
    p.add_argument("--shots", type=_int_list, help="labelled images per class, e.g. 1,5,10 "
                                                   "(default 1,2,5,10,20,50 where the set allows)")
    p.add_argument("--strategies", default=",".join(STRATEGIES), help=f"comma-separated: {', '.join(STRATEGIES)}")
    p.add_argument("--seeds", type=int, default=MIN_SEEDS,
                   help=f"repetitions of each (strategy, k); `report` and the pages cite >= {MIN_SEEDS} first")
    p.add_argument("--test-fraction", type=float, default=0.5, help="share of the target set kept for testing")
    p.add_argument("--reframing", choices=METHODS, default=DEFAULT_METHOD)
    p.add_argument("--keep", action="append", metavar="STRATEGY:SHOTS",
                   help="save that adapted model (seed 0) as a run, e.g. --keep fine-tune:10")
    p.add_argument("--background", action="store_true", help="queue it as a background job and return")
    p.add_argument("--title", help="a title for the background job")
    p.add_argument("--no-save", action="store_true",
                   help="do not save the result (a saved one can be cited by the pages and `report`; "
                        "a background job always saves)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_adapt)

    p = sub.add_parser("shift", help="domain shift: image properties of MNIST and a target, before and after "
                                     "reframing, with distances and plain-word explanation")
    p.add_argument("--target", required=True, help="sklearn-digits | mnist-test | collected | a folder or .zip")
    p.add_argument("--reframing", choices=METHODS, default=DEFAULT_METHOD)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_shift)

    for kind, names, what in (("weights", ("vgg16", "mobilenetv2"), "ImageNet weights"),
                              ("data", ("mnist", "fashion-mnist", "cifar10"), "training data sets")):
        p = sub.add_parser(kind, help=f"{what} in the Keras cache: list, or fetch NAME (downloads on request, "
                                      "with checksum, progress and a short timeout)")
        p.add_argument("action", choices=["list", "fetch"])
        p.add_argument("name", nargs="?", choices=names)
        if kind == "weights":
            p.add_argument("--input-size", type=int, default=32,
                           help="MobileNetV2: the run's input size (the nearest size Keras publishes is fetched)")
        p.add_argument("--timeout", type=float, default=10.0, help="seconds to connect and per read (default 10)")
        p.add_argument("--force", action="store_true", help="download again even when a good copy is here")
        p.add_argument("--quiet", action="store_true", help="no progress on stderr")
        p.add_argument("--json", action="store_true", help="print JSON: path, bytes, sha256, verified, files")
        p.set_defaults(func=cmd_fetch)

    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. A DigitLabError is printed plainly (and as {"error": ...} with --json), exit status 2;
    anything unexpected gets one line naming the log file that holds its traceback, exit status 1."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DigitLabError as e:
        _report_error(args, str(e))
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `python -m core runs | head`: the reader has gone, nothing is wrong
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python docs' recipe: no shutdown noise
        return 141
    except Exception as e:  # a bug or an unforeseen fault: no traceback for the user, all of it in the log
        log = _log_traceback()
        _report_error(args, f"unexpected {type(e).__name__}: {e}" + (f" (details in {log})" if log else ""))
        return 1


def _report_error(args, message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"error": message}, indent=2))


def _log_traceback() -> Path | None:
    """Append the current exception's traceback to <data home>/logs/cli.log; None when it cannot be written."""
    import time
    import traceback

    from core.config import data_home

    log = data_home() / "logs" / "cli.log"
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(sys.argv)}\n{traceback.format_exc()}\n")
        return log
    except OSError:
        return None
