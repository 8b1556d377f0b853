"""One stage table for what runs, what is charged and what is reported; settings validated once, at load."""

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from lvjob.orchestrate import submission
from lvjob.orchestrate.tasks import StudyTask
from lvjob.run import cost
from lvjob.study import stages as stage_module
from lvjob.results.aggregate import write_results
from lvjob.cli import main
from lvjob.core.config import ConfigError
from lvjob.data.dataset import DataSpec, context_points, split_systems
from lvjob.run.ledger import Ledger
from lvjob.study.plan import plan_study
from lvjob.results.plots import plot_results
from lvjob.cluster.profile import Profile
from lvjob.run.runner import run
from lvjob.study.choices import choose, job_for, make_job
from lvjob.study.spec import load_study, node_choices
from lvjob.study.stages import Node, Stage, study_nodes
from helpers import STUDY

SMALL = ["model=tiny", "data.systems=20", "data.points=30", "evaluation.series=2", "training.val_every=2",
         "training.val_chunks=2", "training.checkpoint_every=2", "zero_shot_prompts=[plain]", "default.steps=2",
         "default.context=48", "stage1.ranks=[2]", "stage1.lrs=[1e-3]", "stage1.steps=2", "stage1.context=48",
         "stage2.contexts=[48]", "stage2.steps=2", "final.steps=2"]


def local_profile(tmp_path) -> Profile:
    return Profile(runs_root=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"), max_parallel=2)


def test_plan_refuses_a_stage2_context_no_job_can_take_naming_the_key(capsys):
    assert main(["plan", str(STUDY), "stage2.contexts=[20,128]"]) == 2
    err = capsys.readouterr().err
    assert "stage2.contexts: 20 is out of range for job stage2-ctx20" in err and "at least 24 tokens" in err


def test_a_late_bound_stage_is_checked_at_every_configuration_it_could_choose(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"stage1": {"ranks": [2, 4]}, "stage2": {"contexts": [128]}}))
    assert load_study(path).stage2.contexts == (128,)
    with pytest.raises(ConfigError, match="stage1.steps: 0 is out of range for job stage1-r2-lr0.0001"):
        load_study(path, overrides=["stage1.steps=0"])


@pytest.mark.parametrize("points, fraction", [(5, 0.95), (5, 0.2), (7, 0.5), (100, 0.2), (30, 0.01)])
def test_data_spec_splits_time_as_the_data_module_does(points, fraction):
    spec = DataSpec(points=points, horizon_fraction=fraction)
    assert spec.context_points == context_points(points, fraction) >= 1
    assert spec.horizon_points == points - spec.context_points >= 1


@pytest.mark.parametrize("systems, fraction", [(3, 0.8), (20, 0.2), (1000, 0.2), (3, 0.01)])
def test_data_spec_counts_validation_systems_as_the_split_does(systems, fraction):
    spec = DataSpec(systems=systems, val_fraction=fraction, test_fraction=0.05)
    assert spec.split_sizes()["validation"] == len(split_systems(systems, fraction, 0.05).validation)


def test_a_late_bound_stage_is_charged_at_its_costliest_choice():
    study = load_study(STUDY, scale="demo")
    final = next(n for n in study_nodes(study) if n.stage.name == "final")
    charged = next(i for i in plan_study(study).items if i.experiment == "final" and i.kind == "train")
    costs = [cost.job_cost(make_job(study, Profile(), final, c)).train for c in node_choices(study, final)]
    assert charged.flops == max(costs) and len(costs) == 27  # 9 stage-1 choices x 3 stage-2 contexts


def toy_nodes(stage, study):
    return [Node(stage, "toy-r2", (("rank", 2), ("lr", 1e-3), ("context", 48), ("steps", 2)))]


