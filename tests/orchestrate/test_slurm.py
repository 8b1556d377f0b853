"""The study on a real SLURM (slurm/local/, brought up by `make test` as root): DAG, preemption, faults.

The cluster is found through LVJOB_SLURM_ENV (set by slurm/local/with-cluster.sh). Without it these
tests are skipped, saying why; under CI they fail instead, so CI cannot pass without running them.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import faults

from lvjob.orchestrate import submission
from lvjob.orchestrate.tasks import GateTask, StudyTask
from lvjob.orchestrate import pack, records, retries
from lvjob.cluster import slurm as slurm_client  # the fixture `slurm` is the test cluster
from lvjob.cluster.executors import backend
from lvjob.core.atomic import read_jsonl
from lvjob.run.rundir import summarize
from lvjob.run.rundir import read_status
from lvjob.results.index import run_index
from lvjob.study.choices import job_for, study_dir, study_nodes
from lvjob.orchestrate import status
from lvjob.orchestrate.status import format_status, status_rows
from lvjob.study.spec import load_study
from helpers import STUDY, default_job_on, image_standin, last_step, make_profile, small_overrides, wait_for, wait_until


def logs(folder: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(folder.glob("*_log.*")))


@dataclass
class StudyRun:
    """A whole study submitted to the test cluster and run to its end."""

    study: object
    profile: object
    sub: object
    results: Path
    seconds: float


def run_whole_study(tmp: Path, small_data: Path, during=None, **profile_changes) -> StudyRun:
    """Submit the study (small overrides), run `during(study, profile, sub, t0)` while it runs, wait for its end."""
    profile = make_profile(tmp, **profile_changes)
    study = load_study(STUDY, scale="demo", overrides=small_overrides(small_data))
    t0 = time.monotonic()
    sub = submission.submit(study, profile, log=print)
    assert time.monotonic() - t0 < 60, "submission must return at once, not wait for the jobs"
    folder = study_dir(study, profile).submitit
    assert slurm_client.queued_from(folder), "the study's jobs are not seen where the wait below looks for them"
    if during:
        during(study, profile, sub, t0)
    wait_for([j.job_id for j in sub.jobs.values()], limit_s=900)
    wait_until(lambda: not slurm_client.queued_from(folder), 600, "every job of the study to end (a packed one resubmitted too)")
    return StudyRun(study, profile, sub, tmp / "results", time.monotonic() - t0)


@pytest.fixture(scope="module")
def studies(slurm, small_data, tmp_path_factory) -> tuple[StudyRun, StudyRun, list[dict], StudyRun, list[dict]]:
    """The study three times, side by side on the test cluster (each fills the others' idle slots), with RequeueExit
    off: undisturbed; disturbed by every kind of fault (tests/faults.py) with its runners in the image stand-in
    and its watchdog's floor at FAULTED_WATCHDOG_S (a hang is found in seconds); and packed into one allocation
    (`pack: study`, two runs at once), disturbed by the packed faults. Once per test session."""
    injected, packed_faults = [], []
    tmp = tmp_path_factory.mktemp("faulted-study")
    in_image = {"image": str(image_standin(tmp)), "watchdog_floor_s": FAULTED_WATCHDOG_S}

    def disturb(study, profile, sub, t0):
        aggregate = sub.jobs["aggregate"].job_id
        print(f"fault seed: {FAULT_SEED} (set LVJOB_FAULT_SEED to replay another)")
        injector = faults.Injector(study, profile, FAULT_SEED)
        injected.extend(injector.run(lambda: slurm_client.states([aggregate])[aggregate] in slurm_client.ACTIVE, t0))

    def disturb_packed(study, profile, sub, t0):
        packed_faults.extend(faults.disturb_packed(study, profile, sub.jobs["study"].job_id))

    with faults.requeue_exit_off(slurm), ThreadPoolExecutor(2) as pool:
        faulted = pool.submit(run_whole_study, tmp, small_data, during=disturb, **in_image)
        packed = pool.submit(run_whole_study, tmp_path_factory.mktemp("packed-study"), small_data, during=disturb_packed,
                             pack="study", runs_per_gpu=2)
        whole = run_whole_study(tmp_path_factory.mktemp("whole-study"), small_data)
        faulted, packed = faulted.result(), packed.result()
    print(f"study DAG: {len(whole.sub.jobs)} jobs in {whole.seconds:.0f} s, beside the faulted one; "
          f"packed: {packed.seconds:.0f} s")
    return whole, faulted, injected, packed, packed_faults


@pytest.fixture(scope="module")
def whole_study(studies) -> StudyRun:
    """The study undisturbed: for its own checks and as the faulted study's reference."""
    return studies[0]


def test_whole_study_dag_runs_to_completion_and_resubmitting_it_submits_nothing(whole_study):
    study, profile, sub = whole_study.study, whole_study.profile, whole_study.sub
    assert len(sub.jobs) == len(study_nodes(study)) == 13
    states = slurm_client.states([j.job_id for j in sub.jobs.values()])
    assert set(states.values()) == {"COMPLETED"}, logs(study_dir(study, profile).submitit)

    runs = json.loads((whole_study.results / "runs.json").read_text())["runs"]
    assert [r["status"] for r in runs] == ["complete"] * 12
    for r in runs:
        assert (Path(r["run_dir"]) / "eval.json").exists() and (Path(r["run_dir"]) / "ledger.json").exists()
        if r["kind"] == "train":
            assert (Path(r["run_dir"]) / "adapter" / "adapter_config.json").exists()

    # Late binding: stage 2 ran at stage 1's best (rank, lr), the final run at stage 2's best.
    choice2 = json.loads(study_dir(study, profile).choice("stage2").read_text())
    best1 = min((r for r in runs if r["stage"] == "stage1"), key=lambda r: r["val_loss"])
    assert choice2["best"] == best1["node"]
    for r in (r for r in runs if r["stage"] in ("stage2", "final")):
        job = yaml.safe_load((Path(r["run_dir"]) / "job.yaml").read_text())
        assert (job["rank"], job["lr"]) == (choice2["chosen"]["rank"], choice2["chosen"]["lr"])
    # ...and only after stage 1 had ended (the afterany dependency).
    stage1_end = max(read_status(Path(r["run_dir"]))["finished"] for r in runs if r["stage"] == "stage1")
    assert all(read_status(Path(r["run_dir"]))["started"] >= stage1_end for r in runs if r["stage"] == "stage2")

    again = submission.submit(study, profile, log=print)
    assert again.jobs == {}
    assert {s.status for s in again.states} == {"complete"}


FAULT_SEED = int(os.environ.get("LVJOB_FAULT_SEED", "15"))
FAULTED_WATCHDOG_S = 40  # a healthy run's start-up (imports, tokenizer, model: ~6 s alone) took over 20 s on a loaded CI machine


@pytest.fixture(scope="module")
def faulted_study(studies) -> tuple[StudyRun, list[dict]]:
    """The same study, disturbed by every kind of fault (tests/faults.py) with RequeueExit off."""
    _, run, injected, _, _ = studies
    kinds = {k: sum(f["kind"] == k for f in injected) for k in faults.KINDS}
    made = retries.read(run.study, run.profile)
    print(f"faulted study: {len(injected)} faults ({kinds}) in {run.seconds:.0f} s; {len(made)} retries: "
          + "; ".join(f"{r['node']} ({r['why']})" for r in made))
    assert len(injected) == len(faults.plan(FAULT_SEED)), f"the study ended before every fault was injected: {injected}"
    return run, injected


def test_a_sigkilled_stage1_run_is_retried_before_stage2_chooses(faulted_study):
    run, injected = faulted_study
    killed = injected[0]  # the first fault: SIGKILL of a stage-1 run's runner (tests/faults.py)
    assert (killed["kind"], killed["node"].startswith("stage1-")) == ("sigkill", True)
    made = [r for r in retries.read(run.study, run.profile) if r["node"] == killed["node"]]
    assert [(r["job_id"], r["state"]) for r in made] == [(killed["job"], "FAILED")]
    choice = json.loads(study_dir(run.study, run.profile).choice("stage2").read_text())
    assert [c["status"] for c in choice["candidates"]] == ["complete"] * 4


def test_a_hung_run_is_found_by_the_watchdog_killed_and_retried(faulted_study):
    run, injected = faulted_study
    hung = next(f for f in injected if f["kind"] == "hang")  # SIGSTOPped: silent, and no handler can run
    made = [r for r in retries.read(run.study, run.profile) if r["node"] == hung["node"]]
    assert [(r["job_id"], r["state"]) for r in made] == [(hung["job"], "FAILED")]
    log = logs(study_dir(run.study, run.profile).submitit)
    assert f"{hung['node']}: hung (silent" in log and "killed by the watchdog" in log


def test_a_usr2_during_an_evaluation_in_the_image_is_requeued_not_retried(faulted_study):
    run, injected = faulted_study
    hit = {(f["node"], f["job"]) for f in injected if f["kind"] == "usr2-in-evaluation"}
    made = {(r["node"], r["job_id"]) for r in retries.read(run.study, run.profile)}
    assert hit and not hit & made  # the runner stopped after its batch and the host requeued the job


def test_every_runner_of_the_faulted_study_ran_in_the_image(faulted_study):
    run, _ = faulted_study
    ran = (run.results.parent / "standin.log").read_text().splitlines()
    assert len(ran) >= 19 and all(line.startswith("python -m lvjob run ") for line in ran)


def _table(path: Path) -> list[list[str]]:
    return list(csv.reader(path.open()))


def test_a_study_disturbed_by_every_kind_of_fault_ends_with_the_undisturbed_tables(whole_study, faulted_study):
    assert_same_tables(faulted_study[0].results, whole_study.results)


def assert_same_tables(results: Path, undisturbed: Path, redone: bool = True) -> None:
    """Every table as the undisturbed study's; Table 4 once the re-done FLOPs (booked as lost) are taken off.
    `redone`: the faults must have cost re-done work (a kill between two checkpoints)."""
    names = sorted(p.name for p in undisturbed.glob("*.csv"))
    assert names == sorted(p.name for p in results.glob("*.csv"))
    for name in (n for n in names if n != "table4_flops.csv"):
        assert _table(results / name) == _table(undisturbed / name), name
    head, *calm = _table(undisturbed / "table4_flops.csv")
    _, *hit = _table(results / "table4_flops.csv")
    spent, planned, lost = head.index("spent"), head.index("planned"), head.index("lost to preemption")
    for a, b in zip(calm[:-1], hit[:-1]):  # the budget row compares spent with the budget
        assert (b[0], b[1], b[planned]) == (a[0], a[1], a[planned])
        assert float(b[spent]) - float(b[lost]) == float(a[spent]) and float(a[lost]) == 0, b[0]
    assert float(hit[-2][lost]) > 0 or not redone  # the total


@pytest.fixture(scope="module")
def packed_study(studies) -> tuple[StudyRun, list[dict]]:
    """The study packed into one allocation (`pack: study`, two runs at once), hit by tests/faults.py's packed faults."""
    *_, run, done = studies
    assert [d["kind"] for d in done] == list(faults.PACKED_KINDS)
    return run, done


def attempt_jobs(run_dir: Path) -> list[str]:
    """The SLURM job each attempt of a run ran in."""
    return [a.get("slurm_job_id") for a in read_status(run_dir).get("attempt_records", [])]


def test_a_packed_study_runs_in_its_packed_job_and_the_one_resubmitted_by_its_watcher(packed_study):
    run, done = packed_study
    jobs = pack.pack_jobs(run.study, run.profile)
    first, again = [r["job_id"] for r in jobs if r["job"] == pack.PACK]
    folder = study_dir(run.study, run.profile)
    inside = [r["executor"] for f in (folder.submissions, folder.gates) for r in read_jsonl(f)]  # runs and retry gates
    assert inside and set(inside) == {"local"}  # each a child process of the packed job, none a job of its own
    ran_in = {j for e in run_index(run.study, run.profile).runs if e.run.run_dir for j in attempt_jobs(Path(e.run.run_dir))}
    assert ran_in <= {first, again} and again in ran_in


def test_usr2_to_the_packed_job_checkpoints_its_active_runs_and_requeues_it_under_its_id(packed_study):
    run, (usr2, *_) = packed_study
    by_node = {e.node: e for e in run_index(run.study, run.profile).runs}
    for node in usr2["nodes"]:
        folder = Path(by_node[node].run.run_dir)
        assert attempt_jobs(folder)[:2] == [usr2["job"]] * 2, node  # stopped, then resumed in the requeued job
    assert not {r["node"] for r in retries.read(run.study, run.profile)} & set(usr2["nodes"])


def test_a_run_killed_inside_the_packed_job_is_retried_in_place(packed_study):
    run, (_, killed, _) = packed_study
    (made,) = [r for r in retries.read(run.study, run.profile) if r["node"] == killed["nodes"][0]]
    assert made["state"] == "ended"  # a local job of the allocation
    folder = Path(next(e for e in run_index(run.study, run.profile).runs if e.node == killed["nodes"][0]).run.run_dir)
    assert attempt_jobs(folder)[:2] == [killed["job"]] * 2


def test_a_packed_job_killed_without_warning_is_submitted_again_by_its_watcher(packed_study):
    run, (*_, host) = packed_study
    made = [r for r in retries.read(run.study, run.profile) if r["node"] == pack.PACK]
    assert [(r["job_id"], r["state"]) for r in made] == [(host["job"], "FAILED")]
    folder = Path(next(e for e in run_index(run.study, run.profile).runs if e.node == host["nodes"][0]).run.run_dir)
    assert attempt_jobs(folder) == [host["job"], made[0]["new_job_id"]]  # the run died with the allocation, resumed after
    assert "the study is complete" in logs(study_dir(run.study, run.profile).submitit)


def test_a_packed_study_ends_with_the_fan_out_studys_tables(whole_study, packed_study):
    assert_same_tables(packed_study[0].results, whole_study.results, redone=False)  # 4 steps: a kill rarely costs one


def test_a_cancelled_packed_job_is_not_submitted_again(slurm, small_data, tmp_path):
    profile = make_profile(tmp_path, pack="study")
    study = load_study(STUDY, scale="demo", overrides=small_overrides(small_data))
    sub = submission.submit(study, profile, log=print)
    job = sub.jobs[pack.PACK].job_id
    wait_until(lambda: slurm_client.states([job])[job] == "RUNNING", 120, "the packed job to start")
    with pytest.raises(submission.OtherPackingActive, match=f"packed job\\(s\\) {job}, {sub.jobs[pack.WATCH].job_id} are still"):
        submission.submit(study, make_profile(tmp_path, name="fan-out"), log=print)  # the same runs, fanned out
    assert not records.on_executor(records.read_submissions(study, profile), profile)  # no run queued on SLURM
    subprocess.run(["scancel", job], check=True)
    folder = study_dir(study, profile).submitit
    wait_until(lambda: not slurm_client.queued_from(folder), 120, "the watcher to end")
    assert retries.read(study, profile) == [] and len(pack.pack_jobs(study, profile)) == 2
    assert "cancelled by its user; not resubmitted" in logs(folder)
    assert f"packed job {job}: CANCELLED" in status.report(study, profile)


def _same_run(a: Path, b: Path) -> None:
    assert (a / "adapter" / "adapter_model.safetensors").read_bytes() == (b / "adapter" / "adapter_model.safetensors").read_bytes()
    losses = [[(r["step"], r["loss"], r.get("val_loss")) for r in read_jsonl(d / "metrics.jsonl")] for d in (a, b)]
    assert losses[0] == losses[1]


@pytest.fixture(scope="module")
def interrupted_runs(slurm, small_data, tmp_path_factory):
    """Five copies of one training job: undisturbed, preempted (USR2), requeued by scontrol, SIGKILLed, and
    preempted (USR2) while its runner runs in a container where SLURM cannot be reached."""
    tmp = tmp_path_factory.mktemp("faults")
    study = load_study(STUDY, scale="demo", overrides=small_overrides(small_data) + [
        "default.steps=24", "default.context=32", "training.checkpoint_every=10", "training.val_every=10"])  # 32: half the CPU
    image = image_standin(tmp)  # the runner inside sees no scontrol and no slurm.conf
    out = {}
    for name in ("reference", "usr2", "requeue", "sigkill", "image"):
        profile = make_profile(tmp / name, name, **({"image": str(image)} if name == "image" else {}))
        out[name] = default_job_on(profile, study) + (profile,)
    t0 = time.monotonic()

    def disturb(name: str, at_step: int, action) -> None:
        job, run_dir, _ = out[name]
        wait_until(lambda: last_step(run_dir) >= at_step, 300, f"{name} to reach step {at_step}")
        action(job, run_dir)

    disturb("usr2", 5, lambda job, d: subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True))
    disturb("requeue", 13, lambda job, d: subprocess.run(["scontrol", "requeue", job.job_id], check=True))
    disturb("sigkill", 15, lambda job, d: os.kill(read_status(d)["pid"], signal.SIGKILL))
    disturb("image", 5, lambda job, d: subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True))
    states = wait_for([v[0].job_id for v in out.values()], limit_s=600)
    print(f"fault runs: {time.monotonic() - t0:.0f} s")
    for name, (job, run_dir, profile) in out.items():
        assert states[job.job_id] == "COMPLETED", logs(Path(job.paths.folder))
    return {name: run_dir for name, (_, run_dir, _) in out.items()} | {"standin.log": tmp / "standin.log"}


