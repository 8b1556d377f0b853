"""`lvjob submit`: the planner's refusal, and the whole study with the local executor (the default)."""

import contextlib
import io
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml

from lvjob.cli import main
from lvjob.core.atomic import read_jsonl
from lvjob.run.rundir import read_status
from helpers import ROOT



def small_study(data: Path) -> list[str]:
    """One run per stage, two steps each, two forecast series: the whole DAG in a minute."""
    return ["model=tiny", f"data.path={data}", "data.systems=20", "data.points=30", "evaluation.series=2",
            "training.val_every=2", "training.val_chunks=2", "training.checkpoint_every=2", "zero_shot_prompts=[plain]",
            "default.steps=2", "default.context=48", "stage1.ranks=[2]", "stage1.lrs=[1e-3]", "stage1.steps=2",
            "stage1.context=48", "stage2.contexts=[48]", "stage2.steps=2", "final.steps=2"]


def local_profile(tmp_path: Path) -> Path:
    profile = tmp_path / "local.yaml"
    profile.write_text(yaml.safe_dump(yaml.safe_load((ROOT / "slurm" / "local.yaml").read_text())
                                      | {"runs_root": str(tmp_path / "runs"), "results_dir": str(tmp_path / "results")}))
    return profile


def test_over_budget_study_is_refused_before_anything_is_submitted(tmp_path, capsys):
    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump({"executor": "slurm", "runs_root": str(tmp_path / "runs")}))
    code = main(["submit", str(ROOT / "jobs" / "reference_study.yaml"), "--profile", str(profile)])
    out = capsys.readouterr().out
    assert code == 1
    assert "does NOT fit: over by 7.255e+16 (72.6%)" in out and "final.steps=2669" in out
    assert "Nothing submitted" in out and not (tmp_path / "runs").exists()


