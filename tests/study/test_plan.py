import dataclasses

import pytest


from lvjob.models import flops
from lvjob.cli import main
from lvjob.study.plan import plan_study, propose, validation_passes
from lvjob.data.prompts import forecast_tokens, prompt_tokens
from lvjob.study.spec import EvalSpec, FinalRun, LoraRun, Stage1, Stage2, Study, load_study
from helpers import JOBS, ROOT, STUDY

QWEN = flops.shape_of("qwen2.5-0.5b")


def test_reference_study_does_not_fit_the_budget():
    plan = plan_study(load_study(JOBS / "reference_study.yaml"))
    assert not plan.fits
    assert plan.total > 1.7e17  # honest accounting: 3 x forward per step, LoRA or not


def test_planner_proposes_the_largest_final_run_that_fits():
    study = load_study(JOBS / "reference_study.yaml")
    proposal = propose(study)
    steps = proposal.study.final.steps
    assert 0 < steps < study.final.steps
    assert proposal.plan.fits
    one_more = dataclasses.replace(study, final=dataclasses.replace(study.final, steps=steps + 1))
    assert not plan_study(one_more).fits
    assert proposal.study.default == study.default and proposal.study.stage1 == study.stage1


def test_default_study_fits_the_budget_at_both_scales():
    assert plan_study(load_study(JOBS / "study.yaml")).fits
    assert plan_study(load_study(JOBS / "study.yaml", scale="demo")).fits


def test_default_study_is_the_reference_with_the_final_run_cut():
    ref, study = load_study(JOBS / "reference_study.yaml"), load_study(JOBS / "study.yaml")
    assert study.final.steps <= propose(ref).study.final.steps
    assert dataclasses.replace(study, name=ref.name, final=ref.final) == ref


def test_demo_scale_uses_the_pretrained_tiny_demo_model():
    assert load_study(JOBS / "study.yaml", scale="demo").model == "tiny-lv"


def _small_study(**kw) -> Study:
    base = Study(
        default=LoraRun(rank=4, lr=1e-5, context=64, steps=10),
        stage1=Stage1(ranks=(2, 8), lrs=(1e-4,), context=64, steps=5),
        stage2=Stage2(contexts=(32, 128), steps=5),
    )
    return dataclasses.replace(base, **kw)


def test_training_is_charged_three_forwards_per_step():
    study = _small_study()
    item = next(i for i in plan_study(study).items if i.experiment == "default" and i.kind == "train")
    fwd = flops.forward(QWEN, study.training.batch_size, 64, lora_rank=4, loss=True).total
    assert item.flops == 10 * 3 * fwd


def test_validation_runs_every_interval_and_at_the_last_step():
    assert validation_passes(500, 250) == 2
    assert validation_passes(501, 250) == 3
    assert validation_passes(0, 250) == 0


def test_evaluation_is_charged_prompt_plus_the_grammars_longest_forecast_per_series():
    study = _small_study()
    item = next(i for i in plan_study(study).items if i.experiment == "zero-shot" and "instruct" in i.run)
    d = study.data
    longest = forecast_tokens(d.horizon_points, int_digits=3)  # every value at max_int_digits (Job's default, 3)
    per = flops.generation(QWEN, 1, prompt_tokens("instruct", d.context_points, d.horizon_points), longest,
                           logits_vocab=13).total
    assert item.flops == study.evaluation.series * per


def test_run_time_choices_are_charged_at_their_most_expensive_candidate():
    items = plan_study(_small_study()).items
    final = next(i for i in items if i.experiment == "final" and i.kind == "train")
    fwd = flops.forward(QWEN, 4, 128, lora_rank=8, loss=True).total  # largest rank, longest context
    assert final.flops == final.count * 3 * fwd


def test_when_no_final_run_fits_every_stage_is_scaled_down():
    few = dict(evaluation=EvalSpec(series=2), final=FinalRun(steps=10))
    # Two thirds: one final step does not fit, one step of every stage (with its validation pass) does.
    study = _small_study(budget_flops=plan_study(_small_study(**few)).total * 2 / 3, **few)
    proposal = propose(study)
    assert proposal.plan.fits
    assert proposal.study.default.steps < study.default.steps
    assert "every training stage" in proposal.how


def test_a_study_that_fits_gets_no_proposal():
    assert propose(_small_study()) is None


def test_plan_command_refuses_the_reference_study_saying_by_how_much(capsys):
    code = main(["plan", str(JOBS / "reference_study.yaml")])
    out = capsys.readouterr().out
    assert code == 1
    assert "does NOT fit: over by" in out
    assert "Largest step counts that fit: final.steps=" in out


def test_plan_command_accepts_the_default_study(capsys):
    assert main(["plan", str(JOBS / "study.yaml")]) == 0
    assert "the plan fits" in capsys.readouterr().out


def test_plan_command_applies_overrides(capsys):
    assert main(["plan", str(JOBS / "study.yaml"), "final.steps=100000"]) == 1


def test_plan_command_names_a_bad_key(capsys):
    assert main(["plan", str(JOBS / "study.yaml"), "stage1.rank=4"]) == 2
    assert "unknown key stage1.'rank'" in capsys.readouterr().err


@pytest.mark.parametrize("profile, packed, fanned", [
    ("slurm/gpu-cluster.example.yaml", "packed (this profile): 1 allocation", "fan-out: 7 allocations on the critical path"),
    ("slurm/slurm-ci.yaml", "packed: 1 allocation", "fan-out (this profile): 7 allocations on the critical path"),
    ("local", "packed: 1 allocation", "fan-out (this profile): 7 allocations on the critical path")])
def test_plan_with_a_profile_counts_the_allocations_on_the_critical_path_of_both_packings(capsys, profile, packed, fanned):
    assert main(["plan", str(STUDY), "--profile", str(ROOT / profile) if profile.endswith(".yaml") else profile]) == 0
    out = capsys.readouterr().out
    assert packed in out and fanned in out and "min of GPU time at 94 TFLOP/s" in out
