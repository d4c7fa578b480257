"""Background training jobs: a queue in SQLite, run one at a time by a separate worker process.

The Streamlit script never trains. `submit` adds a job and starts a worker unless one is running; the worker
(`python -m core worker`) holds an exclusive file lock, takes the oldest queued job, trains it with
`core.training.train` (whose Keras callback writes each epoch to the run folder and here), and exits when
the queue is empty. Everything lives on disk, so the queue survives restarts of the app and of the worker;
a job whose worker died is marked failed when anyone next reads the queue.

With `DIGITLAB_EXECUTOR=ray` the worker is a dispatcher that sends each job to a Ray cluster as a task running
the same body (core.executors); the queue here stays the source of truth. Each job records where it ran
(`node`, `device`) and how (`executor`).
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
from typing import Callable

from core import config
from core.errors import DigitLabError, JobError
from core.process import pid_alive
from core.storage import storage_error

STATUSES = ("queued", "running", "done", "failed", "cancelled")
#: The statuses of a job that has not ended (pages watch these live).
ACTIVE = ("queued", "running")
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
    error TEXT,
    node TEXT,
    device TEXT,
    executor TEXT
)
"""
#: Columns added after the first release: (name, type), added to an older database when it is opened.
ADDED_COLUMNS = (("node", "TEXT"), ("device", "TEXT"), ("executor", "TEXT"))


LOCK_WAIT_S = 30  # how long a new worker waits for a dead worker's lock to be released


def jobs_dir() -> Path:
    """The queue's folder: `<data home>/jobs`, or `DIGITLAB_QUEUE_DIR` (a local disk of the app host when the
    data home is a network share: SQLite's WAL needs every process that opens it on one host)."""
    queue_dir = os.environ.get("DIGITLAB_QUEUE_DIR", "").strip()
    return Path(queue_dir) if queue_dir else config.data_home() / "jobs"


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


def _migrate(con: sqlite3.Connection) -> None:
    """Add the columns an older queue database lacks (a job's node, device and executor)."""
    have = {row[1] for row in con.execute("PRAGMA table_info(jobs)").fetchall()}
    for name, kind in ADDED_COLUMNS:
        if name not in have:
            try:
                con.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
            except sqlite3.OperationalError as e:  # another process added it between our look and now
                if "duplicate column" not in str(e):
                    raise


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
            _migrate(con)
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
    node: str | None = None  # where it ran: host name ("host (ip)" on a Ray node)
    device: str | None = None  # what it trained on, as TensorFlow saw it: "CPU (...)" or "GPU (1x ...)"
    executor: str | None = None  # "local" or "ray" (None: queued, or run before this was recorded)

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
    from core.executors import host_of, this_host

    dispatcher_alive = None
    for row in con.execute("SELECT id, pid, run_dir, node, executor FROM jobs WHERE status = 'running'").fetchall():
        if row["executor"] == "ray":
            # Its task runs on some node of the cluster, under a pid that means nothing here. The dispatcher
            # that sent it records its outcome; a dispatcher that is gone took its tasks with it (Ray stops
            # the tasks of a driver that exits).
            if dispatcher_alive is None:
                try:
                    dispatcher_alive = worker_running()
                except OSError:  # the lock cannot be looked at (read-only folder): do not guess it is gone
                    dispatcher_alive = True
            if dispatcher_alive:
                continue
            error = ("The Ray dispatcher (the worker process that sent this job to the cluster) stopped "
                     "unexpectedly, and Ray stopped the job's task with it; the epochs it finished are kept in "
                     "the run folder.")
        elif row["node"] and host_of(row["node"]) != this_host():
            continue  # a worker on another host sharing this queue: its pid cannot be checked from here
        elif pid_alive(row["pid"]):
            continue
        else:
            error = message
        con.execute("UPDATE jobs SET status='failed', finished=?, error=? WHERE id=? AND status='running'",
                    (time.time(), error, row["id"]))
        if row["run_dir"] and (Path(row["run_dir"]) / "run.json").exists():
            from core.runs import RunWriter

            try:
                RunWriter(Path(row["run_dir"])).update_info(status="failed", error=error)
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
    _check_executor()
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
    from core import adaptation

    config.require_writable("queueing adaptation jobs")
    _check_executor()
    s = dict(settings, strategies=adaptation.check_strategies(settings["strategies"]))  # as adapt will run them
    total = len(s["strategies"]) * len(s["shots"]) * s["seeds"]
    with _connect() as con:
        folder = adaptation.new_result_dir()
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


