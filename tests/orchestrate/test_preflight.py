"""The pre-flight (SPEC §7): every broken field of a profile is found before anything is queued, one line each."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lvjob import data
from lvjob.orchestrate import preflight
from lvjob.models.loading import ensure_tiny_model
from lvjob.cluster.profile import load_profile
from lvjob.study.spec import load_study
from helpers import ROOT, STUDY



def profile_file(tmp_path: Path, **values) -> Path:
    raw = {"name": "t", "executor": "slurm", "runs_root": str(tmp_path / "runs"), "results_dir": str(tmp_path / "results")}
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(raw | values))
    return path


def study(tmp_path: Path, small_data: Path, *extra: str):
    return load_study(STUDY, scale="demo", overrides=["model=tiny", f"data.path={small_data}", "data.systems=20",
                                                      "data.points=30", "evaluation.series=2", *extra])


def found(tmp_path, small_data, *extra, **values) -> list[str]:
    return preflight.problems(study(tmp_path, small_data, *extra), load_profile(profile_file(tmp_path, **values)))


def test_a_good_profile_has_no_problems(tmp_path, small_data):
    assert found(tmp_path, small_data) == []


def test_more_than_one_gpu_per_job_is_refused_saying_why(tmp_path, small_data):
    lines = found(tmp_path, small_data, gpus_per_node=2)
    assert len(lines) == 1 and lines[0].startswith("gpus_per_node: 2; valid: 0 or 1 (one device per job")


def test_a_missing_image_is_named(tmp_path, small_data):
    lines = found(tmp_path, small_data, image=str(tmp_path / "nope.sif"), container=sys.executable)
    assert lines == [f"image: {tmp_path / 'nope.sif'} is not a readable file; valid: the .sif built by `make container`"]


def test_a_container_command_not_on_path_is_named(tmp_path, small_data):
    (tmp_path / "lvjob.sif").write_text("x")
    lines = found(tmp_path, small_data, image=str(tmp_path / "lvjob.sif"), container="no-such-apptainer")
    assert len(lines) == 1 and lines[0].startswith("container: 'no-such-apptainer' is not on PATH")


def test_wandb_in_the_tracking_list_without_wandb_installed_is_refused_saying_how_to_install(tmp_path, small_data, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # how Python marks a module as absent
    lines = found(tmp_path, small_data, tracking=["tensorboard", "wandb"])
    assert len(lines) == 1 and lines[0].startswith(f"tracking: lists wandb, which is not installed in {sys.executable}; ")
    assert "`make wandb`" in lines[0]


def test_wandb_in_the_tracking_list_passes_where_it_is_installed(tmp_path, small_data):
    pytest.importorskip("wandb", reason="the optional extra: `make wandb` (make test installs it)")
    assert found(tmp_path, small_data, tracking=["tensorboard", "wandb"]) == []


def test_an_output_folder_that_cannot_be_made_is_named(tmp_path, small_data):
    (tmp_path / "a-file").write_text("x")
    lines = found(tmp_path, small_data, results_dir=str(tmp_path / "a-file" / "results"))
    assert len(lines) == 1 and lines[0].startswith(f"results_dir: {tmp_path / 'a-file' / 'results'} cannot be written")


def test_a_results_dir_that_is_a_link_lvjob_did_not_make_is_refused_naming_its_target(tmp_path, small_data):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "mine").symlink_to(tmp_path / "elsewhere")
    lines = found(tmp_path, small_data, results_dir=str(tmp_path / "mine"))
    assert lines == [f"results_dir: {tmp_path / 'mine'} is a link to {tmp_path / 'elsewhere'}, which lvjob did not make; "
                     "valid: that folder itself as results_dir (lvjob keeps results_dir as a link to the study aggregated "
                     "last)"]


def test_a_folder_the_os_will_not_let_us_write_is_refused_with_its_reason_even_for_root(tmp_path, small_data):
    lines = found(tmp_path, small_data, runs_root="/proc/lvjob-not-writable/runs")
    assert lines == ["runs_root: /proc/lvjob-not-writable/runs cannot be written (No such file or directory); valid: "
                     "a folder you can write (on a cluster, one every compute node sees, such as $SCRATCH/...)"]


def test_a_slurm_profiles_outputs_on_a_node_local_filesystem_are_a_warning_not_a_refusal(tmp_path, small_data):
    profile = load_profile(profile_file(tmp_path, runs_root="/dev/shm/lvjob-runs"))
    warned = preflight.cautions(study(tmp_path, small_data), profile)
    assert warned[0].startswith("runs_root: /dev/shm/lvjob-runs is on /dev/shm (node-local)") and "other nodes do not see" in warned[0]
    assert warned[1].startswith(f"results_dir: {tmp_path / 'results'} is on /tmp (node-local)")  # pytest's tmp_path
    assert preflight.problems(study(tmp_path, small_data), profile) == []
    shutil.rmtree("/dev/shm/lvjob-runs", ignore_errors=True)


def test_the_real_model_without_a_staged_folder_is_refused_on_a_cluster(tmp_path, small_data):
    lines = found(tmp_path, small_data, "model=qwen2.5-0.5b")
    assert len(lines) == 1 and lines[0].startswith("model_path: not set") and "lvjob fetch-model" in lines[0]


def test_a_staged_model_folder_that_is_not_qwen_is_refused(tmp_path, small_data):
    folder = tmp_path / "model"
    shutil.copytree(ensure_tiny_model(), folder)
    lines = found(tmp_path, small_data, "model=qwen2.5-0.5b", model_path=str(folder))
    assert lines and all(line.startswith(f"model_path: {folder}") for line in lines)


def test_a_data_file_of_other_sizes_than_the_study_says_is_refused(tmp_path, small_data):
    lines = found(tmp_path, small_data, "data.systems=40")
    assert lines == [f"data.systems/data.points: the study says 40 x 30, {small_data} holds 20 x 30; "
                     "valid: the file's own sizes"]


def test_a_damaged_data_file_is_refused_naming_it(tmp_path, small_data):
    bad = tmp_path / "bad.h5"
    lv, params = data.generate(n_systems=20, n_points=30, seed=0)
    lv.trajectories[0, 0, 0] = float("nan")
    with pytest.raises(ValueError):
        data.write(bad, lv, params)  # write refuses it too; make one by hand
    import h5py

    with h5py.File(bad, "w") as f:
        f["trajectories"] = lv.trajectories
        f["time"] = lv.time
    lines = preflight.problems(load_study(STUDY, scale="demo", overrides=["model=tiny", f"data.path={bad}", "data.systems=20", "evaluation.series=2",
                                                                          "data.points=30"]),
                               load_profile(profile_file(tmp_path)))
    assert len(lines) == 1 and lines[0].startswith("data.path: ") and str(bad) in lines[0]


def test_lvjob_check_passes_on_the_local_profile():
    proc = subprocess.run([sys.executable, "-m", "lvjob", "check", "jobs/study.yaml", "--profile", "local"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("pre-flight ok"), proc.stdout + proc.stderr


def test_lvjob_check_refuses_an_unset_variable_in_a_path_naming_it(tmp_path, monkeypatch):
    monkeypatch.delenv("LVJOB_NO_SUCH_VAR", raising=False)
    path = profile_file(tmp_path, runs_root="$LVJOB_NO_SUCH_VAR/runs")
    proc = subprocess.run([sys.executable, "-m", "lvjob", "check", "jobs/study.yaml", "--profile", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "LVJOB_NO_SUCH_VAR" in proc.stdout + proc.stderr and "runs_root" in proc.stdout + proc.stderr


def test_lvjob_check_refuses_a_plan_over_budget(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lvjob", "check", "jobs/study.yaml", "--profile", "local", "final.steps=1000000000"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "budget:" in proc.stdout
