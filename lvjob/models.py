"""The models of the study, all of one architecture (Qwen2ForCausalLM), and the one way to load them.

- `qwen2.5-0.5b`: Qwen/Qwen2.5-0.5B-Instruct, from a local folder or the Hugging Face cache
  (compute nodes have no internet: stage it once on the login node, see the README).
- `qwen2.5-0.5b-random`: the same architecture with seeded random weights, built once and saved
  into the cache in bfloat16 as the real checkpoint is stored (full-size tests, GPU benchmarks).
- `tiny`: the same architecture at a tiny width, the real vocabulary, built locally with a fixed seed
  and saved once into the cache (float32); for tests.
- `tiny-lv`: `tiny` after a short pre-training on LLMTIME text of the default data's training
  systems (lvjob.pretrain): the demo's base model on a laptop.

Whatever the name, the model is loaded by `AutoModelForCausalLM.from_pretrained` from a folder or a
hub id (bfloat16 on CUDA, float32 on CPU, NF4 with `quantize_4bit`), so the tiny and the random
full-size models exercise the real model's code path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lvjob.atomic import atomic_dir
from lvjob.paths import cache_dir

QWEN25_HUB_ID = "Qwen/Qwen2.5-0.5B-Instruct"

# The public config of Qwen2.5-0.5B(-Instruct): what the FLOP counter and the random model use.
QWEN25_05B_CONFIG = dict(
    vocab_size=151936,
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rms_norm_eps=1e-6,
    rope_parameters={"rope_theta": 1000000.0, "rope_type": "default"},
    tie_word_embeddings=True,
    hidden_act="silu",
    bos_token_id=151643,
    eos_token_id=151645,
    pad_token_id=151643,
)

# Tiny: real vocabulary (so the real tokenizer works), 2 layers of width 64, grouped-query attention
# kept (4 query heads, 2 key/value heads). Almost all of its FLOPs are in the LM head.
TINY_CONFIG = dict(
    QWEN25_05B_CONFIG,
    hidden_size=64,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
)
TINY_SEED = 1234

MODEL_NAMES = ("qwen2.5-0.5b", "qwen2.5-0.5b-random", "tiny", "tiny-lv")


@dataclass(frozen=True)
class ModelChoice:
    """Which model a job uses; `path` overrides where the weights come from (folder or hub id)."""

    name: str = "tiny"
    path: str | None = None
    quantize_4bit: bool = False

    def __post_init__(self) -> None:
        if self.name not in MODEL_NAMES:
            raise ValueError(f"model.name: unknown model {self.name!r}; valid: {', '.join(MODEL_NAMES)}")


def config_dict(name: str) -> dict:
    """The config values of a named model, as plain values (no transformers import)."""
    if name in ("qwen2.5-0.5b", "qwen2.5-0.5b-random"):
        return dict(QWEN25_05B_CONFIG)
    if name in ("tiny", "tiny-lv"):
        return dict(TINY_CONFIG)
    raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODEL_NAMES)}")


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


# Built models: name -> (cache folder, seed, dtype it is saved in).
BUILT = {"tiny": ("tiny-qwen2", TINY_SEED, "float32"), "qwen2.5-0.5b-random": ("qwen2.5-0.5b-random", 0, "bfloat16")}


def tiny_model_dir() -> Path:
    return cache_dir() / BUILT["tiny"][0]


def ensure_built_model(name: str) -> Path:
    """Build a seeded random model once (every machine builds the same weights) and return its folder."""
    folder_name, seed, dtype = BUILT[name]
    folder = cache_dir() / folder_name
    if (folder / "config.json").exists():
        return folder
    import torch

    model = random_model(name, seed=seed).to(getattr(torch, dtype))
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)  # safetensors, the Hugging Face layout
    return folder


def ensure_tiny_model() -> Path:
    return ensure_built_model("tiny")


def resolve_weights(choice: ModelChoice) -> str:
    """Folder or hub id to load `choice` from."""
    if choice.path:
        return choice.path
    if choice.name in BUILT:
        return str(ensure_built_model(choice.name))
    if choice.name == "tiny-lv":
        from lvjob.pretrain import ensure_demo_model

        return str(ensure_demo_model())
    return QWEN25_HUB_ID


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
