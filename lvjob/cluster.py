"""The study on an executor, through submitit (SPEC §7): submit, status, cancel.

One `StudyTask` per node of the study (lvjob.stages) is handed to submitit. On SLURM every stage is
one job array, chained to the stages it waits for with `afterany` dependencies, and everything is
submitted at once: nothing stays running on the login node. With the local executor the same
stages run on this machine, at most `max_parallel` jobs at a time, and `submit` waits for them.

Preemption and time limits: SLURM sends USR2 `signal_delay_s` before the end (and on preemption).
The runner catches it, finishes the step, writes a checkpoint and returns; the task then hands the
signal to submitit's own handler, which requeues the job (counting time-outs against
`max_num_timeout`). The requeued job runs the same task again, and the runner resumes from the
checkpoint. A job killed without warning restarts from its last periodic checkpoint the same way.

The study's records (`<runs_root>/study-.../`): `submissions.jsonl` (every job submitted, by
node), `choices/` (what stage 2 and the final run chose), `submitit/` (logs and pickles).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import submitit

from lvjob.config import ClusterError
from lvjob.paths import cache_dir
from lvjob.profile import Profile, python_for_submitit
from lvjob.rundir import summarize
from lvjob.stages import AFTER, STAGES, Node, job_for, study_dir, study_nodes
from lvjob.study import Study

ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED", "REQUEUE_HOLD",
          "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED", "SPECIAL_EXIT"}


class StudyTask(submitit.helpers.Checkpointable):
    """What one job of the study runs. Pickled by submitit; lives in the package so jobs can import it."""

    def __init__(self, study: Study, profile: Profile, node: Node, workdir: str, cache: str):
        self.study, self.profile, self.node, self.workdir, self.cache = study, profile, node, workdir, cache

    def __call__(self) -> dict:
        os.chdir(self.workdir)  # relative paths (data, runs, results) mean the same as at submission
        os.environ.update({"LVJOB_CACHE": self.cache, "HF_HUB_OFFLINE": "1", **self.profile.env})
        import torch

        torch.set_num_threads(self.profile.cpus_per_task)
        if self.node.stage == "aggregate":
            from lvjob.aggregate import write_results
            from lvjob.plots import plot_results

            out = write_results(self.study, self.profile)
            plot_results(out)
            return {"results": str(out)}

        from lvjob import logs
        from lvjob.runner import EXIT_PREEMPTED, read_status, run

        job = job_for(self.study, self.profile, self.node)
        logs.configure()  # a submitit worker does not pass through the CLI's main
        code = run(job, log=logs.run_log(job.run_id()))
        if code == EXIT_PREEMPTED:
            stopped_by = read_status(job.resolved_run_dir()).get("signal")
            handler = signal.getsignal(signal.SIGUSR2)
            if stopped_by == "SIGUSR2" and callable(handler):
                handler(signal.SIGUSR2, None)  # submitit's: requeue this task, then exit
            raise RuntimeError(f"{self.node.key}: stopped by {stopped_by} after a checkpoint; not requeued")
        return summarize(job.resolved_run_dir()).to_dict()


# --- submission ------------------------------------------------------------------------------------


@dataclass
class NodeState:
    node: Node
    status: str  # complete | active (a job is queued or running for it) | todo


def waves() -> list[list[str]]:
    """The stages grouped so that each group waits only for groups before it."""
    level: dict[str, int] = {}
    for stage in STAGES:
        level[stage] = 1 + max((level[s] for s in AFTER.get(stage, ())), default=-1)
    return [[s for s in STAGES if level[s] == i] for i in range(max(level.values()) + 1)]


def _records_path(study: Study, profile: Profile) -> Path:
    return study_dir(study, profile) / "submissions.jsonl"


def read_submissions(study: Study, profile: Profile) -> dict[str, dict]:
    """The latest submission of each node: {node key: {"job_id", "executor", "at"}}."""
    from lvjob.ledger import read_jsonl

    latest: dict[str, dict] = {}
    for row in read_jsonl(_records_path(study, profile)):
        latest[row["node"]] = row
    return latest


def _record(study: Study, profile: Profile, rows: list[dict]) -> None:
    path = _records_path(study, profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    torn = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with open(path, "a") as f:  # a line cut short by a kill is ended first, so it cannot swallow the next
        f.write(("\n" if torn else "") + "".join(json.dumps(r) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())


def _table(cmd: list[str]) -> dict[str, str]:
    """{job id: state} from a `JobID|State` listing (squeue or sacct)."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise ClusterError(f"{cmd[0]} failed ({e}); is SLURM_CONF set and the cluster up?") from None
    table = {}
    for line in out.splitlines():
        jid, _, state = line.strip().partition("|")
        table[jid] = state.split()[0] if state else "UNKNOWN"  # "CANCELLED by 0" -> CANCELLED
    return table


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """{job id: state}: queued and running jobs from squeue (immediate), ended ones from sacct.

    sacct learns of a job a moment after sbatch returns; a job neither lists is UNKNOWN. An array task
    cancelled before it started is ENDED.
    """
    if not job_ids:
        return {}
    queue = _table(["squeue", "-h", "-r", "-o", "%i|%T"])  # -r: one line per array task
    ended = [j for j in job_ids if j not in queue]
    history = {}
    if ended:
        bases = sorted({j.split("_")[0] for j in ended})
        history = _table(["sacct", "-n", "-P", "-X", "-j", ",".join(bases), "--format=JobID,State"])
    def ended_state(j: str) -> str:
        if j in history:
            return history[j]
        # An array task cancelled before it started leaves no record of its own: if sacct knows
        # other tasks of its array and squeue no longer lists it, it ended without running.
        base = j.split("_")[0]
        if "_" in j and any(k.startswith(f"{base}_") for k in history):
            return "ENDED"
        return "UNKNOWN"

    return {j: queue.get(j) or ended_state(j) for j in job_ids}


