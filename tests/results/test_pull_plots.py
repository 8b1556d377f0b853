"""`make pull` (rsync, run here against a local folder standing in for the cluster) and `make plots`."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import index_entry
from lvjob.cluster.profile import load_profile
from lvjob.orchestrate.pull import pull, rsync_commands

pytestmark = pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")


def cluster_tree(root: Path) -> None:
    run = root / "checkpoints" / "final-abc"
    (run / "checkpoints" / "step-0000250").mkdir(parents=True)
    (run / "checkpoints" / "step-0000250" / "optimizer.pt").write_bytes(b"x" * 100)
    (run / "adapter").mkdir()
    (run / "adapter" / "adapter_config.json").write_text("{}")
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    logs = root / "checkpoints" / "study-x" / "submitit"
    logs.mkdir(parents=True)
    (logs / "5_0_log.out").write_text("log")
    (logs / "5_submitted.pkl").write_bytes(b"pickle")
    (root / "results.by-study" / "lv-study-demo-1a2b3c4d").mkdir(parents=True)
    (root / "results.by-study" / "lv-study-demo-1a2b3c4d" / "summary.md").write_text("# Results")
    (root / "results").symlink_to("results.by-study/lv-study-demo-1a2b3c4d")


def profile_for(tmp_path, source: Path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"executor": "slurm", "pull": {"path": str(source)}}))
    return load_profile(path)


def test_pull_copies_results_and_logs_but_not_checkpoints_and_deletes_nothing(tmp_path, monkeypatch):
    source = tmp_path / "cluster"
    cluster_tree(source)
    here = tmp_path / "here"
    (here / "results").mkdir(parents=True)  # an older lvjob's results folder, where the link goes now
    (here / "results" / "mine.md").write_text("local only")
    monkeypatch.chdir(here)
    pull(profile_for(tmp_path, source))
    assert (here / "results" / "summary.md").read_text() == "# Results"  # through the cluster's link to its latest
    assert [p.read_text() for p in here.glob("results.by-study/unkeyed-*/mine.md")] == ["local only"]
    assert (here / "checkpoints" / "final-abc" / "metrics.jsonl").exists()
    assert (here / "checkpoints" / "final-abc" / "adapter" / "adapter_config.json").exists()
    assert (here / "checkpoints" / "study-x" / "submitit" / "5_0_log.out").exists()
    assert not (here / "checkpoints" / "final-abc" / "checkpoints").exists()
    assert not (here / "checkpoints" / "study-x" / "submitit" / "5_submitted.pkl").exists()


def test_pull_goes_over_ssh_to_the_profiles_host(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"executor": "slurm", "pull": {"host": "login.example", "path": "/home/me/lvjob"}}))
    runs, variants, latest = rsync_commands(load_profile(path))
    assert runs[-2:] == ["login.example:/home/me/lvjob/checkpoints/", "checkpoints/"]
    assert variants[-2:] == ["login.example:/home/me/lvjob/results.by-study/", "results.by-study/"]
    assert latest[-2:] == ["login.example:/home/me/lvjob/results", "./"]  # the link itself, not what it points at
    assert "--delete" not in runs + variants + latest
    with_ckpt, _, _ = rsync_commands(load_profile(path), checkpoints=True)
    assert "--exclude=/*/checkpoints/" not in with_ckpt


def test_pull_copies_the_results_link_itself_even_when_results_dir_ends_in_a_slash(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"executor": "slurm", "results_dir": "results/", "pull": {"path": "/home/me/lvjob"}}))
    _, variants, latest = rsync_commands(load_profile(path))
    assert (variants[-2:], latest[-2:]) == (["/home/me/lvjob/results.by-study/", "results.by-study/"],
                                            ["/home/me/lvjob/results", "./"])


def test_plots_are_drawn_from_results_and_run_directories(tmp_path):
    from lvjob.results.index import RunIndex
    from lvjob.results.plots import plot_results

    runs = []
    for node, stage in (("stage1-r2-lr0.001", "stage1"), ("final", "final"), ("zero-shot-plain", "zero-shot")):
        d = tmp_path / "checkpoints" / node
        d.mkdir(parents=True)
        (d / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 3 - 0.1 * s, "val_loss": 3.1 - 0.1 * s}) + "\n"
                                                 for s in (1, 2, 2, 3)))  # step 2 written twice (a resume)
        if stage != "zero-shot":  # timed rows of two attempts, 25 steps apart in wall-clock time
            (d / "metrics.jsonl").write_text("".join(json.dumps(
                {"step": s, "loss": 1.0, "attempt": a, "elapsed": 0.5 * s, "time": f"2026-11-26T10:{5 * a + s // 60:02d}:{s % 60:02d}Z"}) + "\n"
                for a, steps in ((1, range(1, 31)), (2, range(21, 51))) for s in steps))
        rng = np.random.default_rng(0)
        np.savez(d / "forecasts.npz", predictions=rng.random((2, 5, 2)), samples=rng.random((2, 3, 5, 2)),
                 truth=rng.random((2, 5, 2)), contexts=rng.random((2, 20, 2)), systems=np.array([3, 7]))
        runs.append(index_entry(node, f"checkpoints/{node}", stage=stage))
    results = tmp_path / "results"
    results.mkdir()
    index = RunIndex(study="demo", scale="demo", model="tiny", profile="local", runs=tuple(runs), choices={})
    (results / "runs.json").write_text(json.dumps(index.to_json()))
    (results / "table4_flops.csv").write_text("experiment,runs complete,spent,planned,lost to preemption,spent / planned\n"
                                              "stage1,1/1,100,120,0,0.8\nfinal,1/1,50,60,0,0.8\n"
                                              "total,2/2,150,180,0,0.8\nbudget,,1e+17,1e+17,-,1e-15\n")
    written = plot_results(results, root=tmp_path)
    names = sorted({p.stem for p in written})
    assert names == ["flop_budget", "forecasts", "loss_default_final", "loss_stage1", "loss_stage2", "throughput"]
    assert all(p.stat().st_size > 1000 for p in written) and {p.suffix for p in written} == {".png", ".pdf"}


def test_speed_is_steps_per_second_per_block_of_steps_for_each_attempt():
    from lvjob.results.plots import speed_series

    rows = [{"step": s, "attempt": 1 if s <= 20 else 2, "elapsed": 0.5 * s if s <= 20 else 0.25 * (s - 20),
             "time": f"2026-11-26T10:00:{s:02d}Z"} for s in range(1, 41)]
    series = speed_series(rows, every=10)
    assert [speeds for _, speeds in series] == [[2.0], [4.0]]  # 10 steps in 5 s, then 10 steps in 2.5 s
