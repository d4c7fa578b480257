"""Where jobs run: the local worker process (default) or a Ray cluster (`DIGITLAB_EXECUTOR=ray`).

With Ray, the worker process (`python -m core worker`, same lock, same `ensure_worker`) becomes a dispatcher:
it claims queued jobs from the SQLite queue, which stays the source of truth, and submits each as a Ray task
that runs the local worker's body (`core.jobs._run_job`) on whichever node Ray picks, as many at once as the
cluster has room for. The task writes its epochs, its final status and where it ran (node, device) to the
shared queue and run folder itself, so progress, cancel and the run store behave as with the local worker;
the dispatcher records only what a task cannot say itself: that it was killed or its node left.

`ray` is optional (requirements-cluster.txt) and is imported only inside functions.
"""
from __future__ import annotations

import importlib.util
import os
import platform
import socket
import time
from pathlib import Path

from core import config
from core.errors import DigitLabError, InvalidOptionError

EXECUTORS = ("local", "ray")
#: Architectures whose Ray task asks for a GPU unless DIGITLAB_RAY_GPUS_PER_JOB says otherwise.
GPU_ARCHITECTURES = ("vgg16", "mobilenetv2")
INSTALL_HINT = "pip install -r requirements-cluster.txt"
#: Not shipped to the cluster with the code: user data, tests, benchmarks and caches.
CODE_EXCLUDES = [".git", ".digitlab", "tests", "bench", "__pycache__", "*.pyc", ".pytest_cache"]


class ExecutorUnavailable(DigitLabError):
    """The configured executor cannot run anything here: Ray not installed, or its cluster unreachable."""


def executor_name() -> str:
    """The executor chosen by `DIGITLAB_EXECUTOR`: "local" (default, also when empty) or "ray"."""
    name = os.environ.get("DIGITLAB_EXECUTOR", "").strip().lower() or "local"
    if name not in EXECUTORS:
        raise InvalidOptionError("DIGITLAB_EXECUTOR", name, EXECUTORS)
    return name


def ray_available() -> bool:
    """Whether `ray` can be imported here (checked without importing it: that takes a second)."""
    return importlib.util.find_spec("ray") is not None


def check_executor() -> str:
    """The executor name, refusing a Ray executor that cannot work here before anything is queued."""
    name = executor_name()
    if name == "ray" and not ray_available():
        raise DigitLabError(f"DIGITLAB_EXECUTOR=ray needs the Ray package, which is not installed: "
                            f"`{INSTALL_HINT}` (or unset DIGITLAB_EXECUTOR to train on this machine).")
    return name


def require_ray():
    """The `ray` module, or a DigitLabError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ExecutorUnavailable(f"The Ray executor needs the Ray package, which is not installed: "
                                  f"`{INSTALL_HINT}`.") from None
    return ray


def gpus_per_job(job_config: dict) -> float:
    """GPUs a job's Ray task asks for.

    `DIGITLAB_RAY_GPUS_PER_JOB` set: that many for every job (0 = CPU only; a fraction such as 0.5 lets two
    jobs share one GPU). Unset: 1 for the transfer architectures (vgg16, mobilenetv2), 0 for everything else
    (mlp, cnn, cnn-deep, adaptation), which trains fast enough on a CPU.
    """
    raw = os.environ.get("DIGITLAB_RAY_GPUS_PER_JOB", "").strip()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        # More than one GPU would sit idle: training uses one device (no distribution strategy).
        if not 0.0 <= value <= 1.0:
            raise InvalidOptionError("DIGITLAB_RAY_GPUS_PER_JOB", raw, "a number from 0 to 1 (0: CPU only)")
        return value
    if job_config.get("job") == "adapt":
        return 0.0
    return 1.0 if job_config.get("architecture") in GPU_ARCHITECTURES else 0.0


def this_host() -> str:
    return socket.gethostname()


def host_of(node: str | None) -> str | None:
    """The host name part of a recorded node ("gpu-3 (10.0.0.7)" -> "gpu-3")."""
    return node.split(" (", 1)[0] if node else None


def node_name(in_ray: bool = False) -> str:
    """Where this process runs: its host name, with the node's IP address inside a Ray task."""
    if in_ray:
        try:
            import ray

            return f"{this_host()} ({ray.util.get_node_ip_address()})"
        except Exception:  # a name without the address is still worth recording
            pass
    return this_host()