def test_a_stage_added_to_the_table_is_run_charged_and_reported(tmp_path, monkeypatch, small_data):
    toy = Stage("toy", toy_nodes, loss_plot=("loss_toy", "A toy stage"))
    monkeypatch.setattr(stage_module, "STAGES", stage_module.STAGES[:-1] + (toy, stage_module.STAGES[-1]))
    study = load_study(STUDY, overrides=SMALL + [f"data.path={small_data}"])
    profile = local_profile(tmp_path)

    planned = [i for i in plan_study(study).items if i.experiment == "toy"]
    assert [i.kind for i in planned] == ["train", "validation", "evaluation"]
    assert "toy" in submission.waves()[0]
    assert submission.waves()[-1] == ["aggregate"]  # the aggregation waits for the new stage too
    node = next(n for n in study_nodes(study) if n.stage.name == "toy")
    threads = torch.get_num_threads()
    try:
        StudyTask(study, profile, node, str(Path.cwd()), os.environ["LVJOB_CACHE"])()  # what a job runs
    finally:
        torch.set_num_threads(threads)  # the task sets the profile's threads for this process
    spent = Ledger.read(job_for(study, profile, node).resolved_run_dir() / "ledger.json")
    assert spent.train == planned[0].flops and 0 < spent.total <= sum(i.flops for i in planned)

    out = write_results(study, profile)
    runs = {r["node"]: r for r in json.loads((out / "runs.json").read_text())["runs"]}
    assert runs["toy-r2"]["status"] == "complete" and runs["toy-r2"]["stage"] == "toy"
    assert "| toy | 1/1 |" in (out / "table4_flops.md").read_text()
    assert out / "plots" / "loss_toy.png" in plot_results(out)


def test_planned_charge_covers_every_runs_ledger_and_equals_its_training_at_demo_scale(tmp_path):
    """Every job of the demo study (its model, data, contexts, validation), run here one after the other as its
    jobs would be; one run per stage, few steps and series, so that it runs in a test: what is checked is per job."""
    fewer = ["zero_shot_prompts=[instruct]", "stage1.ranks=[8]", "stage1.lrs=[1e-2]", "stage2.contexts=[256]",
             "default.steps=2", "stage1.steps=2", "stage2.steps=2", "final.steps=2", "evaluation.series=2",
             f"data.path={tmp_path / 'lv.h5'}"]
    study = load_study(STUDY, scale="demo", overrides=fewer)
    profile = local_profile(tmp_path)
    submission.prepare(study)
    runnable = [n for n in study_nodes(study) if n.stage.runs_jobs]
    for node in runnable:
        assert run(job_for(study, profile, node), log=lambda m: None) == 0, node.key
    for node in runnable:
        job = job_for(study, profile, node)
        spent, planned = Ledger.read(job.resolved_run_dir() / "ledger.json"), cost.job_cost(job)
        assert (spent.train, spent.train_steps) == (planned.train, planned.train_steps), node.key
        assert spent.validation <= planned.validation and spent.prompt <= planned.prompt, node.key
        if job.kind == "baseline":  # no model: nothing computed, nothing charged
            assert spent.total == planned.total == 0, node.key
        else:
            assert 0 < spent.generation <= planned.generation, node.key
    by_stage = plan_study(study).by_experiment()
    for s in {n.stage.name for n in runnable}:
        spent = sum(Ledger.read(job_for(study, profile, n).resolved_run_dir() / "ledger.json").total
                    for n in runnable if n.stage.name == s)
        assert spent <= by_stage[s], s


def test_the_demo_grid_spans_several_standard_errors_between_its_extreme_learning_rates(tmp_path):
    """Stage 1 at demo scale, its smallest rank at the grid's highest and lowest lr, for half the demo's steps (to
    cost less; the README's make study gives 64 SEs at all 20): apart by more than a few of the best run's standard
    errors, so the grid finds something (a grid whose spread is noise found nothing)."""
    demo = load_study(STUDY, scale="demo").stage1
    study = load_study(STUDY, scale="demo", overrides=[
        "stage1.ranks=[2]", f"stage1.lrs=[{max(demo.lrs)},{min(demo.lrs)}]", f"stage1.steps={demo.steps // 2}",
        f"training.val_every={demo.steps // 2}", "evaluation.series=2", f"data.path={tmp_path / 'lv.h5'}"])
    profile = local_profile(tmp_path)
    submission.prepare(study)
    for node in (n for n in study_nodes(study) if n.stage.name == "stage1"):
        assert run(job_for(study, profile, node), log=lambda m: None) == 0, node.key
    assert choose(study, profile, "stage2").spread_in_se() > 5


def test_submit_itself_refuses_a_study_over_its_budget(tmp_path):
    study = dataclasses.replace(load_study(STUDY, scale="demo"), budget_flops=1e6)
    with pytest.raises(submission.OverBudget) as e:
        submission.submit(study, local_profile(tmp_path), log=lambda m: None)
    assert e.value.plan.total > 1e6 and not (tmp_path / "runs").exists()
