"""What several test modules share that is not a fixture (fixtures live in conftest.py): the repository's
paths, a real `lvjob run` process and how to wait on it, fabricated run directories, and the test
cluster's profile and polling."""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
JOBS = ROOT / "jobs"
STUDY = JOBS / "study.yaml"
CI_PROFILE = ROOT / "slurm" / "slurm-ci.yaml"

# --- a real `lvjob run` process ---------------------------------------------------------------------

RESUME_STEPS = 14
RESUME_JOB = {  # a small training job whose kills and resumes the run tests watch
    "kind": "train", "name": "resume", "model": "tiny", "seed": 3,
    "context": 48, "steps": RESUME_STEPS, "batch_size": 2, "lr": 1e-3, "rank": 2,
    "val_every": 5, "val_chunks": 4, "checkpoint_every": 4,
    "series": 2, "eval_batch_size": 2, "temperature": 0.0,
}
TRACKING_STEPS = 10
TRACKING_JOB = dict(RESUME_JOB, name="tracking", seed=5, steps=TRACKING_STEPS)  # the same job, its own run


def start_run(args: list[str], driver: str | None = None) -> subprocess.Popen:
    """`python -m lvjob ARGS` (or a driver script given as `-c`), its output piped."""
    prog = [sys.executable, "-c", driver] if driver else [sys.executable, "-m", "lvjob"]
    return subprocess.Popen(prog + args, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def metrics_rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl's complete rows (a row being written is skipped)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def wait_for_step(proc: subprocess.Popen, run_dir: Path, step: int, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if any(r["step"] >= step for r in metrics_rows(run_dir)):
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended before step {step}:\n{proc.stdout.read()}")
        time.sleep(0.02)
    raise AssertionError(f"step {step} not reached in {timeout} s")


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out


# --- fabricated run directories ---------------------------------------------------------------------


def index_entry(node: str, run_dir: str | None, status: str = "complete", stage: str = "stage1", **fields):
    """A run index entry (lvjob.results.index) for a node whose run directory says `status` and `fields`."""
    from lvjob.results.index import IndexEntry
    from lvjob.run.rundir import RunStatus, RunSummary

    return IndexEntry(node=node, stage=stage, label=None, run_id=node,
                      run=RunSummary(run_dir=run_dir, status=RunStatus(status), **fields))


def write_run(job, status, rows=(), evaluation=None, ledger=None, attempts=1):
    """A run directory as the runner leaves it, with the given status and records."""
    from lvjob.core.config import to_dict

    d = job.resolved_run_dir()
    d.mkdir(parents=True, exist_ok=True)
    (d / "run.json").write_text(json.dumps({"status": status, "kind": job.kind, "attempts": attempts}))
    (d / "job.yaml").write_text(yaml.safe_dump(to_dict(job)))
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if evaluation:
        (d / "eval.json").write_text(json.dumps(evaluation))
    if ledger:
        (d / "ledger.json").write_text(json.dumps(ledger))


def scored(mae, mse, samples=5, lead=(0.1, 0.2)):
    """eval.json's scores (lvjob.forecasting.scores' layout) with made-up but distinct values."""
    return {"mae": mae, "mse": mse, "rmse": math.sqrt(mse), "mase": 2 * mae, "crps": mae / 2, "coverage": 0.5,
            "samples": samples, "lead_time_mae": {"overall": list(lead)}}


def evaluation(mae, mse, series=20, persistence=(0.5, 0.4), split="validation", parse_rate=1.0, samples=5):
    return {"series": series, "split": split, "parse_rate": parse_rate, "seconds": 1.5, "model": scored(mae, mse, samples),
            "persistence": scored(*persistence, samples=1)}


# --- the test cluster (slurm/local/) ----------------------------------------------------------------


def small_overrides(data: Path) -> list[str]:
    """The demo scale cut further: every stage, one zero-shot prompt, a 2 x 2 grid and two contexts, a few steps each,
    2 forecast series (each run costs ~6 s of CPU, two thirds of it imports: the cluster tests run this study three times)."""
    return ["model=tiny", f"data.path={data}", "zero_shot_prompts=[plain]", "data.systems=20", "data.points=30", "evaluation.series=2",
            "training.val_every=2", "training.val_chunks=2", "training.checkpoint_every=2",
            "default.steps=4", "default.context=64", "stage1.ranks=[2,4]", "stage1.lrs=[1e-3,1e-2]", "stage1.steps=4",
            "stage1.context=64", "stage2.contexts=[48,96]", "stage2.steps=4", "final.steps=4"]


def image_standin(tmp: Path) -> Path:
    """A stand-in for Apptainer on this process's PATH (SLURM jobs inherit it): `apptainer exec` runs the command
    where SLURM cannot be reached (tests/apptainer_standin.py), each command logged to `tmp/standin.log`.
    The stand-in image file, for a profile's `image`."""
    (tmp / "bin").mkdir(parents=True, exist_ok=True)
    standin = tmp / "bin" / "apptainer"  # run by this test's Python: the "image" holds the project's packages
    standin.write_text(f'#!/bin/sh\nexec {sys.executable} {ROOT / "tests" / "apptainer_standin.py"} "$@"\n')
    standin.chmod(0o755)
    (tmp / "lvjob.sif").write_text("stand-in image")
    os.environ["PATH"] = f"{tmp / 'bin'}{os.pathsep}{os.environ['PATH']}"
    os.environ["LVJOB_STANDIN_LOG"] = str(tmp / "standin.log")
    return tmp / "lvjob.sif"


def make_profile(tmp: Path, name: str = "ci", **changes):
    """The CI profile with its run and results folders under `tmp`, and `changes` on top."""
    from lvjob.cluster.profile import load_profile

    raw = yaml.safe_load(CI_PROFILE.read_text()) | {"runs_root": str(tmp / "runs"), "results_dir": str(tmp / "results")}
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw | changes))
    return load_profile(path)


def wait_for(job_ids: list[str], limit_s: float) -> dict[str, str]:
    """Poll sacct until none of `job_ids` is queued or running; their final states."""
    from lvjob.cluster import slurm

    deadline = time.monotonic() + limit_s
    while True:
        states = slurm.states(job_ids)
        if not any(s in slurm.ACTIVE or s == "UNKNOWN" for s in states.values()):
            return states
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs still active after {limit_s} s: {states}")
        time.sleep(1)


def wait_until(predicate, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s} s waiting for {what}")
        time.sleep(0.2)


def default_job_on(profile, study):
    """The study's default run submitted alone to the profile's executor: (submitit job, run directory)."""
    from lvjob.cluster.executors import backend
    from lvjob.orchestrate.tasks import StudyTask
    from lvjob.study.choices import job_for, study_dir, study_nodes

    node = next(n for n in study_nodes(study) if n.key == "default")
    task = StudyTask(study, profile, node, str(Path.cwd()), os.environ["LVJOB_CACHE"])
    ex = backend(profile).executor(study_dir(study, profile).submitit, "default", [])
    return ex.submit(task), job_for(study, profile, node).resolved_run_dir()


def last_step(run_dir: Path) -> int:
    rows = metrics_rows(run_dir)
    return rows[-1]["step"] if rows else 0
