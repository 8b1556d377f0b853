"""LoRA target modules are a job setting; the adapter it leaves is the same, byte for byte, in every process;
an evaluation books what it computed, as it computes it."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lvjob.run import cost
from lvjob.models import flops
from lvjob.core.config import ConfigError
from lvjob.data.dataset import DataSpec
from lvjob.run.job import Job, load_job
from lvjob.run.ledger import Ledger
from lvjob.run.evaluate import booking as eval_booking
from helpers import JOBS



def test_lora_targets_default_to_q_and_v_and_keep_existing_run_ids():
    job = load_job(JOBS / "default_lora.yaml")
    assert job.lora_targets == ("q_proj", "v_proj")
    assert "lora_targets" not in job.run_id() and job.run_id() == load_job(JOBS / "default_lora.yaml",
                                                                           ["lora_targets=[q_proj, v_proj]"]).run_id()
    assert load_job(JOBS / "default_lora.yaml", ["lora_targets=[q_proj, k_proj, v_proj]"]).run_id() != job.run_id()


def test_an_unknown_lora_target_is_refused_naming_the_valid_ones():
    with pytest.raises(ConfigError, match="lora_targets.*q_proj, k_proj, v_proj, o_proj"):
        load_job(JOBS / "default_lora.yaml", ["lora_targets=[attention]"])


def test_the_flop_charge_follows_the_lora_targets():
    job = load_job(JOBS / "default_lora.yaml")
    wider = load_job(JOBS / "default_lora.yaml", ["lora_targets=[q_proj, k_proj, v_proj, o_proj]"])
    shape = flops.shape_of(job.model)
    assert cost.step_flops(wider) == flops.train_step(shape, 4, 512, 4, ("q_proj", "k_proj", "v_proj", "o_proj")).total
    assert cost.step_flops(wider) > cost.step_flops(job)


def _adapter_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_the_same_run_gives_byte_identical_adapter_folders_in_different_processes(small_data, tmp_path):
    settings = ["model=tiny", f"data.path={small_data}", "data.systems=20", "data.points=30", "context=48", "steps=2",
                "batch_size=2", "val_every=2", "val_chunks=2", "series=1", "temperature=0",
                "lora_targets=[v_proj, q_proj, o_proj, k_proj]"]
    digests = []
    for seed in ("1", "2"):  # str hashes, and so peft's set of target modules, order differently per seed
        run_dir = tmp_path / f"run-{seed}"
        env = os.environ | {"PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-m", "lvjob", "run", str(JOBS / "default_lora.yaml"), *settings,
                        f"run_dir={run_dir}"], check=True, env=env, capture_output=True, timeout=300)
        digests.append(_adapter_digest(run_dir / "adapter"))
    assert digests[0] == digests[1] and "adapter_config.json" in digests[0]


def test_a_process_that_never_quantizes_builds_its_lora_model_without_importing_bitsandbytes():
    code = ("import sys; from lvjob.models.loading import without_bitsandbytes; without_bitsandbytes()\n"
            "from lvjob.run.job import Job; from lvjob.run.train import lora_model\n"
            "model = lora_model(Job(model='tiny', rank=2), 'cpu')\n"
            "print(sum(p.requires_grad for p in model.parameters()), sys.modules['bitsandbytes'])")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=300).stdout
    assert out.split() == ["8", "None"]  # q and v, A and B, in both layers; and bitsandbytes never loaded


def test_an_evaluation_books_each_batch_and_moves_earlier_evaluation_work_to_lost(tmp_path):
    job = Job(kind="evaluate", model="tiny", data=DataSpec(systems=20, points=30, val_fraction=0.2), series=4, eval_batch_size=2)
    path = tmp_path / "ledger.json"
    ledger = Ledger(prompt=100, generation=20)  # an earlier attempt's evaluation, cut off
    book = eval_booking(job, ledger, 0, path)
    batch = (2, 90, 40, 13, 1)
    book(batch)
    booked = Ledger.read(path)
    prompt, generation = cost.evaluation_flops(job, [batch], 0)
    assert (booked.prompt, booked.generation) == (100 + prompt, 20 + generation)  # added, never overwritten
    assert booked.lost_to_preemption == 120  # the earlier evaluation's work is re-done now


def test_the_studys_lora_targets_reach_every_fine_tune_and_its_flop_charge(tmp_path):
    from lvjob.cluster.profile import Profile
    from lvjob.study.choices import make_job
    from lvjob.study.spec import load_study
    from lvjob.study.stages import study_nodes

    study = load_study(JOBS / "study.yaml", scale="demo")
    profile = Profile(runs_root=str(tmp_path))
    jobs = [make_job(study, profile, n) for n in study_nodes(study) if n.stage.name in ("default", "stage1")]
    assert len(jobs) == 1 + 9  # the default run and the 3 x 3 grid
    assert all(j.lora_targets == study.lora.targets == flops.LINEARS for j in jobs)
    assert cost.step_flops(jobs[0]) == flops.train_step(flops.shape_of("tiny-lv"), 4, 128, 4, flops.LINEARS).total


def test_an_unknown_study_lora_target_is_refused_naming_the_study_key():
    from lvjob.study.spec import load_study

    with pytest.raises(ConfigError, match="lora.targets.*q_proj, k_proj, v_proj, o_proj"):
        load_study(JOBS / "study.yaml", overrides=["lora.targets=[attention]"])


def test_a_new_demo_model_recipe_gives_its_runs_new_ids_and_no_other_models_runs(monkeypatch):
    import lvjob.models.registry

    ids = {m: load_job(JOBS / "default_lora.yaml", [f"model={m}"]).run_id() for m in ("tiny-lv", "tiny")}
    monkeypatch.setattr(lvjob.models.registry, "DEMO_RECIPE_KEY", "another")
    assert load_job(JOBS / "default_lora.yaml", ["model=tiny-lv"]).run_id() != ids["tiny-lv"]
    assert load_job(JOBS / "default_lora.yaml", ["model=tiny"]).run_id() == ids["tiny"]


def test_table1_charges_lora_on_the_studys_targets():
    from lvjob.results.report import step_flops_table

    def lora_row(targets):
        table = step_flops_table(flops.shape_of("tiny"), "tiny", 4, 128, 4, targets)
        return next(r for r in table.rows if r[0] == "lora")[3]  # the LoRA (rules) column

    assert lora_row(flops.LINEARS) == flops.train_step(flops.shape_of("tiny"), 4, 128, 4, flops.LINEARS).lora
    assert lora_row(flops.LINEARS) > lora_row(("q_proj", "v_proj")) > 0