def test_preempted_training_job_is_requeued_and_resumes_bit_identical(interrupted_runs):
    run = interrupted_runs["usr2"]
    assert read_status(run)["attempts"] == 2
    resumes = [r for r in read_jsonl(run / "preemptions.jsonl") if r["event"] == "resume"]
    assert len(resumes) == 1 and resumes[0]["from_step"] >= 5  # the checkpoint written on USR2
    _same_run(run, interrupted_runs["reference"])


def test_job_requeued_by_scontrol_resumes_from_a_checkpoint_bit_identical(interrupted_runs):
    run = interrupted_runs["requeue"]
    assert read_status(run)["attempts"] == 2
    resumes = [r for r in read_jsonl(run / "preemptions.jsonl") if r["event"] == "resume"]
    assert len(resumes) == 1 and resumes[0]["from_step"] >= 10
    _same_run(run, interrupted_runs["reference"])


def test_preempted_job_whose_runner_is_in_the_image_is_requeued_from_the_host_and_resumes_bit_identical(interrupted_runs):
    run = interrupted_runs["image"]
    assert read_status(run)["attempts"] == 2
    resumes = [r for r in read_jsonl(run / "preemptions.jsonl") if r["event"] == "resume"]
    assert len(resumes) == 1 and resumes[0]["from_step"] >= 5
    _same_run(run, interrupted_runs["reference"])
    ran = interrupted_runs["standin.log"].read_text().splitlines()
    assert len(ran) == 2 and all(line.startswith("python -m lvjob run ") for line in ran)  # both attempts in the image