def _kill_when_running(run_dir: Path, limit_s: float = 300) -> None:
    """SIGKILL the run's runner as soon as it runs: a crash, as an OOM kill would do it."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        status = read_status(run_dir) if (run_dir / "run.json").exists() else {}
        if status.get("status") == "running":
            os.kill(status["pid"], signal.SIGKILL)
            return
        time.sleep(0.05)


@pytest.fixture(scope="module")
def local_study(small_data, tmp_path_factory) -> dict:
    """The small study on the local executor (the default profile), its stage-1 run SIGKILLed once while it runs."""
    from lvjob.cluster.profile import load_profile
    from lvjob.study.choices import job_for, study_dir
    from lvjob.study.spec import load_study
    from lvjob.study.stages import study_nodes

    tmp = tmp_path_factory.mktemp("local-study")
    profile, small = local_profile(tmp), small_study(small_data)
    study, prof = load_study(ROOT / "jobs" / "study.yaml", scale="demo", overrides=small), load_profile(profile)
    stage1 = next(n for n in study_nodes(study) if n.stage.name == "stage1")
    killer = threading.Thread(target=_kill_when_running, args=(job_for(study, prof, stage1).resolved_run_dir(),), daemon=True)
    killer.start()
    args = ["submit", str(ROOT / "jobs" / "study.yaml"), "--profile", str(profile), *small]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    return {"args": args, "out": out.getvalue(), "results": tmp / "results", "records": study_dir(study, prof),
            "killed": stage1.key, "status": ["status", *args[1:]]}


def test_local_profile_runs_a_small_study_to_the_end_and_a_second_submit_does_nothing(local_study, capsys):
    assert "9 job(s) submitted; 0 of 9 already complete" in local_study["out"]
    index = json.loads((local_study["results"] / "runs.json").read_text())
    assert [r["status"] for r in index["runs"]] == ["complete"] * 8
    assert index["choices"]["final"]["chosen"] == {"rank": 2, "lr": 1e-3, "context": 48}

    assert main(local_study["args"]) == 0
    out = capsys.readouterr().out
    assert "0 job(s) submitted; 9 of 9 already complete" in out

    # status of the finished study: each training run's speed, every stage done, the compute hours spent
    assert main(local_study["status"]) == 0
    out = capsys.readouterr().out
    default = next(line for line in out.splitlines() if line.startswith("| default |"))
    assert float(default.split("|")[5]) > 0  # steps/s
    assert "stage1: 1 done, 0 running, 0 waiting" in out and "CPU-hours over 8 runs" in out


def test_a_changed_study_is_aggregated_again_though_the_old_index_lists_every_run_complete(local_study):
    from lvjob.orchestrate.submission import index_is_complete
    from lvjob.cluster.profile import load_profile
    from lvjob.study.spec import load_study

    profile, small = load_profile(local_study["args"][3]), local_study["args"][4:]
    assert index_is_complete(load_study(ROOT / "jobs" / "study.yaml", scale="demo", overrides=small), profile)
    changed = load_study(ROOT / "jobs" / "study.yaml", scale="demo", overrides=[*small, "evaluation.temperature=0.3"])
    assert not index_is_complete(changed, profile)


def test_a_local_run_killed_without_warning_is_retried_before_the_next_stage_chooses(local_study):
    made = read_jsonl(local_study["records"].retries)
    assert [(r["node"], r["state"]) for r in made] == [(local_study["killed"], "ended")]
    choice = json.loads(local_study["records"].choice("stage2").read_text())
    assert [c["status"] for c in choice["candidates"]] == ["complete"]  # it chose after the retry


def test_status_shows_each_runs_retries_and_why_each_was_made(local_study, capsys):
    assert main(local_study["status"]) == 0
    out, killed = capsys.readouterr().out, local_study["killed"]
    row = next(line for line in out.splitlines() if line.startswith(f"| {killed} |"))
    assert row.split("|")[10].strip() == "1"  # the retries column
    assert f"- {killed}, retry 1: job " in out and " ended; run left running at step " in out


def test_a_study_changed_only_in_its_default_run_still_reports_the_finished_final_run(local_study, tmp_path):
    """The changed study has a new records folder; the final run, complete at submission, starts no job
    that would record its choice, so submission records it (else Table 3 would say `not started`)."""
    args, profile = local_study["args"], tmp_path / "local.yaml"  # the same runs, results of its own
    profile.write_text(yaml.safe_dump(yaml.safe_load(Path(args[3]).read_text()) | {"results_dir": str(tmp_path / "results")}))
    assert main([*args[:3], str(profile), *args[4:], "default.lr=2e-3"]) == 0
    index = json.loads((tmp_path / "results" / "runs.json").read_text())
    assert [r["status"] for r in index["runs"]] == ["complete"] * 8
    assert index["choices"]["final"]["chosen"] == {"rank": 2, "lr": 1e-3, "context": 48}


class Killed(Exception):
    """The aggregate job killed between two of its files."""


def test_a_kill_between_two_results_files_leaves_results_the_next_submit_writes_again(local_study, tmp_path, monkeypatch):
    from dataclasses import replace

    from lvjob.cluster.profile import load_profile
    from lvjob.core import atomic
    from lvjob.orchestrate.submission import index_is_complete
    from lvjob.results.aggregate import write_results
    from lvjob.study.spec import load_study

    study = load_study(ROOT / "jobs" / "study.yaml", scale="demo", overrides=local_study["args"][4:])
    profile = replace(load_profile(local_study["args"][3]), results_dir=str(tmp_path / "results"))  # not the shared one
    write_results(study, profile)
    assert index_is_complete(study, profile)
    written, write = [], atomic.write_text

    def killed_after_two_files(path, text):
        if len(written) == 2:
            raise Killed(path)
        written.append(path)
        write(path, text)
    monkeypatch.setattr(atomic, "write_text", killed_after_two_files)
    with pytest.raises(Killed):
        write_results(study, profile)
    assert not index_is_complete(study, profile)  # so the next submit runs the aggregate again


def test_two_variants_of_a_study_keep_their_own_results_and_results_links_to_the_one_aggregated_last(local_study, tmp_path):
    from dataclasses import replace

    from lvjob.cluster.profile import load_profile
    from lvjob.orchestrate.submission import index_is_complete
    from lvjob.results.aggregate import write_results
    from lvjob.study.spec import load_study

    small = local_study["args"][4:]
    study = load_study(ROOT / "jobs" / "study.yaml", scale="demo", overrides=small)
    variant = load_study(ROOT / "jobs" / "study.yaml", scale="demo", overrides=[*small, "evaluation.temperature=0.3"])
    profile = replace(load_profile(local_study["args"][3]), results_dir=str(tmp_path / "results"))
    first, second = write_results(study, profile), write_results(variant, profile)  # the variant's runs never ran
    assert first != second and (tmp_path / "results").resolve() == second.resolve()
    assert index_is_complete(study, profile)  # the variant wrote beside it, not over it
    assert json.loads((first / "runs.json").read_text())["runs"] != json.loads((second / "runs.json").read_text())["runs"]
