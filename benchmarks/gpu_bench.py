"""`make bench-gpu`: the runner on the full-size Qwen2.5-0.5B architecture (random weights), bf16.

    python benchmarks/gpu_bench.py            # on a CUDA GPU: the study's shapes
    python benchmarks/gpu_bench.py --smoke    # anywhere (CPU here): the tiny model, one small shape,
                                              # the same code end to end, so it cannot rot

For each training shape of the study (batch 4 x context 128 / 512 / 768, LoRA rank 2 / 4 / 8):
tokens/s and MFU of lvjob's LoRA training step (executed FLOPs of lvjob.models.flops / time / the GPU's
bf16 dense peak) beside a Hugging Face `Trainer` + peft step twice, in the same run: with lvjob's
settings (constant lr, no gradient clipping, no weight decay, same batch, dtype and chunks: the fair
comparison) and with Trainer's defaults; peak GPU memory with a bf16 and a 4-bit NF4 base, both
loaded by the study's own load path (lvjob.models.loading.load_model); the evaluation of 200 series with a
20-point horizon, batched vs one at a time; training tokens/s of 1, 2 and 4 runs sharing the GPU and a
packed study's makespan at a reduced scale (benchmarks/sharing_bench.py); and what one study
(jobs/study.yaml) costs in GPU-hours on this GPU at these rates. Random weights: FLOPs and time do not depend on the values.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import runner_bench as rb
import sharing_bench as sb
from lvjob import data
from lvjob.models import flops
from lvjob.forecasting.llm import forecast_series
from lvjob.run.job import Job
from lvjob.data.tokenizer import load_tokenizer
from lvjob.run.train import lora_model

ROOT = Path(__file__).resolve().parents[1]

# Dense bf16 peak FLOP/s (half the data sheets' "with sparsity" figures), by device-name substring,
# most specific first: torch names an H100 SXM "NVIDIA H100 80GB HBM3", an H200 SXM "NVIDIA H200",
# and the NVL (PCIe card, lower clocks) parts "... NVL".
PEAK_BF16 = (("H200 NVL", 835.5e12), ("H100 NVL", 835.5e12), ("H100 PCIe", 756.5e12), ("H200", 989.4e12),
             ("H100", 989.4e12), ("A100", 312e12), ("L40S", 362e12), ("A10G", 70e12))


def peak_flops(name: str | None = None) -> float | None:
    """The bf16 dense peak of the GPU called `name` (default: this machine's), None if unknown."""
    if name is None:
        if not torch.cuda.is_available():
            return None
        name = torch.cuda.get_device_name(0)
    return next((v for k, v in PEAK_BF16 if k in name), None)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def random_chunks(n: int, length: int, seed: int = 0) -> list[list[int]]:
    """Token chunks of LLMTIME characters (ids 11..26); values do not change FLOPs or time."""
    rng = np.random.default_rng(seed)
    return [rng.integers(11, 27, size=length).tolist() for _ in range(n)]


def lvjob_step_time(model_name: str, device: str, context: int, rank: int, steps: int, quantize: bool = False) -> tuple[float, int]:
    """Median seconds per LoRA training step of lvjob's loop, and peak CUDA memory (bytes, 0 on CPU)."""
    from lvjob.data.corpus import pad_batch
    from lvjob.run.train import _autocast

    job = Job(kind="train", model=model_name, rank=rank, context=context, quantize_4bit=quantize)
    model = lora_model(job, device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = {k: torch.from_numpy(v).to(device) for k, v in pad_batch(random_chunks(4, context), context, 0).items()}
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps + 2):  # two warm-up steps
        sync(device)
        t0 = time.perf_counter()
        with _autocast(device):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    memory = torch.cuda.max_memory_allocated() if device.startswith("cuda") else 0
    del model, opt
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return statistics.median(times), memory


def trainer_step_time(model_name: str, device: str, context: int, rank: int, steps: int, fair: bool = True) -> float:
    """Median seconds per step of HF Trainer + peft: with lvjob's settings (`fair`) or Trainer's defaults."""
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from lvjob.models.loading import ModelChoice, load_model

    base = load_model(ModelChoice(model_name), device=device)
    model = get_peft_model(base, LoraConfig(r=rank, lora_alpha=rank, target_modules=["q_proj", "v_proj"],
                                            lora_dropout=0.0, task_type="CAUSAL_LM"))
    rows = [{"input_ids": c, "attention_mask": [1] * context, "labels": c} for c in random_chunks(4 * (steps + 2), context)]
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            sync(device)
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            sync(device)
            times.append(time.perf_counter() - self.t0)

    with tempfile.TemporaryDirectory() as tmp:
        # lvjob's loop: AdamW at a constant lr 1e-4, no clipping, no weight decay (Trainer: linear decay, clip at 1.0).
        same = dict(learning_rate=1e-4, lr_scheduler_type="constant", max_grad_norm=0.0, weight_decay=0.0) if fair else {}
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=4, max_steps=steps + 2, report_to=[],
                                 logging_strategy="no", save_strategy="no", bf16=device.startswith("cuda"),
                                 use_cpu=not device.startswith("cuda"), dataloader_num_workers=0, **same)
        Trainer(model=model, args=args, train_dataset=rows, callbacks=[Clock()]).train()
    del model, base
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return statistics.median(times[2:])


