"""FLOP accounting per component for the Qwen2 architecture: a forward, a training step, a
generation, and the table of one step, by the rules of SPEC §5 (lvjob.models.floprules: what each
operation costs, the shape and the breakdown a count is kept in).

What is counted is what Hugging Face's Qwen2ForCausalLM computes, op by op:

- norms (component "norms"): an RMSNorm (4d + 12 on a d-vector) twice per layer plus the final norm.
- attention (component "attention"): q/k/v projections with their biases, o_proj (no bias); RoPE
  applied to q and k, q*cos + rotate_half(q)*sin with rotate_half negating half the elements: 3.5
  FLOPs per element (the cos/sin tables are not counted); the scores Q K^T, their scaling, the mask
  add, the softmax, the weighted sum with V; the attention's residual add. Grouped-query attention
  repeats K and V to every query head (a copy, 0 FLOPs) and multiplies per query head. Attention is
  counted DENSE: the full q_len x kv_len score matrix of every head, as eager attention and SDPA
  compute it (masked entries included), not the causal half.
- MLP (component "mlp"): down(silu(gate(x)) * up(x)), SiLU = x * sigmoid(x) = 14 per element
  (torch's kernel folds it into x / (1 + exp(-x)), 13: we count the rule's 14, one FLOP per
  element on the side of the budget), the product, and the MLP's residual add.
- LM head (component "lm_head"): tied embeddings, so a (d x vocab) matrix product per position whose
  logits are computed; with `loss=True` also the cross-entropy: log_softmax over the vocabulary
  (max, subtract, exp, sum, log, subtract: 14V + 8 per row) and the NLL (negate, sum, mean: 2 per row).
- embedding: 0 (a gather). The component is listed so the breakdown names every part of the model.
- LoRA (component "lora") on a target linear d_in -> d_out with rank r, per token: x @ A r(2 d_in - 1),
  @ B d_out(2r - 1), the scaling multiply d_out and the add to the base output d_out (dropout 0 is
  the identity). Adapters are unmerged, as peft runs them in training and evaluation.

Two views of a training step:

- `train_step`: the rules, 3 x forward, full fine-tune and LoRA alike. The budget is charged by this.
- `executed_train_step`: what autograd actually runs. A frozen linear computes only its input
  gradient, a trainable one also its weight gradient; an attention product differentiates only
  the inputs that require grad. With LoRA the embedding is frozen, so nothing entering layer 0
  requires grad: the frozen q/k/v projections of layer 0 have no backward at all and layer 0's
  keys need no gradient (no dK product there). The matrix-product part is exact; the elementwise
  backward is estimated at 2 x the forward's elementwise FLOPs.

`matmul_flops` gives the matrix-product part alone, the part `torch.utils.flop_counter.FlopCounterMode`
measures. FlopCounterMode counts a product as 2 m n p; the rules as m p (2n - 1). The two differ by
the number of products' outputs (m p each), which `matmul_flops(..., convention="outputs")` gives:
2mnp = rules + outputs (`to_2mnp`, `from_2mnp`).

All counts are Python ints, exact. Nothing here imports torch or transformers (the planner must be
fast).
"""

from __future__ import annotations

from types import SimpleNamespace

from lvjob.models.floprules import (COMPONENTS, LINEARS, ROPE, SILU, Flops, ModelShape, Tally, cross_entropy,
                                    rmsnorm, softmax)
from lvjob.models.registry import DEFAULT_LORA_TARGETS, config_dict


def shape_of(model_name: str) -> ModelShape:
    """The shape of a named model of lvjob.models.registry, from its config values (no transformers import)."""
    return ModelShape.from_config(SimpleNamespace(model_type="qwen2", **config_dict(model_name)))


def _check_targets(lora_rank: int, lora_targets) -> tuple[str, ...]:
    if lora_rank < 0:
        raise ValueError(f"lora_rank must be >= 0, not {lora_rank}")
    targets = tuple(lora_targets) if lora_rank else ()
    unknown = set(targets) - set(LINEARS)
    if unknown:
        raise ValueError(f"unknown LoRA targets {sorted(unknown)}; valid: {', '.join(LINEARS)}")
    return targets


# ---------------------------------------------------------------------------------------------------
# Forward


