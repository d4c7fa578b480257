"""Background training jobs: a queue in SQLite, run one at a time by a separate worker process.

The Streamlit script never trains. `submit` adds a job and starts a worker unless one is running; the worker
(`python -m core worker`) holds an exclusive file lock, takes the oldest queued job, trains it with
`core.training.train` (whose Keras callback writes each epoch to the run folder and here), and exits when
the queue is empty. Everything lives on disk, so the queue survives restarts of the app and of the worker;
a job whose worker died is marked failed when anyone next reads the queue.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import traceback
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from core import config
from core.errors import DigitLabError, JobError
from core.process import pid_alive
from core.storage import storage_error

STATUSES = ("queued", "running", "done", "failed", "cancelled")
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    status TEXT NOT NULL DEFAULT 'queued',
    config TEXT NOT NULL,
    title TEXT,
    run_dir TEXT,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    pid INTEGER,
    epoch INTEGER NOT NULL DEFAULT 0,
    epochs INTEGER NOT NULL DEFAULT 0,
    last_metrics TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error TEXT
)
"""


def jobs_dir() -> Path:
    return config.data_home() / "jobs"


def _db_path() -> Path:
    return jobs_dir() / "jobs.sqlite"


#: Databases this process has already checked (path -> inode), so the integrity check runs once per file.
_checked: dict[str, int] = {}


def _set_aside(db: Path, reason: str) -> Path:
    """Move a damaged queue database (and its WAL files) aside under a name that says so; keep it."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = db.with_name(f"jobs.corrupt-{stamp}.sqlite")
    n = 1
    while aside.exists():
        n += 1
        aside = db.with_name(f"jobs.corrupt-{stamp}-{n}.sqlite")
    os.replace(db, aside)
    for suffix in ("-wal", "-shm"):
        side = db.with_name(db.name + suffix)
        if side.exists():
            os.replace(side, aside.with_name(aside.name + suffix))
    (aside.with_name(aside.name + ".reason.txt")).write_text(reason + "\n", encoding="utf-8")
    print(f"warning: the job database {db} was damaged ({reason}); it was set aside as {aside} and a fresh "
          "queue was started.", file=sys.stderr)
    return aside


def _open(db: Path) -> sqlite3.Connection:
    con = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA journal_mode=WAL")  # readers (the page) never block the worker's writes
        con.execute(SCHEMA)
        inode = db.stat().st_ino
        if _checked.get(str(db)) != inode:
            result = con.execute("PRAGMA quick_check").fetchone()[0]
            if result != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {result}")
            con.execute("SELECT count(*) FROM jobs").fetchone()
            _checked[str(db)] = inode
        return con
    except BaseException:
        con.close()
        raise


@contextmanager
def _connect():
    """A connection to the queue. A damaged database file is set aside (kept) and a fresh queue started."""
    try:
        jobs_dir().mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise storage_error(e, jobs_dir()) from None
    db = _db_path()
    try:
        con = _open(db)
    except sqlite3.DatabaseError as e:  # "file is not a database", "database disk image is malformed"
        if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
            raise JobError("The job queue is busy (locked by another process); try again in a moment.") from None
        if isinstance(e, sqlite3.OperationalError) and not db.exists():
            raise JobError(f"Could not open the job queue in {db.parent}: {e}.") from None
        _set_aside(db, str(e))
        try:
            con = _open(db)
        except sqlite3.DatabaseError as e2:
            raise JobError(f"Could not start a fresh job queue in {db.parent}: {e2}.") from None
    with closing(con):
        try:
            yield con
        except sqlite3.OperationalError as e:
            if "disk is full" in str(e) or "readonly" in str(e) or "read-only" in str(e):
                raise JobError(f"Could not write the job queue in {db.parent}: {e}.") from None
            raise


def set_aside_databases() -> list[Path]:
    """Damaged queue databases that were moved aside (kept for the user), newest first."""
    folder = jobs_dir()
    found = folder.glob("jobs.corrupt-*.sqlite") if folder.is_dir() else []
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


@dataclass
class Job:
    id: int
    status: str
    config: dict
    title: str
    run_dir: str | None
    created: float
    started: float | None
    finished: float | None
    pid: int | None
    epoch: int
    epochs: int
    last_metrics: dict | None
    cancel_requested: bool
    error: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Job":
        d = dict(row)
        d["config"] = json.loads(d["config"])
        d["last_metrics"] = json.loads(d["last_metrics"]) if d["last_metrics"] else None
        d["cancel_requested"] = bool(d["cancel_requested"])
        return cls(**d)

    @property
    def progress(self) -> float:
        return min(1.0, self.epoch / self.epochs) if self.epochs else 0.0

    @property
    def what(self) -> str:
        """What the job runs: the architecture of a training run, or "adaptation"."""
        return "adaptation" if self.config.get("job") == "adapt" else str(self.config.get("architecture", "?"))

    @property
    def shown_status(self) -> str:
        """What a user should read: "cancelling" while a running job's cancel is pending."""
        return "cancelling" if self.status == "running" and self.cancel_requested else self.status

    def as_dict(self) -> dict:
        return {**self.__dict__, "shown_status": self.shown_status, "progress": round(self.progress, 3)}


