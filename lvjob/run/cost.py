"""What a job costs in FLOPs by the rules of SPEC §5: one description for the planner and the ledger.

The per-unit costs (a training step, a validation pass, a batch of generation) are what the
runner books into a run's ledger as it computes them; `job_cost` multiplies the same units by what
a job will do at most, and is what the planner charges. So for every job, planned >= spent:

- training: exactly `steps` steps (re-done steps after a preemption are booked on top, as lost);
- validation: one pass of `val_chunks` chunks every `val_every` steps and at the last step (the
  runner's subset holds at most that many chunks);
- evaluation: each series' prompt processed once, then every series x sample generated as its own
  row against a copy of that prompt's KV cache (lvjob.forecasting.decoding), every value written at
  `max_int_digits` integer digits and every row generated to the end of the horizon, which is the
  grammar's maximum: a batch generates until its longest row ends, and no row can be longer;
- a baseline (no model) costs nothing in model FLOPs.
"""

from __future__ import annotations

import math
from functools import lru_cache

from lvjob.models import flops
from lvjob.data.grammar import ALPHABET
from lvjob.run.job import Job
from lvjob.run.ledger import Ledger
from lvjob.data.prompts import forecast_tokens, prompt_tokens

# Constrained decoding computes only the grammar's rows of the LM head (lvjob.forecasting.decoding).
GRAMMAR_ROWS = len(ALPHABET)


# The planner prices every configuration a late-bound stage could choose, many times over while it
# searches for step counts that fit: the counts are pure, so each distinct one is computed once.
@lru_cache(maxsize=4096)
def _forward(model: str, rows: int, seq: int, rank: int, targets: tuple[str, ...], loss: bool = False,
             logits_vocab: int | None = None) -> int:
    kw = dict(loss=True) if loss else dict(logits_len=1, logits_vocab=logits_vocab)
    return flops.forward(flops.shape_of(model), rows, seq, lora_rank=rank, lora_targets=targets, **kw).total


@lru_cache(maxsize=4096)
def _generation(model: str, rows: int, width: int, new: int, rank: int, targets: tuple[str, ...], vocab: int) -> int:
    return flops.generation(flops.shape_of(model), rows, width, new, lora_rank=rank, lora_targets=targets,
                            logits_vocab=vocab).total


def step_flops(job: Job) -> int:
    """One training step: 3 x forward, LoRA or not."""
    return 3 * _forward(job.model, job.batch_size, job.context, job.rank, job.lora_targets, loss=True)


def validation_flops(job: Job, chunks: int | None = None) -> int:
    """One validation-loss pass over `chunks` chunks (default: the job's `val_chunks`)."""
    n = job.val_chunks if chunks is None else chunks
    return _forward(job.model, n, job.context, job.rank, job.lora_targets, loss=True) if n else 0


def validation_passes(steps: int, every: int) -> int:
    """Validation runs every `every` steps and once more at the last step if that is not a multiple."""
    return math.ceil(steps / every) if steps > 0 else 0


def evaluation_flops(job: Job, batches, lora_rank: int) -> tuple[int, int]:
    """(prompt processing, generation) of generation batches given as (prompts, padded prompt length,
    tokens generated, LM-head rows, copies of each prompt): padding and rows that finished early included.

    The prompt pass runs once per prompt; every copy then decodes against its own copy of the cache:
    the decode part of generating for prompts x copies rows, without their prompt passes.
    """
    m, t = job.model, job.lora_targets
    prompt = generation = 0
    for prompts, width, new, vocab, copies in batches:
        rows = prompts * copies
        prompt += _forward(m, prompts, width, lora_rank, t, logits_vocab=vocab)
        generation += _generation(m, rows, width, new, lora_rank, t, vocab) - _forward(m, rows, width, lora_rank, t, logits_vocab=vocab)
    return prompt, generation


def prompt_int_digits(beta: float) -> int:
    """Integer digits of the largest value a scaled context can show.

    Every shown x - offset is at least beta x range, so its alpha-quantile (the scale) is too, and
    x' = (x - offset) / scale <= (1 + beta) / beta: 4.3 for beta 0.3, one digit.
    """
    return len(str(int((1 + beta) / beta))) if beta > 0 else 9  # beta 0 has no bound: charge a wide one


def evaluation_batches(job: Job) -> list[tuple[int, int, int, int, int]]:
    """The generation batches of the job's evaluation at their largest: see the module's docstring."""
    if job.kind == "baseline":
        return []
    d, t = job.data, job.text
    width = prompt_tokens(job.prompt, d.context_points, d.horizon_points, t.decimals, int_digits=prompt_int_digits(t.beta))
    new = forecast_tokens(d.horizon_points, t.decimals, int_digits=job.max_int_digits)
    series, per_batch = job.series, job.eval_batch_size
    sizes = [per_batch] * (series // per_batch) + ([series % per_batch] if series % per_batch else [])
    return [(n, width, new, GRAMMAR_ROWS, job.samples) for n in sizes]


def evaluation_rank(job: Job) -> int:
    """The adapter rank a job evaluates with: its own after training; a study's evaluation jobs have none."""
    return job.rank if job.kind == "train" else 0


def job_cost(job: Job) -> Ledger:
    """The most a job can spend, as the ledger it would write."""
    steps = job.steps if job.kind == "train" else 0
    step, passes = step_flops(job), validation_passes(steps, job.val_every)
    prompt, generation = evaluation_flops(job, evaluation_batches(job), evaluation_rank(job))
    return Ledger(train_steps=steps, train=steps * step, validation=passes * validation_flops(job) if steps else 0,
                  prompt=prompt, generation=generation)
