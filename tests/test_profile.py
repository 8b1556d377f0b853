"""Cluster profiles: validation like job specs, the Apptainer command line, the sbatch script they make."""

import shlex
import sys
from pathlib import Path

import pytest
import yaml

from lvjob.config import ConfigError
from lvjob.profile import exec_command, load_profile, python_for_submitit

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "slurm" / "gpu-cluster.example.yaml"


def write(tmp_path, **values) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.mark.parametrize("path", sorted((ROOT / "slurm").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_profile_loads(path):
    assert load_profile(path).executor in ("local", "slurm")


def test_profiles_are_found_by_name(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert load_profile("local").name == "local" and load_profile("slurm-ci").executor == "slurm"


def test_unknown_profile_name_lists_the_valid_ones(monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(ConfigError, match="no such profile; valid: gpu-cluster.example, local, slurm-ci"):
        load_profile("nowhere")


def test_unknown_key_is_refused_with_its_name(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'partion'"):
        load_profile(write(tmp_path, executor="slurm", partion="gpu"))


def test_wrong_type_is_refused_with_its_name(tmp_path):
    with pytest.raises(ConfigError, match="gpus_per_node: expected an integer"):
        load_profile(write(tmp_path, executor="slurm", gpus_per_node="one"))


@pytest.mark.parametrize("values, key", [
    ({"executor": "slurm", "timeout_min": 0}, "timeout_min"),
    ({"executor": "slurm", "timeout_min": 10, "signal_delay_s": 600}, "signal_delay_s"),
    ({"executor": "cloud"}, "executor"),
    ({"executor": "local", "image": "x.sif"}, "image"),
    ({"executor": "slurm", "model": "qwen3"}, "model"),
])
def test_out_of_range_values_are_refused_naming_the_key(tmp_path, values, key):
    with pytest.raises(ConfigError, match=key):
        load_profile(write(tmp_path, **values))


def test_without_an_image_jobs_run_the_projects_python(tmp_path):
    profile = load_profile(write(tmp_path, executor="slurm"))
    assert exec_command(profile, Path("/work"), Path("/cache")) == [sys.executable]


def test_with_an_image_jobs_run_apptainer_exec_with_gpus_and_binds():
    profile = load_profile(EXAMPLE)
    cmd = exec_command(profile, Path("/home/me/lvjob"), Path("/home/me/lvjob/.cache"))
    assert cmd == ["apptainer", "exec", "--nv",
                   "--bind", "/home/me/lvjob", "--bind", "/home/me/lvjob/.cache",
                   "--bind", "/scratch/my-project/models/Qwen2.5-0.5B-Instruct", "--bind", "/scratch",
                   "--pwd", "/home/me/lvjob", "/scratch/my-project/lvjob.sif", "python"]


def test_no_gpu_no_nv_and_each_bind_once(tmp_path):
    profile = load_profile(write(tmp_path, executor="slurm", image="/i.sif", binds=["/w", "/data:/data:ro"]))
    cmd = exec_command(profile, Path("/w"), Path("/c"))
    assert "--nv" not in cmd
    assert cmd.count("/w") == 2  # one --bind and --pwd: the project folder is not bound twice
    assert ["--bind", "/data:/data:ro"] == cmd[cmd.index("/data:/data:ro") - 1: cmd.index("/data:/data:ro") + 1]


def test_submitit_gets_the_command_quoted_so_odd_paths_survive(tmp_path):
    profile = load_profile(write(tmp_path, executor="slurm", image="/my images/lv job.sif"))
    line = python_for_submitit(profile, Path("/w w"), Path("/c"))
    assert shlex.split(line) == exec_command(profile, Path("/w w"), Path("/c"))


def test_sbatch_script_of_the_gpu_profile(tmp_path, monkeypatch):
    from lvjob.executors import backend

    monkeypatch.chdir(tmp_path)
    profile = load_profile(EXAMPLE)
    ex = backend(profile).executor(tmp_path / "submitit", "stage2", after=["12", "13"])
    script = ex._executor._make_submission_file_text(ex._executor._submitit_command_str, "uid")
    for flag in ("--partition=gpu", "--account=my-project", "--gpus-per-node=1", "--cpus-per-task=8",
                 "--mem=32GB", "--time=240", "--signal=USR2@180", "--dependency=afterany:12:13",
                 "--job-name=lvjob-stage2"):
        assert f"#SBATCH {flag}" in script
    command = [line for line in script.splitlines() if "submitit.core._submit" in line][0]
    assert f"apptainer exec --nv --bind {tmp_path}" in command
    assert "/scratch/my-project/lvjob.sif python -u -m submitit.core._submit" in command


# --- $VAR expansion in paths ------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["model_path", "runs_root", "results_dir", "image"])
def test_a_path_field_expands_dollar_var_and_braced_var(tmp_path, monkeypatch, key):
    monkeypatch.setenv("SCRATCH", "/lustre/me")
    monkeypatch.setenv("PROJ", "lv")
    profile = load_profile(write(tmp_path, executor="slurm", **{key: "$SCRATCH/${PROJ}_x/out"}))
    assert getattr(profile, key) == "/lustre/me/lv_x/out"


def test_binds_and_env_values_are_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCH", "/lustre/me")
    profile = load_profile(write(tmp_path, executor="slurm", binds=["$SCRATCH", "${SCRATCH}/data:/data:ro"],
                                 env={"HF_HOME": "$SCRATCH/hf"}))
    assert profile.binds == ("/lustre/me", "/lustre/me/data:/data:ro") and profile.env == {"HF_HOME": "/lustre/me/hf"}


def test_overrides_are_expanded_like_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCH", "/lustre/me")
    assert load_profile(write(tmp_path, executor="slurm"), ["runs_root=$SCRATCH/runs"]).runs_root == "/lustre/me/runs"


@pytest.mark.parametrize("key", ["model_path", "runs_root", "results_dir", "image"])
def test_an_unset_variable_is_refused_naming_the_field_the_variable_and_the_file(tmp_path, monkeypatch, key):
    monkeypatch.delenv("LVJOB_NOT_SET", raising=False)
    path = write(tmp_path, executor="slurm", **{key: "${LVJOB_NOT_SET}/x"})
    with pytest.raises(ConfigError, match=f"^{path}: {key}: .*uses \\$LVJOB_NOT_SET, which is not set"):
        load_profile(path)


def test_an_unset_variable_in_a_bind_names_the_entry(tmp_path, monkeypatch):
    monkeypatch.delenv("LVJOB_NOT_SET", raising=False)
    with pytest.raises(ConfigError, match="binds\\[1\\]: .*\\$LVJOB_NOT_SET"):
        load_profile(write(tmp_path, executor="slurm", binds=["/ok", "$LVJOB_NOT_SET"]))


def test_an_empty_variable_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCH", "")
    with pytest.raises(ConfigError, match="runs_root: .*\\$SCRATCH, which is empty"):
        load_profile(write(tmp_path, executor="slurm", runs_root="$SCRATCH/runs"))


def test_the_pull_path_on_the_cluster_is_left_as_written(tmp_path, monkeypatch):
    monkeypatch.delenv("LVJOB_NOT_SET", raising=False)
    profile = load_profile(write(tmp_path, executor="slurm", pull={"host": "h", "path": "$LVJOB_NOT_SET/lvjob"}))
    assert profile.pull.path == "$LVJOB_NOT_SET/lvjob"
