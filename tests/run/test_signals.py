"""A run survives a stop signal at any instant: start-up, evaluation, shut-down; directly and through the
supervisor (the job's host process). Each run is a real `python -m lvjob run` process."""

import json
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import finish, start_run
from lvjob.cluster.supervise import Watchdog, supervise
from lvjob.core.heartbeat import StallRule
from lvjob.run.runner import EXIT_PREEMPTED
from lvjob.run.rundir import read_status

pytestmark = pytest.mark.slow

# A zero-shot evaluation of the tiny model: 6 series, one per generation batch, sampled (so a resumed
# evaluation equals an uninterrupted one only if the sampler carries over).
EVAL_JOB = {"kind": "evaluate", "name": "signals", "model": "tiny", "series": 6, "eval_split": "validation",
            "eval_batch_size": 1, "samples": 3, "temperature": 1.0, "seed": 11}
SCORES = ("model", "persistence", "parse_rate", "series", "settings")
HUNG_AFTER_FIRST_BATCH = Path(__file__).parent / "hang"  # a sitecustomize that blocks in C after batch 1


@pytest.fixture(scope="module")
def job_file(tmp_path_factory, small_data) -> Path:
    path = tmp_path_factory.mktemp("signals") / "job.yaml"
    path.write_text(yaml.safe_dump(EVAL_JOB | {"data": {"path": str(small_data), "systems": 20, "points": 30, "val_fraction": 0.3}}))
    return path


def _args(job_file: Path, run_dir: Path) -> list[str]:
    return ["run", str(job_file), f"run_dir={run_dir}", "device=cpu"]


@pytest.fixture(scope="module")
def undisturbed(job_file, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("undisturbed") / "run"
    code, out = finish(start_run(_args(job_file, run_dir)))
    assert code == 0, out
    return run_dir


def _assert_same_evaluation(run_dir: Path, reference: Path) -> None:
    got, want = (json.loads((d / "eval.json").read_text()) for d in (run_dir, reference))
    assert {k: got[k] for k in SCORES} == {k: want[k] for k in SCORES}
    with np.load(run_dir / "forecasts.npz") as a, np.load(reference / "forecasts.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    ledger = [json.loads((d / "ledger.json").read_text()) for d in (run_dir, reference)]
    assert ledger[0] == ledger[1]
    assert not (run_dir / "eval-parts").exists()


def test_usr2_in_the_first_half_second_stops_the_run_which_then_completes_as_if_undisturbed(job_file, undisturbed, tmp_path):
    for i, (early, late) in enumerate([(0.1, 0.3), (0.3, 0.5)]):  # interpreter start, imports, the lock
        run_dir = tmp_path / f"run{i}"
        proc = start_run(_args(job_file, run_dir))
        time.sleep(random.Random(i).uniform(early, late))
        proc.send_signal(signal.SIGUSR2)
        code, out = finish(proc)
        assert code == EXIT_PREEMPTED, out  # never -12, killed by the signal
        status = read_status(run_dir)
        assert status["status"] == "preempted" and status["signal"] == "SIGUSR2", status
        code, out = finish(start_run(_args(job_file, run_dir)))
        assert code == 0, out
        _assert_same_evaluation(run_dir, undisturbed)


def _parts(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "eval-parts").glob("part-*.npz"))


def _wait_for_parts(proc, run_dir: Path, n: int, limit_s: float = 120) -> None:
    t0 = time.time()
    while len(_parts(run_dir)) < n:
        assert proc.poll() is None, f"the run ended before writing {n} evaluation batch(es)"
        assert time.time() - t0 < limit_s, f"no evaluation batch written in {limit_s} s"
        time.sleep(0.01)


def test_usr2_during_an_evaluation_stops_after_the_batch_and_the_rerun_resumes_at_the_next(job_file, undisturbed, tmp_path):
    run_dir = tmp_path / "run"
    proc = start_run(_args(job_file, run_dir))
    _wait_for_parts(proc, run_dir, 1)
    proc.send_signal(signal.SIGUSR2)
    code, out = finish(proc)
    assert code == EXIT_PREEMPTED, out
    kept = len(_parts(run_dir))
    assert 1 <= kept < EVAL_JOB["series"] and read_status(run_dir)["stopped"].startswith("evaluation batch")
    code, out = finish(start_run(_args(job_file, run_dir)))
    assert code == 0, out
    _assert_same_evaluation(run_dir, undisturbed)


def test_usr2_after_the_run_is_complete_leaves_it_complete_and_exits_0(job_file, tmp_path):
    run_dir = tmp_path / "run"
    proc = start_run(_args(job_file, run_dir))
    t0 = time.time()
    while read_status(run_dir).get("status") != "complete":
        assert proc.poll() is None and time.time() - t0 < 120, "the run never wrote its complete status"
        time.sleep(0.002)
    proc.send_signal(signal.SIGUSR2)  # the process is shutting down: tracker closed, interpreter ending
    code, out = finish(proc)
    assert code == 0, out
    assert read_status(run_dir)["status"] == "complete"


@pytest.fixture
def signal_self_after():
    """Sends this process a signal after a delay; the test process itself ignores it outside supervise()."""
    timers, before = [], signal.signal(signal.SIGUSR2, signal.SIG_IGN)

    def send(seconds: float, signum: int) -> None:
        timers.append(threading.Timer(seconds, os.kill, (os.getpid(), signum)))
        timers[-1].start()

    yield send
    for t in timers:
        t.cancel()
    signal.signal(signal.SIGUSR2, before)


def test_usr2_to_the_host_process_while_its_child_starts_reaches_it_once_it_can_take_it(
        job_file, undisturbed, tmp_path, signal_self_after):
    argv = [sys.executable, "-m", "lvjob", *_args(job_file, tmp_path / "run")]
    signal_self_after(random.Random(3).uniform(0.1, 0.5), signal.SIGUSR2)
    ended = supervise(argv, ready=tmp_path / "ready")
    assert ended.code == EXIT_PREEMPTED and ended.signals == [signal.SIGUSR2]
    assert supervise(argv, ready=tmp_path / "ready").code == 0
    _assert_same_evaluation(tmp_path / "run", undisturbed)


def test_a_hung_run_has_its_stacks_dumped_is_killed_and_then_resumes_to_the_undisturbed_result(
        job_file, undisturbed, tmp_path, capfd):
    argv = [sys.executable, "-m", "lvjob", *_args(job_file, tmp_path / "run")]
    hung = os.environ | {"PYTHONPATH": os.pathsep.join([str(HUNG_AFTER_FIRST_BATCH), os.environ.get("PYTHONPATH", "")])}
    # The floor covers start-up (imports, loading, the first batch) on a loaded machine: CI once took over 12 s.
    rule = StallRule(floor_s=40.0, multiple=10.0)
    t0 = time.monotonic()
    ended = supervise(argv, env=hung, watchdog=Watchdog(tmp_path / "run" / "heartbeat", rule))
    assert ended.stalled_s is not None and ended.stalled_s > rule.floor_s and ended.code == -signal.SIGKILL
    assert time.monotonic() - t0 < rule.floor_s + 60
    err = capfd.readouterr().err
    assert "watchdog: the run has been silent" in err and "last: started" in err  # hung writing its first batch
    assert "most recent call first" in err and "in block_in_c" in err and "in with_model" in err  # faulthandler's dump
    assert supervise(argv).code == 0
    _assert_same_evaluation(tmp_path / "run", undisturbed)
