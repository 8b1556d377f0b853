"""One GPU shared by several runs (`runs_per_gpu` of a packed job, lvjob.orchestrate.pack): measured, not assumed.

Two sections of `make bench-gpu`:
- training tokens/s of k LoRA runs at once on the device, each its own `lvjob run` process as a packed job starts
  them (k = 1, 2, 4; at smoke size 1 and 2), summed over the runs: the k that gives the most is the profile's best
  `runs_per_gpu`;
- the makespan of a packed study at a reduced scale of the full-size model: `lvjob submit` with the local executor
  and `max_parallel` = that k, which is what a packed job runs inside its allocation (skipped at smoke size: the
  suite's `make study` runs the same command on the CPU).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from lvjob.core.atomic import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
WARM_UP = 2  # steps of each run left out of its rate (CUDA kernels chosen, caches filled)
# The reduced study: every stage, one zero-shot prompt, a 2 x 1 stage-1 grid, one context, a few steps each.
REDUCED = ["zero_shot_prompts=[plain]", "stage1.ranks=[2,4]", "stage1.lrs=[1e-4]", "stage2.contexts=[512]",
           "default.steps=20", "stage1.steps=20", "stage2.steps=20", "final.steps=20", "evaluation.series=20",
           "training.val_chunks=8", "training.val_every=20", "training.checkpoint_every=20"]


def run_command(model: str, device: str, run_dir: Path, data: Path, steps: int, context: int, rank: int) -> list[str]:
    """One LoRA training run of the study's stage-1 template, as a packed job's child runs it."""
    return [sys.executable, "-m", "lvjob", "run", str(ROOT / "jobs" / "grid_stage1.yaml"), f"model={model}",
            f"device={device}", f"steps={steps}", f"context={context}", f"rank={rank}", "batch_size=4",
            f"val_every={steps}", "val_chunks=1", f"checkpoint_every={steps}", "series=1", f"data.path={data}",
            "data.systems=100", "data.points=100", f"run_dir={run_dir}"]


def tokens_per_second(run_dir: Path) -> float:
    """The run's median training tokens/s over its steps after the warm-up."""
    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("tokens_per_s") and r["step"] > WARM_UP]
    if not rows:
        raise RuntimeError(f"{run_dir}: no training step after the warm-up in metrics.jsonl")
    return statistics.median(r["tokens_per_s"] for r in rows)


def at_once(k: int, command, tmp: Path) -> list[float]:
    """Start `k` runs together and wait for them; each one's tokens/s."""
    dirs = [tmp / f"k{k}-run{i}" for i in range(k)]
    procs = [subprocess.Popen(command(d), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for d in dirs]
    for d, p in zip(dirs, procs):
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"{d.name} exited with {p.returncode}: {err[-2000:]}")
    return [tokens_per_second(d) for d in dirs]


def bench_sharing(model: str, device: str, counts: tuple[int, ...], steps: int, context: int, rank: int,
                  tmp: Path) -> tuple[list[tuple[str, str]], int]:
    """Rows of the sharing section, and the best number of runs at once."""
    data = tmp / "lv.h5"
    total: dict[int, float] = {}
    rows = []
    for k in counts:
        rates = at_once(k, lambda d: run_command(model, device, d, data, steps, context, rank), tmp)
        total[k] = sum(rates)
        rows.append((f"{k} run(s) at once, 4 x {context} tokens, r={rank}, {steps} steps each",
                     f"{total[k]:,.0f} tokens/s in all ({min(rates):,.0f} to {max(rates):,.0f} per run), "
                     f"{total[k] / total[counts[0]]:.2f}x {counts[0]} run"))
    best = max(total, key=total.get)
    rows.append(("**best runs_per_gpu here** (most tokens/s in all)", f"**{best}**"))
    return rows, best


def bench_packed_makespan(model: str, device: str, runs_at_once: int, tmp: Path) -> list[tuple[str, str]]:
    """The reduced study through the packed job's inner command; its wall time from submit to the last table."""
    profile = tmp / "packed-inside.yaml"
    profile.write_text(yaml.safe_dump({"executor": "local", "scale": "demo", "max_parallel": runs_at_once,
                                       "device": device, "runs_root": str(tmp / "runs"),
                                       "results_dir": str(tmp / "results"), "timeout_min": 60}))
    overrides = [f"model={model}", f"data.path={tmp / 'study.h5'}", *REDUCED]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lvjob", "submit", str(ROOT / "jobs" / "study.yaml"), "--profile",
                           str(profile), *overrides], capture_output=True, text=True, env=os.environ.copy())
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"the packed study failed ({proc.returncode}): {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    runs = sum(1 for d in (tmp / "runs").iterdir() if not d.name.startswith("study-"))
    return [(f"packed study at a reduced scale ({runs} runs: {' '.join(REDUCED[:4])}), {runs_at_once} run(s) at once",
             f"{seconds / 60:.1f} min from submit to the last table")]
