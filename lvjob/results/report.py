"""The study's tables (SPEC §8) from its run index: pure functions, no files.

Input: the run index (`lvjob.results.index.RunIndex`: one typed entry per run, the stages' choices), the
FLOP plan by experiment and the counter's per-step breakdown. Output: `Table`s (lvjob.results.tables).

A run that is not complete gives no error figures: its cells say why ("missing: failed",
"missing: running, step 12/60"). FLOPs spent count every run, finished or not, and the "runs
complete" column says how many finished.
"""

from __future__ import annotations

from lvjob.forecasting.scores import POINT_ERRORS, SCORES
from lvjob.models import flops
from lvjob.results.index import IndexEntry, RunIndex
from lvjob.results.uncertainty import DRAWS, LEVEL, SEED, Difference, paired_difference
from lvjob.run.rundir import RunStatus
from lvjob.study.stages import stage_table
from lvjob.results.tables import Mark, Table


def why_missing(entry: IndexEntry | None) -> Mark:
    run = entry.run if entry else None
    if run and run.status in (RunStatus.RUNNING, RunStatus.PREEMPTED) and run.steps:
        return Mark(f"missing: {run.status}, step {run.step or 0}/{run.steps}")
    if not run or run.status == RunStatus.MISSING:
        return Mark("missing: not started")
    return Mark(f"missing: {run.status}")


def _done(entry: IndexEntry | None) -> bool:
    return bool(entry) and entry.complete


def _metric(entry: IndexEntry | None, name: str):
    """A complete run's metric (None where it has none); otherwise why it has none."""
    return entry.run.metrics[name] if _done(entry) else why_missing(entry)


def _errors(entry: IndexEntry | None, metrics: tuple[str, ...] = POINT_ERRORS) -> list:
    return [_metric(entry, f"eval_{m}") for m in metrics]


def step_flops_table(shape: flops.ModelShape, model: str, batch: int, context: int, rank: int,
                     targets: tuple[str, ...]) -> Table:
    """Table 1: one training step per component, full fine-tuning vs LoRA on `targets`, the rules and executed."""
    cols = flops.step_columns(shape, batch, context, rank, targets)
    rows = [tuple([comp] + [getattr(c, comp) for c in cols.values()]) for comp in flops.COMPONENTS]
    rows.append(tuple(["total"] + [c.total for c in cols.values()]))
    return Table(
        name="table1_step_flops",
        title=f"Table 1. FLOPs of one training step ({model}, batch {batch} x {context} tokens, LoRA on {', '.join(targets)})",
        columns=("component", *cols), rows=tuple(rows), formats=("",) + (".4e",) * len(cols),
        notes=("Rules (SPEC §5): a training step = 3 x forward, LoRA or not; the budget is charged by them. "
               "Executed: what autograd runs (frozen layers compute only input gradients).",))


def context_table(index: RunIndex) -> Table:
    """Table 2: forecast error by stage 2's context length."""
    rows = []
    for r in sorted(index.of_stage("stage2"), key=lambda r: r.node):
        context = r.run.context or int(r.node.removeprefix("stage2-ctx"))
        rows.append((context, r.run.rank or Mark("missing"), r.run.lr or Mark("missing"), *_errors(r),
                     _metric(r, "parse_rate")))
    rows.sort(key=lambda row: row[0])
    choice = index.choices.get("final")
    notes = (f"The final run took context {choice.chosen['context']} ({_rule_in_words(choice)}).",) if choice else ()
    return Table(name="table2_context_length", title="Table 2. Forecast error by context length (stage 2, validation systems)",
                 columns=("context (tokens)", "rank", "lr", "MAE", "MSE", "RMSE", "parse rate"),
                 rows=tuple(rows), formats=("d", "d", "g", ".4g", ".4g", ".4g", ".1%"), notes=notes)


def comparison_table(index: RunIndex, labels: dict[str, str]) -> Table:
    """Table 3: the compared runs (`labels`: node key -> row label, from the stage table) on the test systems."""
    by_node = index.by_node()
    rows = []
    for key, label in labels.items():
        r = by_node.get(key)
        scores = _errors(r, SCORES)
        if _metric(r, "samples") == 1:  # one forecast has no interval: its "coverage" would count exact hits
            scores[SCORES.index("coverage")] = Mark("-")
        rows.append((label, *scores, _parse_rate(r), _metric(r, "samples"), _metric(r, "series")))
    fits = tuple(_fit_note(label, by_node[key].run) for key, label in labels.items()
                 if _done(by_node.get(key)) and (by_node[key].run.fell_back or by_node[key].run.fit_residual is not None))
    return Table(name="table3_forecast_error", title=f"Table 3. Forecast error on the {_split_of(by_node, labels)} systems' horizon",
                 columns=("model", "MAE", "MSE", "RMSE", "MASE", "CRPS", "coverage 10-90%", "parse rate", "samples", "series"),
                 rows=tuple(rows), formats=("", ".4g", ".4g", ".4g", ".4g", ".4g", ".1%", ".1%", "d", "d"),
                 notes=("Scores in population units over the horizon, both variables (SPEC §4): the point forecast is the "
                        "median of the samples; MASE divides each series' MAE by its context's one-step naive MAE; CRPS "
                        "is of the samples' empirical distribution (a single forecast's CRPS is its MAE); coverage is "
                        "the share of true values inside the samples' 10-90% interval. Baselines are deterministic "
                        "(1 sample: no interval, no coverage) and write numbers directly, so they have no parse rate.",
                        *fits))