def active_jobs(study: Study, profile: Profile) -> dict[str, str]:
    """{node key: job id} of the study's SLURM jobs that are queued or running now.

    Local jobs run in the foreground of `lvjob submit` and end with it, so none is ever left active.
    """
    if profile.executor != "slurm":
        return {}
    latest = {k: r for k, r in read_submissions(study, profile).items() if r.get("executor") == "slurm"}
    states = slurm_states([r["job_id"] for r in latest.values()])
    return {k: r["job_id"] for k, r in latest.items() if states.get(r["job_id"]) in ACTIVE}


def node_states(study: Study, profile: Profile, active: dict[str, str], fresh: set[str] = frozenset()) -> list[NodeState]:
    """What each node needs: nothing (complete), nothing yet (active job), or a job (todo).

    `fresh`: stages submitted in this call, whose runs have not started; late-bound nodes after
    them cannot be resolved, and the aggregate must run again.
    """
    states = []
    for node in study_nodes(study):
        if node.key in active:
            states.append(NodeState(node, "active"))
            continue
        if node.stage == "aggregate":
            done = not fresh and all(s.status == "complete" for s in states) and _index_is_complete(study, profile)
            states.append(NodeState(node, "complete" if done else "todo"))
            continue
        waits_on_fresh = any(s in fresh for s in AFTER.get(node.stage, ()))
        job = None if waits_on_fresh else job_for(study, profile, node, at_submission=True)
        if job is None:
            states.append(NodeState(node, "todo"))
            continue
        status = summarize(job.resolved_run_dir()).status
        states.append(NodeState(node, "complete" if status == "complete" else "todo"))
    return states


def _rows(stage: str, nodes: list[Node], jobs: list, profile: Profile) -> list[dict]:
    at = time.strftime("%Y-%m-%dT%H:%M:%S")
    return [{"node": n.key, "stage": stage, "job_id": j.job_id, "executor": profile.executor, "at": at}
            for n, j in zip(nodes, jobs)]


