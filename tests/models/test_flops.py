"""FLOP accounting (SPEC §5): the rules pinned by hand, their algebra, and the executed view's matrix
products against torch's FlopCounterMode on the real Hugging Face Qwen2 code."""

import subprocess
import sys

import pytest

from lvjob.models import flops
from lvjob.models.floprules import Flops, ModelShape, rmsnorm, softmax
from flopcheck import counted, measured

# A made-up model small enough to count by hand.
HAND = ModelShape(hidden=4, layers=1, heads=2, kv_heads=1, head_dim=2, intermediate=6, vocab=10,
                  tied_embeddings=True, qkv_bias=True)

# ---------------------------------------------------------------------------------------------------
# FlopCounterMode agreement (executed view, matrix products, 2mnp convention)

LORA_RANK = 4


def _measure(name: str, batch: int, seq: int) -> dict[str, int]:
    return measured(name, batch, seq, LORA_RANK)


def _ours(name: str, batch: int, seq: int) -> dict[str, int]:
    return counted(name, batch, seq, LORA_RANK)


@pytest.fixture(scope="module")
def tiny_counts():
    return _measure("tiny", 2, 16), _ours("tiny", 2, 16)


@pytest.fixture(scope="module")
def full_size_counts():
    # ~2 GB of float32 weights (+2 GB of gradients), built once; a short sequence keeps it quick.
    return _measure("qwen2.5-0.5b-random", 1, 32), _ours("qwen2.5-0.5b", 1, 32)


def _agree(counts, what: str) -> None:
    measured, ours = counts
    rel = ours[what] / measured[what] - 1
    print(f"{what}: FlopCounterMode {measured[what]:,} ours {ours[what]:,} relative difference {rel:+.2e}")
    assert abs(rel) < 0.01, f"{what}: {ours[what]:,} vs FlopCounterMode {measured[what]:,} ({rel:+.3%})"


def test_tiny_forward_matmuls_match_flop_counter(tiny_counts):
    _agree(tiny_counts, "forward")


def test_tiny_full_finetune_step_matmuls_match_flop_counter(tiny_counts):
    _agree(tiny_counts, "full")


def test_tiny_lora_step_matmuls_match_flop_counter(tiny_counts):
    _agree(tiny_counts, "lora")


def test_full_size_forward_matmuls_match_flop_counter(full_size_counts):
    _agree(full_size_counts, "forward")


def test_full_size_full_finetune_step_matmuls_match_flop_counter(full_size_counts):
    _agree(full_size_counts, "full")


def test_full_size_lora_step_matmuls_match_flop_counter(full_size_counts):
    _agree(full_size_counts, "lora")


# ---------------------------------------------------------------------------------------------------
# The rules, by hand


def test_rmsnorm_of_one_token_by_hand():
    d = 4
    # pow(2) d, mean: d-1 adds + 1 division, + eps, rsqrt = sqrt 10 + division 1, x * rsqrt d, weight * x d
    assert rmsnorm(d) == 4 + 3 + 1 + 1 + 11 + 4 + 4 == 28


def test_softmax_of_one_row_by_hand():
    n = 5
    # max: 4 comparisons, subtract max 5, exp 5 x 10, sum 4 adds, divide 5
    assert softmax(n) == 4 + 5 + 50 + 4 + 5 == 68


def test_norms_component_by_hand():
    # 1 layer: input + post-attention norms, plus the final norm; 1 x 2 tokens; 28 each (above)
    assert flops.forward(HAND, 1, 2).norms == 3 * 2 * 28


def test_attention_component_by_hand():
    T = 2  # 1 sequence x 2 tokens, hidden 4, 2 query heads and 1 key/value head of dim 2
    q_proj = T * 4 * (2 * 4 - 1) + T * 4  # (2x4)(4x4) + bias
    k_proj = v_proj = T * 2 * (2 * 4 - 1) + T * 2  # (2x4)(4x2) + bias
    rope = (T * 2 * 2 + T * 1 * 2) // 2 * 7  # per pair: 2 x*cos, 1 negation, 2 x*sin, 2 adds
    scores = 2 * (2 * 2 * (2 * 2 - 1))  # per head (2x2)(2x2)
    scale_and_mask = 2 * 4 * 2
    softmax_rows = 2 * 2 * (1 + 2 + 20 + 1 + 2)  # 4 rows of 2
    weighted = 2 * (2 * 2 * (2 * 2 - 1))  # per head (2x2)(2x2)
    o_proj = T * 4 * (2 * 4 - 1)  # no bias
    residual = T * 4
    expected = q_proj + k_proj + v_proj + rope + scores + scale_and_mask + softmax_rows + weighted + o_proj + residual
    assert expected == 402
    assert flops.forward(HAND, 1, 2).attention == expected


def test_mlp_component_by_hand():
    T = 2
    gate = up = T * 6 * (2 * 4 - 1)  # (2x4)(4x6)
    silu = T * 6 * (1 + 10 + 1 + 1 + 1)  # x * sigmoid(x), sigmoid = neg + exp + add + div
    product = T * 6
    down = T * 4 * (2 * 6 - 1)  # (2x6)(6x4)
    residual = T * 4
    assert flops.forward(HAND, 1, 2).mlp == gate + up + silu + product + down + residual == 444