def device_description(in_ray: bool = False) -> str:
    """The device this process trains on, as TensorFlow sees it (Ray hides the GPUs a task did not ask for)."""
    try:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            try:
                model = tf.config.experimental.get_device_details(gpus[0]).get("device_name") or gpus[0].name
            except Exception:
                model = gpus[0].name
            text = f"GPU ({len(gpus)}x {model})"
            if in_ray:
                import ray

                text += f", Ray GPU id {','.join(map(str, ray.get_gpu_ids()))}"
            return text
    except Exception as e:  # recording the device must never fail the job
        return f"unknown ({type(e).__name__})"
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def _forwarded_env() -> dict[str, str]:
    """What a task on another node needs of this process' environment.

    A Ray worker inherits the environment its node's raylet was started with, not the app's, so the data home
    (resolved: the same absolute path must be mounted on every node) and the DIGITLAB_* and KERAS_HOME
    settings travel with each task.
    """
    env = {k: v for k, v in os.environ.items()
           if (k.startswith("DIGITLAB_") and k != "DIGITLAB_EXECUTOR") or k == "KERAS_HOME"}
    env["DIGITLAB_HOME"] = str(config.data_home().resolve())
    return env


def connect():
    """Connect to the Ray cluster (`RAY_ADDRESS`; unset: a running local one, else a new local instance).

    Returns (ray, started_here). The project's code travels with the job (Ray's working_dir), so a node needs
    only the requirements installed, not a checkout. A connection made by the caller (ray.init before) is
    used as it is.
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray, False
    address = os.environ.get("RAY_ADDRESS") or None
    try:
        ray.init(address=address, include_dashboard=False, logging_level="WARNING",
                 runtime_env={"working_dir": str(config.ROOT), "excludes": CODE_EXCLUDES})
    except ConnectionError as e:
        raise ExecutorUnavailable(f"Could not reach the Ray cluster at RAY_ADDRESS={address}: {e}. Start it "
                                  "with `ray start --head` on the head node, or unset RAY_ADDRESS to run Ray on "
                                  "this machine.") from None
    return ray, True


class JobReporter:
    """A Ray actor on the dispatcher's host, through which tasks on any node report to the queue.

    Only processes on the host that holds the SQLite queue ever open it: its WAL works among the processes
    of one host, never across a network file system. Nodes need the run store on shared storage, not the queue.
    """

    def __init__(self, env: dict[str, str]) -> None:
        os.environ.update(env)

    def call(self, job_id: int, method: str, *args):
        from core.jobs import QueueRecorder

        return getattr(QueueRecorder(job_id), method)(*args)


class RemoteRecorder:
    """A QueueRecorder's methods, called on the JobReporter actor: what a task uses instead of the queue file."""

    def __init__(self, reporter, job_id: int) -> None:
        self.reporter, self.job_id = reporter, job_id

    def __getattr__(self, method: str):
        import ray

        # Synchronous: an epoch is recorded before training goes on, and a failure to record it is raised here.
        return lambda *args: ray.get(self.reporter.call.remote(self.job_id, method, *args))


def _job_task(job: dict, env: dict[str, str], reporter) -> str:
    """Body of one job's Ray task, on whichever node Ray picked: the local worker's body, then its status."""
    os.environ.update(env)
    from core import jobs

    return jobs._run_job(jobs.Job(**job), executor="ray", recorder=RemoteRecorder(reporter, job["id"]))


