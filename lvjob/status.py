"""`lvjob status`: one row per node of the study, from its run directory and its executor's view of its job."""

from __future__ import annotations

from pathlib import Path

from lvjob.aggregate import run_index
from lvjob.cluster import index_is_complete, read_submissions
from lvjob.executors import backend
from lvjob.profile import Profile
from lvjob.slurm import ACTIVE
from lvjob.stages import study_dir
from lvjob.study import Study

COLUMNS = ("node", "job", "state", "step", "loss", "flops", "requeues", "why")


def status_rows(study: Study, profile: Profile) -> list[dict]:
    """One row per node: its job, state, progress, loss, FLOPs, requeues and, if it failed, why."""
    latest = read_submissions(study, profile)
    ids = [r["job_id"] for r in latest.values() if r.get("executor") == profile.executor]
    states = backend(profile).states(ids)
    rows = [_run_row(study, profile, run, latest.get(run["node"], {}), states) for run in run_index(study, profile)["runs"]]
    return rows + [_aggregate_row(study, profile, latest.get("aggregate", {}), states)]


def _run_row(study: Study, profile: Profile, run: dict, sub: dict, states: dict[str, str]) -> dict:
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
    return {"node": run["node"], "job": sub.get("job_id", "-"), "state": state,
            "step": f"{run.get('step') or 0}/{run['steps']}" if run.get("steps") else "-",
            "loss": f"{run['loss']:.4f}" if run.get("loss") is not None else "-",
            "flops": f"{run['flops']:.3e}" if run.get("flops") else "-",
            "requeues": str(max(run.get("attempts", 0) - 1, 0)), "why": why}


def _aggregate_row(study: Study, profile: Profile, sub: dict, states: dict[str, str]) -> dict:
    job_state = states.get(sub.get("job_id", ""))
    done = index_is_complete(study, profile) and job_state in (None, "COMPLETED")
    state = "complete" if done else (job_state or "not started").lower()
    return {"node": "aggregate", "job": sub.get("job_id", "-"), "state": state, "step": "-", "loss": "-",
            "flops": "-", "requeues": "0", "why": f"writes {Path(profile.results_dir) / 'runs.json'}"}


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
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)