def _index_is_complete(study: Study, profile: Profile) -> bool:
    """The run index exists, is this study's (at this scale, with this profile), and lists every run as complete."""
    try:
        index = json.loads((Path(profile.results_dir) / "runs.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (index.get("study"), index.get("scale"), index.get("profile")) == (study.name, study.scale, profile.name) and \
        all(r.get("status") == "complete" for r in index.get("runs", []))


def _executor(profile: Profile, folder: Path, stage: str, after: list[str]) -> submitit.AutoExecutor:
    kwargs = {}
    if profile.executor == "slurm":
        kwargs = {"slurm_max_num_timeout": profile.max_num_timeout}
        if profile.image:
            kwargs["slurm_python"] = python_for_submitit(profile, Path.cwd(), cache_dir().resolve())
    ex = submitit.AutoExecutor(folder=folder, cluster=profile.executor, **kwargs)
    params = dict(name=f"lvjob-{stage}", timeout_min=profile.timeout_min, cpus_per_task=profile.cpus_per_task,
                  gpus_per_node=profile.gpus_per_node)
    if profile.mem_gb:
        params["mem_gb"] = profile.mem_gb
    if profile.executor == "slurm":
        extra = dict(profile.sbatch)
        if after:
            extra["dependency"] = "afterany:" + ":".join(after)
        params |= dict(slurm_partition=profile.partition, slurm_account=profile.account, slurm_qos=profile.qos,
                       slurm_constraint=profile.constraint, slurm_signal_delay_s=profile.signal_delay_s,
                       slurm_array_parallelism=profile.array_parallelism, slurm_additional_parameters=extra)
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


@dataclass
class Submission:
    states: list[NodeState]
    jobs: dict[str, submitit.Job]  # node key -> job submitted in this call
    already_active: dict[str, str]  # node key -> job queued or running from an earlier submission
    study_dir: Path

    @property
    def already_complete(self) -> int:
        return len(self.states) - len(self.jobs) - len(self.already_active)


def submit(study: Study, profile: Profile, log=print) -> Submission:
    """Submit every node that is neither complete nor queued; on SLURM return at once, locally wait."""
    prepare(study)
    sdir = study_dir(study, profile)
    folder = sdir / "submitit"
    workdir, cache = str(Path.cwd()), str(cache_dir().resolve())
    active = active_jobs(study, profile)
    stage_of = {n.key: n.stage for n in study_nodes(study)}
    job_ids = dict(active)  # node key -> the job running it: still queued from before, or submitted now
    fresh: set[str] = set()
    jobs: dict[str, submitit.Job] = {}
    for wave in waves():
        states = {s.node.key: s for s in node_states(study, profile, active, fresh)}
        batches = []  # (stage, nodes, the job ids it waits for) of this wave
        for stage in wave:
            todo = [s.node for s in states.values() if s.node.stage == stage and s.status == "todo"]
            if todo:
                after = sorted({_array_id(j) for k, j in job_ids.items() if stage_of[k] in AFTER.get(stage, ())})
                batches.append((stage, todo, after))
        tasks = [[StudyTask(study, profile, n, workdir, cache) for n in todo] for _, todo, _ in batches]
        if profile.executor == "slurm":  # one job array per stage, chained by dependencies, recorded at once
            for stage in wave:
                _wait_also_for_resubmitted(stage, active, job_ids, stage_of, fresh)
            submitted = []
            for (stage, todo, after), t in zip(batches, tasks):
                submitted.append(_submit_array(profile, folder, stage, after, t))
                _record(study, profile, _rows(stage, todo, submitted[-1], profile))
        else:  # the whole wave in one pool of max_parallel workers, waiting for it to end
            finished = iter(_run_locally(profile, folder, [t for ts in tasks for t in ts], log))
            submitted = [[next(finished) for _ in ts] for ts in tasks]
        for (stage, todo, after), subs in zip(batches, submitted):
            jobs.update({n.key: j for n, j in zip(todo, subs)})
            job_ids.update({n.key: j.job_id for n, j in zip(todo, subs)})
            if profile.executor == "local":
                _record(study, profile, _rows(stage, todo, subs, profile))
            fresh.add(stage)
            log(f"{stage}: {len(todo)} job(s) {'submitted' if profile.executor == 'slurm' else 'run'}: "
                f"{', '.join(j.job_id for j in subs)}" + (f" (after {', '.join(after)})" if after else ""))
        if profile.executor == "local":
            fresh.clear()  # local stages have finished before the next wave is looked at
    still_active = job_ids if profile.executor == "slurm" else {}  # local jobs have all ended by now
    return Submission(node_states(study, profile, still_active, fresh), jobs, active, sdir)


def _wait_also_for_resubmitted(stage: str, active: dict[str, str], job_ids: dict[str, str], stage_of: dict[str, str],
                               fresh: set[str]) -> None:
    """Jobs of `stage` still pending from an earlier submission must also wait for what was resubmitted
    now in the stages they wait for (e.g. a failed stage-1 run submitted again while stage 2 is queued)."""
    if not any(s in fresh for s in AFTER.get(stage, ())):
        return
    mine = {k: j for k, j in active.items() if stage_of[k] == stage}
    pending = sorted({_array_id(j) for j, state in slurm_states(list(mine.values())).items() if state == "PENDING"})
    after = sorted({_array_id(j) for k, j in job_ids.items() if stage_of[k] in AFTER[stage]})
    for job in pending:
        subprocess.run(["scontrol", "update", f"JobId={job}", f"Dependency=afterany:{':'.join(after)}"],
                       check=True, capture_output=True, timeout=60)


def prepare(study: Study) -> None:
    """Build what every job reads, once, here (the login node), so jobs never race to build it."""
    from lvjob import data
    from lvjob.models import ensure_tiny_model
    from lvjob.tokenizer import ensure_tokenizer

    data.ensure(study.data)
    ensure_tokenizer()
    if study.model in ("tiny", "tiny-lv"):
        ensure_tiny_model()
    if study.model == "tiny-lv":
        from lvjob.pretrain import ensure_demo_model

        ensure_demo_model(log=lambda m: print(m, flush=True))


def _array_id(job_id: str) -> str:
    return str(job_id).split("_")[0]


def _submit_array(profile: Profile, folder: Path, stage: str, after: list[str], tasks: list[StudyTask]) -> list:
    ex = _executor(profile, folder, stage, after)
    with ex.batch():
        futures = [ex.submit(t) for t in tasks]
    return futures


def _run_locally(profile: Profile, folder: Path, tasks: list[StudyTask], log) -> list:
    """Run `tasks` with at most `max_parallel` at once; return their (finished) jobs in order."""
    ex = _executor(profile, folder, "local", [])
    pending, running, finished = list(tasks), [], []
    while pending or running:
        while pending and len(running) < profile.max_parallel:
            task = pending.pop(0)
            running.append((task, ex.submit(task)))
            log(f"  {task.node.key}: started (pid {running[-1][1].job_id})")
        time.sleep(1)
        for item in [r for r in running if r[1].done()]:
            running.remove(item)
            task, job = item
            finished.append((tasks.index(task), job))
            outcome = "done" if job.state == "FINISHED" and job.exception() is None else f"FAILED ({_first_line(job.exception())})"
            log(f"  {task.node.key}: {outcome}")
    return [job for _, job in sorted(finished, key=lambda x: x[0])]


def _first_line(e) -> str:
    text = str(e).strip().splitlines()
    return text[-1] if text else type(e).__name__


# --- status and cancel -----------------------------------------------------------------------------


def status_rows(study: Study, profile: Profile) -> list[dict]:
    """One row per node: its job, state, progress, loss, FLOPs, requeues and, if it failed, why."""
    from lvjob.aggregate import run_index

    latest = read_submissions(study, profile)
    ids = [r["job_id"] for r in latest.values() if r.get("executor") == "slurm"]
    states = slurm_states(ids) if ids and profile.executor == "slurm" else {}
    rows = []
    for run in run_index(study, profile)["runs"]:
        sub = latest.get(run["node"], {})
        job_state = states.get(sub.get("job_id", ""))
        run_status = "not started" if run["status"] == "missing" else run["status"]
        if run["status"] == "complete" or not job_state:
            state = run_status
        elif job_state in ACTIVE:
            state = job_state.lower()  # pending, running, requeued, ...
        else:
            state = f"{run_status}, job {job_state.lower()}"  # e.g. "not started, job failed"
        failed_job = job_state is not None and job_state not in ACTIVE and job_state != "COMPLETED"
        why = run.get("error") or (_job_error(study, profile, sub.get("job_id")) if failed_job else "")
        rows.append({"node": run["node"], "job": sub.get("job_id", "-"), "state": state,
                     "step": f"{run.get('step') or 0}/{run['steps']}" if run.get("steps") else "-",
                     "loss": f"{run['loss']:.4f}" if run.get("loss") is not None else "-",
                     "flops": f"{run['flops']:.3e}" if run.get("flops") else "-",
                     "requeues": str(max(run.get("attempts", 0) - 1, 0)), "why": why})
    sub = latest.get("aggregate", {})
    job_state = states.get(sub.get("job_id", ""))
    index = Path(profile.results_dir) / "runs.json"
    done = _index_is_complete(study, profile) and job_state in (None, "COMPLETED")
    state = "complete" if done else (job_state or "not started").lower()
    rows.append({"node": "aggregate", "job": sub.get("job_id", "-"), "state": state, "step": "-", "loss": "-",
                 "flops": "-", "requeues": "0", "why": f"writes {index}"})
    return rows


def _job_error(study: Study, profile: Profile, job_id: str | None) -> str:
    """The last line of a job's stderr (e.g. a late-bound stage that could not choose)."""
    if not job_id:
        return ""
    log = study_dir(study, profile) / "submitit" / f"{job_id}_0_log.err"
    try:
        lines = [line for line in log.read_text().splitlines() if line.strip()]
    except OSError:
        return ""
    errors = [line for line in lines if "Error" in line]
    return (errors or lines or [""])[-1].strip()


def format_status(rows: list[dict]) -> str:
    cols = ["node", "job", "state", "step", "loss", "flops", "requeues", "why"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def cancel(study: Study, profile: Profile) -> list[str]:
    """Cancel the study's queued and running SLURM jobs; returns their ids."""
    ids = sorted(set(active_jobs(study, profile).values()))
    if ids:
        subprocess.run(["scancel", *ids], check=True, timeout=60)
    return ids