def _disk_nearly_full(folder: Path, min_free: int = 16 * 2**20) -> bool:
    try:
        return shutil.disk_usage(folder).free < min_free
    except OSError:
        return False


def _reconcile(con) -> None:
    """A running job whose worker process is gone crashed: say so instead of showing it running forever."""
    message = ("The worker process stopped unexpectedly (killed or out of memory); the epochs it finished are "
               "kept in the run folder.")
    if _disk_nearly_full(jobs_dir()):
        message = (f"The worker process stopped unexpectedly: there is no space left on the device that holds "
                   f"{config.data_home()}. Free some space and queue the run again; the epochs it finished are "
                   "kept in the run folder.")
    for row in con.execute("SELECT id, pid, run_dir FROM jobs WHERE status = 'running'").fetchall():
        if not pid_alive(row["pid"]):
            con.execute("UPDATE jobs SET status='failed', finished=?, error=? WHERE id=? AND status='running'",
                        (time.time(), message, row["id"]))
            if row["run_dir"] and (Path(row["run_dir"]) / "run.json").exists():
                from core.runs import RunWriter

                try:
                    RunWriter(Path(row["run_dir"])).update_info(status="failed", error=message)
                except DigitLabError:
                    pass  # the queue says it; a run folder we cannot write must not break the listing


