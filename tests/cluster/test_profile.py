"""Cluster profiles: validation like job specs, the Apptainer command line, the sbatch script they make."""

import sys
from pathlib import Path

import pytest
import yaml

from lvjob.core.config import ConfigError
from lvjob.cluster.profile import load_profile, runner_command, runner_env
from helpers import ROOT

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
    ({"executor": "local", "pack": "study"}, "pack"),
    ({"executor": "slurm", "pack": "all"}, "pack"),
    ({"executor": "slurm", "pack": "study", "runs_per_gpu": 0}, "runs_per_gpu"),
    ({"executor": "slurm", "model": "qwen3"}, "model"),
])
def test_out_of_range_values_are_refused_naming_the_key(tmp_path, values, key):
    with pytest.raises(ConfigError, match=key):
        load_profile(write(tmp_path, **values))


JOB = Path("/w/runs/study/jobs/stage1-r4.yaml")


def test_without_an_image_the_runner_is_the_projects_python_as_a_child(tmp_path):
    profile = load_profile(write(tmp_path, executor="slurm"))
    assert runner_command(profile, Path("/work"), Path("/cache"), JOB) == [sys.executable, "-m", "lvjob", "run", str(JOB)]


def test_with_an_image_the_runner_runs_in_apptainer_with_a_clean_environment_gpus_and_binds():
    profile = load_profile(EXAMPLE)
    cmd = runner_command(profile, Path("/home/me/lvjob"), Path("/home/me/lvjob/.cache"), JOB)
    assert cmd[:4] == ["apptainer", "exec", "--nv", "--cleanenv"]
    assert cmd[-9:] == ["--bind", "/scratch", "--pwd", "/home/me/lvjob", "/scratch/my-project/lvjob.sif",
                        "python", "-m", "lvjob", "run", str(JOB)][-9:]
    binds = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--bind"]
    assert binds == ["/home/me/lvjob", "/home/me/lvjob/.cache", "/scratch/my-project/models/Qwen2.5-0.5B-Instruct", "/scratch"]


def test_the_image_gets_exactly_the_environment_the_runner_needs(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    profile = load_profile(write(tmp_path, executor="slurm", image="/i.sif", env={"HF_HOME": "/hf"}, cpus_per_task=6))
    cmd = runner_command(profile, Path("/w"), Path("/c"), JOB)
    passed = dict(cmd[i + 1].split("=", 1) for i, a in enumerate(cmd) if a == "--env")
    assert passed == {"LVJOB_CACHE": "/c", "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1", "OMP_NUM_THREADS": "6",
                      "LVJOB_TRACKING": "tensorboard", "SLURM_JOB_ID": "4242", "HF_HOME": "/hf",
                      "LVJOB_READY_FILE": str(JOB.with_suffix(".ready"))}  # where the runner says it takes signals


def test_tracking_is_tensorboard_alone_unless_the_profile_says_otherwise(tmp_path):
    assert load_profile(write(tmp_path, executor="local")).tracking == ("tensorboard",)
    assert load_profile(write(tmp_path, executor="local", tracking=["tensorboard", "wandb"])).tracking == ("tensorboard", "wandb")


@pytest.mark.parametrize("tracking", [["tensorboard", "wandbb"], ["wandb", "wandb"]])
def test_an_unknown_or_repeated_tracking_backend_is_refused_naming_the_field_and_the_valid_ones(tmp_path, tracking):
    with pytest.raises(ConfigError, match=r"tracking: .* valid: a list of tensorboard, wandb"):
        load_profile(write(tmp_path, executor="local", tracking=tracking))


def test_the_runner_in_the_image_is_told_the_tracking_list_and_the_users_wandb_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    profile = load_profile(write(tmp_path, executor="slurm", image="/i.sif", tracking=["tensorboard", "wandb"]))
    cmd = runner_command(profile, Path("/w"), Path("/c"), JOB)
    passed = dict(cmd[i + 1].split("=", 1) for i, a in enumerate(cmd) if a == "--env")
    assert passed["LVJOB_TRACKING"] == "tensorboard,wandb" and passed["WANDB_MODE"] == "online"
    assert "WANDB_PROJECT" not in passed  # only what the user set


def test_without_wandb_in_the_list_no_wandb_variable_is_passed(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    env = runner_env(load_profile(write(tmp_path, executor="slurm")), Path("/c"))
    assert not [k for k in env if k.startswith("WANDB_")]


def test_no_gpu_no_nv_and_each_bind_once(tmp_path):
    profile = load_profile(write(tmp_path, executor="slurm", image="/i.sif", binds=["/w", "/data:/data:ro"]))
    cmd = runner_command(profile, Path("/w"), Path("/c"), JOB)
    assert "--nv" not in cmd
    assert cmd.count("/w") == 2  # one --bind and --pwd: the project folder is not bound twice
    assert ["--bind", "/data:/data:ro"] == cmd[cmd.index("/data:/data:ro") - 1: cmd.index("/data:/data:ro") + 1]


def test_the_container_command_is_the_profiles(tmp_path):
    profile = load_profile(write(tmp_path, executor="slurm", image="/i.sif", container="singularity"))
    assert runner_command(profile, Path("/w"), Path("/c"), JOB)[:2] == ["singularity", "exec"]


def test_sbatch_script_of_the_gpu_profile(tmp_path, monkeypatch):
    from lvjob.cluster.executors import backend

    monkeypatch.chdir(tmp_path)
    profile = load_profile(EXAMPLE)
    ex = backend(profile, "lv-study-full").executor(tmp_path / "submitit", "stage2", after=["12", "13"])
    script = ex._executor._make_submission_file_text(ex._executor._submitit_command_str, "uid")
    for flag in ("--partition=gpu", "--account=my-project", "--gpus-per-node=1", "--cpus-per-task=8",
                 "--mem=32GB", "--time=240", "--signal=USR2@180", "--dependency=afterany:12:13",
                 "--job-name=lvjob:lv-study-full:stage2", "--requeue"):
        assert f"#SBATCH {flag}" in script
    command = [line for line in script.splitlines() if "submitit.core._submit" in line][0]
    assert f"{sys.executable} -u -m submitit.core._submit" in command  # on the host: the image runs only the runner
    assert "apptainer" not in command


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
