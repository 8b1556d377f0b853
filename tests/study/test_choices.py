"""The study as a DAG: its nodes, their jobs and run ids, and how late stages choose (from run dirs)."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from lvjob.orchestrate.submission import waves
from lvjob.cluster.profile import Profile
from lvjob.study.choices import StageError, choose, job_for, make_job, one_standard_error, read_choice, study_nodes
from lvjob.study.spec import load_study
from helpers import STUDY



@pytest.fixture
def setup(tmp_path):
    study = load_study(STUDY, scale="demo")
    profile = Profile(runs_root=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"))
    return study, profile


def fake_run(job, status="complete", val_loss=None, mae=None, se=None):
    d = job.resolved_run_dir()
    d.mkdir(parents=True, exist_ok=True)
    (d / "run.json").write_text(json.dumps({"status": status, "kind": job.kind, "attempts": 1}))
    (d / "job.yaml").write_text(yaml.safe_dump({"kind": job.kind, "steps": job.steps}))
    if val_loss is not None:
        (d / "metrics.jsonl").write_text(json.dumps({"step": job.steps, "loss": 1.0, "val_loss": val_loss, "val_loss_se": se}) + "\n")
    if status == "complete":  # a finished run has evaluated on its split
        (d / "eval.json").write_text(json.dumps({"split": job.eval_split, "model": {"mae": mae}, "parse_rate": 1.0}))


def nodes_of(study, stage):
    return [n for n in study_nodes(study) if n.stage.name == stage]


def test_the_study_has_every_stage_of_spec_section_1(setup):
    study, _ = setup
    keys = [n.key for n in study_nodes(study)]
    assert keys[:3] == ["zero-shot-plain", "zero-shot-instruct", "default"]
    assert len(nodes_of(study, "stage1")) == 9 and len(nodes_of(study, "stage2")) == 3
    assert keys[-5:] == ["final", "baseline-persistence", "baseline-statistical", "baseline-physics", "aggregate"]
    assert len(set(keys)) == len(keys) == 20


def test_waves_put_each_stage_after_the_stages_it_waits_for():
    assert waves() == [["zero-shot", "default", "stage1", "baselines"], ["stage2"], ["final"], ["aggregate"]]


def test_a_node_always_maps_to_the_same_run_directory(setup):
    study, profile = setup
    node = nodes_of(study, "stage1")[4]
    a, b = make_job(study, profile, node), make_job(study, profile, node)
    assert a.run_id() == b.run_id() and a.resolved_run_dir() == Path(profile.runs_root) / a.run_id()
    assert (a.rank, a.lr, a.steps, a.context) == (4, 1e-2, 20, 128)


def test_stage2_takes_rank_and_lr_of_the_lowest_stage1_validation_loss(setup):
    study, profile = setup
    for i, node in enumerate(nodes_of(study, "stage1")):
        fake_run(make_job(study, profile, node), val_loss=5.0 - 0.1 * i if i != 7 else 0.1,
                 status="failed" if i == 7 else "complete")
    choice = choose(study, profile, "stage2")
    assert choice.best == "stage1-r8-lr0.001" and choice.chosen == {"rank": 8, "lr": 1e-3}  # i = 8; 7 failed
    assert [c["status"] for c in choice.candidates].count("failed") == 1
    assert choose(study, profile, "stage2", require_all=True) is None  # at submission: wait for all


def test_a_late_stage_with_no_finished_source_run_fails_and_says_why(setup):
    study, profile = setup
    fake_run(make_job(study, profile, nodes_of(study, "stage1")[0]), status="failed")
    with pytest.raises(StageError, match="stage2 cannot start: no stage1 run finished.*stage1-r2-lr0.1: failed.*missing"):
        choose(study, profile, "stage2")
    with pytest.raises(StageError, match="final cannot start: its stage2 runs could not run"):
        choose(study, profile, "final")


def test_final_takes_the_stage2_run_with_the_lowest_forecast_mae_and_records_it(setup):
    study, profile = setup
    for i, node in enumerate(nodes_of(study, "stage1")):
        fake_run(make_job(study, profile, node), val_loss=1.0 + i)  # stage1-r2-lr0.1 wins
    for node, mae in zip(nodes_of(study, "stage2"), [0.5, 0.2, 0.9]):
        fake_run(job_for(study, profile, node), val_loss=1.0, mae=mae)
    job = job_for(study, profile, nodes_of(study, "final")[0])
    assert (job.rank, job.lr, job.context, job.steps) == (2, 1e-1, 128, study.final.steps)
    assert read_choice(study, profile, "final").best == "stage2-ctx128"
    assert read_choice(study, profile, "stage2").best == "stage1-r2-lr0.1"


def test_a_choice_is_recorded_once_and_every_later_task_and_stage_runs_with_it(setup):
    study, profile = setup
    stage1 = nodes_of(study, "stage1")
    for i, node in enumerate(stage1):
        fake_run(make_job(study, profile, node), val_loss=1.0 + i)  # stage1-r2-lr0.1 wins
    first, *others = nodes_of(study, "stage2")
    assert (job_for(study, profile, first).rank, job_for(study, profile, first).lr) == (2, 1e-1)
    fake_run(make_job(study, profile, stage1[-1]), val_loss=0.1)  # a stage-1 result changes after stage 2 chose
    assert {(job_for(study, profile, n).rank, job_for(study, profile, n).lr) for n in others} == {(2, 1e-1)}
    for node, mae in zip(nodes_of(study, "stage2"), [0.5, 0.2, 0.9]):
        fake_run(job_for(study, profile, node), val_loss=1.0, mae=mae)
    final = job_for(study, profile, nodes_of(study, "final")[0])
    assert (final.rank, final.lr, final.context) == (2, 1e-1, 128)  # stage 2's recorded choice, not a new one


def test_status_says_when_a_recorded_choice_is_no_longer_what_the_runs_favour(setup):
    from lvjob.orchestrate.status import status_rows

    study, profile = setup
    stage1 = nodes_of(study, "stage1")
    for i, node in enumerate(stage1):
        fake_run(make_job(study, profile, node), val_loss=1.0 + i)
    job_for(study, profile, nodes_of(study, "stage2")[0])  # the first stage-2 task records the choice
    assert not [r for r in status_rows(study, profile) if "favour" in r["why"]]
    fake_run(make_job(study, profile, stage1[-1]), val_loss=0.1)
    stale = {r["node"] for r in status_rows(study, profile) if f"now favour {stage1[-1].key}" in r["why"]}
    assert stale == {n.key for n in nodes_of(study, "stage2")}


# --- the one-standard-error rule ------------------------------------------------------------------------


def candidate(key, loss, se, rank, lr, context=128):
    return {"key": key, "val_loss": loss, "val_loss_se": se, "rank": rank, "lr": lr, "context": context}


def test_of_runs_within_one_standard_error_of_the_best_the_cheapest_is_taken():
    runs = [candidate("a", 1.000, 0.010, 8, 1e-2), candidate("b", 1.008, 0.010, 2, 1e-2), candidate("c", 1.05, 0.01, 1, 1e-4)]
    best, within, taken = one_standard_error(runs, "val_loss")
    assert (best["key"], [c["key"] for c in within], taken["key"]) == ("a", ["a", "b"], "b")


def test_a_best_run_more_than_one_standard_error_ahead_is_taken():
    runs = [candidate("a", 1.000, 0.001, 8, 1e-2), candidate("b", 1.008, 0.001, 2, 1e-2)]
    assert one_standard_error(runs, "val_loss")[2]["key"] == "a"


def test_ties_in_cost_go_by_rank_then_context_then_lr():
    runs = [candidate("a", 1.0, 0.1, 4, 1e-2, 64), candidate("b", 1.0, 0.1, 4, 1e-3, 64), candidate("c", 1.0, 0.1, 4, 1e-4, 128),
            candidate("d", 1.0, 0.1, 8, 1e-5, 32)]
    assert one_standard_error(runs, "val_loss")[2]["key"] == "b"


def test_a_choice_survives_every_loss_perturbed_by_one_part_in_a_million():
    # The README's demo grid before the rule: nine losses 0.002 apart, two tied, with their chunks' SE.
    losses = [1.2544, 1.2544, 1.2548, 1.2551, 1.2553, 1.2556, 1.2559, 1.2562, 1.2565]
    runs = [candidate(f"r{r}-lr{lr}", loss, 0.012, r, lr) for loss, (r, lr) in zip(losses, [(r, lr) for r in (2, 4, 8) for lr in (1e-2, 3e-3, 1e-3)])]
    taken = one_standard_error(runs, "val_loss")[2]["key"]
    rng = np.random.default_rng(0)
    for _ in range(500):
        moved = [c | {"val_loss": c["val_loss"] * (1 + 1e-6 * rng.standard_normal())} for c in runs]
        assert one_standard_error(moved, "val_loss")[2]["key"] == taken


def test_a_recorded_choice_names_the_best_run_the_run_taken_and_the_runs_within_one_standard_error(setup):
    study, profile = setup
    for i, node in enumerate(nodes_of(study, "stage1")):  # stage1-r2-lr0.1 lowest, r2-lr0.01 within its SE
        fake_run(make_job(study, profile, node), val_loss=[1.00, 1.005, 1.2, 1.3, 1.3, 1.3, 1.3, 1.3, 1.3][i], se=0.01)
    choice = choose(study, profile, "stage2")
    assert (choice.best, choice.taken, choice.within_se, choice.se) == (
        "stage1-r2-lr0.1", "stage1-r2-lr0.01", ("stage1-r2-lr0.1", "stage1-r2-lr0.01"), 0.01)
    assert choice.chosen == {"rank": 2, "lr": 1e-2}


def test_a_choice_says_how_many_standard_errors_its_complete_candidates_span(setup):
    study, profile = setup
    for i, node in enumerate(nodes_of(study, "stage1")):
        fake_run(make_job(study, profile, node), val_loss=[1.00, 1.005, 1.2, 1.3, 1.3, 1.3, 1.3, 1.3, 1.5][i], se=0.01,
                 status="failed" if i == 8 else "complete")  # a failed run's loss is no candidate's
    assert choose(study, profile, "stage2").spread_in_se() == pytest.approx(30.0)
