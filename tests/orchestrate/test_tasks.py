"""What the study's jobs run (lvjob.orchestrate.tasks), on run directories and records made by hand."""

import os
from types import SimpleNamespace

import pytest

from helpers import STUDY, evaluation, write_run
from lvjob.cluster.profile import Profile
from lvjob.orchestrate import records
from lvjob.orchestrate.tasks import StudyTask
from lvjob.study.choices import StageError, make_job, read_choice
from lvjob.study.spec import load_study
from lvjob.study.stages import study_nodes


@pytest.fixture
def in_place(tmp_path, monkeypatch):
    """A task changes into its workdir and sets the cache variables: undone after the test."""
    monkeypatch.chdir(tmp_path)
    for key in ("LVJOB_CACHE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(key, os.environ.get(key, ""))
    return str(tmp_path), os.environ["LVJOB_CACHE"]


def test_a_late_stage_whose_sources_gate_died_names_the_run_instead_of_choosing_from_the_rest(tmp_path, in_place):
    study = load_study(STUDY, scale="demo")
    profile = Profile(runs_root=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"))
    stage1 = [n for n in study_nodes(study) if n.stage.name == "stage1"]
    for i, node in enumerate(stage1):  # stage1[3] crashed; no gate ran after the stage to retry it
        write_run(make_job(study, profile, node), "failed" if i == 3 else "complete",
                  rows=[{"step": 20, "loss": 1.0, "val_loss": 1.0 + i}], evaluation=evaluation(0.5, 0.3))
    records.record_submissions(study, profile, "stage1", stage1, [SimpleNamespace(job_id=f"{i}") for i in range(9)])
    stage2 = next(n for n in study_nodes(study) if n.stage.name == "stage2")
    with pytest.raises(StageError, match=f"stage2 cannot choose: its stage1 runs are not settled .*{stage1[3].key} would be retried"):
        StudyTask(study, profile, stage2, *in_place)()
    assert read_choice(study, profile, "stage2") is None
