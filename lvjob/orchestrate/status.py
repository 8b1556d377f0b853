"""`lvjob status`: one row per node of the study, from its run directory and its executor's view of its job.

Beside state and progress: each running job's speed over its last steps and when it will be done
(lvjob.run.throughput), per stage how many runs are done, running and queued and when the stage ends
(its slowest running run; queued runs are listed, not guessed), and the study's compute hours so far
from the runs' attempt records. Retries (lvjob.orchestrate.retries): how many per run, and below the table why
each one was made. A running run silent past the watchdog's limit (lvjob.core.heartbeat) shows
`stalled` and how long it has been silent, until the watchdog kills it. A late-bound stage whose
recorded choice its source runs no longer support says so in its runs' `why`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from lvjob.results.index import IndexEntry, run_index
from lvjob.orchestrate.records import on_executor, read_submissions
from lvjob.orchestrate.submission import index_is_complete
from lvjob.orchestrate import retries
from lvjob.run import throughput
from lvjob.cluster.executors import backend
from lvjob.core.atomic import read_jsonl
from lvjob.core.heartbeat import read_pulse
from lvjob.core.paths import RunDir
from lvjob.cluster.profile import Profile, stall_rule
from lvjob.run.rundir import RunStatus, RunSummary, read_status
from lvjob.cluster.slurm import ACTIVE, Allocation, ClusterError
from lvjob.study.choices import stale_choice, study_dir, study_results
from lvjob.orchestrate import pack
from lvjob.study.stages import stage_table
from lvjob.study.spec import Study

NOT_STARTED = "not started"  # how the table shows RunStatus.MISSING
COLUMNS = ("node", "job", "state", "step", "steps/s", "eta", "loss", "flops", "requeues", "retries", "why")


def status_rows(study: Study, profile: Profile) -> list[dict]:
    """One row per node: its job, state, progress, loss, FLOPs, requeues and, if it failed, why."""
    latest = read_submissions(study, profile)
    ids = [r["job_id"] for r in on_executor(latest, profile).values()]
    states = backend(profile).states(ids)
    rows = [_run_row(study, profile, entry, latest.get(entry.node, {}), states) for entry in run_index(study, profile).runs]
    made, stale = retries.read(study, profile), _stale_choices(study, profile)
    rows = [r | _retries(r["node"], made) | ({"why": stale[r["stage"]]} if r["stage"] in stale and not r["why"] else {})
            for r in rows]
    return rows + [_aggregate_row(study, profile, latest.get("aggregate", {}), states)]


def _stale_choices(study: Study, profile: Profile) -> dict[str, str]:
    """Late-bound stage -> why its recorded choice is stale, for the stages whose choice is."""
    found = {s.name: stale_choice(study, profile, s.name) for s in stage_table() if s.choice}
    return {stage: why for stage, why in found.items() if why}


def _retries(node: str, made: list[dict]) -> dict:
    mine = [r for r in made if r["node"] == node]
    return {"retries": str(len(mine)), "_retried": [f"{r['why']} -> job {r['new_job_id']}" for r in mine]}


def _run_row(study: Study, profile: Profile, entry: IndexEntry, sub: dict, states: dict[str, str]) -> dict:
    run, job_state = entry.run, states.get(sub.get("job_id", ""))
    run_status = NOT_STARTED if run.status == RunStatus.MISSING else run.status
    if run.complete or not job_state:
        state = run_status
    elif job_state in ACTIVE:
        state = job_state.lower()  # pending, running, requeued, ...
    else:
        state = f"{run_status}, job {job_state.lower()}"  # e.g. "not started, job failed"
    if state == "running" and run.run_dir:
        state = _stalled(RunDir(run.run_dir).heartbeat, profile) or state
    failed_job = job_state is not None and job_state not in ACTIVE and job_state != "COMPLETED"
    why = run.error or (_job_error(study, profile, sub.get("job_id")) if failed_job else "")
    return {"node": entry.node, "job": sub.get("job_id", "-"), "state": state,
            "step": f"{run.step or 0}/{run.steps}" if run.steps else "-",
            "loss": f"{run.loss:.4f}" if run.loss is not None else "-",
            "flops": f"{run.flops:.3e}" if run.flops else "-",
            "requeues": str(max(run.attempts - 1, 0)), "why": why, "stage": entry.stage} | _speed(run, state)


def _stalled(heartbeat: Path, profile: Profile) -> str | None:
    """"stalled (N silent)" for a running run silent past the watchdog's limit, not yet killed by it."""
    if not heartbeat.exists():
        return None
    pulse = read_pulse(heartbeat)
    if pulse.silent_s <= stall_rule(profile).limit(pulse.longest_gap_s):
        return None
    return f"stalled ({throughput.duration(pulse.silent_s)} silent)"


def _speed(run: RunSummary, state: str) -> dict:
    """steps/s over the last steps of the newest attempt, and the time left while it runs; held seconds."""
    if not run.run_dir:
        return {"steps/s": "-", "eta": "-", "_eta_s": None, "_held_s": 0.0, "_kind": "CPU"}
    folder = RunDir(run.run_dir)
    rate = throughput.steps_per_second(read_jsonl(folder.metrics)) if run.steps else None
    running = state.startswith("running")
    eta = throughput.eta_seconds(run.step or 0, run.steps, rate) if running and run.steps else None
    records = read_status(folder.root).get("attempt_records", [])
    return {"steps/s": f"{rate:.2f}" if rate else "-", "eta": throughput.duration(eta) if eta is not None else "-",
            "_eta_s": eta, "_held_s": throughput.held_seconds(records), "_kind": throughput.device_kind(records)}