def _fit_note(label: str, run) -> str:
    """How a baseline's fits went: the series that fell back to persistence, and the physics fit's residual."""
    residual = (f"; median RMS residual of the fit on the contexts {run.fit_residual:.2g} of their mean population"
                if run.fit_residual is not None else "")
    return f"{label}: {run.fell_back} of {run.metrics['series']} series fell back to persistence (fit failed){residual}."


def differences(index: RunIndex, labels: dict[str, str], reference: str) -> dict[str, dict[str, Difference | None]]:
    """{row label: {"zero-shot": .., "persistence": ..}}: each complete row of Table 3's MAE minus the zero-shot run
    `reference`'s on the same series, and minus persistence's on its own series (from its eval.json)."""
    by_node = index.by_node()
    zero_shot = by_node.get(reference)
    out = {}
    for key, label in labels.items():
        r = by_node.get(key)
        if not _done(r):
            continue
        against_zero_shot = (paired_difference(r.run.series_mae or [], zero_shot.run.series_mae or [])
                             if _done(zero_shot) and key != reference else None)
        is_persistence = r.run.series_mae == r.run.persistence_series_mae  # the persistence baseline itself
        out[label] = {"zero-shot": against_zero_shot, "persistence": None if is_persistence else
                      paired_difference(r.run.series_mae or [], r.run.persistence_series_mae or [])}
    return out


def differences_table(found: dict[str, dict[str, Difference | None]], reference_label: str) -> Table:
    """Table 3's MAE differences with their bootstrap intervals (lvjob.results.uncertainty) and what each is."""
    rows = []
    for label, against in found.items():
        cells = []
        for d in (against["zero-shot"], against["persistence"]):
            cells += [d.mean, d.low, d.high, d.verdict()] if d else [Mark("-")] * 4
        rows.append((label, *cells))
    pct = f"{LEVEL:.0%}"
    return Table(name="table3_differences",
                 title=f"MAE differences on the same test series, with {pct} bootstrap intervals",
                 columns=("model", "minus zero-shot", f"{pct} low", f"{pct} high", "vs zero-shot",
                          "minus persistence", f"{pct} low", f"{pct} high", "vs persistence"),
                 rows=tuple(rows), formats=("", ".3g", ".3g", ".3g", "", ".3g", ".3g", ".3g", ""),
                 notes=(f"Paired over the series both scored: each series' MAE minus the other forecaster's on the same "
                        f"series; the interval resamples the series ({DRAWS} draws, seed {SEED}). Zero-shot is "
                        f"{reference_label}; persistence (repeat the last context point) is scored in each run's own "
                        "evaluation. A difference is a finding (lower, higher) only when its interval excludes zero.",))


def _parse_rate(entry: IndexEntry | None):
    rate = _metric(entry, "parse_rate")
    return Mark("-") if rate is None else rate


def _split_of(by_node: dict[str, IndexEntry], keys) -> str:
    """The split the compared runs scored, in words (one word when they agree, which the stage table ensures)."""
    splits = sorted({by_node[k].run.split for k in keys if _done(by_node.get(k)) and by_node[k].run.split})
    return " / ".join(splits) or "test"


def lead_time_table(index: RunIndex, labels: dict[str, str]) -> Table:
    """MAE by forecast step (1 ... horizon) of every row of Table 3."""
    by_node = index.by_node()
    horizon = max((len(r.run.lead_time_mae or []) for r in index.runs), default=0)
    rows = []
    for key, label in labels.items():
        r = by_node.get(key)
        steps = r.run.lead_time_mae if _done(r) else None
        rows.append((label, *(steps if steps else [why_missing(r) if not _done(r) else Mark("-")] * horizon)))
    return Table(name="table3_lead_time", title=f"MAE by lead time on the {_split_of(by_node, labels)} systems (the rows of Table 3)",
                 columns=("model", *(f"step {h}" for h in range(1, horizon + 1))), rows=tuple(rows),
                 formats=("",) + (".3g",) * horizon,
                 notes=("Mean absolute error over the series and both variables at each step after the context.",))


