"""A job's evaluation: forecast the series of its split, score them, write eval.json and forecasts.npz.

The same for every kind of run: a language model (zero-shot, or after training) forecasts through
lvjob.forecasting.llm, a baseline through lvjob.forecasting.baselines; both are scored beside
persistence on the same series (lvjob.forecasting.scores).

An evaluation is preemptible: it goes part by part (a generation batch, or a chunk of a baseline's
series), each finished part written atomically into `eval-parts/` with what it cost booked in the
ledger first. A stop request ends it after the current part (lvjob.core.stops); the next attempt
starts at the first unfinished part, and its forecasts, scores and FLOP ledger equal an
uninterrupted evaluation's (the sampler's state is kept with each batch). A part computed but not
written (a kill without warning) is booked as lost to preemption. The parts are removed once
eval.json and forecasts.npz are written.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from lvjob import data
from lvjob.core import atomic
from lvjob.core.config import ConfigError
from lvjob.core.paths import RunDir
from lvjob.core.stops import StopRequest
from lvjob.forecasting import baselines
from lvjob.forecasting.llm import Batch, assemble, forecast_batches, prompts_for
from lvjob.forecasting.scores import scores
from lvjob.run import cost
from lvjob.run.job import Job
from lvjob.run.ledger import Ledger


def check_series(job: Job, split: data.Split) -> None:
    """Refuse, before any work, to evaluate more series than the data file has systems in the job's split."""
    available = len(getattr(split, job.eval_split))
    if job.series > available:
        raise ConfigError(f"series: {job.series} is more than the {available} {job.eval_split} systems of {job.data.path}; "
                          f"valid: 1..{available} (or a file with more systems)")


def booking(job: Job, ledger: Ledger, rank: int, path: Path, kept: list[tuple] = ()):
    """What books each generation batch into the ledger as soon as it is computed.

    `kept`: the cost figures of the batches earlier attempts finished and wrote; they are not re-done.
    Every other batch they booked was computed and lost: it counts as lost to preemption (still
    spent, so nothing booked is ever taken off). New work is added, never overwritten, so a cut-off
    evaluation keeps its FLOPs.
    """
    prompt, generation = cost.evaluation_flops(job, list(kept), rank)
    lost = ledger.prompt + ledger.generation - prompt - generation
    ledger.lost_to_preemption += lost - ledger.lost_in_evaluation  # what earlier attempts counted, once
    ledger.lost_in_evaluation = lost
    ledger.write(path)

    def book(batch) -> None:
        prompt, generation = cost.evaluation_flops(job, [batch], rank)
        ledger.prompt, ledger.generation = ledger.prompt + prompt, ledger.generation + generation
        ledger.write(path)

    return book


def read_parts(run_dir: Path) -> list[dict[str, np.ndarray]]:
    """The finished parts of a cut-off evaluation, in order (each part-NNNNN.npz as its arrays)."""
    folder = RunDir(run_dir).eval_parts
    parts = []
    for index, path in enumerate(sorted(folder.glob("part-*.npz")) if folder.exists() else []):
        if path.name != _part_name(index):
            break  # a gap: what follows it cannot be used
        with np.load(path, allow_pickle=False) as z:
            parts.append({k: z[k] for k in z.files})
    return parts


def _part_name(index: int) -> str:
    return f"part-{index:05d}.npz"