def _start_reporter(ray, env: dict[str, str]):
    """The JobReporter actor, pinned to this (the dispatcher's) node; it needs no CPU of the cluster's."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    actor = ray.remote(num_cpus=0, max_restarts=0)(JobReporter).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False)).remote(env)
    return actor


def _failure_message(error: Exception, node: str | None) -> str:
    """What a user reads when Ray could not finish a job's task (the task did not record an outcome)."""
    where = f"on {node}" if node else "on the Ray cluster"
    kept = "; the epochs it finished are kept in the run folder."
    kind = type(error).__name__
    if kind == "OutOfMemoryError":
        return f"Ray's memory monitor stopped this job {where}: the node ran out of memory{kept}"
    if "node" in kind.lower():  # NodeDiedError and its kin
        return f"The Ray node running this job ({node or 'unknown'}) left the cluster or died{kept}"
    if kind == "WorkerCrashedError":
        return (f"The Ray worker process running this job {where} stopped unexpectedly (killed or out of "
                f"memory){kept}")
    if kind == "RuntimeEnvSetupError":
        return (f"Ray could not set up the job's environment {where} (the project's code and requirements): "
                f"{str(error).strip().splitlines()[-1] if str(error).strip() else kind}.")
    if kind == "TaskCancelledError":
        return f"The job's Ray task was cancelled {where} (ray.cancel or `ray job stop`){kept}"
    cause = getattr(error, "cause", None)  # RayTaskError: the task's own exception
    if cause is not None:
        summary = f"{type(cause).__name__}: {cause}"
        if isinstance(cause, ModuleNotFoundError):
            summary += " (the node lacks this project's requirements: pip install -r requirements.txt there)"
        return f"The job's Ray task failed {where}: {summary}"
    first = (str(error).strip().splitlines() or [""])[0]
    return f"Ray could not run the job {where} ({kind}): {first}"


def _record_failure(job_id: int, message: str) -> None:
    """Mark a running job failed (unless its task recorded an outcome before it died); its run.json too."""
    from core import jobs
    from core.runs import RunWriter

    with jobs._connect() as con:
        cur = con.execute("UPDATE jobs SET status='failed', finished=?, error=? WHERE id=? AND status='running'",
                          (time.time(), message, job_id))
        row = con.execute("SELECT run_dir FROM jobs WHERE id=?", (job_id,)).fetchone()
    if cur.rowcount and row and row["run_dir"] and (Path(row["run_dir"]) / "run.json").exists():
        try:
            RunWriter(Path(row["run_dir"])).update_info(status="failed", error=message)
        except DigitLabError:
            pass  # the queue keeps the reason


def _capacity(ray) -> tuple[float, float]:
    """(CPUs, GPUs) of the whole cluster now; nodes may join or leave between two calls."""
    total = ray.cluster_resources()
    return float(total.get("CPU", 0.0)), float(total.get("GPU", 0.0))


#: How long a queued job that no node of the cluster can take waits (a node restarting, a GPU host joining)
#: before it fails with a message that says what to do, rather than waiting forever.
NODE_WAIT_SECONDS = 60.0


