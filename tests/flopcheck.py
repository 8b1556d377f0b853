"""The FLOP counter's executed view against `torch.utils.flop_counter.FlopCounterMode` (SPEC §5).

FlopCounterMode counts a matrix product as 2 m n p; the counter's `matmul_flops(..., convention=
"2mnp")` is the same convention. Both count a forward, a full fine-tuning forward+backward and a
LoRA forward+backward (on q_proj, v_proj unless told otherwise) of the real Hugging Face Qwen2 code with random weights
(FLOPs do not depend on values). Eager attention: FlopCounterMode sees no FLOPs in SDPA on CPU.

Used by tests/models/test_flops.py (agreement within 1%) and by benchmarks/pipeline_bench.py (the
agreement, reported). It is the tests' oracle for the counter, not part of the suite, so it lives
with the shared test modules (pyproject's pytest `pythonpath`); the benchmark puts tests/ on its path.
"""

from __future__ import annotations

from lvjob.models import flops
from lvjob.models.loading import random_model
from lvjob.models.registry import DEFAULT_LORA_TARGETS

KINDS = ("forward", "full", "lora")


def measured(name: str, batch: int, seq: int, rank: int = 4, targets=DEFAULT_LORA_TARGETS) -> dict[str, int]:
    """FlopCounterMode's totals for one forward, a full fine-tuning step and a LoRA step."""
    import torch  # deferred, with peft: the counted view below needs neither
    from peft import LoraConfig, get_peft_model
    from torch.utils.flop_counter import FlopCounterMode

    model = random_model(name, seed=0, attn_implementation="eager")
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0))

    def count(fn) -> int:
        counter = FlopCounterMode(display=False)
        with counter:
            fn()
        return counter.get_total_flops()

    out = {}
    with torch.no_grad():
        out["forward"] = count(lambda: model(input_ids=ids))
    out["full"] = count(lambda: model(input_ids=ids, labels=ids).loss.backward())
    model.zero_grad(set_to_none=True)
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets), lora_dropout=0.0)
    lora = get_peft_model(model, config)
    out["lora"] = count(lambda: lora(input_ids=ids, labels=ids).loss.backward())
    return out


def counted(name: str, batch: int, seq: int, rank: int = 4, targets=DEFAULT_LORA_TARGETS) -> dict[str, int]:
    """The counter's executed matrix products, in FlopCounterMode's 2mnp convention."""
    shape = flops.shape_of(name)

    def mm(r: int, backward: bool) -> int:
        return flops.matmul_flops(shape, batch, seq, r, targets, backward=backward, convention="2mnp").total

    return {"forward": mm(0, False), "full": mm(0, True), "lora": mm(rank, True)}