def test_job_killed_without_warning_restarts_from_its_last_periodic_checkpoint(interrupted_runs):
    run = interrupted_runs["sigkill"]
    assert read_status(run)["attempts"] == 2
    resumes = [r for r in read_jsonl(run / "preemptions.jsonl") if r["event"] == "resume"]
    assert len(resumes) == 1 and resumes[0]["from_step"] in (10, 20, 30)  # periodic checkpoints only
    assert summarize(run).status == "complete"
    _same_run(run, interrupted_runs["reference"])


def test_failed_stage1_does_not_leave_stage2_pending_and_status_says_why(slurm, small_data, tmp_path):
    profile = make_profile(tmp_path, max_retries=0)  # a run that fails at start every time: retries would only add time
    study = load_study(STUDY, scale="demo", overrides=small_overrides(small_data) + [
        "stage1.ranks=[2]", "stage1.lrs=[1e-3]", "stage2.contexts=[64]"])
    # Sabotage the one stage-1 run: its job.yaml path is a folder, so the run fails at start.
    stage1 = next(n for n in study_nodes(study) if n.stage.name == "stage1")
    run_dir = job_for(study, profile, stage1).resolved_run_dir()
    (run_dir / "job.yaml").mkdir(parents=True)
    sub = submission.submit(study, profile, log=print)
    states = wait_for([j.job_id for j in sub.jobs.values()], limit_s=400)
    by_node = {k: states[j.job_id] for k, j in sub.jobs.items()}
    assert by_node["stage1-r2-lr0.001"] == "FAILED"
    assert by_node["stage2-ctx64"] == "FAILED" and by_node["final"] == "FAILED"  # ended, not pending
    assert by_node["default"] == "COMPLETED" and by_node["aggregate"] == "COMPLETED"
    rows = {r["node"]: r for r in status_rows(study, profile)}
    assert "IsADirectoryError" in rows["stage1-r2-lr0.001"]["why"]
    assert "no stage1 run finished" in rows["stage2-ctx64"]["why"]
    print(format_status(list(rows.values())))

    # Mend the cause and submit again: only the failed jobs (and the aggregate) are submitted.
    shutil.rmtree(run_dir)
    again = submission.submit(study, profile, log=print)
    assert sorted(again.jobs) == ["aggregate", "final", "stage1-r2-lr0.001", "stage2-ctx64"]
    states = wait_for([j.job_id for j in again.jobs.values()], limit_s=400)
    assert set(states.values()) == {"COMPLETED"}


