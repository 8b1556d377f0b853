"""`make bench`: every hot path of the suite, as ratios measured side by side in one run.

    python benchmarks/bench.py [--series 200] [--single 20] [--quick] [--out benchmarks/results]

Prints one Markdown report and writes it to benchmarks/results/<machine>.md (with the scaling plot
beside it). Tiny model with random weights on whatever machine runs it; the report says which.
Timings on shared machines are noisy: read the ratios, not the absolute seconds. See
benchmarks/README.md for how each figure is measured.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import pipeline_bench as pb
import runner_bench as rb
from lvjob import data
from lvjob.models.loading import ModelChoice, load_model
from lvjob.data.tokenizer import load_tokenizer
from lvjob.run.runner import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--series", type=int, default=200, help="validation and test series in the batched evaluation (default 200)")
    p.add_argument("--single", type=int, default=20, help="series timed one at a time (default 20)")
    p.add_argument("--decode-series", type=int, default=50, help="series in the decoding comparison (default 50)")
    p.add_argument("--train-steps", type=int, default=5, help="training steps timed for the checkpoint ratio (default 5)")
    p.add_argument("--quick", action="store_true", help="small sizes, no full-size FLOP check (a smoke run)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder for <machine>.md")
    args = p.parse_args()
    # --quick: a smoke run of every section (the test suite's), its numbers not for reading: one timing of
    # each decoding mode on 2 series, 64-token training steps, scaling over two lengths, no import timings.
    repeat, context, lengths = 3, 512, (64, 128, 256, 512)
    if args.quick:
        args.series, args.single, args.decode_series, args.train_steps = 20, 2, 2, 1
        repeat, context, lengths = 1, 64, (32, 64)

    keep_freed_memory()  # as in a run process on the CPU: its in-process timings are a run's
    torch.manual_seed(0)
    tok = load_tokenizer()
    model = load_model(ModelChoice("tiny")).eval()
    machine = rb.machine()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lv.h5"
        lv, params = data.generate(n_systems=1000, n_points=100, seed=0)
        data.write(path, lv, params)
        train, val, test = data.split_systems(lv.n_systems)
        series = lv.trajectories[np.concatenate([val, test])[: args.series]]  # the systems evaluations read
        contexts, horizon = series[:, :80], 20
        small = Path(tmp) / "small.h5"
        lv_small, params_small = data.generate(n_systems=20, n_points=100, seed=0)
        data.write(small, lv_small, params_small)
        fixed, resume = pb.bench_resume(small, Path(tmp), import_times=not args.quick)
        sections = [
            ("Evaluation: batched vs one at a time", rb.bench_eval(model, tok, contexts, horizon, args.single)),
            ("Decoding: constrained vs unconstrained (batched, greedy, best of 3)",
             rb.bench_constraint(model, tok, contexts[: args.decode_series], horizon, repeat)),
            ("Checkpoints", rb.bench_checkpoint(path, context=context, batch=4, steps=args.train_steps)),
            ("Resume", resume),
            ("Fixed cost per run", fixed),
            ("Text: LLMTIME and tokens of the training split", pb.bench_text(lv.trajectories, train[:80] if args.quick else train, tok)),
            ("FLOP counter (executed view, matrix products) vs FlopCounterMode", pb.bench_flop_agreement(full_size=not args.quick)),
            ("Scaling", pb.bench_scaling(model, tok, contexts, horizon, args.out / f"{machine}-scaling.png", lengths=lengths,
                                         series_counts=tuple(k for k in (10, 50, 100, 200) if k <= len(contexts)))),
        ]
    header = [f"# Benchmarks on {machine}", "",
              f"`python benchmarks/bench.py{' --quick' if args.quick else ''}`; tiny model (random weights), "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d')}.", ""]
    rb.write_report(header, sections, args.out / f"{machine}{'-quick' if args.quick else ''}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
