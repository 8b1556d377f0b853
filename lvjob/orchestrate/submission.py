"""The study on an executor: what to submit, in which order, and the budget gate (SPEC §7).

One `StudyTask` per node of the study's stage table (lvjob.study.spec) is handed to the profile's
backend (lvjob.cluster.executors): on SLURM every stage is one job array, chained to the stages it
waits for with `afterany` dependencies (through the retry gates of lvjob.orchestrate.tasks), and
everything is submitted at once; locally the same stages run on this machine and `submit` waits
for them. With `pack: study` in the profile the whole study is one GPU job instead, which runs
this same `submit` with the local executor inside its allocation (lvjob.orchestrate.pack). `submit`
refuses a study whose FLOP plan is over its budget, or that fails the pre-flight, before anything
is queued, whoever calls it.

The study's records live in its study folder (lvjob.core.paths.StudyDir): submissions and gates
(lvjob.orchestrate.records), retries (lvjob.orchestrate.retries), packed jobs and their watchers
(lvjob.orchestrate.pack), choices (lvjob.study.choices), the jobs' logs and pickles.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import submitit

from lvjob import data
from lvjob.cluster.executors import Batch, backend
from lvjob.cluster.profile import Profile
from lvjob.core.paths import cache_dir
from lvjob.data.tokenizer import ensure_tokenizer
from lvjob.models.loading import ensure_built_model
from lvjob.models.registry import MODELS
from lvjob.orchestrate import pack, preflight, records
from lvjob.orchestrate.tasks import GateTask, StudyTask, gate_name, needs_gpu, study_backend
from lvjob.results.index import recorded_jobs
from lvjob.run.rundir import RunStatus, summarize
from lvjob.study.choices import job_for, study_dir, study_results
from lvjob.study.plan import Plan, plan_study
from lvjob.study.spec import Study
from lvjob.study.stages import Node, stage_named, stage_table, study_nodes, waits_for


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


class OtherPackingActive(RuntimeError):
    """Jobs of the study submitted with the other packing (`pack: study` or fan-out) are queued or running: a
    submission now would run the same runs beside them. Nothing was submitted."""

    def __init__(self, packing: str, job_ids: list[str]):
        other = "fan-out" if packing == pack.PACK else "packed"
        super().__init__(f"the study's {other} job(s) {', '.join(job_ids)} are still queued or running (this profile: "
                         f"pack: {packing}); wait for them to end, or `lvjob cancel` them, then submit again")
        self.job_ids = job_ids


class UnrecordedJobs(RuntimeError):
    """Jobs of the study are queued or running that its records do not name: submitting now could run their runs a
    second time. Nothing was submitted."""

    def __init__(self, job_ids: list[str]):
        super().__init__(f"job(s) {', '.join(job_ids)} of this study are queued or running but in none of its records "
                         "(a submission killed between sbatch and its record?); `lvjob cancel` them, or wait for them "
                         "to end, then submit again")
        self.job_ids = job_ids


class Need(StrEnum):
    """What a node needs from this submit."""

    COMPLETE = "complete"  # nothing: its run is complete (the aggregation: the index is too)
    ACTIVE = "active"  # nothing yet: a job is queued or running for it
    TODO = "todo"  # a job


@dataclass
class NodeState:
    node: Node
    status: Need


def waves() -> list[list[str]]:
    """The stages grouped so that each group waits only for groups before it."""
    level: dict[str, int] = {}
    for s in stage_table():
        level[s.name] = 1 + max((level[t] for t in waits_for(s)), default=-1)
    return [[s for s in level if level[s] == i] for i in range(max(level.values()) + 1)]


def gated(stage: str) -> bool:
    """A retry gate follows `stage` when another stage waits for it (read from the stage table)."""
    return any(stage in waits_for(s) for s in stage_table())


def allocation_lines(study: Study, profile: Profile, plan: Plan) -> list[str]:
    """`lvjob plan --profile`: allocations in series on each packing's critical path, and the GPU time the plan
    implies at the profile's assumed throughput (the plan charges each run at its most: an upper bound)."""
    jobs = len(study_nodes(study)) + sum(gated(s.name) for s in stage_table())
    minutes = plan.total / (profile.expected_tflops * 1e12) / 60
    packed, fanned = (pack.critical_path(p, waves(), gated) for p in (pack.PACK, "none"))
    mine = {p: " (this profile)" if profile.pack == p else "" for p in (pack.PACK, "none")}
    return [f"packed{mine[pack.PACK]}: {packed} allocation, about {minutes:.1f} min of GPU time at "
            f"{profile.expected_tflops:g} TFLOP/s (expected_tflops), plus a CPU watcher off the critical path",
            f"fan-out{mine['none']}: {fanned} allocations on the critical path, {jobs} jobs in all (runs, retry gates, "
            "the aggregate), each waiting in the queue"]