def test_a_run_cancelled_by_its_user_is_not_retried_by_its_stages_gate(slurm, small_data, tmp_path):
    profile = make_profile(tmp_path)
    study = load_study(STUDY, scale="demo", overrides=small_overrides(small_data))
    node = next(n for n in study_nodes(study) if n.stage.name == "stage1")
    where = (str(Path.cwd()), os.environ["LVJOB_CACHE"])
    job = backend(profile).executor(study_dir(study, profile).submitit, "stage1", []).submit(
        StudyTask(study, profile, node, *where))
    records.record_submissions(study, profile, "stage1", [node], [job])  # as `submit` records it
    wait_until(lambda: slurm_client.states([job.job_id])[job.job_id] == "RUNNING", 120, "the run to start")
    subprocess.run(["scancel", job.job_id], check=True)
    assert wait_for([job.job_id], limit_s=120)[job.job_id] == "CANCELLED"
    # What the stage's gate job runs once the stage has ended (the whole study is not needed for it).
    assert GateTask(study, profile, "stage1", *where)() == {"stage": "stage1", "retried": []}
    assert retries.read(study, profile) == []


def test_cancel_cancels_every_recorded_job_of_a_run_not_only_its_latest(slurm, small_data, tmp_path):
    profile = make_profile(tmp_path, sbatch={"hold": True})  # held: nothing runs, both stay queued until cancelled
    study = load_study(STUDY, scale="demo", overrides=small_overrides(small_data))
    node = next(n for n in study_nodes(study) if n.stage.name == "stage1")
    ex = backend(profile).executor(study_dir(study, profile).submitit, "stage1", [])
    jobs = [ex.submit(StudyTask(study, profile, node, str(Path.cwd()), os.environ["LVJOB_CACHE"])) for _ in range(2)]
    for job in jobs:  # a second job for the same run, as a second submit would leave it
        records.record_submissions(study, profile, "stage1", [node], [job])
    submission.cancel(study, profile)
    assert set(wait_for([j.job_id for j in jobs], limit_s=30).values()) == {"CANCELLED"}


