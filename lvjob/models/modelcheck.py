"""Is a folder the model a job expects? Checks of a staged model folder, without loading the model.

`problems(folder, name)` returns one line per problem, each saying what is wrong, where, and what
would be valid; an empty list means that

- `config.json` declares Qwen2ForCausalLM at the named model's sizes (lvjob.models.loading.config_dict);
- the `*.safetensors` files are whole (their headers are read, not the weights) and hold every tensor
  of that architecture at its shape;
- the folder's tokenizer gives the offline Qwen2.5 tokenizer's ids (lvjob.data.tokenizer) for the LLMTIME
  alphabet, a rendered series and the chat tokens: the runner tokenizes with the offline one, so a
  model whose vocabulary differs would read other numbers than it was shown.

`lvjob fetch-model` and `lvjob check-model` print these lines; a pre-flight can reuse them.
`download` fetches only the files the runner needs from the Hugging Face hub (login node only).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lvjob.models.registry import MODELS, QWEN25_HUB_ID, config_dict

ARCHITECTURE = "Qwen2ForCausalLM"
MODEL_TYPE = "qwen2"
SIZE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "vocab_size")
MAX_LISTED = 5  # per kind of tensor problem: a wrong-size model would otherwise give hundreds of lines
CHAT_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# The files the runner reads of a model from the hub (no README, no other formats).
NEEDED_FILES = ("config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
                "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "chat_template.jinja")


def problems(folder: str | Path, name: str = "qwen2.5-0.5b", tokenizer: bool = True) -> list[str]:
    """Every reason `folder` is not a complete `name` model for the runner; [] if there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder}: no such folder; valid: a folder holding config.json, *.safetensors and the "
                f"tokenizer files (lvjob fetch-model --to {folder} makes one)"]
    expected = config_dict(name)
    found = config_problems(folder, name, expected) + weight_problems(folder, name, expected)
    return found + (tokenizer_problems(folder) if tokenizer else [])


# --- config.json ------------------------------------------------------------------------------------


def config_problems(folder: Path, name: str, expected: dict) -> list[str]:
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return [f"{path}: missing; valid: the model's config.json ({_source(name)})"]
    except (OSError, ValueError) as e:
        return [f"{path}: unreadable ({e}); valid: the model's config.json as JSON ({_source(name)})"]
    if not isinstance(config, dict):
        return [f"{path}: holds {type(config).__name__}, not a JSON object; valid: the model's config.json"]
    return _architecture_problems(path, name, config) + _size_problems(path, name, config, expected)


def _architecture_problems(path: Path, name: str, config: dict) -> list[str]:
    found = []
    if ARCHITECTURE not in (config.get("architectures") or []):
        found.append(f"{path}: architectures is {config.get('architectures')!r}; {name} needs [{ARCHITECTURE!r}]")
    if config.get("model_type") != MODEL_TYPE:
        found.append(f"{path}: model_type is {config.get('model_type')!r}; {name} needs {MODEL_TYPE!r}")
    return found


def _size_problems(path: Path, name: str, config: dict, expected: dict) -> list[str]:
    return [f"{path}: {key} is {config.get(key)!r}; {name} has {expected[key]}"
            for key in SIZE_KEYS if config.get(key) != expected[key]]


def _source(name: str) -> str:
    return f"lvjob fetch-model --model {name} downloads it" if MODELS[name].hub_id else f"{name} is built by lvjob prepare"


# --- weights ----------------------------------------------------------------------------------------


def weight_problems(folder: Path, name: str, expected: dict) -> list[str]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return [f"{folder}: no *.safetensors weights; valid: model.safetensors (or the shards its index "
                f"names) of {name} ({_source(name)})"]
    tensors, found = {}, _missing_shards(folder)
    for path in files:
        try:
            tensors |= tensor_shapes(path)
        except WeightsError as e:
            found.append(str(e))
    if found:  # with a file unreadable, every tensor in it would be reported missing: say only why
        return found
    return _coverage_problems(folder, name, tensors, expected_shapes(expected))


class WeightsError(ValueError):
    """A weights file that cannot be read; the message names it and says what to do."""


def tensor_shapes(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """{tensor name: (shape, file name)} from a safetensors file's header, which the library checks
    against the file's size (a truncated download fails here), without reading the weights."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return {key: (tuple(f.get_slice(key).get_shape()), path.name) for key in f.keys()}
    except (SafetensorError, OSError) as e:
        raise WeightsError(f"{path}: not a readable safetensors file ({e}); valid: the complete file "
                           f"(an interrupted download? delete it and run lvjob fetch-model again)") from None


def _missing_shards(folder: Path) -> list[str]:
    """Shards named by a sharded checkpoint's index but not in the folder."""
    index = folder / "model.safetensors.index.json"
    if not index.exists():
        return []
    try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError, AttributeError) as e:
        return [f"{index}: unreadable ({e!r}); valid: a JSON object with a weight_map of tensor -> shard file"]
    return [f"{folder / s}: missing; {index.name} names it as a shard of the weights" for s in shards
            if not (folder / s).exists()]


