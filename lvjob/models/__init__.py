"""models: the study's models, all of one architecture (Qwen2ForCausalLM).

The models by name, torch-free (`registry`: `MODELS`, each one's config and where its weights come
from; the LoRA defaults), loading and building them (`loading`), the FLOP counter of SPEC §5 (`flops`:
forward, training step, generation, the step table; `floprules`: what each operation costs, the shape
and the breakdown a count is kept in), and the checks of a staged model folder (`modelcheck`).
"""
