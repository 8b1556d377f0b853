"""The full-size model (Qwen2.5-0.5B's architecture, seeded random weights) on the real load path.

`qwen2.5-0.5b-random` is built once into the cache as a Hugging Face folder (safetensors, bfloat16 as
the real checkpoint) and loaded by the same `from_pretrained` as Qwen itself. These tests train,
kill, resume, evaluate and reload it at full size: what the tiny model cannot show (memory,
checkpoint size, adapter layout of a 494M-parameter model).
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from helpers import ROOT
from lvjob.models.loading import ModelChoice, load_model

pytestmark = pytest.mark.slow

QWEN25_05B_PARAMETERS = 494_032_768  # Qwen2.5-0.5B's published count (tied embeddings counted once)

# Kills its own process with SIGKILL as soon as the checkpoint of step 1 is complete.
KILL_AFTER_FIRST_CHECKPOINT = """
import os, signal, sys
import lvjob.run.checkpoint as ck
real = ck.save
def save_then_die(run_dir, step, *a, **k):
    real(run_dir, step, *a, **k)
    if step == 1:
        os.kill(os.getpid(), signal.SIGKILL)
ck.save = save_then_die
from lvjob.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def short_data(tmp_path_factory) -> Path:
    """20 systems x 10 points: a 2-point horizon keeps the full-size decoding (memory-bound on a CPU) short."""
    from lvjob import data

    path = tmp_path_factory.mktemp("data") / "lv-short.h5"
    data.write(path, *data.generate(n_systems=20, n_points=10, seed=0))
    return path


def _run(run_dir: Path, data: Path, device: str, driver: str | None = None) -> subprocess.CompletedProcess:
    # The command (steps=2 checkpoint_every=1 context=64 series=2), at batch 1 and 2 validation
    # chunks so that three full-size processes fit in the default test run on 2 cores.
    args = ["run", str(ROOT / "jobs" / "default_lora.yaml"), "model=qwen2.5-0.5b-random", "steps=2", "checkpoint_every=1",
            "context=64", "series=2", "batch_size=1", "val_chunks=2", f"data.path={data}", "data.systems=20",
            "data.points=10", f"run_dir={run_dir}", f"device={device}"]
    prog = [sys.executable, "-c", driver] if driver else [sys.executable, "-m", "lvjob"]
    return subprocess.run(prog + args, capture_output=True, text=True, timeout=600, env=os.environ.copy())


@pytest.fixture(scope="module")
def runs(tmp_path_factory, short_data, device) -> tuple[Path, Path]:
    """An uninterrupted run, and one killed right after its step-1 checkpoint, then resumed."""
    tmp = tmp_path_factory.mktemp("fullsize")
    straight = _run(tmp / "straight", short_data, device)
    assert straight.returncode == 0, straight.stdout[-3000:] + straight.stderr[-3000:]
    killed = _run(tmp / "resumed", short_data, device, driver=KILL_AFTER_FIRST_CHECKPOINT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = _run(tmp / "resumed", short_data, device)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming from step-0000001" in resumed.stdout + resumed.stderr
    return tmp / "straight", tmp / "resumed"


def test_full_size_random_model_has_qwen25_05b_parameter_count():
    model = load_model(ModelChoice("qwen2.5-0.5b-random"))
    assert sum(p.numel() for p in model.parameters()) == QWEN25_05B_PARAMETERS
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied, as Qwen2.5-0.5B


def test_full_size_random_model_loads_in_float32_on_cpu_from_its_safetensors_folder():
    from lvjob.models.loading import resolve_weights

    folder = Path(resolve_weights(ModelChoice("qwen2.5-0.5b-random")))
    assert (folder / "model.safetensors").exists() and (folder / "config.json").exists()
    import torch

    assert {p.dtype for p in load_model(ModelChoice("qwen2.5-0.5b-random")).parameters()} == {torch.float32}


def test_full_size_random_model_loads_in_4bit_nf4(device):
    from bitsandbytes.nn import Linear4bit

    model = load_model(ModelChoice("qwen2.5-0.5b-random", quantize_4bit=True), device=device)
    q_proj = model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, Linear4bit) and q_proj.weight.quant_state.quant_type == "nf4"


def test_full_size_run_resumed_after_a_kill_ends_with_bit_identical_adapter(runs):
    straight, resumed = runs
    a = load_file(straight / "adapter" / "adapter_model.safetensors")
    b = load_file(resumed / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and len(a) == 2 * 2 * 24  # lora_A and lora_B of q_proj and v_proj, 24 layers
    assert all((a[k] == b[k]).all() for k in a)
    rows = lambda d: [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert [r["loss"] for r in rows(resumed)] == [r["loss"] for r in rows(straight)]


def test_full_size_run_evaluates_with_sampling(runs):
    _, resumed = runs
    report = json.loads((resumed / "eval.json").read_text())
    assert report["series"] == 2 and report["parse_rate"] == 1.0 and report["settings"]["temperature"] == 0.2


def test_full_size_adapter_loads_with_peft_alone(runs):
    from peft import PeftModel

    _, resumed = runs
    config = json.loads((resumed / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 4 and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    model = PeftModel.from_pretrained(load_model(ModelChoice("qwen2.5-0.5b-random")), str(resumed / "adapter"))
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) == 24 * 4 * (896 + 896 + 896 + 128)