def _check_executor() -> None:
    """Refuse to queue a job that the configured executor could never run (e.g. Ray not installed)."""
    from core.executors import check_executor

    check_executor()


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


def _wait_lock_path() -> Path:
    """Held by the one worker waiting for a dead worker's lock: the page polls every few seconds, and each
    poll in that moment must not start one more waiting worker."""
    return jobs_dir() / "worker.wait.lock"


def _waiter_present() -> bool:
    """Whether a worker is waiting to take over the lock of a dying one (it holds the wait lock)."""
    import fcntl

    try:
        f = open(_wait_lock_path())  # read-only: looking never creates a file (a read-only folder stays as is)
    except FileNotFoundError:
        return False
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def _flock_within(f, seconds: float, every: float = 0.02, give_up: Callable[[], bool] | None = None) -> bool:
    """Take an exclusive flock on `f`, trying every `every` s for up to `seconds`, or until give_up() is true.
    For the wait lock (a check, _waiter_present, holds it for microseconds: not a rival waiter) and for the
    worker lock a dying worker still holds."""
    import fcntl

    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline or (give_up is not None and give_up()):
                return False
            time.sleep(every)


def _lock_holder_alive(f) -> bool:
    """The lock is taken: is the worker that took it still alive? Its pid is written in the lock file. A
    killed worker's lock outlives it by a moment (its threads tear down after the main one shows as exited),
    and a queue must not be left waiting on a dead worker in that moment."""
    try:
        f.seek(0)
        pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return True  # no pid to check (a worker of an older version): trust the lock
    return not pid or pid_alive(pid)


