"""Loading the models of the study (named in lvjob.modelspec), all of one architecture (Qwen2ForCausalLM).

- `qwen2.5-0.5b` comes from a local folder or the Hugging Face cache (compute nodes have no
  internet: stage it once on the login node, see the README).
- `tiny` is built here, with a fixed seed, and saved once into the cache.
- `tiny-lv` is built by `lvjob prepare` (lvjob.pretrain); loading it never builds it.

Whatever the name, the model is loaded by `AutoModelForCausalLM.from_pretrained` from a folder or a
hub id, so the tiny model exercises the real model's code path.
"""

from __future__ import annotations

from pathlib import Path

from lvjob.atomic import atomic_dir
from lvjob.modelspec import QWEN25_HUB_ID, TINY_SEED, ModelChoice, config_dict, demo_model_dir, tiny_model_dir


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


def ensure_tiny_model() -> Path:
    """Build the tiny model once (seeded, so every machine builds the same weights) and return its folder."""
    folder = tiny_model_dir()
    if (folder / "config.json").exists():
        return folder
    model = random_model("tiny", seed=TINY_SEED)
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
    return folder


def resolve_weights(choice: ModelChoice) -> str:
    """Folder or hub id to load `choice` from."""
    if choice.path:
        return choice.path
    if choice.name == "tiny":
        return str(ensure_tiny_model())
    if choice.name == "tiny-lv":
        return str(_built(demo_model_dir(), "the demo model tiny-lv"))
    if choice.name == "qwen2.5-0.5b":
        return QWEN25_HUB_ID
    raise ValueError(f"model {choice.name!r} has no weights to load; it is built with random_model()")


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

    if choice.name == "qwen2.5-0.5b-random":
        model = random_model(choice.name, attn_implementation=attn_implementation)
        return model.to(device=device, dtype=dtype or torch.float32)
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
