"""Benchmarks of the runner's hot paths, as ratios measured side by side in one run (benchmarks/bench.py runs them).

1. batched constrained evaluation of the validation series vs one series at a time;
2. constrained vs unconstrained batched decoding (per decode step);
3. one checkpoint write vs the training time between two checkpoints (250 steps).

Tiny model on whatever machine runs it; the table says which. Timings on shared machines are
noisy: read the ratios, not the absolute seconds.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import decoding_modes
from lvjob.run import checkpoint
from lvjob import data
from lvjob.forecasting.llm import build_prompt, forecast_series
from lvjob.run.job import Job
from lvjob.forecasting.decoding import alphabet_ids, generate, grammar_max_tokens
from lvjob.data.grammar import Grammar
from lvjob.data.dataset import DataSpec
from lvjob.data.tokenizer import load_tokenizer


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0).replace(" ", "-")
    return f"cpu-{platform.machine()}-{os.cpu_count()}cores"


def write_report(header: list[str], sections: list[tuple[str, list[tuple[str, str]]]], path: Path) -> None:
    """Print the report (header lines, then one two-column table per section) and write it to `path`."""
    lines = list(header)
    for title, rows in sections:
        lines += [f"## {title}", "", "| measurement | result |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows] + [""]
    text = "\n".join(lines)
    print(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_eval(model, tok, contexts: np.ndarray, horizon: int, single: int) -> list[tuple[str, str]]:
    s = Job(temperature=0.2, eval_batch_size=len(contexts))
    t_batch, out = timed(lambda: forecast_series(model, tok, contexts, horizon, s))
    one = Job(temperature=0.2, eval_batch_size=1)
    t_single, _ = timed(lambda: forecast_series(model, tok, contexts[:single], horizon, one))
    per_batch, per_single = t_batch / len(contexts), t_single / single
    return [
        (f"batched evaluation, {len(contexts)} series in one batch", f"{t_batch:.2f} s ({per_batch * 1e3:.1f} ms/series), parse rate {out.parsed_ok.mean():.0%}"),
        (f"one series at a time ({single} series timed)", f"{t_single:.2f} s ({per_single * 1e3:.1f} ms/series)"),
        ("**batched speed-up**", f"**{per_single / per_batch:.1f}x** (target >= 10x)"),
    ]


def bench_constraint(model, tok, contexts: np.ndarray, horizon: int, repeat: int = 3) -> list[tuple[str, str]]:
    prompts = [build_prompt(tok, c, horizon, Job())[0] for c in contexts]
    g, alphabet = Grammar(points=horizon), alphabet_ids(tok)

    # Greedy: sampling from the whole vocabulary (softmax + multinomial over 151,936 logits per row)
    # would dominate the unconstrained timing and hide what the grammar itself costs.
    modes = {
        "unconstrained, full LM head":
            lambda: decoding_modes.unconstrained(model, prompts, tok.pad_token_id, grammar_max_tokens(g), tok.decode),
        "constrained, full LM head": lambda: decoding_modes.full_head(model, prompts, g, alphabet, tok.pad_token_id),
        "constrained, grammar's 13 LM-head rows (the runner's path)":
            lambda: generate(model, prompts, g, alphabet, tok.pad_token_id),
    }
    rows = []
    per_step = {}
    for name, run in modes.items():
        t, out = timed(run, repeat=repeat)  # best of 3: full-vocabulary logits make single runs noisy
        per_step[name] = t / (out.steps + 1)
        rows.append((name, f"{t:.2f} s for {out.steps + 1} tokens per row ({per_step[name] * 1e3:.1f} ms/token step)"))
    # The grammar's own work per step, alone: replay the runner's tokens through the state machine
    # and build the allowed-token masks, exactly as generate() does, without the model.
    from lvjob.data import grammar as gr
    from lvjob.forecasting.decoding import ANY, _allowed_mask

    texts = out.texts  # the runner's path ran last

    def bookkeeping():
        states, done = [gr.START] * len(texts), [False] * len(texts)
        for k in range(max(map(len, texts))):
            torch.tensor([ANY if d else _allowed_mask(g, st) for st, d in zip(states, done)])
            for i, t in enumerate(texts):
                if not done[i] and k < len(t):
                    states[i] = gr.step(g, states[i], t[k])
                    done[i] = gr.is_final(g, states[i])

    t_book, _ = timed(bookkeeping)
    steps_run = out.steps + 1
    runner_step = per_step["constrained, grammar's 13 LM-head rows (the runner's path)"]
    rows.append(("grammar bookkeeping alone (state machine + masks for every row)",
                 f"{t_book / steps_run * 1e3:.2f} ms/token step = {t_book / steps_run / runner_step:.1%} of the runner's step"))
    base = per_step["unconstrained, full LM head"]
    over = per_step["constrained, full LM head"] / base - 1
    runner = per_step["constrained, grammar's 13 LM-head rows (the runner's path)"] / base
    rows.append(("**constraint overhead** (same LM head)", f"**{over:+.1%}** per token step (target <= +15%)"))
    rows.append(("**runner's constrained path vs unconstrained**", f"**{runner:.2f}x** the time per token step"))
    return rows


def bench_checkpoint(small: Path, context: int, batch: int, steps: int) -> list[tuple[str, str]]:
    from lvjob.data.corpus import pad_batch
    from lvjob.run.train import build_corpus, lora_model

    tok = load_tokenizer()
    job = Job(kind="train", model="tiny", data=DataSpec(path=str(small), systems=20, points=100), context=context,
              batch_size=batch, steps=250, val_chunks=4, series=1)
    lv = data.load(small)
    train_sys, val_sys, _ = data.split_systems(lv.n_systems)
    corpus = build_corpus(job, tok, lv.trajectories, train_sys, val_sys)
    model = lora_model(job, "cpu")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    batch_t = {k: torch.from_numpy(v) for k, v in pad_batch(corpus.train[:batch], context, tok.pad_token_id).items()}

    def step():
        model(**batch_t).loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    t_steps, _ = timed(lambda: [step() for _ in range(steps)])
    per_step = t_steps / steps
    rows_250 = [{"step": i, "loss": 1.0, "lr": 1e-4, "attempt": 1, "flops": 10**12 * i} for i in range(1, 251)]
    from peft import get_peft_model_state_dict

    with tempfile.TemporaryDirectory() as tmp:
        t_ckpt, path = timed(lambda: checkpoint.save(Path(tmp), 250, get_peft_model_state_dict(model), opt.state_dict(),
                                                     sched.state_dict(), {"step": 250}, rows_250), repeat=3)
        size = sum(p.stat().st_size for p in path.iterdir())
    between = 250 * per_step
    return [
        (f"training step, tiny model, {batch} x {context} tokens ({steps} timed)", f"{per_step:.3f} s"),
        (f"checkpoint write (adapter, optimizer, RNG, 250 metrics rows; {size / 1e6:.2f} MB)", f"{t_ckpt * 1e3:.1f} ms"),
        ("**checkpoint / training time between checkpoints (250 steps)**", f"**{t_ckpt / between:.4%}** (target <= 1%)"),
    ]
