"""The rules of SPEC §5, what each operation costs, and what a count is kept in: the shape of a
Qwen2 model and its FLOPs per component.

The rules: +, -, negation, *, / and comparisons cost 1; exp, log, sqrt, sin, cos cost 10 (so rsqrt
= sqrt + division = 11, sigmoid = neg + exp + add + div = 13); a matrix product (m x n)(n x p) costs
m p (2n - 1); an embedding lookup is a gather and costs 0; a backward pass costs 2 x the forward it
differentiates, so a training step costs 3 x forward, LoRA or not.

Composite operations, per row:

- RMSNorm on a d-vector: x.pow(2) d, mean (d-1 adds, 1 div), + eps 1, rsqrt 11, x * rsqrt d,
  weight * x d: 4d + 12.
- softmax over a row of S: max (S-1 comparisons), subtract the max S, exp 10S, sum S-1, divide S.
- cross-entropy over V logits: log_softmax (max, subtract, exp, sum, log, subtract: 14V + 8) and
  the NLL (negate, add into the sum: 2).

lvjob.models.flops applies them to what the model computes (a forward, a training step, a
generation); this module knows no model by name and imports nothing heavy (the planner must be fast).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

COMPONENTS = ("embedding", "attention", "mlp", "norms", "lm_head", "lora")
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Elementwise costs by the rules.
EXP = LOG = SQRT = 10
RSQRT = SQRT + 1  # sqrt, then a division
SIGMOID = 1 + EXP + 1 + 1  # neg, exp, add 1, divide
SILU = SIGMOID + 1  # x * sigmoid(x)
ROPE = 7  # per pair of elements: 2 x (x*cos), 1 negation, 2 x (rotated*sin), 2 adds -> 3.5 per element


# ---------------------------------------------------------------------------------------------------
# Model shape


@dataclass(frozen=True)
class ModelShape:
    """The sizes the rules read of a Qwen2-like model (lvjob.models.flops.shape_of: of a named one)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool = True
    qkv_bias: bool = True

    @classmethod
    def from_config(cls, config) -> "ModelShape":
        """From a transformers config of a Qwen2-like model (Qwen2 always has q/k/v biases)."""
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        qkv_bias = getattr(config, "attention_bias", None)
        if qkv_bias is None:
            qkv_bias = getattr(config, "model_type", "qwen2") == "qwen2"
        return cls(
            hidden=config.hidden_size,
            layers=config.num_hidden_layers,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            intermediate=config.intermediate_size,
            vocab=config.vocab_size,
            tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
            qkv_bias=bool(qkv_bias),
        )

    def linears(self) -> dict[str, tuple[int, int, bool, str]]:
        """name -> (d_in, d_out, has bias, component) of each linear of a layer."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {
            "q_proj": (self.hidden, q, self.qkv_bias, "attention"),
            "k_proj": (self.hidden, kv, self.qkv_bias, "attention"),
            "v_proj": (self.hidden, kv, self.qkv_bias, "attention"),
            "o_proj": (q, self.hidden, False, "attention"),
            "gate_proj": (self.hidden, self.intermediate, False, "mlp"),
            "up_proj": (self.hidden, self.intermediate, False, "mlp"),
            "down_proj": (self.intermediate, self.hidden, False, "mlp"),
        }


# ---------------------------------------------------------------------------------------------------
# The breakdown


@dataclass(frozen=True)
class Flops:
    """FLOPs per component; supports +, -, * by an int, and .total."""

    embedding: int = 0
    attention: int = 0
    mlp: int = 0
    norms: int = 0
    lm_head: int = 0
    lora: int = 0

    @property
    def total(self) -> int:
        return sum(self.as_dict().values())

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __add__(self, other: "Flops") -> "Flops":
        if not isinstance(other, Flops):
            return NotImplemented
        return Flops(*(a + b for a, b in zip(self.as_dict().values(), other.as_dict().values())))

    def __sub__(self, other: "Flops") -> "Flops":
        if not isinstance(other, Flops):
            return NotImplemented
        return Flops(*(a - b for a, b in zip(self.as_dict().values(), other.as_dict().values())))

    def __mul__(self, k: int) -> "Flops":
        if not isinstance(k, int) or isinstance(k, bool):
            return NotImplemented  # ints only: counts stay exact
        return Flops(*(a * k for a in self.as_dict().values()))

    __rmul__ = __mul__


PARTS = ("all", "matmul", "outputs")


class Tally:
    """Accumulates one part of the count: "all" (the rules' full count), "matmul" (matrix products
    alone, m p (2n - 1) each) or "outputs" (m p per matrix product: 2mnp = matmul + outputs)."""

    def __init__(self, part: str):
        if part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, not {part!r}")
        self.part = part
        self.counts = dict.fromkeys(COMPONENTS, 0)

    def mm(self, component: str, m: int, n: int, p: int, times: int = 1) -> None:
        """`times` matrix products (m x n)(n x p)."""
        if self.part == "outputs":
            self.counts[component] += times * m * p
        else:
            self.counts[component] += times * m * p * (2 * n - 1)

    def ew(self, component: str, flops: int) -> None:
        """Anything but a matrix product."""
        if self.part == "all":
            self.counts[component] += flops

    def result(self) -> Flops:
        return Flops(**self.counts)


# ---------------------------------------------------------------------------------------------------
# Per-operation costs


def rmsnorm(d: int) -> int:
    """One RMSNorm of a d-vector: pow 2 (d), mean (d-1 adds + 1 div), + eps, rsqrt, x*r (d), w*x (d)."""
    return d + (d - 1) + 1 + 1 + RSQRT + d + d


def softmax(n: int) -> int:
    """Softmax of one row of n: max (n-1 comparisons), subtract n, exp 10n, sum n-1, divide n."""
    return (n - 1) + n + EXP * n + (n - 1) + n


def cross_entropy(vocab: int) -> int:
    """Cross-entropy of one row of logits: log_softmax (max, subtract, exp, sum, log, subtract) + NLL
    (negate, add into the sum; the final mean's division is left out, one FLOP per batch)."""
    return (vocab - 1) + vocab + EXP * vocab + (vocab - 1) + LOG + vocab + 2