def list_jobs(limit: int = 100, start_worker: bool = False) -> list[Job]:
    """Newest first. With start_worker, queued jobs that no live worker will run get one started (the page
    and the CLI pass it: a queue must never wait forever because its worker died)."""
    with _connect() as con:
        _reconcile(con)
        rows = con.execute("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    listed = [Job.from_row(r) for r in rows]
    if start_worker and any(j.status == "queued" for j in listed):
        ensure_worker()
    return listed


def get_job(job_id: int) -> Job:
    with _connect() as con:
        _reconcile(con)
        row = con.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise JobError(f"No job with id {job_id}; `python -m core jobs` lists them.")
    return Job.from_row(row)


def submit(cfg, title: str | None = None, start_worker: bool = True) -> Job:
    """Queue a training run (a core.training.RunConfig) and make sure a worker will run it."""
    from core import runs

    config.require_writable("queueing training jobs")
    epochs = cfg.epochs + (cfg.fine_tune_epochs if cfg.fine_tunes else 0)
    with _connect() as con:
        run_dir = runs.allocate_run_dir(cfg.architecture)  # its own folder, created now: never shared
        try:
            cur = con.execute("INSERT INTO jobs (config, title, run_dir, created, epochs) VALUES (?, ?, ?, ?, ?)",
                              (json.dumps(cfg.to_dict()), title, str(run_dir), time.time(), epochs))
        except BaseException:
            run_dir.rmdir()
            raise
        job_id = cur.lastrowid
    if start_worker:
        ensure_worker()
    return get_job(job_id)


def submit_adaptation(settings: dict, title: str | None = None, start_worker: bool = True) -> Job:
    """Queue a few-shot adaptation (core.adaptation.adapt's arguments as a dict); progress counts fits."""
    from core import adaptation, runs

    config.require_writable("queueing adaptation jobs")
    s = dict(settings)
    total = len(s["strategies"]) * len(s["shots"]) * s["seeds"]
    with _connect() as con:
        folder = runs.allocate_run_dir("adapt", adaptation.results_dir())
        try:
            cur = con.execute("INSERT INTO jobs (config, title, run_dir, created, epochs) VALUES (?, ?, ?, ?, ?)",
                              (json.dumps({"job": "adapt", **s}), title or f"Few-shot adaptation on {s['target']}",
                               str(folder), time.time(), total))
        except BaseException:
            folder.rmdir()
            raise
        job_id = cur.lastrowid
    if start_worker:
        ensure_worker()
    return get_job(job_id)


def cancel(job_id: int) -> Job:
    """Cancel a queued job at once, or ask a running one to stop after its current epoch."""
    config.require_writable("cancelling jobs")
    job = get_job(job_id)
    with _connect() as con:
        if job.status == "queued":
            cur = con.execute("UPDATE jobs SET status='cancelled', finished=?, run_dir=NULL "
                              "WHERE id=? AND status='queued'", (time.time(), job_id))
            if cur.rowcount and job.run_dir:
                _remove_unused_run_dir(Path(job.run_dir))
        elif job.status == "running":
            con.execute("UPDATE jobs SET cancel_requested=1 WHERE id=?", (job_id,))
        else:
            raise JobError(f"Job {job_id} is already {job.status}; only queued or running jobs can be cancelled.")
    return get_job(job_id)


def _remove_unused_run_dir(path: Path) -> None:
    """A job cancelled before it started leaves no run behind: remove its folder if nothing was written."""
    try:
        path.rmdir()  # only succeeds on an empty folder: a started run's files are never removed
    except OSError:
        pass


def _lock_path() -> Path:
    return jobs_dir() / "worker.lock"


def worker_running() -> bool:
    import fcntl

    jobs_dir().mkdir(parents=True, exist_ok=True)
    with open(_lock_path(), "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def ensure_worker() -> None:
    """Start a worker process unless one holds the lock (one job at a time, on the GPU or the CPU)."""
    if worker_running():
        return
    try:
        with open(jobs_dir() / "worker.log", "ab") as log:
            subprocess.Popen([sys.executable, "-m", "core", "worker"], cwd=config.ROOT, stdout=log, stderr=log,
                             stdin=subprocess.DEVNULL, start_new_session=True, env=dict(os.environ))
    except OSError as e:
        raise storage_error(e, jobs_dir(), "start the worker") from None


def _claim(con) -> Job | None:
    con.execute("BEGIN IMMEDIATE")  # two workers can never take the same job
    row = con.execute("SELECT * FROM jobs WHERE status='queued' ORDER BY id LIMIT 1").fetchone()
    if row is None:
        con.execute("COMMIT")
        return None
    con.execute("UPDATE jobs SET status='running', started=?, pid=? WHERE id=?", (time.time(), os.getpid(), row["id"]))
    con.execute("COMMIT")
    return Job.from_row(row)


def run_worker(once: bool = False) -> int:
    """The worker loop; returns how many jobs it ran. Exits at once if another worker holds the lock."""
    import fcntl

    jobs_dir().mkdir(parents=True, exist_ok=True)
    with open(_lock_path(), "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0
        ran = 0
        while True:
            with _connect() as con:
                job = _claim(con)
            if job is None:
                return ran
            _run_job(job)
            ran += 1
            if once:
                return ran


def _run_adaptation(job: Job, on_epoch, should_stop) -> str:
    """An adaptation job: progress is counted in fits; a cancel stops it after the current fit."""
    from core import adaptation
    from core.datasets import load_target

    s = job.config

    class Cancelled(Exception):
        pass

    def progress(done: int, total: int, what: str) -> None:
        on_epoch({"epoch": done, "what": what})
        if should_stop():
            raise Cancelled

    try:
        result = adaptation.adapt(load_target(s["target"]), s.get("model"), s["shots"], s["strategies"],
                                  s["seeds"], s["test_fraction"], s["reframing"], progress=progress,
                                  keep=[tuple(k) for k in s.get("keep", [])])
    except Cancelled:
        return "cancelled"
    adaptation.save_result(result, Path(job.run_dir))
    return "done"


def _run_job(job: Job) -> None:
    from core.training import RunConfig, train

    def on_epoch(row: dict) -> None:
        with _connect() as con:
            con.execute("UPDATE jobs SET epoch=?, last_metrics=? WHERE id=?", (row["epoch"], json.dumps(row), job.id))

    def should_stop() -> bool:
        with _connect() as con:
            return bool(con.execute("SELECT cancel_requested FROM jobs WHERE id=?", (job.id,)).fetchone()[0])

    try:
        if job.config.get("job") == "adapt":
            status, error = _run_adaptation(job, on_epoch, should_stop), None
        else:
            result = train(RunConfig.from_dict(job.config), job.run_dir, on_epoch=on_epoch,
                           should_stop=should_stop, title=job.title)
            status, error = result["status"], None
    except Exception as e:  # the job fails, the worker lives on to run the next one
        # The first line is what a user reads (a DigitLabError's message says it plainly: "no space left on
        # device in ..."); the traceback below it is for whoever debugs the worker.
        summary = str(e) if isinstance(e, DigitLabError) else f"{type(e).__name__}: {e}"
        status, error = "failed", f"{summary}\n\n{traceback.format_exc()}"
        from core.runs import RunWriter

        if job.run_dir and Path(job.run_dir).exists():
            try:
                RunWriter(Path(job.run_dir)).update_info(status="failed", error=summary)
            except DigitLabError:
                pass  # e.g. the disk is still full: the queue below keeps the reason
    with _connect() as con:
        con.execute("UPDATE jobs SET status=?, finished=?, error=? WHERE id=?", (status, time.time(), error, job.id))
