"""Run one job into its run directory (lvjob.core.paths.RunDir); what the cluster starts, preempts and restarts.

Every file is written atomically. Starting a run whose directory is complete does nothing; one
with checkpoints resumes from the newest valid one; a trained run whose evaluation was cut off
resumes the evaluation at its first unfinished batch.

A stop request (SIGUSR2, SIGTERM: lvjob.core.stops, caught from the process's first line) is honoured
at the next safe point: before any work, after loading the model, at a training step boundary
(after a checkpoint), after an evaluation batch. The run then ends `preempted` with EXIT_PREEMPTED;
running it again resumes it. run.json's status always says how the attempt ended.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import yaml

from lvjob import data
from lvjob.core import atomic, stops
from lvjob.core.atomic import DiskFull
from lvjob.core.config import to_dict
from lvjob.core.heartbeat import Heartbeat
from lvjob.core.paths import ADAPTER_CONFIG, RunDir
from lvjob.core.stops import StopRequest, Stopped
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

EXIT_FAILED = 1
EXIT_PREEMPTED = 3  # the job stopped on request after a checkpoint; run it again to resume


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> None:
    """For a process that computes on the CPU: its large tensors stay in the heap when freed, to be reused.

    Each training step frees and reallocates tensors of ~150 MB (the logits over 151,936 tokens at batch 4,
    context 64, their softmax and gradients). glibc gives an allocation that large back to the kernel when it is
    freed, and the next step faults every page of it in again: a tiny 4-step run spent ~1 of its 7 CPU-seconds
    there. PyTorch's CPU tuning guide swaps the allocator (jemalloc, tcmalloc) for this; glibc's own settings do it
    here. Without glibc (macOS) nothing changes.
    """
    import ctypes
    import ctypes.util

    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return
    mallopt(M_MMAP_MAX, 0)  # large blocks from the heap, not from mmap
    mallopt(M_TRIM_THRESHOLD, 2**31 - 1)  # and the heap's free top kept, not trimmed


def run(job: Job, log=print, stop: StopRequest = stops.REQUEST) -> int:
    """Run `job` to completion (or to a requested stop: `stop`, this process's signals by default). Returns
    the process exit code."""
    run_dir = job.resolved_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        return _run_locked(job, run_dir, log, stop)


def _run_locked(job: Job, run_dir: Path, log, stop: StopRequest) -> int:
    status = read_status(run_dir)
    if status.get("status") == RunStatus.COMPLETE:
        if RunDir(run_dir).evaluation.exists():
            log(f"{run_dir}: already complete, nothing to do")
            return 0
        log(f"{run_dir}: run.json says complete but eval.json is missing: evaluating again")
    atomic.write_text(RunDir(run_dir).job, yaml.safe_dump(to_dict(job), sort_keys=False))
    attempt = status.get("attempts", 0) + 1
    device = pick_device(job.device)
    write_status(run_dir, status=RunStatus.RUNNING, error=None, signal=None, stopped=None, run_id=job.run_id(), kind=job.kind, name=job.name, attempts=attempt, host=socket.gethostname(), pid=os.getpid(),
                  slurm_job_id=os.environ.get("SLURM_JOB_ID"), started=status.get("started") or utc_now(),
                  attempt_records=status.get("attempt_records", []) + [attempt_record(attempt, device)])
    log(f"run {job.run_id()} ({job.kind}) in {run_dir}")
    try:
        _run(job, run_dir, stop, attempt, log)
    except Stopped as e:
        # The signal tells a cluster wrapper what to do next: USR2 asks for a requeue (lvjob.orchestrate.tasks).
        _end_attempt(run_dir, device, status=RunStatus.PREEMPTED, step=e.step, signal=stop.name, stopped=e.where)
        log(f"{run_dir}: {e}; run the same command again to resume")
        return EXIT_PREEMPTED
    except DiskFull as e:  # one line naming the file and the space left; every older file is whole
        _end_attempt(run_dir, device, status=RunStatus.FAILED, error=str(e))
        log(f"{run_dir}: {e}")
        return EXIT_FAILED
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


def _run_tracked(job: Job, run_dir: Path, stop: StopRequest, attempt: int, log, tracker) -> None:
    started = time.monotonic()
    heartbeat = Heartbeat(RunDir(run_dir).heartbeat)
    heartbeat.start()
    beat = heartbeat.beat
    stop.check("the start (nothing done)")
    lv = data.ensure(job.data)
    split = job.data.split(lv.n_systems)
    evaluate.check_series(job, split)
    if job.kind == "baseline":
        tracker.resume([])
        evaluate.with_baseline(job, lv, split, run_dir, stop, beat)
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
            stop.check("loading the model")
            tracker.resume(read_jsonl(RunDir(run_dir).metrics))
            log("training already finished; evaluating the saved adapter")
        else:
            from lvjob.run.train import build_corpus, train  # deferred: imports torch

            corpus = build_corpus(job, tokenizer, lv.trajectories, split.train, split.validation)
            log(f"corpus: {len(corpus.train)} training chunks, {len(corpus.val)} validation chunks of <= {job.context} tokens")
            model, ledger = train(job, run_dir, corpus, tokenizer.pad_token_id, device, stop, attempt, log, tracker, started, beat)
            # The ledger first: a saved adapter means "training is booked" to the next attempt, which skips training
            # and reads the ledger (a kill between the two used to drop the training's FLOPs from the books).
            ledger.write(ledger_path)
            with atomic.atomic_dir(adapter_dir) as tmp:
                model.save_pretrained(tmp)
                adapter.sort_targets(tmp / ADAPTER_CONFIG)
            stop.check(f"training (step {job.steps}, adapter saved)")  # the evaluation runs next time
        rank = job.rank
    else:
        model = load_model(job.model_choice, device=device)
        if job.adapter:
            model = adapter.attach(model, job.adapter)
        stop.check("loading the model")
        ledger, rank = Ledger.read(ledger_path), adapter.rank(job.adapter)
        tracker.resume([])

    evaluate.with_model(job, model.eval(), tokenizer, lv.trajectories, split, run_dir, ledger, rank, stop, beat)
    ledger.write(ledger_path)
    tracker.evaluation(json.loads(RunDir(run_dir).evaluation.read_text()), hparams_of(job) | {"rank": rank})
