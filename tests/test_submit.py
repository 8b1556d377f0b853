"""`lvjob submit`: the planner's refusal, and the whole study with the local executor (the default)."""

import json
from pathlib import Path

import yaml

from lvjob.cli import main

ROOT = Path(__file__).parent.parent


def test_over_budget_study_is_refused_before_anything_is_submitted(tmp_path, capsys):
    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump({"executor": "slurm", "runs_root": str(tmp_path / "runs")}))
    code = main(["submit", str(ROOT / "jobs" / "reference_study.yaml"), "--profile", str(profile)])
    out = capsys.readouterr().out
    assert code == 1
    assert "does NOT fit: over by 7.255e+16 (72.6%)" in out and "final.steps=2669" in out
    assert "Nothing submitted" in out and not (tmp_path / "runs").exists()


def test_local_profile_runs_a_small_study_to_the_end_and_a_second_submit_does_nothing(small_data, tmp_path, capsys):
    profile = tmp_path / "local.yaml"
    profile.write_text(yaml.safe_dump(yaml.safe_load((ROOT / "slurm" / "local.yaml").read_text())
                                      | {"runs_root": str(tmp_path / "runs"), "results_dir": str(tmp_path / "results")}))
    small = ["model=tiny", f"data.path={small_data}", "data.systems=20", "data.points=30", "evaluation.series=2",
             "training.val_every=2", "training.val_chunks=2", "training.checkpoint_every=2", "zero_shot_prompts=[plain]",
             "default.steps=2", "default.context=48", "stage1.ranks=[2]", "stage1.lrs=[1e-3]", "stage1.steps=2",
             "stage1.context=48", "stage2.contexts=[48]", "stage2.steps=2", "final.steps=2"]
    args = ["submit", str(ROOT / "jobs" / "study.yaml"), "--profile", str(profile), *small]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "9 job(s) submitted; 0 of 9 already complete" in out
    index = json.loads((tmp_path / "results" / "runs.json").read_text())
    assert [r["status"] for r in index["runs"]] == ["complete"] * 8
    assert index["choices"]["final"]["chosen"] == {"rank": 2, "lr": 1e-3, "context": 48}

    assert main(args) == 0
    out = capsys.readouterr().out
    assert "0 job(s) submitted; 9 of 9 already complete" in out

    # status of the finished study: each training run's speed, every stage done, the compute hours spent
    assert main(["status", str(ROOT / "jobs" / "study.yaml"), "--profile", str(profile), *small]) == 0
    out = capsys.readouterr().out
    default = next(line for line in out.splitlines() if line.startswith("| default |"))
    assert float(default.split("|")[5]) > 0  # steps/s
    assert "stage1: 1 done, 0 running, 0 waiting" in out and "CPU-hours over 8 runs" in out