def flops_table(index: RunIndex, planned: dict[str, int], budget: float, experiments: list[str] | None = None) -> Table:
    """Table 4: FLOPs by experiment (the stages that run jobs): spent, planned, lost to preemption; the
    total against the budget."""
    experiments = experiments or [s.name for s in stage_table() if s.runs_jobs]
    rows, spent_total, lost_total = [], 0, 0
    for exp in experiments:
        runs = index.of_stage(exp)
        spent = sum(r.run.flops or 0 for r in runs)
        lost = sum(r.run.lost_flops or 0 for r in runs)
        spent_total, lost_total = spent_total + spent, lost_total + lost
        rows.append((exp, f"{sum(map(_done, runs))}/{len(runs)}", spent, planned.get(exp, 0), lost,
                     spent / planned[exp] if planned.get(exp) else Mark("-")))
    plan_total = sum(planned.get(e, 0) for e in experiments)
    complete = sum(map(_done, index.runs))
    rows.append(("total", f"{complete}/{len(index.runs)}", spent_total, plan_total, lost_total,
                 spent_total / plan_total if plan_total else Mark("-")))
    rows.append(("budget", "", budget, budget, Mark("-"), spent_total / budget))
    return Table(name="table4_flops", title="Table 4. FLOPs by experiment",
                 columns=("experiment", "runs complete", "spent", "planned", "lost to preemption", "spent / planned"),
                 rows=tuple(rows), formats=("", "", ".3e", ".3e", ".3e", ".1%"),
                 notes=("Spent: what the runs computed (training 3 x forward per step, validation forwards, prompts "
                        "and generated tokens), re-done steps included; lost: the part re-done after a preemption. "
                        "The last column of the budget row is the share of the budget spent.",))


def grid_table(index: RunIndex) -> Table:
    """Stage 1: final validation loss by rank (rows) x learning rate (columns)."""
    cell = {(e.run.rank, e.run.lr): e for e in index.of_stage("stage1")}
    ranks = sorted({rank for rank, _ in cell if rank is not None})
    lrs = sorted({lr for _, lr in cell if lr is not None}, reverse=True)
    rows = []
    for rank in ranks:
        row = [rank]
        for lr in lrs:
            r = cell.get((rank, lr))
            row.append(r.run.val_loss if _done(r) and r.run.val_loss is not None else why_missing(r))
        rows.append(tuple(row))
    choice = index.choices.get("stage2")
    notes = (f"Stage 2 took rank {choice.chosen['rank']}, lr {choice.chosen['lr']:g} ({_rule_in_words(choice)}).",) if choice else ()
    return Table(name="stage1_grid", title="Stage 1: validation loss by LoRA rank x learning rate",
                 columns=("rank", *(f"lr {lr:g}" for lr in lrs)), rows=tuple(rows),
                 formats=("d",) + (".4f",) * len(lrs), notes=notes)


def _rule_in_words(choice) -> str:
    """How a choice was made, e.g. "run stage1-r2-lr0.01: the cheapest of 3 runs within one standard error of the lowest"."""
    taken = choice.taken or choice.best
    if len(choice.within_se) <= 1:
        return f"run {taken}: the lowest {choice.metric}, more than one standard error below the next"
    return (f"run {taken}: the cheapest of {len(choice.within_se)} runs within one standard error of the lowest "
            f"{choice.metric} ({choice.best}), which noise alone could reorder")


def choices_table(index: RunIndex) -> Table:
    """Each late-bound stage's choice: what it took, from which run, the best run, the margin and what it rests on."""
    rows = []
    for stage, choice in index.choices.items():
        if not choice:
            rows.append((stage, Mark("not chosen yet"), "", "", Mark("-"), Mark("-"), Mark("-"), Mark("-"), "", ""))
            continue
        done = sum(c["status"] == RunStatus.COMPLETE for c in choice.candidates)
        value = {c["key"]: c[choice.metric] for c in choice.candidates}
        taken = choice.taken or choice.best
        rows.append((stage, ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in choice.chosen.items()),
                     taken, choice.best, value[choice.best], _or_dash(choice.se), _or_dash(choice.spread_in_se()),
                     value[taken] - value[choice.best],
                     "noise" if len(choice.within_se) > 1 else "a margin above one SE", f"{done}/{len(choice.candidates)}"))
    return Table(name="choices", title="Configurations chosen by the late-bound stages (one-standard-error rule)",
                 columns=("stage", "chosen", "from run", "best run", "best", "its SE", "worst - best, in SEs", "chosen - best",
                          "rests on", "candidates complete"),
                 rows=tuple(rows), formats=("", "", "", "", ".4g", ".2g", ".3g", ".2g", "", ""),
                 notes=("Each choice takes, among the complete runs whose metric is within one standard error of the "
                        "lowest (stage 2: validation loss over the validation chunks; final: MAE over the validation "
                        "series), the cheapest: smallest rank, then shortest context, then lowest lr. \"Rests on "
                        "noise\": other runs were within one standard error, so the order among them is not a finding. \"Worst - best, "
                        "in SEs\": how many of the best run's standard errors the candidates span; a grid that spans "
                        "less than a few found nothing.",))


def _or_dash(value):
    return Mark("-") if value is None else value
