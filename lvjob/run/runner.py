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

import json
import os
import signal
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

from lvjob import data
from lvjob.core import atomic
from lvjob.core.config import to_dict
from lvjob.core.paths import ADAPTER_CONFIG, RunDir
from lvjob.core.timestamps import utc_now
from lvjob.data.tokenizer import load_tokenizer
from lvjob.models.loading import load_model
from lvjob.run import adapter, evaluate
from lvjob.run.job import Job
from lvjob.core.atomic import read_jsonl
from lvjob.run.ledger import Ledger
from lvjob.run.lock import run_lock
from lvjob.run.provenance import attempt_record, peak_memory
from lvjob.run.rundir import RunStatus, read_status, write_status
from lvjob.run.tracking import backends_from_env, hparams_of, open_tracker

EXIT_PREEMPTED = 3  # the job stopped on request after a checkpoint; run it again to resume


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


def run(job: Job, log=print) -> int:
    """Run `job` to completion (or to a requested stop). Returns the process exit code."""
    run_dir = job.resolved_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        return _run_locked(job, run_dir, log)


def _run_locked(job: Job, run_dir: Path, log) -> int:
    from lvjob.run.train import Preempted, StopFlag  # deferred: imports torch

    status = read_status(run_dir)
    if status.get("status") == RunStatus.COMPLETE:
        log(f"{run_dir}: already complete, nothing to do")
        return 0
    atomic.write_text(RunDir(run_dir).job, yaml.safe_dump(to_dict(job), sort_keys=False))
    attempt = status.get("attempts", 0) + 1
    device = pick_device(job.device)
    write_status(run_dir, status=RunStatus.RUNNING, error=None, signal=None, run_id=job.run_id(), kind=job.kind, name=job.name, attempts=attempt, host=socket.gethostname(), pid=os.getpid(),
                  slurm_job_id=os.environ.get("SLURM_JOB_ID"), started=status.get("started") or utc_now(),
                  attempt_records=status.get("attempt_records", []) + [attempt_record(attempt, device)])
    log(f"run {job.run_id()} ({job.kind}) in {run_dir}")
    stop = StopFlag()
    try:
        with stop_on_signals(stop):
            _run(job, run_dir, stop, attempt, log)
    except Preempted as e:
        # The signal tells a cluster wrapper what to do next: USR2 asks for a requeue (lvjob.orchestrate.submission).
        _end_attempt(run_dir, device, status=RunStatus.PREEMPTED, step=e.step, signal=signal.Signals(stop.signal).name)
        log(f"{run_dir}: {e}; run the same command again to resume")
        return EXIT_PREEMPTED
    except SystemExit:  # a signal handed on to submitit, which requeued the job and exits
        _end_attempt(run_dir, device, status=RunStatus.PREEMPTED, signal="handed on")
        raise
    except BaseException as e:
        _end_attempt(run_dir, device, status=RunStatus.FAILED, error=f"{type(e).__name__}: {e}")
        raise
    _end_attempt(run_dir, device, status=RunStatus.COMPLETE, finished=utc_now())
    log(f"{run_dir}: complete")
    return 0


def _end_attempt(run_dir: Path, device: str, **fields) -> dict:
    """Write the attempt's outcome: `fields` at the top of run.json, and its end and peak memory in its record.

    An attempt killed without warning never gets here: its record keeps only what it had at the start.
    """
    records = read_status(run_dir).get("attempt_records") or [{}]
    records[-1] |= {"ended": utc_now(), "status": fields["status"]} | peak_memory(device)
    return write_status(run_dir, **fields, attempt_records=records)


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
    evaluate.check_series(job, split)
    if job.kind == "baseline":
        tracker.resume([])
        evaluate.with_baseline(job, lv, split, run_dir)
        Ledger().write(RunDir(run_dir).ledger)  # no model: 0 FLOPs, booked so the run reads like every other
        tracker.evaluation(json.loads(RunDir(run_dir).evaluation.read_text()), hparams_of(job))
        return
    device = pick_device(job.device)
    tokenizer = load_tokenizer()
    ledger_path = RunDir(run_dir).ledger

    if job.kind == "train":
        adapter_dir = RunDir(run_dir).adapter
        if (adapter_dir / ADAPTER_CONFIG).exists():
            model, ledger = adapter.attach(load_model(job.model_choice, device=device), adapter_dir), Ledger.read(ledger_path)
            tracker.resume(read_jsonl(RunDir(run_dir).metrics))
            log("training already finished; evaluating the saved adapter")
        else:
            from lvjob.run.train import Preempted, build_corpus, train  # deferred: imports torch

            corpus = build_corpus(job, tokenizer, lv.trajectories, split.train, split.validation)
            log(f"corpus: {len(corpus.train)} training chunks, {len(corpus.val)} validation chunks of <= {job.context} tokens")
            model, ledger = train(job, run_dir, corpus, tokenizer.pad_token_id, device, stop, attempt, log, tracker, started)
            with atomic.atomic_dir(adapter_dir) as tmp:
                model.save_pretrained(tmp)
                adapter.sort_targets(tmp / ADAPTER_CONFIG)
            ledger.write(ledger_path)
            stop.in_loop = False
            if stop.requested:  # came during the last step: training is saved, the evaluation runs next time
                raise Preempted(job.steps)
        rank = job.rank
    else:
        model = load_model(job.model_choice, device=device)
        if job.adapter:
            model = adapter.attach(model, job.adapter)
        ledger, rank = Ledger.read(ledger_path), adapter.rank(job.adapter)
        tracker.resume([])

    book = evaluate.booking(job, ledger, rank, ledger_path)
    evaluate.with_model(job, model.eval(), tokenizer, lv.trajectories, split, run_dir, on_batch=book)
    ledger.write(ledger_path)
    tracker.evaluation(json.loads(RunDir(run_dir).evaluation.read_text()), hparams_of(job) | {"rank": rank})