def test_a_gate_still_running_after_its_study_was_cancelled_retries_nothing_until_it_is_submitted_again(
        slurm, small_data, tmp_path):
    study = load_study(STUDY, scale="demo", overrides=small_overrides(small_data))
    held = make_profile(tmp_path, name="held", sbatch={"hold": True})  # same study folder; what it queues never runs
    node, where = next(n for n in study_nodes(study) if n.stage.name == "stage1"), (str(Path.cwd()), os.environ["LVJOB_CACHE"])
    failed = backend(held).executor(study_dir(study, held).submitit, "stage1", [], gpu=False).submit(int, "x")  # ValueError
    records.record_submissions(study, held, "stage1", [node], [failed])  # a run whose job FAILED: the gate would retry it
    subprocess.run(["scontrol", "release", failed.job_id], check=True)
    assert wait_for([failed.job_id], limit_s=60)[failed.job_id] == "FAILED"
    submission.cancel(study, held)  # a gate whose job this cancels may run on for SLURM's KillWait: what it does then
    assert GateTask(study, held, "stage1", *where).retry_round() == []
    assert [r["job_id"] for r in read_jsonl(study_dir(study, held).submissions)] == [failed.job_id]
    submission.submit(study, held, log=print)  # a user's submit resumes the study
    assert records.cancelled_at(study, held) is None
    submission.cancel(study, held)


