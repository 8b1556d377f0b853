"""models: the study's models, all of one architecture (Qwen2ForCausalLM).

The models by name, torch-free (`registry`: configs, where weights live, the LoRA defaults),
loading and building them (`loading`), the FLOP counter of SPEC §5 (`flops`), and the checks of a
staged model folder (`modelcheck`).
"""