def expected_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor a Qwen2ForCausalLM checkpoint of config `c` holds, with its shape."""
    h, inter, vocab = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    q, kv = h, c["num_key_value_heads"] * (h // c["num_attention_heads"])  # head_dim = hidden / heads
    shapes = {"model.embed_tokens.weight": (vocab, h), "model.norm.weight": (h,)}
    for i in range(c["num_hidden_layers"]):
        shapes |= {f"model.layers.{i}.{k}": s for k, s in _layer_shapes(h, inter, q, kv).items()}
    if not c.get("tie_word_embeddings", False):
        shapes["lm_head.weight"] = (vocab, h)
    return shapes


def _layer_shapes(h: int, inter: int, q: int, kv: int) -> dict[str, tuple[int, ...]]:
    return {
        "input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,),
        "self_attn.q_proj.weight": (q, h), "self_attn.q_proj.bias": (q,),
        "self_attn.k_proj.weight": (kv, h), "self_attn.k_proj.bias": (kv,),
        "self_attn.v_proj.weight": (kv, h), "self_attn.v_proj.bias": (kv,),
        "self_attn.o_proj.weight": (h, q),
        "mlp.gate_proj.weight": (inter, h), "mlp.up_proj.weight": (inter, h), "mlp.down_proj.weight": (h, inter),
    }


def _coverage_problems(folder: Path, name: str, tensors: dict, expected: dict) -> list[str]:
    """Expected tensors absent or of another shape (extra tensors are harmless)."""
    missing = [k for k in expected if k not in tensors]
    wrong = [f"{k} is {tensors[k][0]} in {tensors[k][1]}, {name} needs {expected[k]}"
             for k in expected if k in tensors and tensors[k][0] != expected[k]]
    found = []
    if missing:
        found.append(f"{folder}: {len(missing)} of the {len(expected)} tensors of {name} are missing from the "
                     f"weights, e.g. {', '.join(missing[:3])}; valid: the complete checkpoint")
    found += [f"{folder}: tensor {w}" for w in wrong[:MAX_LISTED]]
    if len(wrong) > MAX_LISTED:
        found.append(f"{folder}: {len(wrong) - MAX_LISTED} more tensors of the wrong shape")
    return found


# --- tokenizer --------------------------------------------------------------------------------------


def tokenizer_problems(folder: Path) -> list[str]:
    from lvjob.data.tokenizer import load_tokenizer

    theirs = _folder_tokenizer(folder)
    if isinstance(theirs, str):
        return [theirs]
    ours = load_tokenizer()
    found = [f"{folder}: its tokenizer encodes {label} as {a[:8]}, the offline Qwen2.5 tokenizer as {b[:8]}; "
             f"valid: the tokenizer files of {QWEN25_HUB_ID}"
             for label, a, b in _encodings(theirs, ours) if a != b]
    return found[:MAX_LISTED]


def _folder_tokenizer(folder: Path):
    """The folder's tokenizer, or the problem line if it has none that loads."""
    from transformers import AutoTokenizer

    # Without tokenizer files AutoTokenizer still builds one from config.json's model_type, with an
    # empty vocabulary: ask for the files first.
    if not (folder / "tokenizer.json").exists() and not all((folder / f).exists() for f in ("vocab.json", "merges.txt")):
        return (f"{folder}: no tokenizer files; valid: tokenizer.json (or vocab.json and merges.txt) and "
                f"tokenizer_config.json of {QWEN25_HUB_ID}")
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:  # noqa: BLE001 - a third party's loader fails in many ways; all mean "no tokenizer here"
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        return (f"{folder}: no tokenizer that loads ({reason}); valid: tokenizer.json and "
                f"tokenizer_config.json of {QWEN25_HUB_ID}")


def _encodings(theirs, ours):
    """(what, the folder tokenizer's ids, the offline tokenizer's ids) for each sample."""
    for label, text in sample_texts():
        yield label, theirs.encode(text, add_special_tokens=False), ours.encode(text, add_special_tokens=False)
    for token in CHAT_TOKENS:
        yield token, [theirs.convert_tokens_to_ids(token)], [ours.convert_tokens_to_ids(token)]


def sample_texts() -> list[tuple[str, str]]:
    """Each character of the LLMTIME alphabet alone, the whole alphabet, and a rendered series."""
    from lvjob.data.grammar import ALPHABET
    from lvjob.data.llmtime import fit_scaler, render

    series = np.array([[10.0, 5.0], [13.7, 4.2], [27.18, 1.0], [102.5, 30.0], [0.4, 0.07]])
    text = render(fit_scaler(series).transform(series))
    return [(repr(c), c) for c in ALPHABET] + [(repr(ALPHABET), ALPHABET), (f"the series {text[:30]!r}...", text)]


# --- download ---------------------------------------------------------------------------------------


def download(name: str, dest: Path) -> Path:
    """Download the files of `name` that the runner needs into `dest` (needs the internet)."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(MODELS[name].hub_id, local_dir=str(dest), allow_patterns=list(NEEDED_FILES)))