def test_a_job_started_by_a_checkout_without_a_setting_it_was_submitted_with_fails_with_one_line_naming_it(
        slurm, small_data, tmp_path, monkeypatch):
    profile = make_profile(tmp_path, sbatch={"hold": True})  # released below, once the pickle is written
    study = load_study(STUDY, scale="demo", overrides=small_overrides(small_data))
    node, as_submitted = next(n for n in study_nodes(study) if n.stage.name == "stage1"), StudyTask.__getstate__

    def by_code_that_knew_a_warmup(task):  # the checkout lost stage1.warmup between the submit and the (re)start
        state = as_submitted(task)
        state["study"]["stage1"]["warmup"] = 10
        return state
    monkeypatch.setattr(StudyTask, "__getstate__", by_code_that_knew_a_warmup)
    job = backend(profile).executor(study_dir(study, profile).submitit, "stage1", []).submit(
        StudyTask(study, profile, node, str(Path.cwd()), os.environ["LVJOB_CACHE"]))
    monkeypatch.undo()
    subprocess.run(["scontrol", "release", job.job_id], check=True)
    assert wait_for([job.job_id], limit_s=120)[job.job_id] == "FAILED"
    errors = [line for line in study_dir(study, profile).job_log(job.job_id).read_text().splitlines() if "Error" in line]
    assert "(study): unknown key stage1.'warmup'" in errors[-1]
    assert [p.name for p in Path(profile.runs_root).iterdir()] == [study_dir(study, profile).root.name]  # no second folder


