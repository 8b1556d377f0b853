"""The study's last job: gather every run of the study into one index.

`results/runs.json` lists each node of the study (lvjob.stages) with its run directory and a
summary of what it holds (status, steps, losses, FLOPs, forecast error), and the choices the
late-bound stages made. It tolerates runs that are missing, running or failed: they are listed as
such. The comparison tables and plots are built from the same run directories.
"""

from __future__ import annotations

import json
from pathlib import Path

from lvjob import atomic
from lvjob.profile import Profile
from lvjob.rundir import summarize
from lvjob.stages import CHOICE, job_for, make_job, read_choice, study_nodes
from lvjob.study import Study


def run_index(study: Study, profile: Profile) -> dict:
    runs = []
    for node in study_nodes(study):
        if node.stage == "aggregate":
            continue
        job = _recorded_job(study, profile, node)
        summary = summarize(job.resolved_run_dir()).to_dict() if job else {"status": "not started", "run_dir": None}
        runs.append({"node": node.key, "stage": node.stage, "run_id": job.run_id() if job else None} | summary)
    return {
        "study": study.name,
        "scale": study.scale,
        "model": study.model,
        "profile": profile.name,
        "runs": runs,
        "choices": {stage: read_choice(study, profile, stage) for stage in CHOICE},
    }


def _recorded_job(study: Study, profile: Profile, node):
    """The job a node ran: late-bound nodes use the choice recorded when they started."""
    if node.stage not in CHOICE:
        return job_for(study, profile, node)
    choice = read_choice(study, profile, node.stage)
    return make_job(study, profile, node, choice["chosen"]) if choice else None


def write_index(study: Study, profile: Profile) -> Path:
    index = run_index(study, profile)  # no timestamp: the same runs give the same file
    path = Path(profile.results_dir) / "runs.json"
    atomic.write_text(path, json.dumps(index, indent=1))
    return path
