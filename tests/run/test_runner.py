"""The runner: job specs, run directories, what a finished run leaves behind."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from lvjob.core.config import ConfigError
from lvjob.run.job import Job, load_job
from lvjob.run.runner import run
from lvjob.data.dataset import DataSpec
from helpers import JOBS



def small_job(small_data, run_dir, **kw) -> Job:
    base = dict(kind="train", name="t", model="tiny", data=DataSpec(path=str(small_data), systems=20, points=30, val_fraction=0.2),
                context=48, steps=6, batch_size=2, lr=1e-3, rank=2, val_every=3, val_chunks=4, checkpoint_every=3,
                series=3, eval_batch_size=3, temperature=0.0, run_dir=str(run_dir))
    return Job(**(base | kw))


# --- job specs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["zero_shot_plain", "zero_shot_instruct", "default_lora", "grid_stage1", "grid_stage2", "final"])
def test_every_job_spec_in_jobs_loads(name):
    assert load_job(JOBS / f"{name}.yaml").name


def test_default_lora_spec_has_the_spec_defaults():
    j = load_job(JOBS / "default_lora.yaml")
    assert (j.rank, j.alpha, j.lr, j.context, j.batch_size, j.steps, j.checkpoint_every) == (4, 4.0, 1e-5, 512, 4, 5000, 250)


def test_same_spec_and_overrides_map_to_the_same_run_id():
    a = load_job(JOBS / "default_lora.yaml", ["steps=60", "checkpoint_every=20"])
    b = load_job(JOBS / "default_lora.yaml", ["checkpoint_every=20", "steps=60"])
    assert a.run_id() == b.run_id()
    assert a.resolved_run_dir() == Path("checkpoints") / a.run_id()
    assert a.run_id() != load_job(JOBS / "default_lora.yaml", ["steps=61", "checkpoint_every=20"]).run_id()


def test_run_dir_override_places_the_run_elsewhere_without_changing_its_id(tmp_path):
    a = load_job(JOBS / "default_lora.yaml", [f"run_dir={tmp_path}"])
    assert a.resolved_run_dir() == tmp_path and a.run_id() == load_job(JOBS / "default_lora.yaml").run_id()


@pytest.mark.parametrize(
    "override, key, valid",
    [
        ("rank=0", "rank", "integers >= 1"),
        ("lr=0", "lr", "lr > 0"),
        ("lr=-1e-4", "lr", "lr > 0"),
        ("context=10", "context", "too short for one forecast"),
        ("steps=0", "steps", "integers >= 1"),
        ("prompt=chat", "prompt", "'plain', 'instruct'"),
        ("series=999", "series", "100 test systems"),
        ("temperature=-1", "temperature", ">= 0"),
        ("rank=two", "rank", "expected an integer"),
        ("ranks=4", "ranks", "unknown key"),
    ],
)
def test_bad_values_are_refused_before_any_work_naming_the_key(override, key, valid):
    with pytest.raises(ConfigError) as e:
        load_job(JOBS / "default_lora.yaml", [override])
    assert "default_lora.yaml" in str(e.value) and key in str(e.value) and valid in str(e.value)


# --- a training run end to end --------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_data, device):
    run_dir = tmp_path_factory.mktemp("train") / "run"
    job = small_job(small_data, run_dir, device=device)
    assert run(job, log=lambda m: None) == 0
    return job, run_dir


def test_training_run_leaves_metrics_forecasts_ledger_and_adapter(trained):
    _, run_dir = trained
    for name in ("job.yaml", "run.json", "metrics.jsonl", "eval.json", "forecasts.npz", "ledger.json", "adapter/adapter_config.json"):
        assert (run_dir / name).exists(), name
    assert json.loads((run_dir / "run.json").read_text())["status"] == "complete"


def test_metrics_have_one_row_per_step_with_validation_at_the_interval(trained):
    _, run_dir = trained
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in rows if "val_loss" in r] == [3, 6]
    assert all(np.isfinite(r["loss"]) for r in rows)


def test_a_validation_loss_carries_its_standard_error_over_the_validation_chunks(trained):
    _, run_dir = trained
    job = yaml.safe_load((run_dir / "job.yaml").read_text())
    vals = [r for r in (json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()) if "val_loss" in r]
    assert job["val_chunks"] > 1 and all(0 < r["val_loss_se"] < r["val_loss"] for r in vals)


def test_an_evaluation_records_each_series_mae_and_the_maes_standard_error(trained):
    _, run_dir = trained
    model = json.loads((run_dir / "eval.json").read_text())["model"]
    series = [m for m in model["series_mae"] if m is not None]
    assert model["mae"] == pytest.approx(np.mean(series))
    assert model["mae_se"] == pytest.approx(np.std(series, ddof=1) / np.sqrt(len(series)))


def test_checkpoints_keep_only_the_newest_two(trained):
    _, run_dir = trained
    assert [p.name for p in sorted((run_dir / "checkpoints").iterdir())] == ["step-0000003", "step-0000006"]


def test_final_adapter_loads_with_peft_alone(trained, tiny_model):
    from peft import PeftModel

    _, run_dir = trained
    from lvjob.models.loading import ModelChoice, load_model

    model = PeftModel.from_pretrained(load_model(ModelChoice("tiny")), str(run_dir / "adapter"))
    assert any("lora_A" in n for n, _ in model.named_parameters())


def test_evaluation_reports_model_and_persistence_with_full_parse_rate(trained):
    _, run_dir = trained
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["parse_rate"] == 1.0 and report["series"] == 3
    for who in ("model", "persistence"):
        assert set(report[who]) >= {"mae", "mse", "rmse", "prey", "predator", "series"}
    saved = np.load(run_dir / "forecasts.npz")
    assert saved["predictions"].shape == saved["truth"].shape == (3, 6, 2)


def test_ledger_counts_training_validation_prompt_and_generation(trained):
    from lvjob.models import flops

    job, run_dir = trained
    ledger = json.loads((run_dir / "ledger.json").read_text())
    shape = flops.shape_of("tiny")
    assert ledger["train"] == 6 * flops.train_step(shape, 2, 48, 2).total
    assert ledger["validation"] == 2 * flops.forward(shape, 4, 48, lora_rank=2, loss=True).total
    assert ledger["prompt"] > 0 and ledger["generation"] > 0
    assert ledger["lost_to_preemption"] == 0 and ledger["total"] == sum(ledger[k] for k in ("train", "validation", "prompt", "generation"))


def test_a_complete_run_is_not_run_again(trained):
    job, run_dir = trained
    before = (run_dir / "metrics.jsonl").stat().st_mtime_ns
    messages = []
    assert run(job, log=messages.append) == 0
    assert "already complete" in messages[0]
    assert (run_dir / "metrics.jsonl").stat().st_mtime_ns == before


def test_a_complete_run_whose_eval_json_was_lost_is_evaluated_again_to_the_same_scores(trained, tmp_path):
    import dataclasses
    import shutil

    job, run_dir = trained
    shutil.copytree(run_dir, tmp_path / "copy")
    (tmp_path / "copy" / "eval.json").unlink()
    messages = []
    assert run(dataclasses.replace(job, run_dir=str(tmp_path / "copy")), log=messages.append) == 0
    assert "eval.json is missing: evaluating again" in messages[0]
    scores = [json.loads((d / "eval.json").read_text())["model"] for d in (run_dir, tmp_path / "copy")]
    assert scores[0] == scores[1]


def test_zero_shot_job_evaluates_the_untrained_model_with_sampling(tmp_path, small_data, device):
    job = small_job(small_data, tmp_path / "zs", kind="evaluate", prompt="instruct", temperature=0.2, samples=2, device=device)
    assert run(job, log=lambda m: None) == 0
    report = json.loads((tmp_path / "zs" / "eval.json").read_text())
    assert report["parse_rate"] == 1.0 and report["prompt"] == "instruct"
    assert not (tmp_path / "zs" / "checkpoints").exists()


def test_evaluate_job_with_an_adapter_from_a_trained_run(tmp_path, small_data, trained):
    _, run_dir = trained
    job = small_job(small_data, tmp_path / "ev", kind="evaluate", adapter=str(run_dir))
    assert run(job, log=lambda m: None) == 0
    a = np.load(tmp_path / "ev" / "forecasts.npz")["predictions"]
    b = np.load(run_dir / "forecasts.npz")["predictions"]
    assert np.array_equal(a, b)  # greedy: the same model gives the same forecasts


def test_a_run_directory_in_use_by_another_process_is_refused_and_left_untouched(tmp_path):
    import fcntl
    import json

    import pytest

    from lvjob.run.job import Job
    from lvjob.run.lock import RunBusy
    from lvjob.run.runner import run

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"status": "running", "pid": 4242, "host": "node7", "attempts": 1}))
    before = (run_dir / "run.json").read_bytes()
    with open(run_dir / ".lock", "a+") as holder:  # another open file description: as another process would
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RunBusy, match="in use by another process \\(pid 4242 on node7\\)"):
            run(Job(kind="evaluate", series=1, run_dir=str(run_dir)))
    assert (run_dir / "run.json").read_bytes() == before and not (run_dir / "job.yaml").exists()


def test_more_series_than_the_files_validation_systems_is_refused_before_any_work(tmp_path):
    from lvjob import data

    path = tmp_path / "lv60.h5"
    data.write(path, *data.generate(n_systems=60, n_points=20, seed=0))
    job = Job(kind="evaluate", model="tiny", data=DataSpec(path=str(path)), series=50, run_dir=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match=r"series: 50 is more than the 6 validation systems of .*lv60.h5"):
        run(job, log=lambda m: None)
    assert not (tmp_path / "run" / "eval.json").exists()


def test_a_baseline_job_forecasts_the_test_systems_without_a_model_and_spends_no_flops(tmp_path, small_data):
    from lvjob import data

    job = small_job(small_data, tmp_path / "b", kind="baseline", forecaster="physics", eval_split="test", series=2)
    assert run(job, log=lambda m: None) == 0
    report = json.loads((tmp_path / "b" / "eval.json").read_text())
    assert (report["split"], report["forecaster"], report["parse_rate"], report["fell_back"]) == ("test", "physics", None, 0)
    assert report["model"]["mae"] < report["persistence"]["mae"] / 100  # the model class is known: near exact
    assert json.loads((tmp_path / "b" / "ledger.json").read_text())["total"] == 0
    test_systems = data.split_systems(20, 0.2, 0.1, seed=0).test
    assert np.load(tmp_path / "b" / "forecasts.npz")["systems"].tolist() == test_systems.tolist()


def test_a_training_run_says_it_scored_the_validation_systems(trained):
    _, run_dir = trained
    assert json.loads((run_dir / "eval.json").read_text())["split"] == "validation"
    assert str(np.load(run_dir / "forecasts.npz")["split"]) == "validation"


# --- the run process --------------------------------------------------------------------------------

FREE_AND_REALLOCATE = """
import ctypes, ctypes.util, resource, sys
if sys.argv[1] == "kept":
    from lvjob.run.runner import keep_freed_memory
    keep_freed_memory()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):  # 200 MB written, then freed: a training step's logits, softmax and gradients (torch's CPU allocator is malloc)
    block = libc.malloc(200_000_000)
    ctypes.memset(block, 1, 200_000_000)
    libc.free(block)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_a_cpu_run_process_reuses_its_freed_large_blocks_instead_of_faulting_them_in_again():
    import subprocess
    import sys

    faults = {how: int(subprocess.run([sys.executable, "-c", FREE_AND_REALLOCATE, how], check=True, capture_output=True,
                                      text=True, timeout=120).stdout) for how in ("default", "kept")}
    assert faults["default"] > 4 * 48_000  # 200 MB is ~49,000 pages: faulted in for each of the 5 blocks
    assert faults["kept"] < 2 * 49_000  # faulted in once, then reused