def test_lm_head_is_one_matmul_and_embedding_is_free():
    out = flops.forward(HAND, 1, 2)
    assert out.lm_head == 2 * 10 * (2 * 4 - 1)  # (2x4)(4x10)
    assert out.embedding == 0
    assert flops.forward(HAND, 1, 2, logits_len=1).lm_head == 1 * 10 * 7


def test_lora_component_by_hand():
    T, r = 2, 2
    q = T * r * (2 * 4 - 1) + T * 4 * (2 * r - 1) + 2 * T * 4  # x@A, @B, * scaling, + base
    v = T * r * (2 * 4 - 1) + T * 2 * (2 * r - 1) + 2 * T * 2
    assert flops.forward(HAND, 1, 2, lora_rank=r).lora == q + v == 116


def test_cross_entropy_counted_in_lm_head_with_loss():
    with_loss = flops.forward(HAND, 1, 2, loss=True)
    # per row of 10 logits: max 9, subtract 10, exp 100, sum 9, log 10, subtract 10; NLL negate + add
    assert with_loss.lm_head - flops.forward(HAND, 1, 2).lm_head == 2 * (9 + 10 + 100 + 9 + 10 + 10 + 2)


def test_matmul_conventions_differ_by_the_outputs():
    rules = flops.matmul_flops(HAND, 1, 2).lm_head
    two_mnp = flops.matmul_flops(HAND, 1, 2, convention="2mnp").lm_head
    outputs = flops.matmul_flops(HAND, 1, 2, convention="outputs").lm_head
    assert (rules, two_mnp, outputs) == (2 * 10 * 7, 2 * 2 * 4 * 10, 2 * 10)
    assert flops.to_2mnp(rules, outputs) == two_mnp and flops.from_2mnp(two_mnp, outputs) == rules


def test_matmul_part_leaves_out_elementwise_ops():
    mm = flops.matmul_flops(HAND, 1, 2)
    assert mm.norms == 0 and mm.embedding == 0
    assert mm.mlp == 2 * (2 * 6 * 7) + 2 * 4 * 11


# ---------------------------------------------------------------------------------------------------
# Algebra of the rules


QWEN = ModelShape(hidden=896, layers=24, heads=14, kv_heads=2, head_dim=64, intermediate=4864, vocab=151936)


@pytest.mark.parametrize("rank", [0, 4, 64])
def test_train_step_is_exactly_three_forwards(rank):
    step = flops.train_step(QWEN, 4, 512, rank)
    assert step == 3 * flops.forward(QWEN, 4, 512, lora_rank=rank, loss=True)
    assert isinstance(step.total, int)


def test_lora_adds_only_the_lora_component():
    full, lora = flops.train_step(QWEN, 4, 512, 0), flops.train_step(QWEN, 4, 512, 8)
    diff = (lora - full).as_dict()
    assert diff.pop("lora") > 0
    assert set(diff.values()) == {0}


def test_flops_support_addition_and_integer_scaling():
    a = Flops(attention=1, mlp=2)
    b = Flops(norms=3, lora=4)
    assert (a + b).total == 10 and (2 * a).mlp == 4 and (a * 3).attention == 3
    assert (a + b - b) == a


def test_executed_lora_step_is_about_two_forwards_full_about_three():
    fwd = flops.forward(QWEN, 1, 512, loss=True).total
    assert 2.0 < flops.executed_train_step(QWEN, 1, 512, 4).total / fwd < 2.1
    assert abs(flops.executed_train_step(QWEN, 1, 512, 0).total / fwd - 3) < 0.01


# ---------------------------------------------------------------------------------------------------
# Inference


@pytest.mark.parametrize("rank", [0, 4])
def test_generation_is_prefill_plus_one_decode_forward_per_later_token(rank):
    prompt, new = 100, 7
    expected = flops.forward(QWEN, 2, prompt, lora_rank=rank, logits_len=1)
    for i in range(1, new):  # the first new token comes from the prefill's logits
        expected = expected + flops.forward(QWEN, 2, 1, kv_len=prompt + i, lora_rank=rank, logits_len=1)
    assert flops.generation(QWEN, 2, prompt, new, lora_rank=rank) == expected


def test_one_token_generation_is_the_prefill_alone():
    assert flops.generation(QWEN, 1, 50, 1) == flops.forward(QWEN, 1, 50, logits_len=1)


def test_decoding_with_a_cache_costs_less_than_rerunning_the_sequence():
    with_cache = flops.forward(QWEN, 1, 1, kv_len=300, logits_len=1).total
    rerun = flops.forward(QWEN, 1, 300, logits_len=1).total
    assert with_cache < rerun / 100


# ---------------------------------------------------------------------------------------------------
# Report and packaging


def test_step_table_lists_every_component_with_totals_and_rules():
    table = flops.step_table(QWEN, 4, 512, 4)
    for comp in flops.COMPONENTS:
        assert f"| {comp} |" in table
    assert "**total**" in table and "3 x forward" in table and "GFLOP" in table
    rules_full = flops.train_step(QWEN, 4, 512, 0).total
    assert f"{rules_full / 1e9:,.1f}" in table


def test_shape_of_reads_the_model_config():
    assert flops.shape_of("qwen2.5-0.5b") == QWEN
    tiny = flops.shape_of("tiny")
    assert (tiny.hidden, tiny.layers, tiny.heads, tiny.kv_heads, tiny.head_dim) == (64, 2, 4, 2, 16)


def test_importing_flops_does_not_import_torch():
    code = "import sys, lvjob.models.flops; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