def _forward(t: Tally, s: ModelShape, batch: int, q_len: int, kv_len: int, targets, r: int,
             logits_len: int, loss: bool, logits_vocab: int) -> None:
    T, d, H, Hkv, hd = batch * q_len, s.hidden, s.heads, s.kv_heads, s.head_dim
    lin = s.linears()

    def linear(name: str) -> None:
        d_in, d_out, bias, comp = lin[name]
        t.mm(comp, T, d_in, d_out)
        if bias:
            t.ew(comp, T * d_out)
        if name in targets:
            t.mm("lora", T, d_in, r)  # x @ A
            t.mm("lora", T, r, d_out)  # @ B
            t.ew("lora", 2 * T * d_out)  # * scaling, + base output

    t.ew("embedding", 0)  # a gather
    for _ in range(s.layers):
        # attention block
        t.ew("norms", T * rmsnorm(d))
        for name in ("q_proj", "k_proj", "v_proj"):
            linear(name)
        t.ew("attention", T * (H + Hkv) * hd // 2 * ROPE)
        scores = batch * H * q_len * kv_len
        t.mm("attention", q_len, hd, kv_len, times=batch * H)  # Q K^T
        t.ew("attention", 2 * scores)  # * scaling, + mask
        t.ew("attention", batch * H * q_len * softmax(kv_len))
        t.mm("attention", q_len, kv_len, hd, times=batch * H)  # P V
        linear("o_proj")
        t.ew("attention", T * d)  # residual add
        # MLP block
        t.ew("norms", T * rmsnorm(d))
        linear("gate_proj")
        linear("up_proj")
        t.ew("mlp", T * s.intermediate * (SILU + 1))  # silu(gate) * up
        linear("down_proj")
        t.ew("mlp", T * d)  # residual add
    t.ew("norms", T * rmsnorm(d))  # final norm, on every position
    rows = batch * logits_len
    t.mm("lm_head", rows, d, logits_vocab)
    if loss:
        t.ew("lm_head", rows * cross_entropy(s.vocab))


def forward(shape: ModelShape, batch: int, q_len: int, kv_len: int | None = None, lora_rank: int = 0,
            lora_targets=DEFAULT_LORA_TARGETS, logits_len: int | None = None, loss: bool = False,
            part: str = "all", logits_vocab: int | None = None) -> Flops:
    """FLOPs of one forward pass of `batch` sequences of `q_len` new tokens by the rules.

    kv_len: keys/values attended to (default q_len; kv_len > q_len is decoding against a KV cache).
    logits_len: positions the LM head is applied to (default q_len; generation computes only the last).
    loss: also count the cross-entropy over the logits (training and validation losses).
    logits_vocab: vocabulary rows the LM head computes (default all; constrained decoding needs only
    the grammar's tokens).
    lora_rank: 0 for no adapters; else unmerged adapters of that rank on `lora_targets`.
    part: "all" (default), "matmul" (the matrix products alone) or "outputs" (see `matmul_flops`).
    """
    kv_len = q_len if kv_len is None else kv_len
    logits_len = q_len if logits_len is None else logits_len
    if kv_len < q_len:
        raise ValueError(f"kv_len ({kv_len}) must be >= q_len ({q_len})")
    if not 0 <= logits_len <= q_len:
        raise ValueError(f"logits_len ({logits_len}) must be within 0..q_len ({q_len})")
    logits_vocab = shape.vocab if logits_vocab is None else logits_vocab
    if loss and logits_vocab != shape.vocab:
        raise ValueError("a loss needs the logits of the whole vocabulary")
    t = Tally(part)
    _forward(t, shape, batch, q_len, kv_len, _check_targets(lora_rank, lora_targets), lora_rank, logits_len, loss,
             logits_vocab)
    return t.result()


# ---------------------------------------------------------------------------------------------------
# Training


def train_step(shape: ModelShape, batch: int, seq: int, lora_rank: int = 0,
               lora_targets=DEFAULT_LORA_TARGETS) -> Flops:
    """One training step by the rules: forward (with the loss) + backward = 3 x forward, LoRA or not
    (lora_rank 0 is full fine-tuning): the gradient flows back through every frozen layer."""
    return 3 * forward(shape, batch, seq, lora_rank=lora_rank, lora_targets=lora_targets, loss=True)


def _backward_matmuls(t: Tally, s: ModelShape, batch: int, seq: int, targets, r: int) -> None:
    """The matrix products autograd runs in the backward of one training step.

    A linear y = x W^T (+ b): dx = dy W, (T x d_out)(d_out x d_in), if x requires grad;
    dW = dy^T x, (d_out x T)(T x d_in), if W is trainable. Attention, per query head:
    S = Q K^T: dQ = dS K if Q requires grad, dK = dS^T Q if K does;
    O = P V:   dP = dO V^T if P requires grad, dV = P^T dO if V does.
    """
    T, d, H, hd, L = batch * seq, s.hidden, s.heads, s.head_dim, s.layers
    full = r == 0  # full fine-tuning: every weight trainable, the embedding included
    lin = s.linears()

    def dense(comp: str, d_in: int, d_out: int, x_grad: bool, w_grad: bool) -> None:
        if x_grad:
            t.mm(comp, T, d_out, d_in)
        if w_grad:
            t.mm(comp, d_out, T, d_in)

    def linear(name: str, x_grad: bool) -> bool:
        """Backward of one (possibly adapted) linear; returns whether its output requires grad."""
        d_in, d_out, _, comp = lin[name]
        dense(comp, d_in, d_out, x_grad, full)
        if name in targets:
            dense("lora", r, d_out, True, True)  # B: its input (x @ A) requires grad through A
            dense("lora", d_in, r, x_grad, True)  # A
        return x_grad or full or name in targets

    h_grad = full  # hidden states entering layer 0: the embedding's output
    for _ in range(L):
        q = linear("q_proj", h_grad)
        k = linear("k_proj", h_grad)
        v = linear("v_proj", h_grad)
        if q:
            t.mm("attention", seq, seq, hd, times=batch * H)  # dQ = dS K
        if k:
            t.mm("attention", seq, seq, hd, times=batch * H)  # dK = dS^T Q
        p = q or k
        if p:
            t.mm("attention", seq, hd, seq, times=batch * H)  # dP = dO V^T
        if v:
            t.mm("attention", seq, seq, hd, times=batch * H)  # dV = P^T dO
        o = linear("o_proj", p or v)
        h_grad = h_grad or o
        gate = linear("gate_proj", h_grad)
        up = linear("up_proj", h_grad)
        down = linear("down_proj", gate or up)
        h_grad = h_grad or down
    # LM head (tied to the embedding: trainable under full fine-tuning, frozen under LoRA)
    dense("lm_head", d, s.vocab, h_grad, full)


def executed_train_step(shape: ModelShape, batch: int, seq: int, lora_rank: int = 0,
                        lora_targets=DEFAULT_LORA_TARGETS, part: str = "all") -> Flops:
    """One training step as autograd executes it (forward with the loss + backward).

    The matrix products are exact (see `_backward_matmuls`); the elementwise backward is estimated at
    2 x the forward's elementwise FLOPs (a slight overestimate under LoRA, where a few elementwise ops
    of layer 0 need no gradient). Assumes the embedding output does not require grad under LoRA (no
    `enable_input_require_grads`, i.e. no gradient checkpointing); lora_rank 0 is full fine-tuning.
    """
    targets = _check_targets(lora_rank, lora_targets)
    kw = dict(lora_rank=lora_rank, lora_targets=lora_targets, loss=True)
    t = Tally(part)
    _backward_matmuls(t, shape, batch, seq, targets, lora_rank)
    total = forward(shape, batch, seq, part=part, **kw) + t.result()
    if part == "all":
        elementwise = forward(shape, batch, seq, **kw) - forward(shape, batch, seq, part="matmul", **kw)
        total = total + 2 * elementwise
    return total


# ---------------------------------------------------------------------------------------------------
# Matrix products alone, and the two conventions


def matmul_flops(shape: ModelShape, batch: int, seq: int, lora_rank: int = 0,
                 lora_targets=DEFAULT_LORA_TARGETS, backward: bool = False, convention: str = "rules") -> Flops:
    """The matrix-product part of a forward (or, with backward=True, of an executed training step).

    convention: "rules" m p (2n - 1) per product; "2mnp" FlopCounterMode's 2 m n p; "outputs" the
    number of output elements m p (the difference of the two).
    """
    def part(p: str) -> Flops:
        if backward:
            return executed_train_step(shape, batch, seq, lora_rank, lora_targets, part=p)
        return forward(shape, batch, seq, lora_rank=lora_rank, lora_targets=lora_targets, part=p)

    if convention == "rules":
        return part("matmul")
    if convention == "outputs":
        return part("outputs")
    if convention == "2mnp":
        return to_2mnp(part("matmul"), part("outputs"))
    raise ValueError(f"convention must be rules, 2mnp or outputs, not {convention!r}")


def to_2mnp(rules, outputs):
    """Matrix products counted m p (2n - 1) -> 2 m n p, given their outputs m p (ints or Flops)."""
    return rules + outputs


def from_2mnp(flops_2mnp, outputs):
    """Matrix products counted 2 m n p (FlopCounterMode) -> m p (2n - 1), given their outputs m p."""
    return flops_2mnp - outputs


# ---------------------------------------------------------------------------------------------------
# Inference


def generation(shape: ModelShape, batch: int, prompt_len: int, new_tokens: int, lora_rank: int = 0,
               lora_targets=DEFAULT_LORA_TARGETS, logits_vocab: int | None = None) -> Flops:
    """Generating `new_tokens` tokens after a prompt, with a KV cache.

    The prefill processes the prompt and computes logits at its last position only; that gives the
    first new token. Each further token costs one forward of q_len 1 against the cache, whose length
    grows from prompt_len + 1 to prompt_len + new_tokens - 1: new_tokens - 1 decode forwards (the
    last token generated is never fed back). Sampling from the logits is not counted.
    logits_vocab: vocabulary rows of the LM head (default all; the runner's constrained decoding
    computes only the grammar's 13 tokens).
    """
    if new_tokens < 1:
        raise ValueError(f"new_tokens must be >= 1, not {new_tokens}")
    kw = dict(lora_rank=lora_rank, lora_targets=lora_targets, logits_vocab=logits_vocab)
    total = forward(shape, batch, prompt_len, logits_len=1, **kw)
    n = new_tokens - 1
    if n:
        # A decode forward is affine in kv_len: sum over kv = P+1 .. P+n of f(kv) = n f(P) + (f(P+1) - f(P)) n(n+1)/2.
        at_p = forward(shape, batch, 1, kv_len=prompt_len, logits_len=1, **kw)
        per_kv = forward(shape, batch, 1, kv_len=prompt_len + 1, logits_len=1, **kw) - at_p
        total = total + n * at_p + (n * (n + 1) // 2) * per_kv
    return total


# ---------------------------------------------------------------------------------------------------
# Report


def _unit(largest: int) -> tuple[str, int]:
    for name, scale in (("TFLOP", 10**12), ("GFLOP", 10**9), ("MFLOP", 10**6), ("kFLOP", 10**3)):
        if largest >= 1000 * scale:
            return name, scale
    return "FLOP", 1


def step_columns(shape: ModelShape, batch: int, seq: int, rank: int,
                 targets=DEFAULT_LORA_TARGETS) -> dict[str, Flops]:
    """One training step: the forward (with the loss), the rules' 3 x forward for full fine-tuning and
    LoRA on `targets`, and what autograd executes for each."""
    return {
        "forward": forward(shape, batch, seq, loss=True),
        "full FT (rules)": train_step(shape, batch, seq, 0),
        f"LoRA r={rank} (rules)": train_step(shape, batch, seq, rank, targets),
        "full FT executed": executed_train_step(shape, batch, seq, 0),
        f"LoRA r={rank} executed": executed_train_step(shape, batch, seq, rank, targets),
    }


def step_table(shape: ModelShape, batch: int, seq: int, rank: int) -> str:
    """Markdown table of one training step per component (`step_columns`)."""
    cols = step_columns(shape, batch, seq, rank)
    unit, scale = _unit(max(c.total for c in cols.values()))

    def fmt(x: int) -> str:
        return f"{x / scale:,.1f}"

    lines = [
        f"One training step, {batch} x {seq} tokens, {unit}:",
        "",
        "| component | " + " | ".join(cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for comp in COMPONENTS:
        lines.append(f"| {comp} | " + " | ".join(fmt(getattr(c, comp)) for c in cols.values()) + " |")
    lines.append("| **total** | " + " | ".join(f"**{fmt(c.total)}**" for c in cols.values()) + " |")
    fwd = cols["forward"].total
    lines.append("| x forward | " + " | ".join(f"{c.total / fwd:.2f}" for c in cols.values()) + " |")
    lines += [
        "",
        "Rules (SPEC §5): +, -, *, /, negation, comparison 1 FLOP; exp, log, sqrt, sin, cos 10; matrix product "
        "(m x n)(n x p) = m p (2n - 1); embedding lookup 0; backward = 2 x forward, so a training step = "
        "3 x forward, LoRA or not. The budget is charged by the rules. Forward includes the cross-entropy loss "
        "and no adapters. Executed = what autograd runs (frozen layers compute only input gradients): exact "
        "matrix products, elementwise backward estimated at 2 x forward. Attention counted dense (full score matrix).",
    ]
    return "\n".join(lines)
