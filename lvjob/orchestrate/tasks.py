"""What the study's jobs run: a `StudyTask` per node, a `GateTask` after each gated stage (SPEC §7).

Both are pickled by submitit and run on the host: the task process SLURM (or the local executor)
starts. A StudyTask runs its node's job through the runner as a child process (lvjob.cluster.supervise;
inside the image when the profile names one), or, for the aggregation, writes the results here.

Preemption and time limits: SLURM sends USR2 `signal_delay_s` before the end (and on preemption).
The host process forwards the signal, the runner finishes the step, writes a checkpoint and exits
with EXIT_PREEMPTED; the task then hands the signal to submitit's own handler, which requeues the
job from the host (counting time-outs against `max_num_timeout`), so the image needs no SLURM
client. The requeued job runs the same task again, and the runner resumes from the checkpoint. A
job killed without warning restarts from its last periodic checkpoint the same way, when SLURM
requeues it (a site's RequeueExit) or a retry gate submits it again.

Retry gates: every stage that another stage waits for is followed by a gate, a short CPU-only job
`afterany` on the stage's jobs; the stages waiting for it wait for its gate instead. The gate
submits again the runs that ended incomplete but were not cancelled (lvjob.orchestrate.retries, up
to `max_retries` per run), and on SLURM then queues a gate after those jobs and makes the waiting
stages' queued jobs wait for it too. So a stage starts only when every run it waits for is
complete or out of retries. Locally the gate runs after its stage's wave and waits for the runs it
retries, with the same policy. A gate is an optimisation, not what a choice's correctness rests on:
a late-bound stage that starts checks its source stage for itself and, if a run would still be
retried or is still queued (a gate died), fails naming it instead of choosing from the rest.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import submitit
import yaml

from lvjob.cluster.executors import Batch, backend
from lvjob.cluster.profile import Profile, ready_file, runner_command, runner_env, stall_rule
from lvjob.cluster.slurm import ACTIVE
from lvjob.cluster.supervise import Ended, Watchdog, supervise
from lvjob.core import atomic
from lvjob.core.config import ConfigError, build, to_dict
from lvjob.core.paths import RunDir
from lvjob.orchestrate import records, retries
from lvjob.results.aggregate import write_results
from lvjob.results.index import run_index
from lvjob.results.plots import plot_results
from lvjob.run.rundir import read_status, summarize
from lvjob.run.runner import EXIT_PREEMPTED
from lvjob.study.choices import StageError, job_for, read_choice, study_dir
from lvjob.study.spec import Study, study_from_settings
from lvjob.study.stages import Node, stage_named, stage_table, study_nodes, waits_for


class RunnerFailed(Exception):
    """The runner (the job's child process) failed; its own error, from run.json, when it wrote one.

    Named without "Error" on purpose: `lvjob status` shows a failed job's last error line, and that
    should be the runner's (e.g. its traceback in the same log), not this wrapper's.
    """

    def __init__(self, node: str, code: int, error: str | None):
        why = f": {error}" if error else " (its traceback is above in this log)"
        super().__init__(f"{node}: the runner exited with {code}{why}")


def enter_workdir(workdir: str, cache: str, profile: Profile) -> None:
    """Run a task where it was submitted (relative paths mean the same), with the submission's cache."""
    os.chdir(workdir)
    os.environ.update({"LVJOB_CACHE": cache, "HF_HUB_OFFLINE": "1", **profile.env})


def study_backend(study: Study, profile: Profile):
    """The profile's backend, naming the study's jobs."""
    return backend(profile, f"{study.name}-{study.scale}")


def gate_name(stage: str) -> str:
    return f"{stage}-gate"


def needs_gpu(stage: str) -> bool:
    """Whether `stage`'s jobs ask for the profile's GPUs: the aggregation gathers on a CPU."""
    s = stage_named(stage)
    return s.gpu and s.runs_jobs


class PlainPickle:
    """A task pickled as plain data: the study's and the profile's settings as dicts, its node as its key. Rebuilt
    and checked when the job starts, so a job queued (or requeued) across a code change still loads: a setting
    added since takes its default, and one the code no longer knows fails the job with one line naming it."""

    def __getstate__(self) -> dict:
        state = self.__dict__ | {"study": to_dict(self.study), "profile": to_dict(self.profile)}
        return state | ({"node": self.node.key} if "node" in state else {})

    def __setstate__(self, state: dict) -> None:
        where = "the settings this job was submitted with"
        study = study_from_settings(state["study"], where=f"{where} (study)")
        self.__dict__.update(state | {"study": study, "profile": build(Profile, state["profile"], f"{where} (profile)")})
        if "node" in state:
            self.node = _node(study, state["node"])


def _node(study: Study, key: str) -> Node:
    nodes = {n.key: n for n in study_nodes(study)}
    if key not in nodes:
        raise ConfigError(f"the study this job was submitted with has no node {key!r} now; its nodes: {', '.join(nodes)}")
    return nodes[key]


class StudyTask(PlainPickle, submitit.helpers.Checkpointable):
    """What one job of the study runs. Pickled by submitit (as plain data); lives in the package so jobs can import it."""

    def __init__(self, study: Study, profile: Profile, node: Node, workdir: str, cache: str):
        self.study, self.profile, self.node, self.workdir, self.cache = study, profile, node, workdir, cache

    @property
    def name(self) -> str:
        return self.node.key

    def __call__(self) -> dict:
        enter_workdir(self.workdir, self.cache, self.profile)
        if not self.node.stage.runs_jobs:  # the aggregation, on the host
            out = write_results(self.study, self.profile)
            plot_results(out)
            return {"results": str(out)}
        self._refuse_unsettled_sources()
        job = job_for(self.study, self.profile, self.node)
        ended = self._run_child(job)
        if ended.stalled_s is not None:
            print(f"{self.node.key}: hung (silent {ended.stalled_s:.0f} s), killed by the watchdog: a crash", flush=True)
        if ended.code < 0:  # the runner was killed (OOM killer, kill -9): the job ends as it would have
            os._exit(128 - ended.code)  # 137 for SIGKILL, which a site's RequeueExit may requeue
        if ended.code == EXIT_PREEMPTED:
            self._requeue(job, ended)
        if ended.code != 0:
            raise RunnerFailed(self.node.key, ended.code, read_status(job.resolved_run_dir()).get("error"))
        return summarize(job.resolved_run_dir()).to_dict()

    def _refuse_unsettled_sources(self) -> None:
        """A late-bound stage about to choose checks its source stage is settled, as its gate would leave it: every
        run complete, cancelled by its user or out of retries. Else the gate died (or a retried run lets this job
        start early): it fails saying which runs, rather than choose from a subset."""
        rule = self.node.stage.choice
        if rule is None or read_choice(self.study, self.profile, self.node.stage.name) is not None:
            return
        due, active = GateTask(self.study, self.profile, rule.source, self.workdir, self.cache).look()
        missing = [f"{r.node} would be retried ({r.why})" for r in due] + [f"job {j} is still queued or running" for j in active]
        if missing:
            raise StageError(f"{self.node.stage.name} cannot choose: its {rule.source} runs are not settled (did their "
                             f"gate die?): {'; '.join(missing)}. Submit the study again to retry them.")

    def _run_child(self, job) -> Ended:
        """The runner as a child process (inside the image when the profile names one), signals forwarded."""
        spec = study_dir(self.study, self.profile).job_spec(self.node.key)
        atomic.write_text(spec, yaml.safe_dump(to_dict(job), sort_keys=False))
        workdir, cache = Path(self.workdir), Path(self.cache)
        env = os.environ | runner_env(self.profile, cache)
        watchdog = Watchdog(RunDir(job.resolved_run_dir()).heartbeat, stall_rule(self.profile))
        return supervise(runner_command(self.profile, workdir, cache, spec.absolute()), env=env,
                         ready=ready_file(spec.absolute()), watchdog=watchdog)

    def _requeue(self, job, ended: Ended) -> None:
        """Checkpointed on request: after USR2 (preemption, time limit ahead) submitit requeues from the host."""
        handler = signal.getsignal(signal.SIGUSR2)
        if ended.stopped_by(signal.SIGUSR2) and callable(handler):
            handler(signal.SIGUSR2, None)  # submitit's: requeue this task (scontrol, here on the host), then exit
        stopped_by = read_status(job.resolved_run_dir()).get("signal")
        raise RuntimeError(f"{self.node.key}: stopped by {stopped_by} after a checkpoint; not requeued")


class GateTask(PlainPickle, submitit.helpers.Checkpointable):
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
        enter_workdir(self.workdir, self.cache, self.profile)
        rounds = [self.retry_round()]
        while rounds[-1] and not self._backend().detached:  # local: the retried runs have ended; look again
            rounds.append(self.retry_round())
        retried = [node for r in rounds for node in r]
        print(f"{self.name}: {len(retried)} run(s) retried", flush=True)
        return {"stage": self.stage, "retried": retried}

    def retry_round(self) -> list[str]:
        """Resubmit the runs due; on SLURM a gate then follows them and any run still queued or running (a
        requeued job may have let this gate start early). The nodes retried."""
        with records.study_lock(self.study, self.profile):
            if self._backend().detached and (at := records.cancelled_at(self.study, self.profile)):
                print(f"{self.name}: the study was cancelled at {at} (lvjob cancel); nothing retried", flush=True)
                return []
            due, active = self.look()
            jobs = self.resubmit(due) if due else []
            follow = [j.job_id for j in jobs] + active
            if follow and self._backend().detached:
                self.gate_after(follow)
        return [r.node for r in due]

    def _backend(self):
        return study_backend(self.study, self.profile)

    def look(self) -> tuple[list[retries.Retry], list[str]]:
        """The stage's runs to retry now, and the jobs of its incomplete runs still queued or running (a complete
        run's job requeued after it finished changes nothing)."""
        runs = [r for r in run_index(self.study, self.profile).of_stage(self.stage) if not r.complete]
        subs = records.on_executor(records.read_submissions(self.study, self.profile), self.profile)
        latest = {r.node: subs[r.node]["job_id"] for r in runs if r.node in subs}
        states = self._backend().states(list(latest.values()), settle=True)
        due = retries.due(runs, {k: subs[k] for k in latest}, states, retries.used(self.study, self.profile),
                          self.profile.max_retries)
        return due, [j for j in latest.values() if states.get(j) in ACTIVE]

    def resubmit(self, due: list[retries.Retry]) -> list:
        """Submit the runs again (no dependency: their sources have ended); recorded as submissions and retries."""
        by_key = {n.key: n for n in study_nodes(self.study)}
        nodes = [by_key[r.node] for r in due]
        for r in due:
            print(f"{self.name}: retrying {r.node}: {r.why}", flush=True)

        def record(stage: str, jobs: list) -> None:
            records.record_submissions(self.study, self.profile, stage, nodes, jobs)
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
        b.submit_wave(self._folder(), [gate], lambda _, g: records.record_gates(self.study, self.profile, self.stage, g), print)
        waiting = [s for s in stage_table() if self.stage in waits_for(s)]
        gates = records.active_gates(self.study, self.profile)
        latest = records.on_executor(records.read_submissions(self.study, self.profile), self.profile).values()
        pending = {s.name: [r["job_id"] for r in latest if r["stage"] == s.name] for s in waiting}
        b.wait_also(pending, {s.name: b.dependency_ids([g for t in waits_for(s) for g in gates.get(t, [])])
                              for s in waiting})

    def _folder(self) -> Path:
        return study_dir(self.study, self.profile).submitit
