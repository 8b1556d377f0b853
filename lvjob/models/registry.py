"""The models of the study by name (`MODELS`): each one's config, where its weights come from, how
the results describe it; the LoRA defaults.

Torch-free, so the configs (lvjob.study.spec, lvjob.run.job, lvjob.cluster.profile), the FLOP counter and the planner
can know every model without loading a library; lvjob.models.loading loads and builds them.

- `qwen2.5-0.5b`: Qwen/Qwen2.5-0.5B-Instruct, from a local folder or the Hugging Face cache; the one
  model on the hub, so the one a cluster must stage (`lvjob fetch-model`, checked by the pre-flight).
- `qwen2.5-0.5b-random`: the same architecture with seeded random weights, built into the cache.
- `tiny`: the same architecture at a tiny width with the real vocabulary, built into the cache.
- `tiny-lv`: `tiny` with a sliding attention window, after a short pre-training (lvjob.run.pretrain), built
  into the cache by `lvjob prepare`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lvjob.core.paths import cache_dir

# The real model on the hub, also named as the source of the tokenizer the offline one must match (modelcheck).
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

# The demo model: `tiny` whose attention reads a sliding window of 128 tokens in both layers. Its
# pre-training and the demo's fine-tunes see windows of 64-256 tokens, but a forecast prompt is
# ~960 (80 points x 12 tokens); with full attention a 2-layer model trained on short windows does not
# carry what it learnt to positions it never saw, and writes about the same numbers whatever the
# context (the demo study before the window, README at commit ace0a1d: every model's error flat over
# the horizon and 5x persistence's at step 1). Windowed, it reads every prompt the way it read its
# training text. Qwen2's own sliding-window attention: no new weights. FLOPs are counted as for `tiny`,
# because the window is a mask: SDPA still computes every score, in training and over a prompt alike.
DEMO_CONFIG = dict(TINY_CONFIG, use_sliding_window=True, sliding_window=128, max_window_layers=0)


@dataclass(frozen=True)
class Built:
    """A model built into the cache from seeded random weights (lvjob.models.loading.ensure_built_model):
    every machine builds the same weights, so no one has to ship them."""

    folder: str  # under the cache folder
    seed: int
    dtype: str  # what the weights are saved in: the real checkpoint's bfloat16 for a full-size stand-in


@dataclass(frozen=True)
class ModelSpec:
    """What the suite knows of one model; its name is its key in MODELS."""

    config: dict  # the Qwen2Config values (config_dict gives a copy)
    hub_id: str | None = None  # where `lvjob fetch-model` downloads it; None: not on the hub
    built: Built | None = None  # built into the cache from seeded random weights; None: not built that way
    demo: bool = False  # the demo model: pre-trained by DEMO_RECIPE_KEY's recipe into demo_model_dir, by `lvjob prepare`
    description: str | None = None  # the results summary's words for it; None: it is named alone

    @property
    def staged(self) -> bool:
        """Compute nodes have no internet: a model from the hub is staged into a folder on the login node."""
        return self.hub_id is not None


# How the results summary describes a model whose numbers say nothing of what Qwen2.5 can do.
_LOCAL = "built locally: its numbers show the pipeline working, not what Qwen2.5 can do"

MODELS: dict[str, ModelSpec] = {
    "qwen2.5-0.5b": ModelSpec(QWEN25_05B_CONFIG, hub_id=QWEN25_HUB_ID),
    "qwen2.5-0.5b-random": ModelSpec(QWEN25_05B_CONFIG, built=Built("qwen2.5-0.5b-random", 0, "bfloat16")),
    "tiny": ModelSpec(TINY_CONFIG, built=Built("tiny-qwen2", TINY_SEED, "float32"),
                      description=f"the tiny test model `tiny` (a 2-layer Qwen2 with the real vocabulary and random "
                                  f"weights, {_LOCAL})"),
    "tiny-lv": ModelSpec(DEMO_CONFIG, demo=True,
                         description=f"the tiny demo model `tiny-lv` (a 2-layer Qwen2 with the real vocabulary, briefly "
                                     f"pre-trained on the training systems' text, {_LOCAL})"),
}
MODEL_NAMES = tuple(MODELS)

# The linear layers LoRA adapts unless a job says otherwise (SPEC §1's reference setting).
DEFAULT_LORA_TARGETS = ("q_proj", "v_proj")


@dataclass(frozen=True)
class ModelChoice:
    """Which model a job uses; `path` overrides where the weights come from (folder or hub id)."""

    name: str = "tiny"
    path: str | None = None
    quantize_4bit: bool = False

    def __post_init__(self) -> None:
        if self.name not in MODEL_NAMES:
            raise ValueError(f"model.name: unknown model {self.name!r}; valid: {', '.join(MODEL_NAMES)}")

    @property
    def recipe(self) -> str | None:
        """The pre-training recipe the weights come from: the demo model's by name, else None."""
        return DEMO_RECIPE_KEY if MODELS[self.name].demo and not self.path else None


def config_dict(name: str) -> dict:
    """The config values of a named model, as plain values (no transformers import)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODEL_NAMES)}")
    return dict(MODELS[name].config)


# The default recipe of the demo model's pre-training (lvjob.run.pretrain.recipe_key of PretrainSpec()),
# kept here so loading `tiny-lv` by name needs no torch. It names the model's folder, so a changed
# recipe builds a new model instead of loading one built by the old recipe; tests/run/test_pretrain.py
# fails, naming the new key, when the recipe changes and this does not.
DEMO_RECIPE_KEY = "167af9d4fa"


def demo_model_dir(recipe: str = DEMO_RECIPE_KEY) -> Path:
    """The folder of the demo model pre-trained by `recipe` (default: the one `tiny-lv` loads)."""
    return cache_dir() / f"tiny-qwen2-lv-{recipe}"
