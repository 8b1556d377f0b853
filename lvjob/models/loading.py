"""Loading the models of the study (named in lvjob.models.registry), all of one architecture (Qwen2ForCausalLM).

- `qwen2.5-0.5b`: Qwen/Qwen2.5-0.5B-Instruct, from a local folder or the Hugging Face cache
  (compute nodes have no internet: stage it once on the login node, see the README).
- `qwen2.5-0.5b-random`: the same architecture with seeded random weights, built here once and saved
  into the cache in bfloat16 as the real checkpoint is stored (full-size tests, GPU benchmarks).
- `tiny`: the same architecture at a tiny width, the real vocabulary, built here with a fixed seed
  and saved once into the cache (float32); for tests.
- `tiny-lv`: `tiny` with a sliding attention window, after a short pre-training (lvjob.run.pretrain),
  built by `lvjob prepare`; loading it never builds it.

Whatever the name, the model is loaded by `AutoModelForCausalLM.from_pretrained` from a folder or a
hub id (bfloat16 on CUDA, float32 on CPU, NF4 with `quantize_4bit`), so the tiny and the random
full-size models exercise the real model's code path.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lvjob.core.atomic import atomic_dir, one_at_a_time
from lvjob.models.registry import MODELS, ModelChoice, config_dict, demo_model_dir
from lvjob.core.paths import cache_dir


def without_bitsandbytes() -> None:
    """For a process that never quantizes (a run without `quantize_4bit`): bitsandbytes is never imported in it.
    peft imports it whenever it is installed, and its torch.compile'd kernels pull in torch's compiler: about 1 s
    of every run's start on CPU (make bench, "Fixed cost per run"). A None entry in sys.modules makes `import`
    fail and `importlib.util.find_spec` answer None, which is how peft and transformers ask."""
    sys.modules.setdefault("bitsandbytes", None)


def model_config(name: str):
    """The transformers `Qwen2Config` of a named model (no weights loaded)."""
    from transformers import Qwen2Config

    return Qwen2Config(**config_dict(name))


def random_model(name: str, seed: int = 0, attn_implementation: str = "sdpa"):
    """A model of the named architecture with seeded random weights, in float32."""
    import torch
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = model_config(name)
    config._attn_implementation = attn_implementation
    return Qwen2ForCausalLM(config).eval()


def ensure_built_model(name: str) -> Path:
    """Build a seeded random model once (every machine builds the same weights) and return its folder."""
    built = MODELS[name].built
    folder = cache_dir() / built.folder
    if (folder / "config.json").exists():
        return folder
    with one_at_a_time(folder.with_name(f".{folder.name}.lock")):  # another process may be building it
        if not (folder / "config.json").exists():
            import torch

            model = random_model(name, seed=built.seed).to(getattr(torch, built.dtype))
            with atomic_dir(folder) as tmp:
                model.save_pretrained(tmp)  # safetensors, the Hugging Face layout
    return folder


def ensure_tiny_model() -> Path:
    return ensure_built_model("tiny")


def resolve_weights(choice: ModelChoice) -> str:
    """Folder or hub id to load `choice` from."""
    if choice.path:
        return choice.path
    if MODELS[choice.name].built:
        return str(ensure_built_model(choice.name))
    if choice.recipe:
        return str(_built(demo_model_dir(choice.recipe), f"the demo model {choice.name}"))
    return MODELS[choice.name].hub_id


def _built(folder: Path, what: str) -> Path:
    """A model folder that `lvjob prepare` builds; loading never builds it as a side effect."""
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder}: {what} is not built; run `lvjob prepare` (or `make install`) first")
    return folder


def load_model(choice: ModelChoice, device: str = "cpu", dtype=None, attn_implementation: str = "sdpa"):
    """Load the chosen model for training or inference.

    `dtype` defaults to bfloat16 on CUDA and float32 on CPU. With `quantize_4bit` the base weights
    are loaded as 4-bit NF4 through bitsandbytes (compute in `dtype`), the QLoRA setting.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if dtype is None:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    kwargs = dict(dtype=dtype, attn_implementation=attn_implementation)
    if choice.quantize_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=True,
        )
        kwargs["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(resolve_weights(choice), **kwargs)
    if not choice.quantize_4bit:
        model = model.to(device)
    return model