def stage_lines(rows: list[dict]) -> list[str]:
    """Per stage: runs done / running / queued, and when its slowest running run will be done."""
    lines = []
    for stage in dict.fromkeys(r["stage"] for r in rows if "stage" in r):
        mine = [r for r in rows if r.get("stage") == stage]
        done = sum(r["state"] == RunStatus.COMPLETE for r in mine)
        running = [r for r in mine if r["state"].startswith("running")]
        etas = [r["_eta_s"] for r in running if r["_eta_s"] is not None]
        left = f"; done in about {throughput.duration(max(etas))}" if etas and done < len(mine) else ""
        lines.append(f"{stage}: {done} done, {len(running)} running, {len(mine) - done - len(running)} waiting{left}")
    return lines


def hours_line(rows: list[dict]) -> str:
    """The study's compute hours so far, from every attempt's start and end."""
    held = sum(r.get("_held_s", 0.0) for r in rows)
    kind = "GPU" if any(r.get("_kind") == "GPU" for r in rows) else "CPU"
    return f"compute so far: {held / 3600:.2f} {kind}-hours over {sum(r.get('_held_s', 0) > 0 for r in rows)} runs"


def _aggregate_row(study: Study, profile: Profile, sub: dict, states: dict[str, str]) -> dict:
    job_state = states.get(sub.get("job_id", ""))
    done = index_is_complete(study, profile) and job_state in (None, "COMPLETED")
    state = RunStatus.COMPLETE.value if done else (job_state or NOT_STARTED).lower()
    return {"node": "aggregate", "job": sub.get("job_id", "-"), "state": state, "step": "-", "steps/s": "-", "eta": "-",
            "loss": "-", "flops": "-", "requeues": "0", "retries": "-",
            "why": f"writes {study_results(study, profile).index}"}


def _job_error(study: Study, profile: Profile, job_id: str | None) -> str:
    """The last line of a job's stderr (e.g. a late-bound stage that could not choose)."""
    if not job_id:
        return ""
    log = study_dir(study, profile).job_log(job_id)
    try:
        lines = [line for line in log.read_text().splitlines() if line.strip()]
    except OSError:
        return ""
    errors = [line for line in lines if "Error" in line]
    return (errors or lines or [""])[-1].strip()


def format_status(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines + [""] + stage_lines(rows) + [hours_line(rows)] + retry_lines(rows))


def retry_lines(rows: list[dict]) -> list[str]:
    """Why each retry was made: the job that ended, its state, where it left its run; the job that took over."""
    made = [(r["node"], i + 1, why) for r in rows for i, why in enumerate(r.get("_retried", []))]
    return (["", "retried:"] if made else []) + [f"- {node}, retry {n}: {why}" for node, n, why in made]


def report(study: Study, profile: Profile) -> str:
    """What `lvjob status` prints: the table, the stages, the compute hours, the retries and the allocations."""
    return format_status(status_rows(study, profile)) + "".join(f"\n{line}" for line in allocation_lines(study, profile))


def allocation_lines(study: Study, profile: Profile) -> list[str]:
    """Every allocation the study's jobs held on the executor, from its accounts (none locally): see `makespan_lines`."""
    folder = study_dir(study, profile)
    mine = [r for f in (folder.submissions, folder.gates) for r in read_jsonl(f) if r.get("executor") == profile.executor]
    names = {pack.PACK: "packed", pack.WATCH: "watcher"}
    named = {r["job_id"]: names[r["job"]] for r in pack.pack_jobs(study, profile) if r["job"] in names}
    try:
        found = backend(profile).times([r["job_id"] for r in mine] + list(named))
    except ClusterError as e:  # no accounting here, or slurmdbd down: the rest of the status stands
        return [f"allocations: unknown ({e})"]
    return makespan_lines(found, named, datetime.now(timezone.utc)) if found else []


def makespan_lines(allocations: dict[str, Allocation], named: dict[str, str], now: datetime) -> list[str]:
    """The queue waits (from the moment a job's dependencies were met to its start: the time the queue cost) and
    run times, in all and of each named job; the makespan (first submit to last end, or now) split into the time
    something of the study ran and the time it all waited."""
    waits = {j: _seconds(a.eligible, a.start or now) for j, a in allocations.items() if a.eligible}
    ran = _covered(sorted((a.start, a.end or now) for a in allocations.values() if a.start))
    begin = min((a.submit for a in allocations.values() if a.submit), default=now)
    makespan = _seconds(begin, max((a.end or now for a in allocations.values()), default=now))
    longest = max(waits, key=waits.get, default=None)
    lines = [f"allocations: {len(allocations)}, queued {throughput.duration(sum(waits.values()))} in all (longest "
             f"{throughput.duration(waits.get(longest))}, job {longest}); makespan {throughput.duration(makespan)}: "
             f"{throughput.duration(ran)} with a job running, {throughput.duration(max(makespan - ran, 0))} only queued"]
    for j in (j for j in named if j in allocations):
        a = allocations[j]
        held = _seconds(a.start, a.end or now) if a.start else None
        lines.append(f"{named[j]} job {j}: {a.state}, queued {throughput.duration(waits.get(j))}, "
                     f"held {throughput.duration(held)}")
    return lines


def _seconds(a: datetime, b: datetime) -> float:
    return max((b - a).total_seconds(), 0.0)


def _covered(spans: list[tuple[datetime, datetime]]) -> float:
    """Seconds covered by the union of sorted (start, end) spans."""
    total, reach = 0.0, None
    for start, end in spans:
        if reach is None or start > reach:
            total, reach = total + _seconds(start, end), end
        elif end > reach:
            total, reach = total + _seconds(reach, end), end
    return total
