"""Cost of tracking per training step (TensorBoard; W&B offline too where the extra is installed): tiny model, CPU, the real loop.

    python benchmarks/tracking_bench.py [--steps 80] [--reps 4] [--context 128] [--batch 4]

Two measures, because step times on a shared machine swing far more than the cost being measured:
1. the time inside the tracker's row() per step (what the loop waits for), beside the step's time;
2. runs without and with tracking, interleaved: median and fastest ms per step (steps after the 10th).

Measured on the project's 2-core CPU machine while other tests ran (context 48, batch 2, 60 steps,
3 runs each): 0.16 ms median inside row() per step (1.5 ms mean: rare spikes), against steps of
about 200 ms; fastest steps 195-333 ms without tracking, 204-209 ms with it (medians 260-423 vs
359-430 ms, spread by the other load, not by tracking).
With W&B too (offline, the `wandb` extra), same settings, 2026-11-26, the same machine far busier
(load average 8-11 from other engineers' tests): inside row() 10.0 ms median with TensorBoard and
W&B against 2.8 ms with TensorBoard alone, against steps of 600-2100 ms median; W&B's own process
competes for the 2 cores. Rows alone, without training (2000 rows, same load): 0.06-0.19 ms per
W&B row, 0.16 ms per TensorBoard row. Each attempt also pays W&B's start, 0.3-3.5 s.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from lvjob import data
from lvjob.run.job import Job
from lvjob.study.spec import DataSpec
from lvjob.data.tokenizer import load_tokenizer
from lvjob.run.tracking import open_tracker
from lvjob.core.stops import StopRequest
from lvjob.run.train import build_corpus, train


class Timed:
    """The real tracker, with the time spent in each row() recorded."""

    def __init__(self, tracker):
        self.tracker, self.seconds = tracker, []

    def resume(self, rows):
        self.tracker.resume(rows)

    def row(self, row):
        t = time.perf_counter()
        self.tracker.row(row)
        self.seconds.append(time.perf_counter() - t)


def make_job(path: Path, run_dir: Path, args) -> Job:
    return Job(kind="train", name="bench", model="tiny", data=DataSpec(path=str(path), systems=20, points=100),
               context=args.context, steps=args.steps, batch_size=args.batch, lr=1e-3, rank=4, val_every=10**6, val_chunks=4,
               checkpoint_every=10**6, series=2, eval_batch_size=2, run_dir=str(run_dir), device="cpu")


def step_ms(run_dir: Path) -> tuple[float, float]:
    """Median and fastest step after the 10th, in ms (the fastest is the least disturbed by other work)."""
    elapsed = [json.loads(line)["elapsed"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    deltas = [(b - a) * 1e3 for a, b in zip(elapsed[10:], elapsed[11:])]
    return statistics.median(deltas), min(deltas)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--reps", type=int, default=4)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--batch", type=int, default=4)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    lv, params = data.generate(n_systems=20, n_points=100, seed=0)
    data.write(tmp / "lv.h5", lv, params)
    tok = load_tokenizer()
    train_sys, val_sys, _ = data.split_systems(20)
    corpus = build_corpus(make_job(tmp / "lv.h5", tmp, args), tok, lv.trajectories, train_sys, val_sys)
    modes = {"none": (), "tensorboard": ("tensorboard",)}
    if importlib.util.find_spec("wandb"):  # the optional extra: offline, W&B's own folders kept in tmp
        modes["tensorboard+wandb"] = ("tensorboard", "wandb")
        os.environ |= {"WANDB_MODE": "offline", "WANDB_CONFIG_DIR": str(tmp / "wandb-config"),
                       "WANDB_CACHE_DIR": str(tmp / "wandb-cache"), "WANDB_DATA_DIR": str(tmp / "wandb-data")}
    times, inside = {mode: [] for mode in modes}, {mode: [] for mode in modes}
    for rep in range(args.reps):
        for mode, backends in modes.items():
            run_dir = tmp / f"{mode}{rep}"
            job = make_job(tmp / "lv.h5", run_dir, args)
            tracker = Timed(open_tracker(run_dir, backends, job)) if backends else None
            train(job, run_dir, corpus, tok.pad_token_id, "cpu", StopRequest(), log=lambda m: None, tracker=tracker)
            if tracker:
                inside[mode] += tracker.seconds
                tracker.tracker.close()
            times[mode].append(step_ms(run_dir))
    for mode, ms in times.items():
        print(f"{mode:17s} ms/step per run (median/fastest): {' '.join(f'{m:.0f}/{f:.0f}' for m, f in ms)}")
    for mode, seconds in inside.items():
        if seconds:
            print(f"{mode:17s} inside tracker.row: median {statistics.median(seconds) * 1e3:.3f} ms, "
                  f"mean {statistics.mean(seconds) * 1e3:.3f} ms per step")


if __name__ == "__main__":
    main()
