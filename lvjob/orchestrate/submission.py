"""The study on an executor: what to submit, in which order, and the budget gate (SPEC §7).

One `StudyTask` per node of the study's stage table (lvjob.study.spec) is handed to the profile's
backend (lvjob.cluster.executors): on SLURM every stage is one job array, chained to the stages it waits for
with `afterany` dependencies, and everything is submitted at once; locally the same stages run on
this machine and `submit` waits for them. `submit` refuses a study whose FLOP plan is over its
budget before anything is queued, whoever calls it.

Preemption and time limits: SLURM sends USR2 `signal_delay_s` before the end (and on preemption).
The task runs on the host and the runner as its child (lvjob.cluster.supervise; inside the image when the
profile names one): the host process forwards the signal, the runner finishes the step, writes a
checkpoint and exits with EXIT_PREEMPTED; the task then hands the signal to submitit's own
handler, which requeues the job from the host (counting time-outs against `max_num_timeout`), so
the image needs no SLURM client. The requeued job runs the same task again, and the runner resumes from the
checkpoint. A job killed without warning restarts from its last periodic checkpoint the same way,
when SLURM requeues it (a site's RequeueExit) or a retry gate submits it again.

Retry gates: every stage that another stage waits for (lvjob.study.spec.waits_for, so every stage that
runs jobs: the aggregation waits for all) is followed by a gate, a short CPU-only job `afterany` on
the stage's jobs; the stages waiting for it wait for its gate instead. The gate submits again the
runs that ended incomplete but were not cancelled (lvjob.orchestrate.retries, up to `max_retries` per run), and
on SLURM then queues a gate after those jobs and makes the waiting stages' queued jobs wait for it
too. So a stage starts only when every run it waits for is complete or out of retries. Locally the
gate runs after its stage's wave and waits for the runs it retries, with the same policy.

The study's records (`<runs_root>/study-.../`): `submissions.jsonl` (every job submitted, by
node), `gates.jsonl` (every gate, by stage), `retries.jsonl` (every retry and why),
`choices/` (what stage 2 and the final run chose), `submitit/` (logs and pickles).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import submitit
import yaml

from lvjob.core import atomic
from lvjob import data
from lvjob.orchestrate import preflight
from lvjob.orchestrate import retries
from lvjob.core.config import to_dict
from lvjob.results.aggregate import recorded_jobs, run_index, write_results
from lvjob.cluster.executors import Batch, backend
from lvjob.run.ledger import read_jsonl
from lvjob.models.loading import ensure_tiny_model
from lvjob.core.paths import cache_dir
from lvjob.study.plan import Plan, plan_study
from lvjob.results.plots import plot_results
from lvjob.cluster.profile import Profile, runner_command, runner_env
from lvjob.run.rundir import summarize
from lvjob.run.runner import EXIT_PREEMPTED, read_status
from lvjob.cluster.slurm import ACTIVE
from lvjob.study.choices import job_for, study_dir
from lvjob.cluster.supervise import Ended, supervise
from lvjob.study.spec import Node, Study, stage_table, study_nodes, waits_for
from lvjob.study.spec import stage as entry
from lvjob.data.tokenizer import ensure_tokenizer


class RunnerFailed(Exception):
    """The runner (the job's child process) failed; its own error, from run.json, when it wrote one.

    Named without "Error" on purpose: `lvjob status` shows a failed job's last error line, and that
    should be the runner's (e.g. its traceback in the same log), not this wrapper's.
    """

    def __init__(self, node: str, code: int, error: str | None):
        why = f": {error}" if error else " (its traceback is above in this log)"
        super().__init__(f"{node}: the runner exited with {code}{why}")


class PreflightFailed(RuntimeError):
    """The pre-flight found problems (lvjob.orchestrate.preflight): nothing was submitted."""

    def __init__(self, problems: list[str]):
        super().__init__("pre-flight: " + "; ".join(problems))
        self.problems = problems


class OverBudget(RuntimeError):
    """The study's FLOP plan is over its budget: nothing was submitted."""

    def __init__(self, plan: Plan):
        super().__init__(f"the plan ({plan.total:.3e} FLOPs) is over the budget ({plan.budget:.3e}); nothing submitted")
        self.plan = plan


class StudyTask(submitit.helpers.Checkpointable):
    """What one job of the study runs. Pickled by submitit; lives in the package so jobs can import it."""

    def __init__(self, study: Study, profile: Profile, node: Node, workdir: str, cache: str):
        self.study, self.profile, self.node, self.workdir, self.cache = study, profile, node, workdir, cache

    @property
    def name(self) -> str:
        return self.node.key

    def __call__(self) -> dict:
        _enter(self.workdir, self.cache, self.profile)
        if not entry(self.node.stage).runs_jobs:  # the aggregation, on the host
            out = write_results(self.study, self.profile)
            plot_results(out)
            return {"results": str(out)}
        job = job_for(self.study, self.profile, self.node)
        ended = self._run_child(job)
        if ended.code < 0:  # the runner was killed (OOM killer, kill -9): the job ends as it would have
            os._exit(128 - ended.code)  # 137 for SIGKILL, which a site's RequeueExit may requeue
        if ended.code == EXIT_PREEMPTED:
            self._requeue(job, ended)
        if ended.code != 0:
            raise RunnerFailed(self.node.key, ended.code, read_status(job.resolved_run_dir()).get("error"))
        return summarize(job.resolved_run_dir()).to_dict()

    def _run_child(self, job) -> Ended:
        """The runner as a child process (inside the image when the profile names one), signals forwarded."""
        spec = study_dir(self.study, self.profile) / "jobs" / f"{self.node.key}.yaml"
        atomic.write_text(spec, yaml.safe_dump(to_dict(job), sort_keys=False))
        workdir, cache = Path(self.workdir), Path(self.cache)
        env = os.environ | runner_env(self.profile, cache)
        return supervise(runner_command(self.profile, workdir, cache, spec.absolute()), env=env)

    def _requeue(self, job, ended: Ended) -> None:
        """Checkpointed on request: after USR2 (preemption, time limit ahead) submitit requeues from the host."""
        handler = signal.getsignal(signal.SIGUSR2)
        if ended.stopped_by(signal.SIGUSR2) and callable(handler):
            handler(signal.SIGUSR2, None)  # submitit's: requeue this task (scontrol, here on the host), then exit
        stopped_by = read_status(job.resolved_run_dir()).get("signal")
        raise RuntimeError(f"{self.node.key}: stopped by {stopped_by} after a checkpoint; not requeued")


# --- submission ------------------------------------------------------------------------------------


@dataclass
class NodeState:
    node: Node
    status: str  # complete | active (a job is queued or running for it) | todo


def waves() -> list[list[str]]:
    """The stages grouped so that each group waits only for groups before it."""
    level: dict[str, int] = {}
    for s in stage_table():
        level[s.name] = 1 + max((level[t] for t in waits_for(s)), default=-1)
    return [[s for s in level if level[s] == i] for i in range(max(level.values()) + 1)]


def _records_path(study: Study, profile: Profile) -> Path:
    return study_dir(study, profile) / "submissions.jsonl"


def _enter(workdir: str, cache: str, profile: Profile) -> None:
    """Run a task where it was submitted (relative paths mean the same), with the submission's cache."""
    os.chdir(workdir)
    os.environ.update({"LVJOB_CACHE": cache, "HF_HUB_OFFLINE": "1", **profile.env})


def study_backend(study: Study, profile: Profile):
    """The profile's backend, naming the study's jobs."""
    return backend(profile, f"{study.name}-{study.scale}")


def submitit_folder(study: Study, profile: Profile) -> Path:
    return study_dir(study, profile) / "submitit"


def read_submissions(study: Study, profile: Profile) -> dict[str, dict]:
    """The latest submission of each node: {node key: {"job_id", "executor", "at"}}."""
    return {row["node"]: row for row in read_jsonl(_records_path(study, profile))}


def on_executor(submissions: dict[str, dict], profile: Profile) -> dict[str, dict]:
    """The submissions made with the profile's executor: the only job ids its backend can look up."""
    return {k: r for k, r in submissions.items() if r.get("executor") == profile.executor}


def _record(study: Study, profile: Profile, rows: list[dict]) -> None:
    atomic.append_jsonl(_records_path(study, profile), rows)


def _gates_path(study: Study, profile: Profile) -> Path:
    return study_dir(study, profile) / "gates.jsonl"


def _record_gates(study: Study, profile: Profile, stage: str, jobs: list) -> None:
    at = time.strftime("%Y-%m-%dT%H:%M:%S")
    atomic.append_jsonl(_gates_path(study, profile),
                        [{"stage": stage, "job_id": j.job_id, "executor": profile.executor, "at": at} for j in jobs])


def active_gates(study: Study, profile: Profile) -> dict[str, list[str]]:
    """{stage: its gates queued or running now}."""
    rows = [r for r in read_jsonl(_gates_path(study, profile)) if r.get("executor") == profile.executor]
    active = backend(profile).active([r["job_id"] for r in rows])
    out: dict[str, list[str]] = {}
    for r in (r for r in rows if r["job_id"] in active):
        out.setdefault(r["stage"], []).append(r["job_id"])
    return out


def gated(stage: str) -> bool:
    """A retry gate follows `stage` when another stage waits for it (read from the stage table)."""
    return any(stage in waits_for(s) for s in stage_table())


def needs_gpu(stage: str) -> bool:
    """Whether `stage`'s jobs ask for the profile's GPUs: the aggregation gathers on a CPU."""
    return entry(stage).gpu and entry(stage).runs_jobs


def gate_name(stage: str) -> str:
    return f"{stage}-gate"


def active_jobs(study: Study, profile: Profile) -> dict[str, str]:
    """{node key: job id} of the study's jobs that are queued or running now."""
    latest = on_executor(read_submissions(study, profile), profile)
    active = backend(profile).active([r["job_id"] for r in latest.values()])
    return {k: r["job_id"] for k, r in latest.items() if r["job_id"] in active}


def node_states(study: Study, profile: Profile, active: dict[str, str], fresh: set[str] = frozenset()) -> list[NodeState]:
    """What each node needs: nothing (complete), nothing yet (active job), or a job (todo).

    `fresh`: stages submitted in this call, whose runs have not started; late-bound nodes after
    them cannot be resolved, and the aggregate must run again.
    """
    states: list[NodeState] = []
    for node in study_nodes(study):
        states.append(NodeState(node, "active" if node.key in active else _need(study, profile, node, states, fresh)))
    return states


def _need(study: Study, profile: Profile, node: Node, before: list[NodeState], fresh: set[str]) -> str:
    if not entry(node.stage).runs_jobs:  # the aggregation: again unless everything before is complete and indexed
        done = not fresh and all(s.status == "complete" for s in before) and index_is_complete(study, profile)
        return "complete" if done else "todo"
    waits_on_fresh = any(s in fresh for s in waits_for(entry(node.stage)))
    job = None if waits_on_fresh else job_for(study, profile, node, at_submission=True)
    if job is None:
        return "todo"
    return "complete" if summarize(job.resolved_run_dir()).status == "complete" else "todo"


def _rows(stage: str, nodes: list[Node], jobs: list, profile: Profile) -> list[dict]:
    at = time.strftime("%Y-%m-%dT%H:%M:%S")
    return [{"node": n.key, "stage": stage, "job_id": j.job_id, "executor": profile.executor, "at": at}
            for n, j in zip(nodes, jobs)]


def index_is_complete(study: Study, profile: Profile) -> bool:
    """The run index exists, is this study's (at this scale, with this profile), lists every run as
    complete, and lists the runs the study's nodes are now: a changed setting gives new runs, and an
    index of the old ones must not pass for theirs."""
    try:
        index = json.loads((Path(profile.results_dir) / "runs.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    runs = index.get("runs", [])
    same_study = (index.get("study"), index.get("scale"), index.get("profile")) == (study.name, study.scale, profile.name)
    all_complete = all(r.get("status") == "complete" for r in runs)
    return same_study and all_complete and [r.get("run_id") for r in runs] == run_ids(study, profile)


def run_ids(study: Study, profile: Profile) -> list[str | None]:
    """The run id of every node's job as the study stands now (None: a late-bound node not started)."""
    return [job.run_id() if job else None for _, job in recorded_jobs(study, profile)]


@dataclass
class Submission:
    states: list[NodeState]
    jobs: dict[str, submitit.Job]  # node key -> job submitted in this call
    already_active: dict[str, str]  # node key -> job queued or running from an earlier submission
    study_dir: Path
    plan: Plan
    gates: dict[str, submitit.Job] = field(default_factory=dict)  # stage -> its retry gate submitted in this call

    @property
    def already_complete(self) -> int:
        return len(self.states) - len(self.jobs) - len(self.already_active)


def check_budget(study: Study) -> Plan:
    """The study's plan; OverBudget if it does not fit (nothing may be submitted then)."""
    plan = plan_study(study)
    if not plan.fits:
        raise OverBudget(plan)
    return plan


def submit(study: Study, profile: Profile, log=print) -> Submission:
    """Submit every node that is neither complete nor queued, if the plan fits; detached backends return
    at once, the local one waits."""
    plan = check_budget(study)
    problems = preflight.problems(study, profile)
    if problems:
        raise PreflightFailed(problems)
    log(f"plan: {plan.total:.3e} FLOPs, {plan.total / plan.budget:.2%} of the {plan.budget:.0e} budget")
    prepare(study)
    run = _Submitting(study, profile, log)
    for wave in waves():
        run.wave(wave)
    still_active = run.job_ids if run.backend.detached else {}  # local jobs have all ended by now
    return Submission(node_states(study, profile, still_active, run.fresh), run.jobs, run.active,
                      study_dir(study, profile), plan, run.gates)


class _Submitting:
    """One `submit` call's state: the jobs and gates known so far, and the stages submitted in it."""

    def __init__(self, study: Study, profile: Profile, log):
        self.study, self.profile, self.log = study, profile, log
        self.backend = study_backend(study, profile)
        self.folder = submitit_folder(study, profile)
        self.where = (str(Path.cwd()), str(cache_dir().resolve()))  # the tasks' workdir and cache
        self.active = active_jobs(study, profile)
        self.stage_of = {n.key: n.stage for n in study_nodes(study)}
        self.job_ids = dict(self.active)  # node key -> the job running it: queued from before, or submitted now
        self.gate_ids = active_gates(study, profile)  # stage -> its gates: queued from before, or submitted now
        self.fresh: set[str] = set()
        self.jobs: dict[str, submitit.Job] = {}
        self.gates: dict[str, submitit.Job] = {}

    def wave(self, wave: list[str]) -> None:
        states = node_states(self.study, self.profile, self.active, self.fresh)
        todo = {stage: [s.node for s in states if s.node.stage == stage and s.status == "todo"] for stage in wave}
        todo = {stage: nodes for stage, nodes in todo.items() if nodes}
        self.backend.wait_also(self._pending_behind_fresh(wave), {s: self._after(s) for s in wave})
        batches = [Batch(stage, [StudyTask(self.study, self.profile, n, *self.where) for n in nodes], self._after(stage),
                         needs_gpu(stage)) for stage, nodes in todo.items()]

        def record(stage: str, jobs: list) -> None:
            _record(self.study, self.profile, _rows(stage, todo[stage], jobs, self.profile))

        submitted = self.backend.submit_wave(self.folder, batches, record, self.log)
        for b, jobs in zip(batches, submitted):
            self._took(b.stage, todo[b.stage], jobs, b.after)
        self._gate(wave)
        if not self.backend.detached:
            self.fresh.clear()  # these stages (and their retries) have finished before the next wave is looked at

    def _gate(self, wave: list[str]) -> None:
        """A retry gate after each stage of the wave submitted now, or queued from before without one."""
        stages = [s for s in wave if gated(s) and (s in self.fresh or (self._jobs_of(s) and not self.gate_ids.get(s)))]
        batches = [Batch(gate_name(s), [GateTask(self.study, self.profile, s, *self.where)], self._jobs_of(s), gpu=False)
                   for s in stages]
        stage_of = {gate_name(s): s for s in stages}
        submitted = self.backend.submit_wave(self.folder, batches, lambda name, jobs: _record_gates(
            self.study, self.profile, stage_of[name], jobs), self.log)
        for s, (gate,) in zip(stages, submitted):
            self.gates[s] = gate
            self.gate_ids.setdefault(s, []).append(gate.job_id)
            self.log(f"{s}: retry gate {self.backend.verb}: {gate.job_id}")

    def _jobs_of(self, stage: str) -> list[str]:
        return self.backend.dependency_ids([j for k, j in self.job_ids.items() if self.stage_of[k] == stage])

    def _after(self, stage: str) -> list[str]:
        """The jobs `stage` waits for: the gates of its sources, still queued or submitted now."""
        return self.backend.dependency_ids([g for s in waits_for(entry(stage)) for g in self.gate_ids.get(s, [])])

    def _pending_behind_fresh(self, wave: list[str]) -> dict[str, list[str]]:
        """Jobs of this wave queued from before whose sources were (re)submitted in this call."""
        behind = [s for s in wave if any(t in self.fresh for t in waits_for(entry(s)))]
        return {s: [j for k, j in self.active.items() if self.stage_of[k] == s] for s in behind}

    def _took(self, stage: str, nodes: list[Node], jobs: list, after: list[str]) -> None:
        self.jobs.update({n.key: j for n, j in zip(nodes, jobs)})
        self.job_ids.update({n.key: j.job_id for n, j in zip(nodes, jobs)})
        self.fresh.add(stage)
        self.log(f"{stage}: {len(nodes)} job(s) {self.backend.verb}: {', '.join(j.job_id for j in jobs)}"
                 + (f" (after {', '.join(after)})" if after else ""))


class GateTask(submitit.helpers.Checkpointable):
    """The retry gate after one stage (see the module's docstring): what its short CPU-only job runs.

    Run again (requeued) it decides again from the records: a run already resubmitted has an active
    job and is left alone.
    """

    def __init__(self, study: Study, profile: Profile, stage: str, workdir: str, cache: str):
        self.study, self.profile, self.stage, self.workdir, self.cache = study, profile, stage, workdir, cache

    @property
    def name(self) -> str:
        return gate_name(self.stage)

    def __call__(self) -> dict:
        _enter(self.workdir, self.cache, self.profile)
        rounds = [self.retry_round()]
        while rounds[-1] and not self._backend().detached:  # local: the retried runs have ended; look again
            rounds.append(self.retry_round())
        retried = [node for r in rounds for node in r]
        print(f"{self.name}: {len(retried)} run(s) retried", flush=True)
        return {"stage": self.stage, "retried": retried}

    def retry_round(self) -> list[str]:
        """Resubmit the runs due; on SLURM a gate then follows them and any run still queued or running (a
        requeued job may have let this gate start early). The nodes retried."""
        due, active = self.look()
        jobs = self.resubmit(due) if due else []
        follow = [j.job_id for j in jobs] + active
        if follow and self._backend().detached:
            self.gate_after(follow)
        return [r.node for r in due]

    def _backend(self):
        return study_backend(self.study, self.profile)

    def look(self) -> tuple[list[retries.Retry], list[str]]:
        """The stage's runs to retry now, and the jobs of its runs still queued or running."""
        runs = [r for r in run_index(self.study, self.profile)["runs"] if r["stage"] == self.stage]
        subs = on_executor(read_submissions(self.study, self.profile), self.profile)
        latest = {r["node"]: subs[r["node"]]["job_id"] for r in runs if r["node"] in subs}
        states = self._backend().states(list(latest.values()))
        due = retries.due(runs, {k: {"job_id": j} for k, j in latest.items()}, states,
                          retries.used(self.study, self.profile), self.profile.max_retries)
        return due, [j for j in latest.values() if states.get(j) in ACTIVE]

    def resubmit(self, due: list[retries.Retry]) -> list:
        """Submit the runs again (no dependency: their sources have ended); recorded as submissions and retries."""
        by_key = {n.key: n for n in study_nodes(self.study)}
        nodes = [by_key[r.node] for r in due]
        for r in due:
            print(f"{self.name}: retrying {r.node}: {r.why}", flush=True)

        def record(stage: str, jobs: list) -> None:
            _record(self.study, self.profile, _rows(stage, nodes, jobs, self.profile))
            retries.record(self.study, self.profile, due, jobs)

        batch = Batch(self.stage, [StudyTask(self.study, self.profile, n, self.workdir, self.cache) for n in nodes], [],
                      needs_gpu(self.stage))
        (jobs,) = self._backend().submit_wave(self._folder(), [batch], record, print)
        return jobs

    def gate_after(self, job_ids: list[str]) -> None:
        """A gate after `job_ids` (each array task by itself); the queued jobs of the stages waiting for this one
        wait for it too."""
        b = self._backend()
        gate = Batch(self.name, [GateTask(self.study, self.profile, self.stage, self.workdir, self.cache)],
                     sorted(set(job_ids)), gpu=False)
        with _gates_lock(self.study, self.profile):  # one gate at a time re-points a stage waiting for several
            b.submit_wave(self._folder(), [gate], lambda _, g: _record_gates(self.study, self.profile, self.stage, g), print)
            waiting = [s for s in stage_table() if self.stage in waits_for(s)]
            gates = active_gates(self.study, self.profile)
            latest = on_executor(read_submissions(self.study, self.profile), self.profile).values()
            pending = {s.name: [r["job_id"] for r in latest if r["stage"] == s.name] for s in waiting}
            b.wait_also(pending, {s.name: b.dependency_ids([g for t in waits_for(s) for g in gates.get(t, [])])
                                  for s in waiting})

    def _folder(self) -> Path:
        return submitit_folder(self.study, self.profile)


@contextmanager
def _gates_lock(study: Study, profile: Profile):
    """Held while a gate re-points the waiting stages, so two gates cannot drop each other's successor."""
    with open(study_dir(study, profile) / "gates.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError:  # a filesystem without flock: the race it guards is a moment wide, go on
            pass
        yield


def prepare(study: Study) -> None:
    """Build what every job reads, once, here (the login node), so jobs never race to build it."""
    data.ensure(study.data)
    ensure_tokenizer()
    if study.model in ("tiny", "tiny-lv"):
        ensure_tiny_model()
    if study.model == "tiny-lv":
        from lvjob.run.pretrain import ensure_demo_model  # deferred: imports torch

        ensure_demo_model(log=lambda m: print(m, flush=True))


def cancel(study: Study, profile: Profile) -> str:
    """Cancel the study's queued and running jobs; returns what was done, in words."""
    gates = [g for ids in active_gates(study, profile).values() for g in ids]
    return backend(profile).cancel(sorted(set(active_jobs(study, profile).values()) | set(gates)))
