"""Benchmarks of the pipeline around the runner (used by benchmarks/bench.py):

- LLMTIME render and parse, and tokenization + chunking, of the whole training split;
- the FLOP counter's executed view against FlopCounterMode (agreement, not speed);
- time from a job's start to its first resumed training step, from a checkpoint;
- scaling: training step time by context length, evaluation time by number of series (and a plot).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lvjob.data.corpus import pad_batch, training_chunks
from lvjob.forecasting.llm import forecast_series
from lvjob.run.job import Job
from lvjob.core.atomic import read_jsonl
from lvjob.data.llmtime import fit_scaler, parse, render
from runner_bench import timed

ROOT = Path(__file__).resolve().parents[1]


def bench_text(trajectories: np.ndarray, systems, tok, context: int = 512) -> list[tuple[str, str]]:
    series = trajectories[systems]
    t_render, texts = timed(lambda: [render(fit_scaler(s).transform(s)) for s in series])
    t_parse, parsed = timed(lambda: [parse(t) for t in texts])
    assert all(p.ok for p in parsed)
    t_chunk, chunks = timed(lambda: training_chunks(trajectories, systems, tok, context))
    n_tokens = sum(map(len, chunks))
    chars = sum(map(len, texts))
    return [
        (f"render (fit scaler + text) of {len(series)} training systems, {chars / 1e6:.2f} M characters",
         f"{t_render:.3f} s ({t_render / len(series) * 1e3:.2f} ms/system)"),
        ("parse of the same texts (exact inverse)", f"{t_parse:.3f} s ({chars / t_parse / 1e6:.2f} M characters/s)"),
        (f"tokenize + chunk (context {context}, overlap {context // 2})",
         f"{t_chunk:.2f} s: {len(chunks):,} chunks, {n_tokens / 1e6:.2f} M tokens ({n_tokens / t_chunk / 1e6:.2f} M tokens/s)"),
    ]


def bench_flop_agreement(full_size: bool = True) -> list[tuple[str, str]]:
    sys.path.append(str(ROOT / "tests"))  # flopcheck lives with the tests, whose oracle for the counter it is
    import flopcheck

    cases = [("tiny", 2, 64)] + ([("qwen2.5-0.5b", 1, 32)] if full_size else [])
    rows = []
    for name, batch, seq in cases:
        got, ours = flopcheck.measured(name, batch, seq), flopcheck.counted(name, batch, seq)
        for kind in flopcheck.KINDS:
            rel = ours[kind] / got[kind] - 1
            rows.append((f"{name}, {batch} x {seq} tokens, {kind}",
                         f"counter {ours[kind]:.4e} vs FlopCounterMode {got[kind]:.4e}: {rel:+.2e} (target within 1%)"))
    return rows


def bench_resume(data_path: Path, tmp: Path, tflops: float = 94.0,
                 import_times: bool = True) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Two sections from one training job (tiny model): its fixed cost, from process start to the first step, set beside
    a full-scale stage-1 run's GPU time by the plan; and a resume: killed (SIGKILL) after its checkpoint at step 5,
    restarted, timed to the first new step. `import_times`: also what of it is imports, each in a fresh process."""
    run_dir = tmp / "resume-run"
    cmd = [sys.executable, "-m", "lvjob", "run", str(ROOT / "jobs" / "default_lora.yaml"), "model=tiny",
           f"data.path={data_path}", "data.systems=20", "steps=200", "checkpoint_every=5", "val_every=100",
           "val_chunks=2", "context=64", "series=1", f"run_dir={run_dir}"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    start = time.monotonic()
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt, to_first_step = run_dir / "checkpoints" / "step-0000005", None
    while not (ckpt.exists() and any(r["step"] >= 7 for r in read_jsonl(run_dir / "metrics.jsonl"))):
        if to_first_step is None and read_jsonl(run_dir / "metrics.jsonl"):
            to_first_step = time.monotonic() - start
        if time.monotonic() - start > 300 or first.poll() is not None:
            first.kill()
            raise RuntimeError("the first training process did not reach step 7")
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    start = time.monotonic()
    second = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not any(r.get("attempt") == 2 for r in read_jsonl(run_dir / "metrics.jsonl")):
        if time.monotonic() - start > 300 or second.poll() is not None:
            break
        time.sleep(0.02)
    to_resumed_step = time.monotonic() - start
    second.send_signal(signal.SIGKILL)
    second.wait()
    resumed = [r for r in read_jsonl(run_dir / "preemptions.jsonl") if r["event"] == "resume"]
    imports, t_host = _import_times() if import_times else ([], 0.0)
    return [
        ("fresh run (tiny model): process start to its first training step", f"{to_first_step or 0:.1f} s"),
        *imports,
        stage1_share((to_first_step or 0) + t_host, tflops),
    ], [
        ("job start to first resumed training step (tiny model, checkpoint at step 5, killed at step >= 7)",
         f"{to_resumed_step:.1f} s, resumed from step {resumed[-1]['from_step'] if resumed else '?'}"),
        *imports[:1],
    ]


def _import_times() -> tuple[list[tuple[str, str]], float]:
    """What of a run's fixed cost is Python and imports: the runner's (without and with bitsandbytes) and its host
    process's; and the host's alone, in seconds."""
    runner_imports = "import lvjob.run.train, lvjob.run.runner, transformers, peft"
    skip = "from lvjob.models.loading import without_bitsandbytes; without_bitsandbytes(); "  # as `lvjob run` does
    t_import, t_host = python_seconds(skip + runner_imports), python_seconds("import lvjob.orchestrate.tasks")
    return [
        ("of which: starting Python and importing the runner (torch, transformers, peft)", f"{t_import:.1f} s"),
        ("the same with bitsandbytes, which peft imports whenever installed (only a `quantize_4bit` run loads it)",
         f"{python_seconds(runner_imports):.1f} s"),
        ("the job's host process around it (submitit's, or a packed job's child): Python and lvjob's imports",
         f"{t_host:.1f} s"),
    ], t_host


def python_seconds(code: str) -> float:
    """Wall time of a fresh Python process running `code`: start-up and imports."""
    return timed(lambda: subprocess.run([sys.executable, "-c", code], check=True, capture_output=True))[0]


def stage1_share(fixed_s: float, tflops: float) -> tuple[str, str]:
    """A full-scale stage-1 run's GPU time by the plan, and the share of it `fixed_s` is."""
    from lvjob.study.plan import plan_study
    from lvjob.study.spec import load_study

    stage1 = [i for i in plan_study(load_study(ROOT / "jobs" / "study.yaml")).items if i.experiment == "stage1"]
    per_run = sum(i.flops for i in stage1) / len({i.run for i in stage1}) / (tflops * 1e12)
    return (f"a full-scale stage-1 run by the plan at {tflops:g} TFLOP/s (GPU time)",
            f"{per_run:.0f} s: this machine's fixed cost is {fixed_s / per_run:.0%} of it, before CUDA initialisation "
            "and loading the 0.5B weights, which only a GPU run measures")


def bench_scaling(model, tok, contexts_np: np.ndarray, horizon: int, out_png: Path | None,
                  lengths=(64, 128, 256, 512), series_counts=(10, 50, 100, 200)) -> list[tuple[str, str]]:
    from lvjob.run.train import lora_model

    rows, train_t, eval_t = [], {}, {}
    lora = lora_model(Job(kind="train", model="tiny", rank=4), "cpu")
    opt = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-4)
    ids = [list(np.random.default_rng(0).integers(11, 27, size=4096))] * 4
    for n in lengths:
        batch = {k: torch.from_numpy(v) for k, v in pad_batch([c[:n] for c in ids], n, tok.pad_token_id).items()}

        def step():
            lora(**batch).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        step()
        train_t[n], _ = timed(lambda: [step() for _ in range(3)])
        train_t[n] /= 3
        rows.append((f"LoRA training step, batch 4 x {n} tokens", f"{train_t[n] * 1e3:.0f} ms ({4 * n / train_t[n]:,.0f} tokens/s)"))
    for k in series_counts:
        s = Job(temperature=0.2, eval_batch_size=k)
        eval_t[k], _ = timed(lambda: forecast_series(model, tok, contexts_np[:k], horizon, s))
        rows.append((f"batched evaluation of {k} series, {horizon}-point horizon", f"{eval_t[k]:.2f} s ({eval_t[k] / k * 1e3:.1f} ms/series)"))
    if out_png is not None:
        from lvjob.results.plots import pyplot

        plt = pyplot()
        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
        a.plot(list(train_t), [v * 1e3 for v in train_t.values()], "o-")
        a.set(xlabel="context length (tokens)", ylabel="ms per training step", title="LoRA step, batch 4 (tiny model)")
        b.plot(list(eval_t), list(eval_t.values()), "o-")
        b.set(xlabel="validation series (one batch)", ylabel="seconds", title=f"evaluation, {horizon}-point horizon")
        for ax in (a, b):
            ax.grid(alpha=0.3)
        fig.tight_layout()
        out_png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out_png, dpi=100)
        plt.close(fig)
        rows.append(("plot", f"`{out_png.name}` beside this report"))
    return rows