def bench_training(model_name: str, device: str, contexts, ranks, steps: int) -> tuple[list, dict]:
    shape, peak = flops.shape_of(model_name), peak_flops()
    rows, rate = [], {}
    for context in contexts:
        for rank in ranks:
            ours, _ = lvjob_step_time(model_name, device, context, rank, steps)
            fair = trainer_step_time(model_name, device, context, rank, steps, fair=True)
            default = trainer_step_time(model_name, device, context, rank, steps, fair=False)
            executed = flops.executed_train_step(shape, 4, context, rank).total
            rate[(context, rank)] = flops.train_step(shape, 4, context, rank).total / ours  # rules FLOPs per second
            mfu = f"{executed / ours / peak:.1%}" if peak else "n/a (no GPU peak)"
            rows.append((f"LoRA step, 4 x {context} tokens, r={rank}",
                         f"lvjob {4 * context / ours:,.0f} tokens/s, MFU {mfu}; Trainer with lvjob's settings "
                         f"{4 * context / fair:,.0f} tokens/s ({fair / ours:.2f}x slower); Trainer defaults "
                         f"{4 * context / default:,.0f} tokens/s ({default / ours:.2f}x)"))
    return rows, rate


def bench_memory(model_name: str, device: str, context: int) -> list:
    if not device.startswith("cuda"):
        lvjob_step_time(model_name, device, context, 4, 1, quantize=True)  # the NF4 path runs on the CPU too
        return [("peak memory, bf16 vs NF4 base", "n/a on CPU (CUDA memory only); the NF4 training step ran")]
    _, bf16 = lvjob_step_time(model_name, device, context, 4, 3)
    _, nf4 = lvjob_step_time(model_name, device, context, 4, 3, quantize=True)
    return [(f"peak GPU memory, LoRA r=4 step, 4 x {context} tokens", f"bf16 base {bf16 / 2**30:.2f} GiB, NF4 base {nf4 / 2**30:.2f} GiB")]


