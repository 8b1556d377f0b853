"""forecasting: forecasts and their scores, no files.

Constrained, batched decoding with the KV cache (`decoding`), the language-model forecaster that
prompts, samples and parses (`llm`), the baseline forecasters (`baselines`) and the scores of
SPEC §4 (`scores`).
"""