def worker_running() -> bool:
    """True when a live worker holds the lock (one holding it while it dies does not count)."""
    import fcntl

    jobs_dir().mkdir(parents=True, exist_ok=True)
    with open(_lock_path(), "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _lock_holder_alive(f)
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def ensure_worker() -> None:
    """Start a worker process unless a live one holds the lock (one job at a time, on the GPU or the CPU) or
    one is already waiting for it. The new worker waits a little for the lock, which a worker that just died
    may still hold; the page polls every 2 s, so without the waiter check each poll would start another."""
    if worker_running() or _waiter_present():
        return
    try:
        with open(jobs_dir() / "worker.log", "ab") as log:
            subprocess.Popen([sys.executable, "-m", "core", "worker", "--wait-lock", str(LOCK_WAIT_S)],
                             cwd=config.ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                             start_new_session=True, env=dict(os.environ))
    except OSError as e:
        raise storage_error(e, jobs_dir(), "start the worker") from None


def _write_pid(lock) -> None:
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()


def _take_lock(lock, wait_s: float) -> bool:
    """Take the worker lock, trying for up to wait_s seconds while its holder is dead; write our pid in it for
    worker_running. Only one worker waits: one finding the wait lock taken leaves the queue to that one."""
    import fcntl

    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if wait_s <= 0 or _lock_holder_alive(lock):
            return False  # a live worker has it: it runs the queue, nothing to wait for
        with open(_wait_lock_path(), "a+") as waiting:
            if not _flock_within(waiting, 0.5):
                return False  # another worker is already waiting for this lock
            # until the dying holder lets go; a live holder (another worker got there first) runs the queue
            if not _flock_within(lock, wait_s, every=0.2, give_up=lambda: _lock_holder_alive(lock)):
                return False
            _write_pid(lock)  # before the wait lock goes: a check in between must see a live holder
            return True
    _write_pid(lock)
    return True


def _claim(con, executor: str = "local", pick=None) -> Job | None:
    """Take the oldest queued job (with `pick`, the oldest for which pick(job) is true) and mark it running."""
    con.execute("BEGIN IMMEDIATE")  # two workers can never take the same job
    try:
        if pick is None:
            row = con.execute("SELECT * FROM jobs WHERE status='queued' ORDER BY id LIMIT 1").fetchone()
        else:
            rows = con.execute("SELECT * FROM jobs WHERE status='queued' ORDER BY id").fetchall()
            row = next((r for r in rows if pick(Job.from_row(r))), None)
        if row is not None:
            con.execute("UPDATE jobs SET status='running', started=?, pid=?, executor=? WHERE id=?",
                        (time.time(), os.getpid(), executor, row["id"]))
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    if row is None:
        return None
    job = Job.from_row(row)
    job.status, job.executor = "running", executor
    return job


def _fail_queued(job_id: int, message: str) -> None:
    """Fail a queued job that will never start (the executor cannot place it); its empty run folder goes."""
    with _connect() as con:
        row = con.execute("SELECT run_dir FROM jobs WHERE id=?", (job_id,)).fetchone()
        cur = con.execute("UPDATE jobs SET status='failed', finished=?, error=?, run_dir=NULL "
                          "WHERE id=? AND status='queued'", (time.time(), message, job_id))
    if cur.rowcount and row and row["run_dir"]:
        _remove_unused_run_dir(Path(row["run_dir"]))


def run_worker(once: bool = False, wait_lock: float = 0.0) -> int:
    """The worker loop; returns how many jobs it ran. Exits at once if a live worker holds the lock, or if
    another worker already waits for it; else waits up to wait_lock seconds for a lock whose holder is dead.

    Under DIGITLAB_EXECUTOR=ray it is the dispatcher instead (core.executors.dispatch): same lock, same queue,
    the jobs run as Ray tasks on the cluster's nodes, several at once.
    """
    from core.executors import executor_name

    jobs_dir().mkdir(parents=True, exist_ok=True)
    with open(_lock_path(), "a+") as lock:
        if not _take_lock(lock, wait_lock):
            return 0
        if executor_name() == "ray":
            from core.executors import dispatch

            return dispatch(once=once)
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
        on_epoch({"epoch": done, "epochs": total, "what": what})
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


class QueueRecorder:
    """How a running job reports to the queue: its start (where it runs), each epoch, whether it was cancelled,
    its outcome. This one writes the SQLite file itself, so it runs on the host that holds the queue: in the
    local worker, and under Ray in the dispatcher's reporter (core.executors), which tasks on other nodes call
    (SQLite's WAL works only among processes of one host)."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id

    def start(self, node: str, pid: int | None = None) -> bool:
        """Record the node (and a Ray task's own pid and start time). False when the job was cancelled before
        it started (a Ray task can wait for a node): it is then marked cancelled and its empty folder goes."""
        with _connect() as con:
            if pid is not None:  # the pid that runs it on its node (the claim recorded the dispatcher's)
                con.execute("UPDATE jobs SET node=?, pid=?, started=? WHERE id=?", (node, pid, time.time(), self.job_id))
            else:
                con.execute("UPDATE jobs SET node=?, executor=COALESCE(executor, 'local') WHERE id=?",
                            (node, self.job_id))
            row = con.execute("SELECT cancel_requested, run_dir FROM jobs WHERE id=?", (self.job_id,)).fetchone()
            if not row["cancel_requested"]:
                return True
            con.execute("UPDATE jobs SET status='cancelled', finished=?, run_dir=NULL WHERE id=?",
                        (time.time(), self.job_id))
        if row["run_dir"]:
            _remove_unused_run_dir(Path(row["run_dir"]))
        return False

    def device(self, device: str) -> None:
        with _connect() as con:
            con.execute("UPDATE jobs SET device=? WHERE id=?", (device, self.job_id))

    def epoch(self, row: dict) -> None:
        """One step done; a row with `epochs` also corrects the total (an adaptation skips the k a set lacks)."""
        with _connect() as con:
            con.execute("UPDATE jobs SET epoch=?, epochs=COALESCE(?, epochs), last_metrics=? WHERE id=?",
                        (row["epoch"], row.get("epochs"), json.dumps(row), self.job_id))

    def should_stop(self) -> bool:
        with _connect() as con:
            return bool(con.execute("SELECT cancel_requested FROM jobs WHERE id=?", (self.job_id,)).fetchone()[0])

    def finish(self, status: str, error: str | None) -> None:
        with _connect() as con:
            con.execute("UPDATE jobs SET status=?, finished=?, error=? WHERE id=?",
                        (status, time.time(), error, self.job_id))


def _run_job(job: Job, executor: str = "local", recorder=None) -> str:
    """Run one claimed job here (the local worker, or a Ray task on its node) and record its outcome through
    `recorder` (default: a QueueRecorder writing the queue directly); returns the final status."""
    from core.executors import device_description, node_name
    from core.training import RunConfig, train

    rec = recorder or QueueRecorder(job.id)
    in_ray = executor == "ray"
    if not rec.start(node_name(in_ray), os.getpid() if in_ray else None):
        return "cancelled"
    rec.device(device_description(in_ray))  # imports TensorFlow, which the job needs anyway
    on_epoch, should_stop = rec.epoch, rec.should_stop
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
    rec.finish(status, error)
    return status
