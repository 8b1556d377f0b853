"""The small study of the cluster tests (at the demo's 3 x 3 stage-1 grid: 19 runs), fanned out and packed, one after the other on a SLURM cluster: its
allocations, queue waits and makespan as `lvjob status` reports them (README, "One allocation, or one per job").

    slurm/local/with-cluster.sh bash -c 'source /tmp/lvjob-slurm/env && .venv/bin/python benchmarks/pack_bench.py'

Needs a cluster the slurm-ci profile can reach (the test cluster of slurm/local/, as root); writes under a
temporary folder, prints the allocation lines of each study.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from lvjob import data
from lvjob.cluster.profile import load_profile
from lvjob.orchestrate import status, submission
from lvjob.study.choices import study_dir
from lvjob.study.spec import load_study

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["model=tiny", "data.systems=20", "data.points=30", "evaluation.series=2", "training.val_every=2",
         "training.val_chunks=2", "training.checkpoint_every=2", "default.steps=4", "default.context=64",
         "stage1.steps=4", "stage1.context=64", "stage2.contexts=[48,64,96]", "stage2.steps=4", "final.steps=4"]


def run_study(tmp: Path, name: str, lv: Path, **changes) -> tuple[float, list[str]]:
    """Submit the small study with the slurm-ci profile and `changes`, wait for every job of it; (seconds, allocation lines)."""
    raw = yaml.safe_load((ROOT / "slurm" / "slurm-ci.yaml").read_text())
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw | {"runs_root": str(tmp / name / "runs"),
                                          "results_dir": str(tmp / name / "results")} | changes))
    profile = load_profile(path)
    study = load_study(ROOT / "jobs" / "study.yaml", scale="demo", overrides=SMALL + [f"data.path={lv}"])
    t0 = time.monotonic()
    submission.submit(study, profile, log=lambda m: None)
    folder = str(study_dir(study, profile).submitit)
    while any(c.startswith(folder) for c in _queued()):
        time.sleep(2)
    return time.monotonic() - t0, status.allocation_lines(study, profile)


def _queued() -> list[str]:
    """The batch scripts of this user's queued and running jobs."""
    return subprocess.run(["squeue", "--me", "-h", "-o", "%o"], capture_output=True, text=True, check=True).stdout.split()


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        lv = Path(tmp) / "lv.h5"
        data.write(lv, *data.generate(n_systems=20, n_points=30, seed=0))
        for name, changes in (("fan-out", {}), ("packed", {"pack": "study", "runs_per_gpu": 2})):
            seconds, lines = run_study(Path(tmp), name, lv, **changes)
            print(f"{name}: {seconds:.0f} s from submit to the last job's end")
            print("\n".join(f"  {line}" for line in lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