def node_states(study: Study, profile: Profile, active: dict[str, str], fresh: set[str] = frozenset()) -> list[NodeState]:
    """What each node needs: nothing (complete), nothing yet (active job), or a job (todo).

    `fresh`: stages submitted in this call, whose runs have not started; late-bound nodes after
    them cannot be resolved, and the aggregate must run again.
    """
    states: list[NodeState] = []
    for node in study_nodes(study):
        states.append(NodeState(node, Need.ACTIVE if node.key in active else _need(study, profile, node, states, fresh)))
    return states


def _need(study: Study, profile: Profile, node: Node, before: list[NodeState], fresh: set[str]) -> Need:
    if not node.stage.runs_jobs:  # the aggregation: again unless everything before is complete and indexed
        done = not fresh and all(s.status == Need.COMPLETE for s in before) and index_is_complete(study, profile)
        return Need.COMPLETE if done else Need.TODO
    waits_on_fresh = any(s in fresh for s in waits_for(node.stage))
    job = None if waits_on_fresh else job_for(study, profile, node, at_submission=True)
    complete = job is not None and summarize(job.resolved_run_dir()).status == RunStatus.COMPLETE
    return Need.COMPLETE if complete else Need.TODO


def index_is_complete(study: Study, profile: Profile) -> bool:
    """The run index exists, is this study's (at this scale, with this profile), lists every run as
    complete, and lists the runs the study's nodes are now: a changed setting gives new runs, and an
    index of the old ones must not pass for theirs."""
    try:
        index = json.loads(study_results(study, profile).index.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    runs = index.get("runs", [])
    same_study = (index.get("study"), index.get("scale"), index.get("profile")) == (study.name, study.scale, profile.name)
    all_complete = all(r.get("status") == RunStatus.COMPLETE for r in runs)
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
    packed: bool = False  # jobs: the packed job and its watcher, not nodes

    @property
    def already_complete(self) -> int:
        if self.packed:
            return sum(s.status == Need.COMPLETE for s in self.states)
        return len(self.states) - len(self.jobs) - len(self.already_active)


def check_budget(study: Study) -> Plan:
    """The study's plan; OverBudget if it does not fit (nothing may be submitted then)."""
    plan = plan_study(study)
    if not plan.fits:
        raise OverBudget(plan)
    return plan


def submit(study: Study, profile: Profile, log=print) -> Submission:
    """Submit every node that is neither complete nor queued, if the plan fits; detached backends return
    at once, the local one waits. A packed profile queues the whole study as one job instead
    (lvjob.orchestrate.pack)."""
    plan = check_budget(study)
    problems = preflight.problems(study, profile)
    if problems:
        raise PreflightFailed(problems)
    for caution in preflight.cautions(study, profile):
        log(f"warning: {caution}")
    log(f"plan: {plan.total:.3e} FLOPs, {plan.total / plan.budget:.2%} of the {plan.budget:.0e} budget")
    prepare(study)
    with records.study_lock(study, profile):  # a second submit waits here, then finds these jobs queued
        if busy := other_packing_active(study, profile):
            raise OtherPackingActive(profile.pack, busy)
        if stray := records.unrecorded(study, profile):
            raise UnrecordedJobs(stray)
        if backend(profile).detached:  # a user's submit resumes a cancelled study (not the packed job's own)
            records.clear_cancel(study, profile)
        if profile.pack == pack.PACK:
            return _submit_packed(study, profile, plan, log)
        run = _Submitting(study, profile, log)
        for wave in waves():
            run.wave(wave)
    still_active = run.job_ids if run.backend.detached else {}  # local jobs have all ended by now
    return Submission(node_states(study, profile, still_active, run.fresh), run.jobs, run.active,
                      study_dir(study, profile).root, plan, run.gates)


def other_packing_active(study: Study, profile: Profile) -> list[str]:
    """The study's jobs queued or running under the packing this profile does not use (a packed job and its
    watcher, or fan-out runs and gates). Never any on the local executor: its jobs end with the submit that ran them."""
    if profile.pack == pack.PACK:
        gates = {g for ids in records.active_gates(study, profile).values() for g in ids}
        return sorted(set(records.active_jobs(study, profile).values()) | gates)
    return pack.active_packs(study, profile)


def _submit_packed(study: Study, profile: Profile, plan: Plan, log) -> Submission:
    """The packed job and its watcher, unless one is queued or running already or the study is complete."""
    states, folder = node_states(study, profile, {}), study_dir(study, profile).root
    active = pack.active_packs(study, profile)
    if active or all(s.status == Need.COMPLETE for s in states):
        log(f"{pack.PACK}: " + (f"job(s) {', '.join(active)} still queued or running" if active else "complete"))
        return Submission(states, {}, {pack.PACK: j for j in active[:1]}, folder, plan, packed=True)
    jobs = pack.queue(study, profile, *_where())
    log(f"{pack.PACK}: the whole study as job {jobs[0].job_id}, watched by job {jobs[1].job_id}")
    return Submission(states, {pack.PACK: jobs[0], pack.WATCH: jobs[1]}, {}, folder, plan, packed=True)


def study_complete(study: Study, profile: Profile) -> bool:
    """Every run complete and the run index written for them."""
    return all(s.status == Need.COMPLETE for s in node_states(study, profile, {}))


def _where() -> tuple[str, str]:
    """Where a task runs: the submission's workdir (relative paths mean the same) and its cache."""
    return str(Path.cwd()), str(cache_dir().resolve())


class _Submitting:
    """One `submit` call's state: the jobs and gates known so far, and the stages submitted in it."""

    def __init__(self, study: Study, profile: Profile, log):
        self.study, self.profile, self.log = study, profile, log
        self.backend = study_backend(study, profile)
        self.folder = study_dir(study, profile).submitit
        self.where = _where()
        self.active = records.active_jobs(study, profile)
        self.stage_of = {n.key: n.stage.name for n in study_nodes(study)}
        self.job_ids = dict(self.active)  # node key -> the job running it: queued from before, or submitted now
        self.gate_ids = records.active_gates(study, profile)  # stage -> its gates: queued from before, or submitted now
        self.fresh: set[str] = set()
        self.jobs: dict[str, submitit.Job] = {}
        self.gates: dict[str, submitit.Job] = {}

    def wave(self, wave: list[str]) -> None:
        states = node_states(self.study, self.profile, self.active, self.fresh)
        todo = {stage: [s.node for s in states if s.node.stage.name == stage and s.status == Need.TODO] for stage in wave}
        todo = {stage: nodes for stage, nodes in todo.items() if nodes}
        self.backend.wait_also(self._pending_behind_fresh(wave), {s: self._after(s) for s in wave})
        batches = [Batch(stage, [StudyTask(self.study, self.profile, n, *self.where) for n in nodes], self._after(stage),
                         needs_gpu(stage)) for stage, nodes in todo.items()]

        def record(stage: str, jobs: list) -> None:
            records.record_submissions(self.study, self.profile, stage, todo[stage], jobs)

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
        submitted = self.backend.submit_wave(self.folder, batches, lambda name, jobs: records.record_gates(
            self.study, self.profile, stage_of[name], jobs), self.log)
        for s, (gate,) in zip(stages, submitted):
            self.gates[s] = gate
            self.gate_ids.setdefault(s, []).append(gate.job_id)
            self.log(f"{s}: retry gate {self.backend.verb}: {gate.job_id}")

    def _jobs_of(self, stage: str) -> list[str]:
        return self.backend.dependency_ids([j for k, j in self.job_ids.items() if self.stage_of[k] == stage])

    def _after(self, stage: str) -> list[str]:
        """The jobs `stage` waits for: the gates of its sources, still queued or submitted now."""
        return self.backend.dependency_ids([g for s in waits_for(stage_named(stage)) for g in self.gate_ids.get(s, [])])

    def _pending_behind_fresh(self, wave: list[str]) -> dict[str, list[str]]:
        """Jobs of this wave queued from before whose sources were (re)submitted in this call."""
        behind = [s for s in wave if any(t in self.fresh for t in waits_for(stage_named(s)))]
        return {s: [j for k, j in self.active.items() if self.stage_of[k] == s] for s in behind}

    def _took(self, stage: str, nodes: list[Node], jobs: list, after: list[str]) -> None:
        self.jobs.update({n.key: j for n, j in zip(nodes, jobs)})
        self.job_ids.update({n.key: j.job_id for n, j in zip(nodes, jobs)})
        self.fresh.add(stage)
        self.log(f"{stage}: {len(nodes)} job(s) {self.backend.verb}: {', '.join(j.job_id for j in jobs)}"
                 + (f" (after {', '.join(after)})" if after else ""))


def prepare(study: Study) -> None:
    """Build what every job reads, once, here (the login node), so jobs never race to build it."""
    data.ensure(study.data)
    ensure_tokenizer()
    model = MODELS[study.model]
    if model.built:
        ensure_built_model(study.model)
    if model.demo:
        from lvjob.run.pretrain import ensure_demo_model  # deferred: imports torch

        ensure_demo_model(log=lambda m: print(m, flush=True))


def cancel(study: Study, profile: Profile) -> str:
    """Cancel the study's queued and running jobs; returns what was done, in words."""
    with records.study_lock(study, profile):  # a gate submitting now ends its round first, and its jobs are found
        gates = [g for ids in records.active_gates(study, profile).values() for g in ids] + pack.active_packs(study, profile)
        ids = sorted(records.active_job_ids(study, profile) | set(gates) | set(records.unrecorded(study, profile)))
        if backend(profile).detached:  # a gate or watcher that outlives its cancel (KillWait) submits nothing
            records.record_cancel(study, profile, ids)
        return backend(profile).cancel(ids)
