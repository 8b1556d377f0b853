"""What the study's jobs run (lvjob.orchestrate.tasks), on run directories and records made by hand."""

import os
import pickle
from types import SimpleNamespace

import pytest

from helpers import STUDY, evaluation, write_run
from lvjob.cluster.profile import Profile
from lvjob.orchestrate import records
from lvjob.core.config import ConfigError
from lvjob.orchestrate.tasks import StudyTask
from lvjob.study.choices import StageError, make_job, read_choice, study_dir
from lvjob.study.spec import TrainingSpec, load_study
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


# --- what a job's pickle holds -----------------------------------------------------------------------


@pytest.fixture
def pickled_task(tmp_path):
    """A stage-2 task as submitit pickles it, and the study and profile it was made from."""
    study = load_study(STUDY, overrides=["stage1.steps=7"])
    profile = Profile(runs_root=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"))
    node = next(n for n in study_nodes(study) if n.stage.name == "stage2")
    return pickle.dumps(StudyTask(study, profile, node, str(tmp_path), str(tmp_path))), study, profile, node.key


def test_a_task_is_pickled_as_plain_settings_and_rebuilt_equal(pickled_task):
    blob, study, profile, key = pickled_task
    assert b"lvjob.study.spec" not in blob and b"lvjob.cluster.profile" not in blob and b"lvjob.study.stages" not in blob
    task = pickle.loads(blob)
    assert (task.study, task.profile, task.node.key) == (study, profile, key)


def test_a_job_pickled_before_a_setting_was_added_takes_its_default_and_keeps_the_study_folder(pickled_task):
    blob, study, profile, _ = pickled_task
    state = pickle.loads(blob).__getstate__()
    assert state["study"]["training"].pop("val_chunks") == TrainingSpec.val_chunks  # as code without this setting wrote it
    task = StudyTask.__new__(StudyTask)
    task.__setstate__(state)
    assert task.study == study and study_dir(task.study, profile).root == study_dir(study, profile).root


def test_a_job_pickled_with_a_setting_the_code_no_longer_has_fails_with_one_line_naming_it(pickled_task):
    blob = pickled_task[0]
    state = pickle.loads(blob).__getstate__()
    state["study"]["stage1"]["warmup"] = 10
    with pytest.raises(ConfigError, match=r"^the settings this job was submitted with \(study\): unknown key stage1.'warmup'"):
        StudyTask.__new__(StudyTask).__setstate__(state)

