"""The run store: one folder per training run, every file written atomically.

A run folder holds `config.json` (what was asked), `run.json` (status, device, versions, parameter counts,
data provenance, wall time), `history.csv` (one row per epoch, rewritten whole after each epoch), `metrics.json`
(final test metrics) and `model.keras` (or, for models over 20 MB, `rebuild` in run.json says how to rebuild it).
Each file is replaced in one `os.replace`, so a crash leaves the previous complete version, never half a file.

Three places hold runs: project runs shipped in `models/runs/`, the user's own in `<data home>/runs/` (not tracked
by git), and the published reference runs in `models/reference-runs/` (read-only).
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from core import config
from core.storage import atomic_write_text as atomic_write, storage_error

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=2, default=_jsonable) + "\n")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _jsonable(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def history_to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in HISTORY_COLUMNS})
    return buf.getvalue()


def read_history(path: Path) -> list[dict]:
    """Rows of a history.csv as dicts of floats (None where the value is missing).

    Raises ValueError naming the row and column of a value that is not a number.
    """
    if not path.exists():
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.DictReader(f), start=2):  # line 1 is the header
            parsed = {}
            for k, v in row.items():
                if k is None:  # more cells than the header names
                    raise ValueError(f"line {n} has more values than the header")
                try:
                    parsed[k] = float(v) if v not in ("", None) else None
                except ValueError:
                    raise ValueError(f"line {n}, column {k!r}: {v[:20]!r} is not a number") from None
            rows.append(parsed)
    return rows


class RunWriter:
    """Writes one run folder as training goes; used by the training code, never by pages."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.history: list[dict] = []
        self.started = time.time()

    @property
    def id(self) -> str:
        return self.path.name

    def write_config(self, cfg: dict) -> None:
        write_json(self.path / "config.json", cfg)

    def update_info(self, **fields) -> None:
        p = self.path / "run.json"
        info = {"id": self.id, "kind": "project", "created": _now()}
        try:
            info.update(read_json(p) if p.exists() else {})
        except (OSError, ValueError):
            pass  # a damaged run.json is replaced by what we know now rather than left unreadable
        info.update(fields)
        write_json(p, info)

    def mark_running(self, **fields) -> None:
        """status=running with this process' token, so a later reader can tell a killed run from a live one."""
        from core.process import process_token

        self.update_info(status="running", process=process_token(), **fields)

    def append_epoch(self, row: dict) -> None:
        self.history.append(row)
        atomic_write(self.path / "history.csv", history_to_csv(self.history))

    def write_metrics(self, metrics: dict) -> None:
        write_json(self.path / "metrics.json", metrics)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def new_run_id(architecture: str) -> str:
    """A readable id: time and architecture (allocate_run_dir makes it unique)."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{architecture}"


def allocate_run_dir(architecture: str, parent: Path | None = None) -> Path:
    """Create and return a new, empty run folder of its own.

    `mkdir` without exist_ok is atomic on every file system: of two jobs queued in the same second, by one
    process or by two, exactly one gets a given name and the other moves on to the next suffix.
    """
    parent = Path(parent or user_runs_dir())
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise storage_error(e, parent) from None
    base = new_run_id(architecture)
    for n in range(1, 10_000):
        path = parent / (base if n == 1 else f"{base}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise storage_error(e, parent) from None
    raise storage_error(OSError(f"no free run folder name for {base}"), parent)


def user_runs_dir() -> Path:
    return config.data_home() / "runs"


@dataclass
class RunInfo:
    """What the Training Runs page and `python -m core runs` show of one run."""

    id: str
    kind: str  # "project" or "reference"
    architecture: str  # MLP, CNN, VGG16, MobileNetV2
    title: str
    dataset: str
    status: str
    epochs: int
    test_accuracy: float | None
    test_loss: float | None = None
    best_val_accuracy: float | None = None
    params: int | None = None
    trainable_params: int | None = None
    seconds_per_epoch: float | None = None
    wall_seconds: float | None = None
    batch_size: int | None = None
    source: str = ""
    notes: str = ""
    weights: str = ""
    device: str = ""
    path: str = ""
    has_model: bool = False
    history_file: str = ""
    problem: str = ""  # why a run is "damaged" (unreadable files) or "interrupted" (its process died)
    extra: dict = field(default_factory=dict)

    def history(self) -> list[dict]:
        return read_history(Path(self.history_file)) if self.history_file else []

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "extra"}
        return d


def _summary(history: list[dict]) -> tuple[float | None, float | None]:
    vals = [r["val_accuracy"] for r in history if r.get("val_accuracy") is not None]
    secs = [r["seconds"] for r in history if r.get("seconds") is not None]
    return (max(vals) if vals else None, sum(secs) / len(secs) if secs else None)


def _number(value, name: str) -> float | None:
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    raise ValueError(f"{name} is {value!r}, not a number")


def _read_run_files(path: Path) -> tuple[dict, dict, dict]:
    """run.json, config.json and metrics.json of a run folder; ValueError names the file that is damaged."""
    out = []
    for name in ("run.json", "config.json", "metrics.json"):
        p = path / name
        if not p.exists():
            out.append({})
            continue
        try:
            data = read_json(p)
        except (OSError, ValueError) as e:
            reason = "empty" if isinstance(e, ValueError) and not p.read_bytes().strip() else "not valid JSON"
            raise ValueError(f"{name} is {reason}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{name} holds a {type(data).__name__}, not an object")
        out.append(data)
    return out[0], out[1], out[2]


def damaged_run(path: Path, reason: str, kind: str = "project") -> RunInfo:
    """A run whose files cannot be read: listed with the reason, never hidden and never fatal."""
    return RunInfo(id=path.name, kind=kind, architecture="", title=path.name, dataset="", status="damaged",
                   epochs=0, test_accuracy=None, path=str(path), problem=reason)


def load_project_run(path: Path) -> RunInfo | None:
    """A run folder as RunInfo, or None when the folder is not a run (no run.json).

    A folder with a damaged file comes back with status "damaged" and the reason in `problem`; a "running"
    run whose process is gone comes back "interrupted".
    """
    if not (path / "run.json").exists():
        return None
    try:
        info, cfg, metrics = _read_run_files(path)
        try:
            history = read_history(path / "history.csv")
        except (OSError, ValueError, csv.Error) as e:
            raise ValueError(f"history.csv: {e}") from None
        test_accuracy = _number(metrics.get("test_accuracy"), "metrics.json test_accuracy")
        test_loss = _number(metrics.get("test_loss"), "metrics.json test_loss")
    except (OSError, ValueError) as e:
        return damaged_run(path, str(e))
    best_val, per_epoch = _summary(history)
    from core.models import DISPLAY_NAMES
    from core.process import is_alive

    arch = str(cfg.get("architecture", ""))
    status, problem = str(info.get("status", "unknown")), ""
    if status == "running" and is_alive(info.get("process")) is False:
        status = "interrupted"
        problem = (f"its process stopped before the run finished (killed, crashed or out of memory); "
                   f"the {len(history)} epochs it finished are kept")
    elif status in ("failed", "interrupted"):
        problem = str(info.get("error", ""))
    return RunInfo(
        id=str(info.get("id", path.name)), kind="project", architecture=DISPLAY_NAMES.get(arch, arch),
        title=str(info.get("title", arch)), dataset=str(info.get("dataset", cfg.get("dataset", ""))),
        status=status, epochs=len(history), test_accuracy=test_accuracy, test_loss=test_loss,
        best_val_accuracy=best_val, params=info.get("params"), trainable_params=info.get("trainable_params"),
        seconds_per_epoch=per_epoch, wall_seconds=info.get("wall_seconds"), batch_size=cfg.get("batch_size"),
        source=str(info.get("source", "trained by this project")), notes=str(info.get("notes", "")),
        weights=str(cfg.get("weights", "")), device=str(info.get("device", "")), path=str(path),
        has_model=(path / "model.keras").exists(), history_file=str(path / "history.csv"), problem=problem,
        extra={"config": cfg, "metrics": metrics, "info": info},
    )


def load_reference_runs(folder: Path | None = None) -> list[RunInfo]:
    """The published runs (runs.json + one history CSV each), marked kind='reference'.

    A damaged index or history file is listed as a damaged run with the reason, never raised.
    """
    folder = Path(folder or config.REFERENCE_RUNS_DIR)
    index = folder / "runs.json"
    if not index.exists():
        return []
    try:
        entries = json.loads(index.read_text(encoding="utf-8"))
        if not isinstance(entries, list):
            raise ValueError("runs.json is not a list of runs")
    except (OSError, ValueError) as e:
        return [damaged_run(index, f"runs.json: {e}", kind="reference")]
    runs = []
    from core.reproduce import published_weights

    weights = published_weights()  # what a published backbone started from, as its recipe states it
    for k, r in enumerate(entries):
        try:
            hist_file = folder / r["history_csv"]
            history = read_history(hist_file)
            best_val, per_epoch = _summary(history)
            runs.append(RunInfo(
                id=r["id"], kind="reference", architecture=r["architecture"], title=r["title"],
                dataset=r["dataset"], status="published", epochs=int(r.get("epochs_logged") or len(history)),
                test_accuracy=_number(r.get("test_accuracy"), "test_accuracy"),
                test_loss=_number(r.get("test_loss"), "test_loss"), best_val_accuracy=best_val,
                params=r.get("params"), trainable_params=r.get("trainable_params"), seconds_per_epoch=per_epoch,
                batch_size=r.get("batch_size"), source=r.get("source", ""), notes=r.get("notes", ""),
                path=str(folder), history_file=str(hist_file), weights=weights.get(r["id"], ""),
            ))
        except (OSError, ValueError, KeyError, TypeError, csv.Error) as e:
            name = r.get("id") if isinstance(r, dict) and r.get("id") else f"entry {k + 1}"
            bad = damaged_run(folder / str(name), f"runs.json {name}: {type(e).__name__}: {e}", kind="reference")
            runs.append(bad)
    return runs


TRANSFER_ARCHITECTURES = ("vgg16", "mobilenetv2")


def backbone_start(run: RunInfo) -> str:
    """How a run's backbone started, for the architectures that can start either way: "ImageNet" (Keras'
    weights), "weights file" (a user's .h5) or "scratch"; "" for the others (always trained from scratch)."""
    if run.architecture.lower() not in TRANSFER_ARCHITECTURES or not run.weights:
        return ""
    return {"imagenet": "ImageNet", "none": "scratch"}.get(run.weights, "weights file")


def list_runs(include_reference: bool = True, user_dir: Path | None = None) -> list[RunInfo]:
    """Every run: shipped project runs, the user's own runs, then the reference runs."""
    runs: list[RunInfo] = []
    if (r := load_project_run(config.REUSED_MODEL_DIR)) is not None:
        runs.append(r)
    for folder in (config.SHIPPED_RUNS_DIR, Path(user_dir or user_runs_dir())):
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
        except OSError:
            children = []  # an unreadable run store lists nothing rather than breaking every page
        for p in children:
            if p.name.startswith("."):  # a run being deleted (see delete_run), or anything else hidden
                continue
            if (r := load_project_run(p)) is not None:
                runs.append(r)
    if include_reference:
        runs += load_reference_runs()
    return runs


def prune_large_model(run_dir: Path, limit_mb: float = 20.0) -> bool:
    """Before shipping a run: drop a model file over the limit, keep the rest and say how to rebuild it."""
    run_dir = Path(run_dir)
    model = run_dir / "model.keras"
    if not model.exists() or model.stat().st_size <= limit_mb * 2**20:
        return False
    size = model.stat().st_size / 2**20
    info = read_json(run_dir / "run.json")
    info["model_note"] = (f"model file not shipped ({size:.0f} MB, over {limit_mb:.0f} MB); rebuild it with: "
                          f"{info.get('rebuild', 'python -m core train ...')}")
    write_json(run_dir / "run.json", info)
    model.unlink()
    return True


def runs_with_models(user_dir: Path | None = None) -> list[RunInfo]:
    """Finished project runs whose model file is here (the models the Draw page can compare)."""
    return [r for r in list_runs(include_reference=False, user_dir=user_dir) if r.has_model and r.status == "done"]


def get_run(run_id: str, user_dir: Path | None = None) -> RunInfo:
    for r in list_runs(user_dir=user_dir):
        if r.id == run_id:
            return r
    from core.errors import DigitLabError

    raise DigitLabError(f"No run with id {run_id!r}; `python -m core runs` lists them.")


# --- the user's own runs: rename and delete ---------------------------------------------------------------------

#: Longest title a run may get (a title is one line in the table, the legend and the job card).
MAX_TITLE_LENGTH = 200


def read_only_reason(run: RunInfo) -> str:
    """Why `run` cannot be renamed or deleted ("" when it can: a run in the user's own run store)."""
    if run.kind == "reference":
        return "it is a published reference run (models/reference-runs), shown read-only"
    path = Path(run.path).resolve() if run.path else None
    if path is not None and path.parent == user_runs_dir().resolve():
        return ""
    if path is not None and path == config.REUSED_MODEL_DIR.resolve():
        return "it is the reused model shipped with the project (models/reused-cnn), read-only"
    if path is not None and path.parent == config.SHIPPED_RUNS_DIR.resolve():
        return "it is a run shipped with the project (models/runs), read-only"
    return "it is not in your run store, so it is read-only"


def _own_run(run_id: str, action: str) -> RunInfo:
    """The user's run with this id; DigitLabError when there is none or the run is read-only."""
    from core.errors import DigitLabError

    matches = [r for r in list_runs() if r.id == run_id]
    if not matches:
        raise DigitLabError(f"No run with id {run_id!r}; `python -m core runs` lists them.")
    for r in matches:  # ids are unique in practice; an own run wins over a shipped one with the same name
        if not read_only_reason(r):
            return r
    raise DigitLabError(f"Cannot {action} run {run_id!r}: {read_only_reason(matches[0])}.")


def rename_run(run_id: str, title: str) -> RunInfo:
    """Give one of the user's runs a new title (run.json's `title`, rewritten atomically); return the run.

    Shipped and reference runs are read-only, and a damaged run.json is not rewritten (DigitLabError).
    """
    from core.errors import DigitLabError

    config.require_writable("renaming runs")
    clean = " ".join(str(title).split())  # one line: a title is a table cell and a legend entry
    if not clean:
        raise DigitLabError("A run's title cannot be empty.")
    if len(clean) > MAX_TITLE_LENGTH:
        raise DigitLabError(f"A run's title can have at most {MAX_TITLE_LENGTH} characters; got {len(clean)}.")
    run = _own_run(run_id, "rename")
    if run.status == "damaged":  # update_info would replace the unreadable run.json with almost nothing
        raise DigitLabError(f"Cannot rename run {run_id!r}: its files cannot be read ({run.problem}). "
                            "Delete it, or repair its files first.")
    RunWriter(Path(run.path)).update_info(title=clean)
    return load_project_run(Path(run.path)) or run


def _active_job_for(path: Path) -> int | None:
    """The id of a queued or running job that writes into `path`, if any."""
    from core import jobs

    for job in jobs.list_jobs(limit=1000):
        if job.status in ("queued", "running") and job.run_dir and Path(job.run_dir).resolve() == path.resolve():
            return job.id
    return None


def delete_run(run_id: str) -> None:
    """Delete one of the user's runs: its folder and every file in it.

    The folder is first renamed to a hidden trash name in one `os.replace` (the run disappears from every
    listing at once, never half-deleted), then removed. Shipped and reference runs are refused, and so is a
    run that is still training (cancel its job first), with a DigitLabError naming why.
    """
    from core.errors import DigitLabError

    config.require_writable("deleting runs")
    run = _own_run(run_id, "delete")
    path = Path(run.path)
    job_id = _active_job_for(path)
    if job_id is not None or run.status == "running":
        how = f"cancel job {job_id} first" if job_id is not None else "stop its training first"
        raise DigitLabError(f"Cannot delete run {run_id!r}: it is still training; {how}.")
    trash = path.with_name(f".trash-{path.name}-{uuid.uuid4().hex[:8]}")
    try:
        os.replace(path, trash)
    except OSError as e:
        raise storage_error(e, path.parent, "delete the run") from None
    # Removal can fail halfway (permissions, a file in use); the hidden trash folder is then never listed,
    # and the next delete tries again.
    for leftover in [trash, *path.parent.glob(".trash-*")]:
        shutil.rmtree(leftover, ignore_errors=True)


# --- settings side by side ------------------------------------------------------------------------------------

#: Settings every run can state (reference runs too), shown first; then the rest of config.json.
COMMON_SETTINGS = ("architecture", "dataset", "epochs run", "batch_size", "params", "trainable_params")


def run_settings(run: RunInfo) -> dict:
    """What a run was trained with, as {setting: value}: the common settings, then its config.json keys,
    its device and weights. Reference runs have only what was published (no config.json); missing values are
    left out, never invented."""
    cfg = dict(run.extra.get("config", {})) if run.kind == "project" else {}
    out = {"architecture": run.architecture, "dataset": run.dataset, "epochs run": run.epochs,
           "batch_size": run.batch_size if run.batch_size is not None else cfg.get("batch_size"),
           "params": run.params, "trainable_params": run.trainable_params}
    for key, value in cfg.items():
        if key not in ("architecture", "dataset", "batch_size"):  # shown above (architecture by its name)
            out[key] = value
    if run.device:
        out["device"] = run.device
    return {k: v for k, v in out.items() if v is not None and v != ""}
