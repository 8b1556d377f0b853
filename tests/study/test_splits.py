"""The test split (SPEC §2): every choice reads validation systems only; reported rows score the test systems."""

from dataclasses import replace

import pytest

from lvjob import data
from lvjob.cluster.profile import Profile
from lvjob.run.evaluate import evaluation_series
from lvjob.study.choices import StageError, choose, make_job
from lvjob.study.spec import Study, load_study
from lvjob.study.stages import check_table, stage_table, study_nodes
from helpers import STUDY



@pytest.fixture(scope="module")
def study():
    return load_study(STUDY, scale="demo")


def _chosen_from(study) -> list:
    """Every job whose results some stage chooses from, at every configuration it can run with."""
    from lvjob.study.spec import node_choices

    sources = {s.choice.source for s in stage_table() if s.choice}
    return [make_job(study, Profile(), n, c) for n in study_nodes(study) if n.stage.name in sources
            for c in node_choices(study, n)]


def test_no_job_a_choice_reads_forecasts_a_test_system(study):
    lv = data.generate(study.data.systems, study.data.points, study.data.seed)[0]
    split = study.data.split(lv.n_systems)
    for job in _chosen_from(study):
        systems, _, _ = evaluation_series(job, lv.trajectories, split)
        assert not set(systems.tolist()) & set(split.test.tolist()), job.name


def test_every_row_of_table3_scores_the_test_systems(study):
    compared = [n for n in study_nodes(study) if n.label]
    assert {make_job(study, Profile(), n, _any_choice(study, n)).eval_split for n in compared} == {"test"}


def _any_choice(study, node):
    from lvjob.study.spec import node_choices

    return node_choices(study, node)[0]


def test_a_stage_table_whose_choice_reads_a_test_stage_is_refused():
    table = [replace(s, split="test") if s.name == "stage1" else s for s in stage_table()]
    with pytest.raises(ValueError, match="stage2 chooses from stage1, which scores the test systems"):
        check_table(table, Study())


def test_a_reported_stage_that_scores_validation_systems_is_refused():
    table = [replace(s, split="validation") if s.name == "final" else s for s in stage_table()]
    with pytest.raises(ValueError, match="final is compared in Table 3 but scores the validation systems"):
        check_table(table, Study())


def test_a_choice_refuses_a_finished_candidate_that_scored_the_test_systems(study, tmp_path):
    import json

    profile = Profile(runs_root=str(tmp_path))
    node = next(n for n in study_nodes(study) if n.stage.name == "stage1")
    run_dir = make_job(study, profile, node).resolved_run_dir()
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"status": "complete", "kind": "train"}))
    (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 20, "loss": 1.0, "val_loss": 1.0}) + "\n")
    (run_dir / "eval.json").write_text(json.dumps({"split": "test", "model": {"mae": 0.1}}))
    with pytest.raises(StageError, match=f"{node.key} scored the test systems"):
        choose(study, profile, "stage2")
