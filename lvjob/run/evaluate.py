"""A job's evaluation: forecast the series of its split, score them, write eval.json and forecasts.npz.

The same for every kind of run: a language model (zero-shot, or after training) forecasts through
lvjob.forecasting.llm, a baseline through lvjob.forecasting.baselines; both are scored beside
persistence on the same series (lvjob.forecasting.scores). Each generation batch is booked into
the ledger as soon as it is computed, so a cut-off evaluation keeps what it spent.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np

from lvjob import data
from lvjob.core import atomic
from lvjob.core.config import ConfigError
from lvjob.core.paths import RunDir
from lvjob.forecasting import baselines
from lvjob.forecasting.llm import forecast_series
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


def booking(job: Job, ledger: Ledger, rank: int, path: Path):
    """What books each generation batch into the ledger as soon as it is computed.

    Evaluation work booked by an earlier attempt is re-done now: it moves to lost_to_preemption
    (still spent). New work is added, never overwritten, so a cut-off evaluation keeps its FLOPs.
    """
    ledger.lost_to_preemption += ledger.prompt + ledger.generation
    ledger.write(path)

    def book(batch) -> None:
        prompt, generation = cost.evaluation_flops(job, [batch], rank)
        ledger.prompt, ledger.generation = ledger.prompt + prompt, ledger.generation + generation
        ledger.write(path)

    return book


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


def with_model(job: Job, model, tokenizer, trajectories: np.ndarray, split: data.Split, run_dir: Path, on_batch=None):
    """Forecast the job's evaluation series with the model; write eval.json and forecasts.npz."""
    systems, contexts, truth = evaluation_series(job, trajectories, split)
    t0 = time.perf_counter()
    result = forecast_series(model, tokenizer, contexts, truth.shape[1], job, on_batch)
    seconds = time.perf_counter() - t0
    report = {"parse_rate": float(result.parsed_ok.mean()), "settings": forecast_settings(job)}
    write(job, run_dir, result.samples, truth, contexts, systems, seconds, report,
          predictions=result.predictions, parsed_ok=result.parsed_ok, texts=np.array(result.texts, dtype=str))
    return result


def with_baseline(job: Job, lv: data.LVData, split: data.Split, run_dir: Path) -> None:
    """Forecast the job's evaluation series with its baseline forecaster (CPU, no model); write its evaluation."""
    systems, contexts, truth = evaluation_series(job, lv.trajectories, split)
    context_times, horizon_times = data.split_time(lv.time, job.data.horizon_fraction)
    t0 = time.perf_counter()
    fit = baselines.forecast_with(job.forecaster, contexts, context_times, horizon_times)
    seconds = time.perf_counter() - t0
    report = {"parse_rate": None, "fell_back": int(fit.fell_back.sum()), "forecaster": job.forecaster}
    write(job, run_dir, fit.predictions[:, None], truth, contexts, systems, seconds, report, predictions=fit.predictions)


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