def test_two_concurrent_submits_queue_one_job_per_run_and_cancel_leaves_none_queued(slurm, small_data, tmp_path):
    profile = make_profile(tmp_path, sbatch={"hold": True})  # held: nothing runs, every job stays queued
    submit = [sys.executable, "-m", "lvjob", "submit", str(STUDY), "--profile", str(tmp_path / "ci.yaml"), "--scale",
              "demo", *small_overrides(small_data)]
    both = [subprocess.Popen(submit, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=180)[0] for p in both]
    assert [p.returncode for p in both] == [0, 0], "\n".join(outputs)
    study = load_study(STUDY, scale="demo", overrides=small_overrides(small_data))
    folder = study_dir(study, profile)
    nodes, stages = [r["node"] for r in read_jsonl(folder.submissions)], [r["stage"] for r in read_jsonl(folder.gates)]
    assert (sorted(nodes), sorted(stages)) == (sorted(set(nodes)), sorted(set(stages))), "\n".join(outputs)
    queued = sorted(records.active_job_ids(study, profile) | {r["job_id"] for r in read_jsonl(folder.gates)})
    subprocess.run([sys.executable, "-m", "lvjob", "cancel", str(STUDY), "--profile", str(tmp_path / "ci.yaml"),
                    "--scale", "demo", *small_overrides(small_data)], check=True)
    assert set(wait_for(queued, limit_s=30).values()) <= {"CANCELLED", slurm_client.UNSEEN}  # UNSEEN: a task cancelled unstarted


