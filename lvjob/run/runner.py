"""Run one job into its run directory; what the cluster starts, preempts and restarts.

Run directory (`checkpoints/<run id>/` unless `run_dir` is given):

    job.yaml         the job as resolved (spec + overrides)
    run.json         status (running | preempted | failed | complete), attempts, timestamps; attempt_records:
                     per attempt its UTC start and end, host, SLURM job, device, peak memory, git commit, versions
    metrics.jsonl    training: one row per step (loss; val_loss on validation steps; UTC time, elapsed, tokens/s)
    tensorboard/     TensorBoard event files (lvjob.run.tracking)
    wandb/           W&B's files, when the profile's tracking lists wandb (lvjob.run.tracking)
    checkpoints/     training: step-NNNNNNN/ folders (see lvjob.run.checkpoint)
    adapter/         training: the final LoRA adapter, standard PEFT layout
    eval.json        the split it scored, the forecasts' scores (lvjob.forecasting.scores) beside persistence's, parse rate, settings
    forecasts.npz    forecasts, samples, truth, contexts, systems, generated text
    ledger.json      FLOPs spent (lvjob.run.ledger)
    preemptions.jsonl  training: resumes and the steps they discarded (lvjob.run.ledger)

Every file is written atomically. Starting a run whose directory is complete does nothing; one
with checkpoints resumes from the newest valid one; a trained run whose evaluation was cut off only
re-runs the evaluation.
"""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import yaml

from lvjob.core import atomic
from lvjob.forecasting import baselines
from lvjob.run import cost
from lvjob import data
from lvjob.core.config import ConfigError, to_dict
from lvjob.forecasting.llm import ForecastSettings, forecast
from lvjob.forecasting.scores import scores
from lvjob.run.job import Job
from lvjob.run.ledger import Ledger, read_jsonl
from lvjob.models.loading import load_model
from lvjob.core.paths import ADAPTER_CONFIG, RunDir
from lvjob.run.provenance import attempt_record, peak_memory, utc_now
from lvjob.data.tokenizer import load_tokenizer
from lvjob.run.tracking import backends_from_env, hparams_of, open_tracker

EXIT_PREEMPTED = 3  # the job stopped on request after a checkpoint; run it again to resume


def read_status(run_dir: Path) -> dict:
    path = RunDir(run_dir).status
    return json.loads(path.read_text()) if path.exists() else {}