def bench_eval(model_name: str, device: str, n_series: int, single: int) -> tuple[list, float]:
    from lvjob.models.loading import ModelChoice, load_model

    tok = load_tokenizer()
    model = load_model(ModelChoice(model_name), device=device).eval()
    lv, _ = data.generate(1000, 100, 0)
    split = data.split_systems(lv.n_systems)
    contexts = lv.trajectories[np.concatenate([split.validation, split.test])[:n_series], :80]
    s = Job(temperature=0.2, eval_batch_size=n_series)
    sync(device)
    t_batch, out = rb.timed(lambda: forecast_series(model, tok, contexts, 20, s))
    generated = sum(rows * copies * new for rows, _, new, _, copies in out.batches)
    t_one, _ = rb.timed(lambda: forecast_series(model, tok, contexts[:single], 20, Job(temperature=0.2, eval_batch_size=1)))
    per_series = t_batch / n_series
    return [
        (f"evaluation of {n_series} series, 80-point context, 20-point horizon, one batch",
         f"{t_batch:.1f} s, {generated / t_batch:,.0f} generated tokens/s, parse rate {out.parsed_ok.mean():.0%}"),
        (f"one series at a time ({single} timed)", f"{t_one / single:.2f} s per series: batched is {t_one / single / per_series:.1f}x faster"),
    ], per_series


def study_gpu_hours(rate: dict, per_series_eval: float, smoke: bool) -> list:
    """jobs/study.yaml's plan at the measured rates: training and validation FLOPs / achieved FLOP/s, plus evaluations."""
    from lvjob.study.plan import plan_study
    from lvjob.study.spec import load_study

    plan = plan_study(load_study(ROOT / "jobs" / "study.yaml"))
    seconds = 0.0
    for item in plan.items:
        if item.kind == "evaluation":
            seconds += item.count * per_series_eval
            continue
        context = int(item.run.split("ctx=")[-1].rstrip(")")) if "ctx=" in item.run else 512
        nearest = min(rate, key=lambda k: (abs(k[0] - context), -k[1]))
        seconds += item.flops / rate[nearest]
    what = "one study (jobs/study.yaml, 9.8e16 FLOPs by the rules) at these rates"
    if smoke:
        return [(what, f"{seconds / 3600:.1f} hours: NOT an estimate (the smoke size times the tiny model, not Qwen2.5)")]
    return [(what, f"{seconds / 3600:.1f} GPU-hours")]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny model and small shapes on any device (CPU here)")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per shape (default 10)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if not args.smoke and device == "cpu":
        print("bench-gpu: no CUDA GPU here; run with --smoke for the CPU smoke size", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    if args.smoke:
        model_name, contexts, ranks, steps, series, single = "tiny", (32,), (2,), 2, 10, 2  # one shape: the code, not rates
    else:
        model_name, contexts, ranks, steps, series, single = "qwen2.5-0.5b-random", (128, 512, 768), (2, 4, 8), args.steps, 200, 10
    train_rows, rate = bench_training(model_name, device, contexts, ranks, steps)
    eval_rows, per_series = bench_eval(model_name, device, series, single)
    with tempfile.TemporaryDirectory() as tmp:
        counts, shared_steps = ((1, 2), 4) if args.smoke else ((1, 2, 4), 30)
        sharing, best = sb.bench_sharing(model_name, device, counts, shared_steps, max(contexts), 4, Path(tmp))
        makespan = [("packed study, reduced scale", "not run at smoke size (`make study` runs the same command)")] \
            if args.smoke else sb.bench_packed_makespan(model_name, device, best, Path(tmp))
    sections = [("Training: lvjob's LoRA step vs HF Trainer + peft (batch 4)", train_rows),
                ("Memory", bench_memory(model_name, device, max(contexts))),
                ("Evaluation", eval_rows),
                ("Sharing one GPU: LoRA runs at once (runs_per_gpu)", sharing),
                ("Packed study", makespan),
                ("Cost of the study", study_gpu_hours(rate, per_series, args.smoke))]
    machine = rb.machine()
    header = [f"# GPU benchmarks on {machine}{' (smoke size)' if args.smoke else ''}", "",
              f"`python benchmarks/gpu_bench.py{' --smoke' if args.smoke else ''}`; model {model_name} (random weights), "
              f"{'bf16 autocast' if device == 'cuda' else 'float32 on CPU'}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}.", ""]
    rb.write_report(header, sections, args.out / f"{machine}-gpu{'-smoke' if args.smoke else ''}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