def test_a_queued_job_missing_from_the_studys_records_stops_a_submit_and_is_cancelled_by_cancel(slurm, small_data, tmp_path):
    profile = make_profile(tmp_path, sbatch={"hold": True})  # held: it stays queued until cancelled
    study = load_study(STUDY, scale="demo", overrides=small_overrides(small_data))
    node = next(n for n in study_nodes(study) if n.stage.name == "stage1")
    ex = backend(profile).executor(study_dir(study, profile).submitit, "stage1", [])
    stray = ex.submit(StudyTask(study, profile, node, str(Path.cwd()), os.environ["LVJOB_CACHE"]))  # its record never written
    with pytest.raises(submission.UnrecordedJobs, match=f"job\\(s\\) {stray.job_id} of this study"):
        submission.submit(study, profile, log=print)
    assert read_jsonl(study_dir(study, profile).submissions) == []  # nothing was submitted beside it
    submission.cancel(study, profile)
    assert wait_for([stray.job_id], limit_s=30)[stray.job_id] == "CANCELLED"


def test_a_queued_stage2_also_waits_for_a_stage1_run_submitted_again(slurm, small_data, tmp_path):
    profile = make_profile(tmp_path)
    study = load_study(STUDY, scale="demo", overrides=small_overrides(small_data) + [
        "stage1.ranks=[2,4]", "stage1.lrs=[1e-3]", "stage1.steps=12", "stage2.contexts=[48]"])
    first = submission.submit(study, profile, log=print)
    cancelled = first.jobs["stage1-r4-lr0.001"].job_id
    subprocess.run(["scancel", cancelled], check=True)
    wait_until(lambda: slurm_client.states([cancelled])[cancelled] not in slurm_client.ACTIVE, 60, "the cancel")
    again = submission.submit(study, profile, log=print)  # stage 2 is still queued behind the rest of stage 1
    assert "stage1-r4-lr0.001" in again.jobs and "stage2-ctx48" not in again.jobs
    redo = again.jobs["stage1-r4-lr0.001"].job_id
    subprocess.run(["scontrol", "hold", redo], check=True)  # keep it from running until stage 1's other run ended
    other, stage2 = first.jobs["stage1-r2-lr0.001"].job_id, first.jobs["stage2-ctx48"].job_id
    wait_until(lambda: slurm_client.states([other])[other] not in slurm_client.ACTIVE, 300, "the other stage-1 run to end")
    time.sleep(6)  # three scheduling intervals
    assert slurm_client.states([stage2])[stage2] == "PENDING"  # it waits for the resubmitted run too
    with pytest.raises(submission.OtherPackingActive, match=f"fan-out job\\(s\\) .*{stage2}"):
        submission.submit(study, make_profile(tmp_path, name="packed", pack="study"), log=print)
    subprocess.run(["scontrol", "release", redo], check=True)
    wait_for([stage2, redo], limit_s=400)
    choice = json.loads(study_dir(study, profile).choice("stage2").read_text())
    assert [c["status"] for c in choice["candidates"]] == ["complete", "complete"]  # it waited for the resubmitted run
    submission.cancel(study, profile)  # the final run and the aggregate show nothing more here


@pytest.mark.parametrize("field", ["gpus_per_node", "image", "results_dir", "data"])
def test_a_broken_profile_or_study_field_is_refused_by_the_preflight_and_nothing_is_queued(slurm, small_data, tmp_path, field):
    (tmp_path / "a-file").write_text("x")
    change = {"gpus_per_node": {"gpus_per_node": 2}, "image": {"image": str(tmp_path / "missing.sif")},
              "results_dir": {"results_dir": str(tmp_path / "a-file" / "results")}, "data": {}}[field]
    if field == "image":
        image_standin(tmp_path)  # an Apptainer on PATH: the missing image is the one problem
    profile = make_profile(tmp_path, **change)
    extra = ["data.systems=40"] if field == "data" else []
    study = load_study(STUDY, scale="demo", overrides=small_overrides(small_data) + extra)
    with pytest.raises(submission.PreflightFailed) as refused:
        submission.submit(study, profile, log=print)
    assert len(refused.value.problems) == 1
    assert not study_dir(study, profile).submissions.exists()
    assert slurm_client.queued_from(study_dir(study, profile).submitit) == set()  # an earlier test's cancelled jobs may still be completing