def dispatch(once: bool = False, poll_seconds: float = 1.0) -> int:
    """The Ray dispatcher loop (the worker's body under DIGITLAB_EXECUTOR=ray); returns how many jobs it sent.

    Runs while anything is queued or in flight. Queued jobs are taken oldest first, each when the cluster has
    room for it (1 CPU and its GPUs, counting the tasks this dispatcher has in flight): a job waiting for a GPU
    does not hold up jobs that need only a CPU. The caller holds the worker lock.
    """
    from core import jobs

    try:
        ray, started_here = connect()
    except ExecutorUnavailable as e:
        # Say it where the user looks (each queued job), rather than leave them queued with no reason while
        # every look at the queue starts another dispatcher that fails the same way.
        with jobs._connect() as con:
            queued = [r["id"] for r in con.execute("SELECT id FROM jobs WHERE status='queued'").fetchall()]
        for job_id in queued:
            jobs._fail_queued(job_id, f"{e} Then queue the run again.")
        print(f"dispatcher: {e}", flush=True)
        return 0
    env = _forwarded_env()
    reporter = _start_reporter(ray, env)
    env.pop("DIGITLAB_QUEUE_DIR", None)  # tasks never open the queue: they report through the reporter
    remote = ray.remote(_job_task)
    in_flight: dict = {}  # ObjectRef -> (job id, gpus)
    unplaceable_since: dict[int, float] = {}
    sent = 0
    try:
        while True:
            cpus, gpus = _capacity(ray)
            while not (once and sent):
                free_cpu = cpus - len(in_flight)
                free_gpu = gpus - sum(g for _, g in in_flight.values())
                with jobs._connect() as con:
                    job = jobs._claim(con, executor="ray",
                                      pick=lambda j: free_cpu >= 1 and gpus_per_job(j.config) <= free_gpu + 1e-9)
                if job is None:
                    break
                g = gpus_per_job(job.config)
                # max_retries=0: a killed task must fail its job, never train it again behind the user's back.
                # max_calls=1 for GPU tasks: a fresh process per job frees the GPU memory TensorFlow keeps, and
                # sees the GPU Ray assigned (TensorFlow reads CUDA_VISIBLE_DEVICES once).
                options: dict = {"num_cpus": 1, "num_gpus": g, "max_retries": 0}
                task_env = dict(env)
                if g:
                    options["max_calls"] = 1
                    if g < 1:  # jobs sharing one GPU: TensorFlow must not take all of its memory
                        task_env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
                in_flight[remote.options(**options).remote(dict(job.__dict__), task_env, reporter)] = (job.id, g)
                sent += 1
            waiting = _fail_unplaceable(cpus, gpus, unplaceable_since)
            if not in_flight:
                if not waiting or (once and sent):
                    return sent
                time.sleep(poll_seconds)  # a node may join: look again
                continue
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=poll_seconds)
            for ref in ready:
                job_id, _ = in_flight.pop(ref)
                try:
                    ray.get(ref)
                except Exception as e:  # the task died or could not run: it recorded no outcome, so we do
                    try:
                        _record_failure(job_id, _failure_message(e, jobs.get_job(job_id).node))
                    except DigitLabError as e2:  # e.g. the queue's disk is full: say so, run the rest
                        print(f"job {job_id}: could not record its failure ({e2})", flush=True)
    finally:
        ray.kill(reporter)
        if started_here:
            ray.shutdown()


def _fail_unplaceable(cpus: float, gpus: float, since: dict[int, float]) -> int:
    """Fail queued jobs that no node could take for NODE_WAIT_SECONDS; returns how many still wait for one."""
    from core import jobs

    with jobs._connect() as con:
        queued = [jobs.Job.from_row(r) for r in
                  con.execute("SELECT * FROM jobs WHERE status='queued' ORDER BY id").fetchall()]
    now, waiting = time.time(), 0
    for job in queued:
        wanted = gpus_per_job(job.config)
        if cpus >= 1 and wanted <= gpus + 1e-9:
            since.pop(job.id, None)
            continue
        if now - since.setdefault(job.id, now) < NODE_WAIT_SECONDS:
            waiting += 1
            continue
        what = f"{wanted:g} GPU" if wanted > gpus else "1 CPU"
        jobs._fail_queued(job.id, (
            f"No node of the Ray cluster could take this job for {NODE_WAIT_SECONDS:g} s: it asks for {what} and "
            f"the cluster has {cpus:g} CPU(s) and {gpus:g} GPU(s). Add a node that has one (`ray start "
            "--address=HEAD:6379` on that host), or set DIGITLAB_RAY_GPUS_PER_JOB=0 to train on a CPU; then "
            "queue the run again."))
        since.pop(job.id, None)
    return waiting
