"""The Ray executor: jobs sent to a (local) Ray cluster behave as with the local worker; sharded evaluation.

Tests that need Ray share one local instance (`ray.init(num_cpus=2)`, started once for the module and shut
down after) and are skipped with the reason when `ray` is not installed (requirements-cluster.txt). The
dispatcher runs in this process (`jobs.run_worker()`, in a thread where the test must act meanwhile), except
in the end-to-end test, where `train --background` starts it as its own process, as in production.
"""
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from core import executors, jobs
from core.errors import DigitLabError, InvalidOptionError
from core.training import RunConfig
from tests import conftest
from tests.conftest import ROOT


@pytest.fixture(autouse=True)
def offline(offline_keras, monkeypatch):
    monkeypatch.delenv("DIGITLAB_RAY_GPUS_PER_JOB", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance for the module: 2 CPUs, so two 1-CPU jobs can run at once."""
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install -r requirements-cluster.txt)")
    saved_env = dict(os.environ)
    # The project's code travels to the workers as it would to a remote cluster.
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False,
             runtime_env={"working_dir": str(ROOT), "excludes": executors.CODE_EXCLUDES})
    yield ray
    ray.shutdown()
    # ray.init leaves PYTHONBREAKPOINT and RAY_AUTH_MODE set: later tests' subprocesses must not inherit them.
    os.environ.clear()
    os.environ.update(saved_env)


@pytest.fixture
def on_ray(cluster, monkeypatch):
    monkeypatch.setenv("DIGITLAB_EXECUTOR", "ray")
    return cluster


def tiny(epochs=1, **kw):
    return RunConfig.preset("mlp", epochs=epochs, max_samples=200, batch_size=32, early_stopping=None, **kw)


def wait_for(predicate, timeout=300):  # a Ray task starts a worker process first: longer than elsewhere
    return conftest.wait_for(predicate, timeout)


class Dispatcher(threading.Thread):
    """jobs.run_worker() in a thread: the test can watch, cancel and kill meanwhile."""

    def __init__(self):
        super().__init__(daemon=True)
        self.result, self.error = None, None
        self.start()

    def run(self):
        try:
            self.result = jobs.run_worker()
        except BaseException as e:  # surfaced by finish()
            self.error = e

    def finish(self, timeout=120):
        self.join(timeout)
        assert not self.is_alive(), "the dispatcher did not finish"
        if self.error:
            raise self.error
        return self.result


# --- no Ray needed -----------------------------------------------------------------------------------------

def test_the_gpu_rule(monkeypatch):
    assert executors.gpus_per_job(tiny().to_dict()) == 0
    assert executors.gpus_per_job(RunConfig.preset("vgg16", weights="none").to_dict()) == 1
    assert executors.gpus_per_job(RunConfig.preset("mobilenetv2", weights="none").to_dict()) == 1
    assert executors.gpus_per_job({"job": "adapt", "target": "sklearn-digits"}) == 0
    monkeypatch.setenv("DIGITLAB_RAY_GPUS_PER_JOB", "0.5")  # set: every job, transfer or not
    assert executors.gpus_per_job(tiny().to_dict()) == 0.5
    monkeypatch.setenv("DIGITLAB_RAY_GPUS_PER_JOB", "0")
    assert executors.gpus_per_job(RunConfig.preset("vgg16", weights="none").to_dict()) == 0
    for bad in ("2", "-1", "one"):
        monkeypatch.setenv("DIGITLAB_RAY_GPUS_PER_JOB", bad)
        with pytest.raises(InvalidOptionError, match="DIGITLAB_RAY_GPUS_PER_JOB must be a number from 0 to 1"):
            executors.gpus_per_job(tiny().to_dict())


def test_an_unknown_executor_is_refused_before_queueing(monkeypatch):
    monkeypatch.setenv("DIGITLAB_EXECUTOR", "slurm")
    with pytest.raises(InvalidOptionError, match="DIGITLAB_EXECUTOR must be one of local, ray; got 'slurm'"):
        jobs.submit(tiny(), start_worker=False)
    assert jobs.list_jobs() == []


def test_ray_executor_without_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setenv("DIGITLAB_EXECUTOR", "ray")
    monkeypatch.setattr(executors, "ray_available", lambda: False)
    with pytest.raises(DigitLabError, match=r"pip install -r requirements-cluster\.txt"):
        jobs.submit(tiny(), start_worker=False)
    assert jobs.list_jobs() == []
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as on a machine without it
    with pytest.raises(DigitLabError, match=r"pip install -r requirements-cluster\.txt"):
        executors.require_ray()


def test_a_dispatcher_that_cannot_use_ray_fails_the_queued_jobs_with_the_reason(monkeypatch):
    job = jobs.submit(tiny(), start_worker=False)  # queued under the local executor
    monkeypatch.setenv("DIGITLAB_EXECUTOR", "ray")
    monkeypatch.setitem(sys.modules, "ray", None)  # as on a host without Ray (or with its cluster unreachable)
    assert jobs.run_worker() == 0
    failed = jobs.get_job(job.id)
    assert failed.status == "failed" and "pip install -r requirements-cluster.txt" in failed.error
    assert not Path(job.run_dir).exists()


def test_an_old_queue_database_gets_the_new_columns():
    jobs.jobs_dir().mkdir(parents=True)
    old_schema = jobs.SCHEMA.replace(",\n    node TEXT,\n    device TEXT,\n    executor TEXT", "")
    assert "node" not in old_schema
    with sqlite3.connect(jobs._db_path()) as con:
        con.execute(old_schema)
        con.execute("INSERT INTO jobs (status, config, created) VALUES ('done', '{}', 0)")
    [job] = jobs.list_jobs()
    assert job.status == "done" and job.node is None and job.device is None
    assert {"node", "device", "executor"} <= set(job.as_dict())
    with sqlite3.connect(jobs._db_path()) as con:
        assert {"node", "device", "executor"} <= {r[1] for r in con.execute("PRAGMA table_info(jobs)")}


def _fake_running(job, **cols):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    cols = {"status": "running", "pid": dead.pid, **cols}
    with jobs._connect() as con:
        con.execute(f"UPDATE jobs SET {', '.join(f'{k}=?' for k in cols)} WHERE id=?", (*cols.values(), job.id))


def test_reconcile_never_judges_a_job_on_another_host_by_a_local_pid():
    elsewhere, here, on_ray = (jobs.submit(tiny(), start_worker=False) for _ in range(3))
    _fake_running(elsewhere, node="gpu-host-7 (10.0.0.7)", executor="local")
    _fake_running(here, node=socket.gethostname(), executor="local")
    _fake_running(on_ray, node="gpu-host-7 (10.0.0.7)", executor="ray")
    assert jobs.get_job(elsewhere.id).status == "running"  # its worker's pid means nothing on this host
    assert jobs.get_job(here.id).status == "failed"
    # A Ray job is the dispatcher's to judge: with none holding the worker lock, Ray stopped its task too.
    failed = jobs.get_job(on_ray.id)
    assert failed.status == "failed" and "Ray dispatcher" in failed.error and "stopped unexpectedly" in failed.error


def test_reconcile_leaves_ray_jobs_to_a_live_dispatcher():
    job = jobs.submit(tiny(), start_worker=False)
    _fake_running(job, node="gpu-host-7 (10.0.0.7)", executor="ray")
    import fcntl

    with open(jobs._lock_path(), "a+") as lock:  # as the dispatcher holds it
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert jobs.get_job(job.id).status == "running"


def test_sharded_evaluation_merges_shards_in_order_locally():
    from core.datasets import load_sklearn_digits
    from core.evaluation import evaluate
    from core.models import Predictor, reused_model_path
    from core.sharding import evaluate_sharded

    ds = load_sklearn_digits().subset(np.arange(300))
    local = evaluate(Predictor.load(), ds, "paper", use_cache=False)
    stats = {}
    sharded = evaluate_sharded(reused_model_path(), ds, "paper", shard_size=128, executor="local", stats=stats)
    assert stats["shards"] == 3 and stats["model_loads"] <= 1
    assert np.array_equal(sharded.y_pred, local.y_pred)
    assert np.array_equal(sharded.confusion_matrix(), local.confusion_matrix())
    assert np.array_equal(stats["confusion_matrix"], local.confusion_matrix())
    np.testing.assert_allclose(sharded.probabilities, local.probabilities, atol=1e-5)
    with pytest.raises(InvalidOptionError, match="shard_size must be a positive integer"):
        evaluate_sharded(None, ds, "paper", shard_size=0, executor="local")


def test_cli_evaluate_in_shards_reports_what_the_plain_evaluation_does(capsys):
    from core.cli import main

    assert main(["evaluate", "--target", "sklearn-digits", "--no-cache", "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(["evaluate", "--target", "sklearn-digits", "--shard-size", "700", "--json"]) == 0
    sharded = json.loads(capsys.readouterr().out)
    for key in ("n", "accuracy", "macro", "confusion_matrix", "per_digit", "blank"):
        assert sharded[key] == plain[key], key


# --- on a local Ray instance -------------------------------------------------------------------------------

def test_a_job_runs_to_the_end_on_ray(on_ray, capsys, tmp_path, monkeypatch):
    # The queue away from the data home, where tasks could not find it: they report through the dispatcher's
    # reporter, so the queue's SQLite file is only ever opened on this host.
    monkeypatch.setenv("DIGITLAB_QUEUE_DIR", str(tmp_path / "local-queue"))
    job = jobs.submit(tiny(epochs=2), title="on ray", start_worker=False)
    assert jobs.run_worker() == 1  # the dispatcher: sends it, waits for it, returns when the queue is empty
    done = jobs.get_job(job.id)
    assert done.status == "done" and done.epoch == 2 and done.error is None, done.error
    assert done.executor == "ray" and done.pid != os.getpid()  # trained in a Ray worker process
    assert done.node.startswith(socket.gethostname() + " (") and done.device.startswith("CPU")
    history = (Path(done.run_dir) / "history.csv").read_text().splitlines()
    assert len(history) == 3  # header and two epochs
    assert json.loads((Path(done.run_dir) / "run.json").read_text())["status"] == "done"
    assert {"node", "device"} <= set(done.as_dict())
    from core.cli import main

    assert main(["jobs"]) == 0
    assert f"on {done.node}, {done.device}" in capsys.readouterr().out
    assert (tmp_path / "local-queue" / "jobs.sqlite").exists() and not (tmp_path / "home" / "jobs").exists()


def test_cancel_stops_a_ray_job_after_its_epoch(on_ray):
    job = jobs.submit(tiny(epochs=200), start_worker=False)
    dispatcher = Dispatcher()
    assert wait_for(lambda: jobs.get_job(job.id).epoch >= 1), "no progress from the Ray task"
    assert jobs.cancel(job.id).shown_status == "cancelling"
    assert wait_for(lambda: jobs.get_job(job.id).status == "cancelled", 60)
    assert dispatcher.finish() == 1
    cancelled = jobs.get_job(job.id)
    assert 1 <= cancelled.epoch < 200 and cancelled.error is None
    assert json.loads((Path(cancelled.run_dir) / "run.json").read_text())["status"] == "cancelled"


def test_a_ray_task_killed_mid_run_fails_its_job_and_the_queue_goes_on(on_ray):
    victim = jobs.submit(tiny(epochs=500), title="victim", start_worker=False)
    blocker = jobs.submit(tiny(epochs=500), title="blocker", start_worker=False)
    after = jobs.submit(tiny(epochs=1), title="after", start_worker=False)  # waits: both CPUs are taken
    dispatcher = Dispatcher()
    assert wait_for(lambda: jobs.get_job(victim.id).epoch >= 1 and jobs.get_job(blocker.id).epoch >= 1)
    assert jobs.get_job(after.id).status == "queued"
    pid = jobs.get_job(victim.id).pid
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)  # the Ray worker process training it, as the OOM killer would
    assert wait_for(lambda: jobs.get_job(victim.id).status == "failed", 60)
    failed = jobs.get_job(victim.id)
    assert "Ray worker process running this job on" in failed.error and "stopped unexpectedly" in failed.error
    assert failed.node in failed.error
    assert json.loads((Path(failed.run_dir) / "run.json").read_text())["status"] == "failed"
    assert wait_for(lambda: jobs.get_job(after.id).status == "done"), "the next job did not run"
    jobs.cancel(blocker.id)
    assert dispatcher.finish() == 3
    assert jobs.get_job(blocker.id).status == "cancelled"


def test_two_jobs_run_at_once(on_ray):
    first, second = (jobs.submit(tiny(epochs=4), start_worker=False) for _ in range(2))
    assert jobs.run_worker() == 2
    a, b = jobs.get_job(first.id), jobs.get_job(second.id)
    assert a.status == b.status == "done"
    overlap = min(a.finished, b.finished) - max(a.started, b.started)
    print(f"two jobs: {a.finished - a.started:.1f} s and {b.finished - b.started:.1f} s, overlapping {overlap:.1f} s")
    assert overlap > 0, "the two jobs ran one after the other"
    assert a.pid != b.pid


def test_a_job_no_node_can_take_fails_with_what_to_do(on_ray, monkeypatch):
    monkeypatch.setattr(executors, "NODE_WAIT_SECONDS", 0)
    gpu_job = jobs.submit(RunConfig.preset("vgg16", weights="none", epochs=1, max_samples=20), start_worker=False)
    assert jobs.run_worker() == 0
    failed = jobs.get_job(gpu_job.id)
    assert failed.status == "failed" and "asks for 1 GPU" in failed.error and "0 GPU(s)" in failed.error
    assert "DIGITLAB_RAY_GPUS_PER_JOB=0" in failed.error
    assert not Path(gpu_job.run_dir).exists()  # it never started: no empty run folder left behind


def test_sharded_evaluation_on_ray_equals_the_local_one(on_ray):
    from core.datasets import load_sklearn_digits
    from core.evaluation import evaluate
    from core.models import Predictor, reused_model_path
    from core.sharding import evaluate_sharded

    ds = load_sklearn_digits()
    local = evaluate(Predictor.load(), ds, "paper", use_cache=False)
    stats = {}
    sharded = evaluate_sharded(reused_model_path(), ds, "paper", shard_size=400, executor="ray", stats=stats)
    assert stats["shards"] == 5 and stats["model_loads"] <= stats["workers"]  # once per worker process
    assert np.array_equal(sharded.y_pred, local.y_pred)
    assert np.array_equal(sharded.confusion_matrix(), local.confusion_matrix())
    assert np.array_equal(stats["confusion_matrix"], local.confusion_matrix())
    np.testing.assert_allclose(sharded.probabilities, local.probabilities, atol=1e-5)
    assert sharded.as_dict()["accuracy"] == local.as_dict()["accuracy"]


def test_train_background_sends_the_job_to_the_cluster_named_by_ray_address(on_ray):
    env = {**os.environ, "DIGITLAB_EXECUTOR": "ray", "RAY_ADDRESS": on_ray.get_runtime_context().gcs_address}
    run = lambda *a: subprocess.run([sys.executable, "-m", "core", *a], cwd=ROOT, capture_output=True,  # noqa: E731
                                    text=True, timeout=120, env=env)
    r = run("train", "--arch", "mlp", "--epochs", "1", "--max-samples", "40", "--early-stopping", "0",
            "--background", "--json")
    assert r.returncode == 0, r.stderr
    job_id = json.loads(r.stdout)["id"]
    assert wait_for(lambda: jobs.get_job(job_id).status in ("done", "failed"), 120), \
        (jobs.jobs_dir() / "worker.log").read_text()
    listed = json.loads(run("jobs", "--json").stdout)
    assert listed[0]["status"] == "done", listed[0]["error"]
    assert listed[0]["executor"] == "ray" and listed[0]["node"] and listed[0]["device"].startswith("CPU")
    assert wait_for(lambda: not jobs.worker_running(), 30)  # the dispatcher exits when the queue is empty
