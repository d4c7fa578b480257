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
import sqlite3
import subprocess
import sys
import time
import traceback
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from core import config
from core.errors import JobError

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


@contextmanager
def _connect():
    jobs_dir().mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(_db_path(), timeout=30, isolation_level=None)) as con:
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA journal_mode=WAL")  # readers (the page) never block the worker's writes
        con.execute(SCHEMA)
        yield con


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

    def as_dict(self) -> dict:
        return {**self.__dict__, "progress": round(self.progress, 3)}


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is dead for our purpose.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def _reconcile(con) -> None:
    """A running job whose worker process is gone crashed: say so instead of showing it running forever."""
    message = ("The worker process stopped unexpectedly (killed or out of memory); the epochs it finished are "
               "kept in the run folder.")
    for row in con.execute("SELECT id, pid, run_dir FROM jobs WHERE status = 'running'").fetchall():
        if not _pid_alive(row["pid"]):
            con.execute("UPDATE jobs SET status='failed', finished=?, error=? WHERE id=? AND status='running'",
                        (time.time(), message, row["id"]))
            if row["run_dir"] and (Path(row["run_dir"]) / "run.json").exists():
                from core.runs import RunWriter

                RunWriter(Path(row["run_dir"])).update_info(status="failed", error=message)


def list_jobs(limit: int = 100) -> list[Job]:
    """Newest first."""
    with _connect() as con:
        _reconcile(con)
        rows = con.execute("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    return [Job.from_row(r) for r in rows]


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

    run_dir = runs.user_runs_dir() / runs.new_run_id(cfg.architecture)
    epochs = cfg.epochs + (cfg.fine_tune_epochs if cfg.fine_tunes else 0)
    with _connect() as con:
        cur = con.execute("INSERT INTO jobs (config, title, run_dir, created, epochs) VALUES (?, ?, ?, ?, ?)",
                          (json.dumps(cfg.to_dict()), title, str(run_dir), time.time(), epochs))
        job_id = cur.lastrowid
    if start_worker:
        ensure_worker()
    return get_job(job_id)


def cancel(job_id: int) -> Job:
    """Cancel a queued job at once, or ask a running one to stop after its current epoch."""
    job = get_job(job_id)
    with _connect() as con:
        if job.status == "queued":
            con.execute("UPDATE jobs SET status='cancelled', finished=? WHERE id=? AND status='queued'",
                        (time.time(), job_id))
        elif job.status == "running":
            con.execute("UPDATE jobs SET cancel_requested=1 WHERE id=?", (job_id,))
        else:
            raise JobError(f"Job {job_id} is already {job.status}; only queued or running jobs can be cancelled.")
    return get_job(job_id)


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
    log = open(jobs_dir() / "worker.log", "ab")
    subprocess.Popen([sys.executable, "-m", "core", "worker"], cwd=config.ROOT, stdout=log, stderr=log,
                     stdin=subprocess.DEVNULL, start_new_session=True, env=dict(os.environ))


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


def _run_job(job: Job) -> None:
    from core.training import RunConfig, train

    def on_epoch(row: dict) -> None:
        with _connect() as con:
            con.execute("UPDATE jobs SET epoch=?, last_metrics=? WHERE id=?", (row["epoch"], json.dumps(row), job.id))

    def should_stop() -> bool:
        with _connect() as con:
            return bool(con.execute("SELECT cancel_requested FROM jobs WHERE id=?", (job.id,)).fetchone()[0])

    try:
        result = train(RunConfig.from_dict(job.config), job.run_dir, on_epoch=on_epoch, should_stop=should_stop,
                       title=job.title)
        status, error = result["status"], None
    except Exception as e:  # the job fails, the worker lives on to run the next one
        status, error = "failed", f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}"
        from core.runs import RunWriter

        if job.run_dir and Path(job.run_dir).exists():
            RunWriter(Path(job.run_dir)).update_info(status="failed", error=f"{type(e).__name__}: {e}")
    with _connect() as con:
        con.execute("UPDATE jobs SET status=?, finished=?, error=? WHERE id=?", (status, time.time(), error, job.id))