def write_part(run_dir: Path, index: int, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic.write_bytes(RunDir(run_dir).eval_parts / _part_name(index), buf.getvalue())


def _parts_done(run_dir: Path) -> None:
    shutil.rmtree(RunDir(run_dir).eval_parts, ignore_errors=True)


def evaluation_series(job: Job, trajectories: np.ndarray, split: data.Split) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(systems, contexts, truth): the first `series` systems of the job's split, cut at the horizon."""
    systems = np.asarray(getattr(split, job.eval_split))[: job.series]
    contexts, truth = data.split_time(trajectories[systems], job.data.horizon_fraction)
    return systems, contexts, truth


def forecast_settings(job: Job) -> dict:
    """What eval.json records of how the model forecast."""
    return {"prompt": job.prompt, "decimals": job.text.decimals, "alpha": job.text.alpha, "beta": job.text.beta,
            "samples": job.samples, "temperature": job.temperature, "max_int_digits": job.max_int_digits,
            "batch_size": job.eval_batch_size, "seed": job.seed}


def with_model(job: Job, model, tokenizer, trajectories: np.ndarray, split: data.Split, run_dir: Path,
               ledger: Ledger, rank: int, stop: StopRequest, beat=lambda what: None):
    """Forecast the job's evaluation series with the model, batch by batch; write eval.json and forecasts.npz."""
    systems, contexts, truth = evaluation_series(job, trajectories, split)
    built = prompts_for(tokenizer, contexts, truth.shape[1], job)
    parts = read_parts(run_dir)
    batches = [Batch(i, p["texts"].tolist(), tuple(int(x) for x in p["stats"]), p["sampler"]) for i, p in enumerate(parts)]
    seconds = [float(p["seconds"]) for p in parts]
    book = booking(job, ledger, rank, RunDir(run_dir).ledger, [b.stats for b in batches])
    total = -(-len(built) // job.eval_batch_size)
    made = forecast_batches(model, tokenizer, built, truth.shape[1], job, after=batches[-1] if batches else None)
    while len(batches) < total:
        t0 = time.perf_counter()
        batch = next(made)
        seconds.append(time.perf_counter() - t0)
        book(batch.stats)  # first: a kill before the part is written leaves this batch booked as lost
        write_part(run_dir, batch.index, texts=np.array(batch.texts, dtype=str), stats=np.array(batch.stats),
                   sampler=batch.sampler, seconds=np.array(seconds[-1]))
        batches.append(batch)
        beat(f"evaluation batch {len(batches)} of {total}")
        if len(batches) < total:
            stop.check(f"evaluation batch {len(batches)} of {total} written")
    result = assemble(built, batches, truth.shape[1], job)
    report = {"parse_rate": float(result.parsed_ok.mean()), "settings": forecast_settings(job)}
    write(job, run_dir, result.samples, truth, contexts, systems, sum(seconds), report,
          predictions=result.predictions, parsed_ok=result.parsed_ok, texts=np.array(result.texts, dtype=str))
    return result


BASELINE_CHUNK = 10  # series per part of a baseline's evaluation
SERIES_PER_WORKER = 4  # fewer series per CPU are fitted in the job's own process (a worker takes ~1 s to start)


def with_baseline(job: Job, lv: data.LVData, split: data.Split, run_dir: Path, stop: StopRequest,
                  beat=lambda what: None, log=print) -> None:
    """Forecast the job's evaluation series with its baseline forecaster (CPU, no model), chunk by chunk of
    series, the series of a chunk spread over the job's CPUs; write its evaluation."""
    systems, contexts, truth = evaluation_series(job, lv.trajectories, split)
    context_times, horizon_times = data.split_time(lv.time, job.data.horizon_fraction)
    parts = read_parts(run_dir)
    starts = range(0, len(contexts), BASELINE_CHUNK)
    workers = len(os.sched_getaffinity(0))
    with series_pool(workers) as pool:
        spread = pool.map if len(contexts) >= SERIES_PER_WORKER * workers else map  # a few series: not worth a process
        for index in range(len(parts), len(starts)):
            chunk = slice(starts[index], starts[index] + BASELINE_CHUNK)
            t0 = time.perf_counter()
            fit = baselines.forecast_with(job.forecaster, contexts[chunk], context_times, horizon_times, spread)
            residual = fit.residual if fit.residual is not None else np.full(len(fit.fell_back), np.nan)
            parts.append({"predictions": fit.predictions, "fell_back": fit.fell_back, "residual": residual,
                          "seconds": np.array(time.perf_counter() - t0)})
            write_part(run_dir, index, **parts[-1])
            beat(f"baseline chunk {index + 1} of {len(starts)}")
            log(progress(job.forecaster, min(chunk.stop, len(contexts)), len(contexts), [float(p["seconds"]) for p in parts]))
            if index + 1 < len(starts):
                stop.check(f"baseline chunk {index + 1} of {len(starts)} written")
    write(job, run_dir, np.concatenate([p["predictions"] for p in parts])[:, None], truth, contexts, systems,
          sum(float(p["seconds"]) for p in parts), fit_report(job, parts),
          predictions=np.concatenate([p["predictions"] for p in parts]))


def series_pool(workers: int) -> ProcessPoolExecutor:
    """Processes for a baseline's independent series fits, one per CPU the job may use (SLURM's cpus_per_task),
    started on first use. forkserver: workers start clean, not as copies of a process holding torch's threads."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))


def fit_report(job: Job, parts: list[dict]) -> dict:
    """What eval.json says of a baseline's fits: how many series fell back to persistence, and the median
    relative residual of the fits on the contexts (physics only)."""
    residual = np.concatenate([p["residual"] for p in parts]) if all("residual" in p for p in parts) else np.array([])
    fitted = residual[np.isfinite(residual)]
    return {"parse_rate": None, "forecaster": job.forecaster,
            "fell_back": int(np.concatenate([p["fell_back"] for p in parts]).sum()),
            "median_fit_residual": float(np.median(fitted)) if fitted.size else None}


def progress(forecaster: str, done: int, total: int, seconds: list[float]) -> str:
    """e.g. `physics: 30/100 series in 12 s, about 28 s left`."""
    spent = sum(seconds)
    left = spent / done * (total - done) if done else 0.0
    return f"{forecaster}: {done}/{total} series in {spent:.0f} s" + (f", about {left:.0f} s left" if done < total else "")


def write(job: Job, run_dir: Path, samples: np.ndarray, truth: np.ndarray, contexts: np.ndarray,
          systems: np.ndarray, seconds: float, report: dict, **arrays) -> None:
    """eval.json (the split, scores beside persistence's on the same series) and forecasts.npz, atomically.

    `arrays` go into forecasts.npz beside the samples: at least the point forecasts (`predictions`).
    """
    horizon = truth.shape[1]
    report = {"run_id": job.run_id(), "prompt": job.prompt, "split": job.eval_split, "series": int(len(systems))} | report | {
        "model": scores(samples, truth, contexts),
        "persistence": scores(baselines.repeat_last(contexts, horizon)[:, None], truth, contexts),
        "seconds": round(seconds, 3)}
    atomic.write_text(RunDir(run_dir).evaluation, json.dumps(report, indent=1))
    buf = io.BytesIO()
    np.savez_compressed(buf, samples=samples, truth=truth, contexts=contexts, systems=systems,
                        split=np.array(job.eval_split), **arrays)
    atomic.write_bytes(RunDir(run_dir).forecasts, buf.getvalue())
    _parts_done(run_dir)
