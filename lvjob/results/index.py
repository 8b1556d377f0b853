"""The run index: one typed entry per run of the study, and the choices its late-bound stages recorded.

Built from the run directories (lvjob.run.rundir.summarize) and the study's choice records; the
tables, the summary, `lvjob status` and the retry policy read it as `RunIndex`. It becomes JSON
only where it is written (results/runs.json) and is parsed back where that file is read (plots).
"""

from __future__ import annotations

from dataclasses import dataclass

from lvjob.cluster.profile import Profile
from lvjob.run.rundir import RunStatus, RunSummary, summarize
from lvjob.study.choices import Choice, job_for, make_job, read_choice
from lvjob.study.spec import Study
from lvjob.study.stages import Node, stage_table, study_nodes


@dataclass(frozen=True)
class IndexEntry:
    """One node of the study that runs a job, and what its run directory says."""

    node: str  # the node's key, e.g. stage1-r8-lr0.01
    stage: str
    label: str | None  # its row label in Table 3, if it has one
    run_id: str | None  # None: a late-bound node that has not chosen its configuration yet
    run: RunSummary

    @property
    def complete(self) -> bool:
        return self.run.complete

    def to_json(self) -> dict:
        """Flat, as runs.json has it: the node's identity beside the run's summary."""
        return {"node": self.node, "stage": self.stage, "label": self.label, "run_id": self.run_id} | self.run.to_dict()

    @classmethod
    def from_json(cls, row: dict) -> IndexEntry:
        return cls(node=row["node"], stage=row["stage"], label=row.get("label"), run_id=row.get("run_id"),
                   run=RunSummary.from_dict(row))


@dataclass(frozen=True)
class RunIndex:
    study: str
    scale: str
    model: str
    profile: str
    runs: tuple[IndexEntry, ...]
    choices: dict[str, Choice | None]  # late-bound stage -> the choice it recorded when it started

    def of_stage(self, *stages: str) -> list[IndexEntry]:
        return [r for r in self.runs if r.stage in stages]

    def by_node(self) -> dict[str, IndexEntry]:
        return {r.node: r for r in self.runs}

    def to_json(self) -> dict:
        return {"study": self.study, "scale": self.scale, "model": self.model, "profile": self.profile,
                "runs": [r.to_json() for r in self.runs],
                "choices": {stage: c.to_dict() if c else None for stage, c in self.choices.items()}}

    @classmethod
    def from_json(cls, data: dict) -> RunIndex:
        return cls(study=data["study"], scale=data["scale"], model=data["model"], profile=data["profile"],
                   runs=tuple(map(IndexEntry.from_json, data["runs"])),
                   choices={stage: Choice.from_dict(c) if c else None for stage, c in data["choices"].items()})


def recorded_jobs(study: Study, profile: Profile) -> list:
    """(node, the job it ran or None) for every node that runs a job, in study order."""
    return [(n, _recorded_job(study, profile, n)) for n in study_nodes(study) if n.stage.runs_jobs]


def _recorded_job(study: Study, profile: Profile, node: Node):
    """The job a node ran: late-bound nodes use the choice recorded when they started."""
    if not node.stage.choice:
        return job_for(study, profile, node)
    choice = read_choice(study, profile, node.stage.name)
    return make_job(study, profile, node, choice.chosen) if choice else None


def run_index(study: Study, profile: Profile) -> RunIndex:
    runs = tuple(IndexEntry(node=node.key, stage=node.stage.name, label=node.label, run_id=job.run_id() if job else None,
                            run=summarize(job.resolved_run_dir()) if job else RunSummary(None, RunStatus.MISSING))
                 for node, job in recorded_jobs(study, profile))
    return RunIndex(study=study.name, scale=study.scale, model=study.model, profile=profile.name, runs=runs,
                    choices={s.name: read_choice(study, profile, s.name) for s in stage_table() if s.choice})