def _write_status(run_dir: Path, **fields) -> dict:
    status = read_status(run_dir) | fields | {"updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic.write_text(RunDir(run_dir).status, json.dumps(status, indent=1, sort_keys=True))
    return status


@contextmanager
def stop_on_signals(flag, signals=(signal.SIGUSR2, signal.SIGTERM)):
    """Turn SIGUSR2 (SLURM/submitit preemption and time limit) and SIGTERM into a stop request.

    While a training loop runs, the signal only sets `flag`: the loop checkpoints at the end of the
    step and stops. Outside it there is nothing to checkpoint, so the signal goes straight to the
    handler installed before (submitit's, which requeues the job and exits) if there is one.
    """
    def handler(signum, frame):
        name = signal.Signals(signum).name
        before = previous.get(signum)
        if not flag.in_loop and callable(before):
            print(f"received signal {name} outside training: handing it on", file=sys.stderr, flush=True)
            before(signum, frame)
            return
        flag.signal = signum
        print(f"received signal {name}: checkpointing at the end of this step", file=sys.stderr, flush=True)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class RunBusy(RuntimeError):
    """Another live process holds the run directory."""


# flock errors that mean "this filesystem does not do flock" (some Lustre and NFS mounts), not "held".
FLOCK_UNSUPPORTED = frozenset({errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOLCK})
_warned_no_flock = False


@contextmanager
def run_lock(run_dir: Path):
    """Hold the run directory exclusively while a process works in it.

    Two processes training into one directory (a job resubmitted while its first copy still runs, a
    run started by hand beside the cluster's) would corrupt it. The lock is the kernel's (flock on
    `run_dir/.lock`): it goes with the process, however the process dies, so a killed job never
    leaves a stale lock behind. Where the filesystem has no flock, a lock file recording its holder
    takes its place (lvjob.run.lockfile), broken only when that holder is provably gone.
    """
    import fcntl

    with open(RunDir(run_dir).lock, "a+") as f:
        if not _flock(f, run_dir):
            with _lock_file(run_dir):
                yield
            return
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _flock(f, run_dir: Path) -> bool:
    """Take the kernel lock on open file `f`; False where the filesystem does not do flock."""
    import fcntl

    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = read_status(run_dir)
        raise RunBusy(_busy_message(run_dir, holder.get("pid", "?"), holder.get("host", "?"))) from None
    except OSError as e:
        if e.errno not in FLOCK_UNSUPPORTED:
            raise
        _warn_no_flock(run_dir, e)
        return False
    return True


def _busy_message(run_dir: Path, pid, host) -> str:
    return f"{run_dir} is in use by another process (pid {pid} on {host}); nothing was changed"


def _warn_no_flock(run_dir: Path, error: OSError) -> None:
    global _warned_no_flock
    if not _warned_no_flock:  # once per process: a study's runs all live on the same filesystem
        print(f"warning: {run_dir}: this filesystem does not support flock ({error.strerror}); run directories "
              f"are locked with a .lock.held file instead", file=sys.stderr, flush=True)
        _warned_no_flock = True


@contextmanager
def _lock_file(run_dir: Path):
    from lvjob.run.lockfile import Holder, LockHeld, release, take

    path, me = RunDir(run_dir).held_lock, Holder.me()
    try:
        take(path, me)
    except LockHeld as e:
        if e.holder is None:
            raise RunBusy(f"{e}; nothing was changed") from None
        raise RunBusy(f"{_busy_message(run_dir, e.holder.pid, e.holder.host)}: {e}") from None
    try:
        yield
    finally:
        release(path, me)


def run(job: Job, log=print) -> int:
    """Run `job` to completion (or to a requested stop). Returns the process exit code."""
    run_dir = job.resolved_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        return _run_locked(job, run_dir, log)


def _run_locked(job: Job, run_dir: Path, log) -> int:
    from lvjob.run.train import Preempted, StopFlag  # deferred: imports torch

    status = read_status(run_dir)
    if status.get("status") == "complete":
        log(f"{run_dir}: already complete, nothing to do")
        return 0
    atomic.write_text(RunDir(run_dir).job, yaml.safe_dump(to_dict(job), sort_keys=False))
    attempt = status.get("attempts", 0) + 1
    device = pick_device(job.device)
    _write_status(run_dir, status="running", error=None, signal=None, run_id=job.run_id(), kind=job.kind, name=job.name, attempts=attempt, host=socket.gethostname(), pid=os.getpid(),
                  slurm_job_id=os.environ.get("SLURM_JOB_ID"), started=status.get("started") or time.strftime("%Y-%m-%dT%H:%M:%S"),
                  attempt_records=status.get("attempt_records", []) + [attempt_record(attempt, device)])
    log(f"run {job.run_id()} ({job.kind}) in {run_dir}")
    stop = StopFlag()
    try:
        with stop_on_signals(stop):
            _run(job, run_dir, stop, attempt, log)
    except Preempted as e:
        # The signal tells a cluster wrapper what to do next: USR2 asks for a requeue (lvjob.orchestrate.submission).
        _end_attempt(run_dir, device, status="preempted", step=e.step, signal=signal.Signals(stop.signal).name)
        log(f"{run_dir}: {e}; run the same command again to resume")
        return EXIT_PREEMPTED
    except SystemExit:  # a signal handed on to submitit, which requeued the job and exits
        _end_attempt(run_dir, device, status="preempted", signal="handed on")
        raise
    except BaseException as e:
        _end_attempt(run_dir, device, status="failed", error=f"{type(e).__name__}: {e}")
        raise
    _end_attempt(run_dir, device, status="complete", finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
    log(f"{run_dir}: complete")
    return 0


def _end_attempt(run_dir: Path, device: str, **fields) -> dict:
    """Write the attempt's outcome: `fields` at the top of run.json, and its end and peak memory in its record.

    An attempt killed without warning never gets here: its record keeps only what it had at the start.
    """
    records = read_status(run_dir).get("attempt_records") or [{}]
    records[-1] |= {"ended": utc_now(), "status": fields["status"]} | peak_memory(device)
    return _write_status(run_dir, **fields, attempt_records=records)


def _run(job: Job, run_dir: Path, stop, attempt: int, log) -> None:
    tracker = open_tracker(run_dir, backends_from_env(), job)  # first: a tracker that cannot run is refused before any work
    try:
        _run_tracked(job, run_dir, stop, attempt, log, tracker)
    finally:
        tracker.close()


def _run_tracked(job: Job, run_dir: Path, stop, attempt: int, log, tracker) -> None:
    started = time.monotonic()
    lv = data.ensure(job.data)
    split = job.data.split(lv.n_systems)
    _check_series(job, split)
    if job.kind == "baseline":
        tracker.resume([])
        evaluate_baseline(job, lv, split, run_dir)
        Ledger().write(RunDir(run_dir).ledger)  # no model: 0 FLOPs, booked so the run reads like every other
        tracker.evaluation(json.loads(RunDir(run_dir).evaluation.read_text()), hparams_of(job))
        return
    device = pick_device(job.device)
    tokenizer = load_tokenizer()
    ledger_path = RunDir(run_dir).ledger

    if job.kind == "train":
        adapter_dir = RunDir(run_dir).adapter
        if (adapter_dir / ADAPTER_CONFIG).exists():
            model, ledger = _load_trained(job, adapter_dir, device), Ledger.read(ledger_path)
            tracker.resume(read_jsonl(RunDir(run_dir).metrics))
            log("training already finished; evaluating the saved adapter")
        else:
            from lvjob.run.train import Preempted, build_corpus, train  # deferred: imports torch

            corpus = build_corpus(job, tokenizer, lv.trajectories, split.train, split.validation)
            log(f"corpus: {len(corpus.train)} training chunks, {len(corpus.val)} validation chunks of <= {job.context} tokens")
            model, ledger = train(job, run_dir, corpus, tokenizer.pad_token_id, device, stop, attempt, log, tracker, started)
            with atomic.atomic_dir(adapter_dir) as tmp:
                model.save_pretrained(tmp)
                _sort_targets(tmp / ADAPTER_CONFIG)
            ledger.write(ledger_path)
            stop.in_loop = False
            if stop.requested:  # came during the last step: training is saved, the evaluation runs next time
                raise Preempted(job.steps)
        rank = job.rank
    else:
        model = load_model(job.model_choice, device=device)
        if job.adapter:
            model = _attach_adapter(model, job.adapter)
        ledger, rank = Ledger.read(ledger_path), _adapter_rank(job.adapter)
        tracker.resume([])

    book = eval_booking(job, ledger, rank, ledger_path)
    evaluate_model(job, model.eval(), tokenizer, lv.trajectories, split, run_dir, on_batch=book)
    ledger.write(ledger_path)
    tracker.evaluation(json.loads(RunDir(run_dir).evaluation.read_text()), hparams_of(job) | {"rank": rank})


def _check_series(job: Job, split: data.Split) -> None:
    """Refuse, before any work, to evaluate more series than the data file has systems in the job's split."""
    available = len(getattr(split, job.eval_split))
    if job.series > available:
        raise ConfigError(f"series: {job.series} is more than the {available} {job.eval_split} systems of {job.data.path}; "
                          f"valid: 1..{available} (or a file with more systems)")


def eval_booking(job: Job, ledger: Ledger, rank: int, path: Path):
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


def _sort_targets(config: Path) -> None:
    """peft keeps target_modules as a set, written in an order that varies between processes: sort it,
    so the same run gives the same adapter folder byte for byte."""
    settings = json.loads(config.read_text())
    if isinstance(settings.get("target_modules"), list):
        settings["target_modules"] = sorted(settings["target_modules"])
    config.write_text(json.dumps(settings, indent=2, sort_keys=True))  # as peft writes it


def evaluation_series(job: Job, trajectories: np.ndarray, split: data.Split) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(systems, contexts, truth): the first `series` systems of the job's split, cut at the horizon."""
    systems = np.asarray(getattr(split, job.eval_split))[: job.series]
    contexts, truth = data.split_time(trajectories[systems], job.data.horizon_fraction)
    return systems, contexts, truth


def evaluate_model(job: Job, model, tokenizer, trajectories: np.ndarray, split: data.Split, run_dir: Path, on_batch=None):
    """Forecast the job's evaluation series with the model; write eval.json and forecasts.npz."""
    systems, contexts, truth = evaluation_series(job, trajectories, split)
    settings = ForecastSettings(prompt=job.prompt, decimals=job.text.decimals, alpha=job.text.alpha, beta=job.text.beta,
                                samples=job.samples, temperature=job.temperature, max_int_digits=job.max_int_digits,
                                batch_size=job.eval_batch_size, seed=job.seed)
    t0 = time.perf_counter()
    result = forecast(model, tokenizer, contexts, truth.shape[1], settings, on_batch)
    seconds = time.perf_counter() - t0
    report = {"parse_rate": float(result.parsed_ok.mean()), "settings": to_dict(settings)}
    write_evaluation(job, run_dir, result.samples, truth, contexts, systems, seconds, report,
                     predictions=result.predictions, parsed_ok=result.parsed_ok, texts=np.array(result.texts, dtype=str))
    return result


def evaluate_baseline(job: Job, lv: data.LVData, split: data.Split, run_dir: Path) -> None:
    """Forecast the job's evaluation series with its baseline forecaster (CPU, no model); write its evaluation."""
    systems, contexts, truth = evaluation_series(job, lv.trajectories, split)
    context_times, horizon_times = data.split_time(lv.time, job.data.horizon_fraction)
    t0 = time.perf_counter()
    fit = baselines.forecast_with(job.forecaster, contexts, context_times, horizon_times)
    seconds = time.perf_counter() - t0
    report = {"parse_rate": None, "fell_back": int(fit.fell_back.sum()), "forecaster": job.forecaster}
    write_evaluation(job, run_dir, fit.predictions[:, None], truth, contexts, systems, seconds, report,
                     predictions=fit.predictions)


def write_evaluation(job: Job, run_dir: Path, samples: np.ndarray, truth: np.ndarray, contexts: np.ndarray,
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


def _attach_adapter(model, adapter: str):
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(_adapter_folder(adapter)))


def _adapter_folder(adapter: str) -> Path:
    """A run directory's `adapter/`, or a PEFT adapter folder itself."""
    path = Path(adapter)
    if (RunDir(path).adapter / ADAPTER_CONFIG).exists():
        return RunDir(path).adapter
    if (path / ADAPTER_CONFIG).exists():
        return path
    raise FileNotFoundError(f"adapter: {adapter} holds no PEFT adapter (no adapter_config.json in it or in its adapter/)")


def _adapter_rank(adapter: str | None) -> int:
    if not adapter:
        return 0
    return int(json.loads((_adapter_folder(adapter) / ADAPTER_CONFIG).read_text())["r"])


def _load_trained(job: Job, adapter_dir: Path, device: str):
    return _attach_adapter(load_model(job.model_choice, device=device), str(adapter_dir))
